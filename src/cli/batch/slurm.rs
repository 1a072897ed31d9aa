//! `batch --slurm`: the manifest as a Slurm job array. Task I of N runs
//! `sam2-tui batch MANIFEST --out DIR --shard I/N`; the script lands in DIR and is
//! submitted with `sbatch`. Submitting again finishes what a preempted or cancelled array
//! left: only the tasks whose shard still has incomplete items are in the new array, and
//! each of them skips the items already complete.
use super::manifest::{self, Item, Shard};
use super::Args;
use crate::config::{Config, SlurmConfig};
use crate::util::bad_input;
use anyhow::{anyhow, Context};
use std::path::{Path, PathBuf};

pub const SCRIPT: &str = "batch-slurm.sbatch";
/// Job ids submitted for this DIR, one a line (read by `--status`).
pub const JOBS: &str = "batch-slurm-jobs";
const MAX_DEFAULT_TASKS: usize = 100;

pub fn run(a: &Args, manifest_path: &Path, out: &Path) -> anyhow::Result<()> {
    let items = manifest::load(manifest_path)?;
    let config = Config::load(None)?.slurm;
    let tasks = a.array_size.unwrap_or(items.len().min(MAX_DEFAULT_TASKS));
    if tasks == 0 {
        return Err(bad_input("--array-size must be at least 1"));
    }
    let tasks = tasks.min(items.len());
    std::fs::create_dir_all(out).map_err(|e| bad_input(format!("{}: cannot create --out: {e}", out.display())))?;
    let out = std::fs::canonicalize(out)?;
    let manifest_abs = std::fs::canonicalize(manifest_path)?;
    let todo = shards_with_work(&items, &out, tasks);
    if todo.is_empty() {
        eprintln!("batch: all {} item(s) are complete in {}; nothing to submit", items.len(), out.display());
        return Ok(());
    }
    let binary = match &config.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let text = script(a, &config, &binary, &manifest_abs, &out, tasks, &todo);
    let path = out.join(SCRIPT);
    crate::util::atomic_write(&path, text.as_bytes())?;
    if a.dry_run {
        print!("{text}");
        eprintln!(
            "batch: wrote {} ({} of {tasks} task(s) to run); not submitted (--dry-run)",
            path.display(),
            todo.len()
        );
        return Ok(());
    }
    let output =
        std::process::Command::new("sbatch").arg("--parsable").arg(&path).output().map_err(|e| {
            anyhow!("cannot run sbatch ({e}); is Slurm installed here? (--dry-run writes the script only)")
        })?;
    anyhow::ensure!(
        output.status.success(),
        "sbatch {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().split(';').next().unwrap_or_default().to_string();
    anyhow::ensure!(!id.is_empty(), "sbatch printed no job id");
    let jobs = out.join(JOBS);
    let mut known = std::fs::read_to_string(&jobs).unwrap_or_default();
    known.push_str(&format!("{id}\n"));
    crate::util::atomic_write(&jobs, known.as_bytes())?;
    println!("{id}");
    eprintln!(
        "batch: submitted job array {id} ({} of {tasks} task(s)); follow it with `sam2-tui batch --status {}`",
        todo.len(),
        out.display()
    );
    Ok(())
}

/// The shards (of `tasks`) that still own an item without a complete output.
pub fn shards_with_work(items: &[Item], out: &Path, tasks: usize) -> Vec<usize> {
    (0..tasks)
        .filter(|&i| {
            let shard = Shard { index: i, count: tasks };
            items.iter().any(|it| shard.owns(it.index) && !crate::media::output_dir::is_complete(&out.join(&it.out)))
        })
        .collect()
}

/// Quoted for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn script(
    a: &Args,
    config: &SlurmConfig,
    binary: &Path,
    manifest: &Path,
    out: &Path,
    tasks: usize,
    todo: &[usize],
) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += "#SBATCH --job-name=sam2-tui-batch\n";
    s += &format!("#SBATCH --array={}\n", ranges(todo));
    s += &format!("#SBATCH --output={}/slurm-%A_%a.log\n", out.display());
    if let Some(p) = a.partition.as_ref().or(config.partition.as_ref()) {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(g) = a.gres.as_ref().or(config.gres.as_ref()) {
        s += &format!("#SBATCH --gres={g}\n");
    }
    if let Some(t) = a.time.as_ref().or(config.time.as_ref()) {
        s += &format!("#SBATCH --time={t}\n");
    }
    s += "# Written by `sam2-tui batch --slurm`. Submitting that command again finishes what\n";
    s += "# a preempted or cancelled task left: only incomplete items run.\n";
    s += "set -eu\n";
    for m in &config.modules {
        s += &format!("module load {}\n", sh(m));
    }
    let mut cmd = vec![
        sh(&binary.display().to_string()),
        "batch".into(),
        sh(&manifest.display().to_string()),
        "--out".into(),
        sh(&out.display().to_string()),
    ];
    cmd.push(format!("--shard \"$SLURM_ARRAY_TASK_ID/{tasks}\""));
    let mut flag = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            cmd.push(format!("--{name} {}", sh(&v)));
        }
    };
    let e = &a.job.engine;
    flag("config", e.config.as_ref().map(|c| absolute(c).display().to_string()));
    flag("checkpoint", e.checkpoint.as_ref().map(|c| absolute(c).display().to_string()));
    flag("model", e.model.map(|m| m.to_string()));
    flag("device", e.device.map(|d| d.to_string()));
    flag("precision", e.precision.map(|p| p.to_string()));
    flag("devices", a.devices.as_ref().map(|d| d.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",")));
    flag("image-size", e.image_size.map(|s| s.to_string()));
    if a.streams > 1 {
        cmd.push(format!("--streams {}", a.streams));
    }
    if a.job.logits {
        cmd.push("--logits".into());
    }
    if a.job.no_postprocess {
        cmd.push("--no-postprocess".into());
    }
    // The tasks read the config (--config) and the environment of the nodes themselves.
    for (k, v) in &e.tune {
        cmd.push(format!("--tune {}", sh(&format!("{k}={v}"))));
    }
    s += &format!("exec {}\n", cmd.join(" "));
    s
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `0-2,5,7-8`: Slurm's --array syntax for a sorted list.
fn ranges(ids: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { ids[i].to_string() } else { format!("{}-{}", ids[i], ids[j]) });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ranges_are_written_in_slurm_syntax() {
        assert_eq!(ranges(&[0, 1, 2]), "0-2");
        assert_eq!(ranges(&[0, 2, 3, 5]), "0,2-3,5");
        assert_eq!(ranges(&[4]), "4");
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
