//! `batch --status DIR`: progress from the report files in DIR and, for arrays submitted
//! from there, what `squeue`/`sacct` say of their tasks.
use super::report::{self, Status};
use super::slurm::JOBS;
use crate::util::bad_input;
use std::path::Path;
use std::process::Command;

pub fn run(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(bad_input(format!("{}: not a folder (give the --out of a batch)", dir.display())));
    }
    let files = report::files_in(dir);
    if files.is_empty() {
        println!("{}: no batch report yet", dir.display());
    }
    let mut complete = 0usize;
    let mut listed = std::collections::BTreeSet::new();
    for f in &files {
        let r = report::Report::read(f)?;
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{name}: shard {} {}: {} done, {} skipped, {} failed, {} pending",
            r.shard,
            if r.finished { "finished" } else { "running or stopped" },
            r.count(Status::Done),
            r.count(Status::Skipped),
            r.count(Status::Failed),
            r.count(Status::Pending)
        );
        for i in &r.items {
            if listed.insert(i.out.clone()) && crate::media::output_dir::is_complete(&dir.join(&i.out)) {
                complete += 1;
            }
            if let (Status::Failed, Some(e)) = (i.status, &i.error) {
                println!("  failed {}: {e}", i.out);
            }
        }
    }
    if !listed.is_empty() {
        println!("outputs complete: {complete} of {} item(s)", listed.len());
    }
    let jobs: Vec<String> = std::fs::read_to_string(dir.join(JOBS))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if let Some(ids) = (!jobs.is_empty()).then(|| jobs.join(",")) {
        match Command::new("squeue").args(["-h", "-r", "-j", &ids, "-o", "%i %T %M %R"]).output() {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                println!("squeue: {} task(s) queued or running", text.lines().count());
                print!("{text}");
            }
            _ => println!("squeue: not available"),
        }
        if let Ok(o) = Command::new("sacct").args(["-n", "-X", "-P", "-j", &ids, "-o", "JobID,State,Elapsed"]).output()
        {
            if o.status.success() {
                println!("sacct:");
                print!("{}", String::from_utf8_lossy(&o.stdout));
            }
        }
    }
    Ok(())
}
