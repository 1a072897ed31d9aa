#!/usr/bin/env python3
"""The layering rules of docs/ARCHITECTURE.md, checked on the source:

1. No two modules of a crate import each other (directly, at any depth of nesting:
   `a::b` importing `c` and `c` importing `a::x` is a cycle between `a` and `c`).
2. No crate depends on a crate above it: api < supervisor < serve, engine < sam2-tui;
   the supervisor, the web backend (serve) and the API crate never name libtorch (`tch`).
3. The dependency trees agree (`cargo tree`): the engine pulls in no terminal, CLI parser
   or async runtime; the supervisor, the web backend and the API crate no libtorch.

Exit 1 with one line per violation."""
import collections, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = {"sam2_api": "crates/api/src", "sam2_engine": "crates/engine/src",
          "sam2_supervisor": "crates/supervisor/src", "sam2_serve": "crates/serve/src", "sam2_tui": "src"}
# Which crates each may name (besides itself); the Cargo manifests enforce it too.
ALLOWED = {"sam2_api": set(), "sam2_supervisor": {"sam2_api"},
           "sam2_engine": {"sam2_api"}, "sam2_serve": {"sam2_api", "sam2_supervisor"},
           "sam2_tui": {"sam2_api", "sam2_engine", "sam2_supervisor", "sam2_serve"}}
# The web backend embeds supervisors only: its workers are processes of their own.
NO_TORCH = {"sam2_api", "sam2_supervisor", "sam2_serve"}


def modules(src):
    out = {}
    for dp, _, fs in os.walk(src):
        for f in fs:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(dp, f), src)[:-3].split("/")
                if rel[-1] in ("mod", "lib", "main"):
                    rel = rel[:-1]
                out[tuple(rel)] = open(os.path.join(dp, f)).read()
    return out


def strip_tests(text):
    # Unit tests may reach anywhere in their crate; only production code is layered.
    # Comments may name anything.
    text = re.split(r"#\[cfg\(test\)\]\s*mod \w+ \{", text)[0]
    return re.sub(r"//.*", "", text)


def top(path):
    return path[:1]


def main():
    problems = []
    for crate, src in CRATES.items():
        mods = modules(os.path.join(ROOT, src))
        edges = collections.defaultdict(set)
        for m, text in mods.items():
            text = strip_tests(text)
            for other in set(re.findall(r"\b(sam2_(?:api|engine|supervisor|serve|tui))::", text)) - {crate}:
                if other not in ALLOWED[crate]:
                    problems.append(f"{src}/{'/'.join(m)}: {crate} names {other}, a crate above or beside it")
            if crate in NO_TORCH and re.search(r"\btch::", text):
                problems.append(f"{src}/{'/'.join(m)}: {crate} names libtorch (tch)")
            targets = [tuple(t.split("::")) for t in re.findall(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)]
            targets += [m[:-1] + tuple(t.split("::")) for t in re.findall(r"\bsuper::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)]
            for t in targets:
                # The longest prefix that is a module; a cycle is judged between the two
                # modules' distinct ancestors under their common parent.
                while t and t not in mods:
                    t = t[:-1]
                if not t or t == m:
                    continue
                common = 0
                while common < min(len(m), len(t)) and m[common] == t[common]:
                    common += 1
                if common == len(m) or common == len(t):
                    continue  # a parent and its own child
                edges[m[: common + 1]].add(t[: common + 1])
        for a in sorted(edges):
            for b in sorted(edges[a]):
                if a < b and a in edges.get(b, ()):
                    problems.append(f"{src}: modules {'::'.join(a)} and {'::'.join(b)} import each other")
    problems += dependency_problems()
    for p in problems:
        print(p)
    return 1 if problems else 0


# Crates a layer must not have anywhere in its (normal and build) dependency tree.
FORBIDDEN_DEPS = {
    "sam2-api": {"tch", "torch-sys", "ratatui", "crossterm", "clap", "tokio"},
    "sam2-engine": {"ratatui", "crossterm", "clap", "tokio", "axum"},
    "sam2-supervisor": {"tch", "torch-sys", "ratatui", "crossterm", "clap"},
    # The web backend: its workers are processes; it draws nothing and parses no CLI.
    "sam2-serve": {"tch", "torch-sys", "ratatui", "crossterm", "clap"},
}


def dependency_problems():
    import subprocess
    out = []
    for crate, forbidden in FORBIDDEN_DEPS.items():
        tree = subprocess.run(["cargo", "tree", "-p", crate, "-e", "normal,build", "--prefix", "none"],
                              cwd=ROOT, capture_output=True, text=True)
        if tree.returncode != 0:
            out.append(f"cargo tree -p {crate} failed: {tree.stderr.strip().splitlines()[-1:]}")
            continue
        names = {line.split(" ")[0] for line in tree.stdout.splitlines() if line}
        for bad in sorted(names & forbidden):
            out.append(f"{crate} depends on {bad} (cargo tree -p {crate} -i {bad})")
    return out


if __name__ == "__main__":
    sys.exit(main())
