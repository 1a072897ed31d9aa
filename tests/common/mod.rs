//! Helpers shared by the integration tests: the Python environment that holds the
//! reference, a per-test scratch directory, the built binary.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python of the set-up environment (`make test` exports SAM2_TUI_PYTHON).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SAM2_TUI_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SAM2_TUI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sam2-tui"));
    cache.join("venv/bin/python")
}

/// Runs a fixture script from `tests/fixtures/` with the reference's Python; panics with
/// its stderr when it fails.
pub fn run_fixture(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .env("OMP_NUM_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    if !out.status.success() {
        panic!("{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh, empty directory for one test, under target/ so it is easy to inspect.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory for fixtures that are expensive to make (reference checkpoints and
/// outputs), reused across tests in one run and keyed by the fixture script's content.
pub fn fixture_cache(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fixtures").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `sam2-tui` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sam2-tui"))
}
