//! `batch-report.json`: what happened to each item, rewritten (atomically) after every
//! item so that a cancelled or preempted run still says what it finished, and so that
//! `batch --status` can read progress from the files alone.
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran now and its outputs were published.
    Done,
    /// Its outputs were already complete (an earlier run or another shard).
    Skipped,
    Failed,
    /// Not reached (the run was interrupted first).
    Pending,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemReport {
    pub index: usize,
    pub out: String,
    pub input: String,
    pub status: Status,
    pub frames: usize,
    pub seconds: f32,
    pub restarts: u32,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub manifest: String,
    /// "I/N".
    pub shard: String,
    pub items: Vec<ItemReport>,
    /// Whether the run reached its end (false while it runs, or after a kill).
    pub finished: bool,
}

impl Report {
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::util::atomic_write(path, &serde_json::to_vec_pretty(self)?)
    }

    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: not a batch report: {e}", path.display()))
    }

    pub fn count(&self, status: Status) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }
}

/// The report files in a batch's `--out` (one per shard that ran there).
pub fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("batch-report") && n.ends_with(".json"))
        })
        .collect();
    out.sort();
    out
}
