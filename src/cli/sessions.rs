//! `sam2-tui sessions`: the session folders kept in the data directory (the console's
//! journals and memory banks, and `segment --session-dir` runs put there), listed and
//! pruned. A one-shot `segment` run removes its own folder when it ends.
use crate::supervisor::session_dirs::{self, KeptSession};
use crate::util::bad_input;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The folder that holds the sessions (default: the data directory's `sessions/`).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// List the kept sessions, oldest first (the default).
    List,
    /// Remove the sessions whose journal has not changed for a while.
    Prune {
        /// Age, as `30d`, `12h`, `90m` or `0` for every session.
        #[arg(long)]
        older_than: String,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `30d`, `12h`, `90m`, `45s` or a bare `0`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = num.parse().map_err(|_| format!("'{text}' is not an age like 30d, 12h or 90m"))?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("'{text}': the unit must be d, h, m or s")),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("'{text}' is too long"))
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.0} KiB", b as f64 / 1024.0),
    }
}

fn line(s: &KeptSession) -> String {
    let age = s.modified.elapsed().unwrap_or_default().as_secs();
    let age = if age >= 86_400 {
        format!("{}d", age / 86_400)
    } else if age >= 3_600 {
        format!("{}h", age / 3_600)
    } else {
        format!("{}m", age / 60)
    };
    format!("{:>10}  {:>5} old  {:>4} ops  {}", human_bytes(s.bytes), age, s.ops, s.path.display())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let root = a.root.unwrap_or_else(session_dirs::root);
    match a.action.unwrap_or(Action::List) {
        Action::List => {
            let kept = session_dirs::list(&root);
            println!("{} session(s) in {}", kept.len(), root.display());
            for s in &kept {
                println!("{}", line(s));
            }
            let total: u64 = kept.iter().map(|s| s.bytes).sum();
            if !kept.is_empty() {
                println!(
                    "{} in all; `sam2-tui sessions prune --older-than 30d` removes the older ones",
                    human_bytes(total)
                );
            }
        }
        Action::Prune { older_than, dry_run } => {
            let age = parse_age(&older_than).map_err(|e| bad_input(format!("--older-than: {e}")))?;
            let gone = session_dirs::prune(&root, age, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for s in &gone {
                println!("{verb} {}", line(s));
            }
            println!("{verb} {} session(s), {}", gone.len(), human_bytes(gone.iter().map(|s| s.bytes).sum()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        assert!(parse_age("30").is_err() && parse_age("d").is_err() && parse_age("3w").is_err());
    }
}
