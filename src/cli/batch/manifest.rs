//! The batch manifest: JSON Lines, one item per line, paths relative to the manifest's
//! folder; and `--shard I/N`, the slice of it one process runs.
use crate::model::config::ModelSize;
use crate::util::bad_input;
use std::path::{Component, Path, PathBuf};

/// One line of the manifest, as written.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    input: PathBuf,
    #[serde(default)]
    prompts: Option<PathBuf>,
    #[serde(default)]
    session: Option<PathBuf>,
    out: String,
    #[serde(default)]
    model: Option<ModelSize>,
    #[serde(default)]
    checkpoint: Option<PathBuf>,
}

/// One item, paths resolved against the manifest's folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Position in the manifest (0-based, blank lines and comments not counted); what
    /// `--shard` slices by, so every process agrees on it.
    pub index: usize,
    /// The manifest line (1-based), for messages.
    pub line: usize,
    pub input: PathBuf,
    pub ops: Ops,
    /// The output folder's name inside `--out`.
    pub out: String,
    pub model: Option<ModelSize>,
    pub checkpoint: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ops {
    Prompts(PathBuf),
    Session(PathBuf),
}

/// Names in `--out` that belong to batch itself, not to an item.
pub fn reserved(name: &str) -> bool {
    name.starts_with('.') || name.starts_with("batch-") || name.starts_with("slurm-")
}

/// Reads a manifest. Anything wrong with the manifest itself (a line that is not an item,
/// two items with one `out`) is one `BadInput` line naming the file and line; whether an
/// item's input and prompts exist is judged per item when it runs.
pub fn load(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input(format!("{}: cannot read the manifest: {e}", path.display())))?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<Item>> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let at = |n: usize, msg: String| bad_input(format!("{}:{n}: {msg}", path.display()));
    let mut items: Vec<Item> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let l: Line = serde_json::from_str(t).map_err(|e| at(n, format!("not a manifest item: {e}")))?;
        let ops = match (l.prompts, l.session) {
            (Some(p), None) => Ops::Prompts(base.join(p)),
            (None, Some(s)) => Ops::Session(base.join(s)),
            _ => return Err(at(n, "give exactly one of \"prompts\" and \"session\"".into())),
        };
        let plain_name = {
            let mut c = Path::new(&l.out).components();
            matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
        };
        if !plain_name || reserved(&l.out) {
            return Err(at(
                n,
                format!(
                    "\"out\": {:?} must be a plain folder name (no '/', '..', leading '.', 'batch-' or 'slurm-')",
                    l.out
                ),
            ));
        }
        if let Some(other) = items.iter().find(|it| it.out == l.out) {
            return Err(at(n, format!("\"out\": {:?} is also the out of line {}", l.out, other.line)));
        }
        items.push(Item {
            index: items.len(),
            line: n,
            input: base.join(l.input),
            ops,
            out: l.out,
            model: l.model,
            checkpoint: l.checkpoint.map(|c| base.join(c)),
        });
    }
    if items.is_empty() {
        return Err(bad_input(format!("{}: the manifest holds no items", path.display())));
    }
    Ok(items)
}

/// `--shard I/N`: this process runs the items whose index is I modulo N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, item_index: usize) -> bool {
        item_index % self.count == self.index
    }

    /// The report file this shard writes (shards of one manifest share `--out`).
    pub fn report_name(&self) -> String {
        if *self == Shard::ALL {
            "batch-report.json".into()
        } else {
            format!("batch-report-{}-of-{}.json", self.index, self.count)
        }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: give I/N, e.g. 0/4"))?;
        let index: usize = i.trim().parse().map_err(|_| format!("{s:?}: I is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| format!("{s:?}: N is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("{s:?}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: usize) -> String {
        (0..n).map(|i| format!("{{\"input\":\"c{i}.mp4\",\"prompts\":\"p.json\",\"out\":\"c{i}\"}}\n")).collect()
    }

    #[test]
    fn sharding_covers_every_item_exactly_once_for_n_from_1_to_7() {
        for items in [1usize, 6, 13] {
            let all = parse(&manifest(items), Path::new("/m/manifest.jsonl")).unwrap();
            for n in 1..=7 {
                let mut seen = vec![0u32; items];
                for i in 0..n {
                    let shard: Shard = format!("{i}/{n}").parse().unwrap();
                    for it in all.iter().filter(|it| shard.owns(it.index)) {
                        seen[it.index] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "{items} items over {n} shards: {seen:?}");
            }
        }
    }

    #[test]
    fn paths_are_relative_to_the_manifest_folder_and_blank_lines_and_comments_do_not_count() {
        let text = "# clips\n\n{\"input\":\"a.mp4\",\"session\":\"s.json\",\"out\":\"a\",\"model\":\"tiny\"}\n{\"input\":\"/abs/b\",\"prompts\":\"p.json\",\"out\":\"b\"}\n";
        let items = parse(text, Path::new("/data/m.jsonl")).unwrap();
        assert_eq!(items[0].input, Path::new("/data/a.mp4"));
        assert_eq!(items[0].ops, Ops::Session("/data/s.json".into()));
        assert_eq!((items[0].index, items[0].line), (0, 3));
        assert_eq!(items[1].input, Path::new("/abs/b"));
        assert_eq!(items[1].index, 1);
    }

    #[test]
    fn a_bad_line_is_one_message_naming_the_file_and_line() {
        let cases = [
            ("{\"input\":\"a\",\"out\":\"a\"}", "exactly one of"),
            ("{\"input\":\"a\",\"prompts\":\"p\",\"session\":\"s\",\"out\":\"a\"}", "exactly one of"),
            ("{\"input\":\"a\",\"prompts\":\"p\",\"out\":\"../a\"}", "plain folder name"),
            ("{\"input\":\"a\",\"prompts\":\"p\",\"out\":\"batch-report.json\"}", "plain folder name"),
            ("{\"input\":\"a\",\"prompts\":\"p\",\"out\":\"a\",\"typo\":1}", "not a manifest item"),
            ("not json", "not a manifest item"),
            (
                "{\"input\":\"a\",\"prompts\":\"p\",\"out\":\"a\"}\n{\"input\":\"b\",\"prompts\":\"p\",\"out\":\"a\"}",
                "also the out of line 1",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, Path::new("/m/list.jsonl")).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.starts_with("/m/list.jsonl:"), "{msg}");
            assert!(msg.contains(want), "{text}: {msg}");
            assert_eq!(crate::util::exit::code_of(&e), crate::util::exit::BAD_INPUT);
        }
    }

    #[test]
    fn a_shard_is_i_of_n_with_i_below_n() {
        assert_eq!("2/5".parse::<Shard>().unwrap(), Shard { index: 2, count: 5 });
        for bad in ["5/5", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
