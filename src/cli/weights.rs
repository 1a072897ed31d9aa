//! `sam2-tui weights` (what is installed, where it is looked for), `weights inspect FILE`
//! and `weights download [SIZE]`.
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{anyhow, bail, Context, Result};

use crate::model::config::{ModelSize, ModelVersion};
use crate::util::bad_input;
use crate::weights::{self, official};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print what a checkpoint file is: format, SAM version, size, tensors, parameters, dtype.
    Inspect { file: PathBuf },
    /// Download an official checkpoint (curl or wget), verify it, then move it into place.
    Download {
        /// tiny, small, base_plus or large.
        #[arg(default_value = "tiny")]
        size: ModelSize,
        /// 2.1 (default) or 2.0.
        #[arg(long, default_value = "2.1")]
        version: ModelVersion,
        /// Where to put it.
        #[arg(long, default_value = "weights")]
        dir: PathBuf,
    },
    /// Write a random-init checkpoint in the official layout (masks are meaningless; for
    /// trying the tool and benchmarking without the real weights). The name must contain
    /// `random-init`, which is how the console knows to show its banner.
    InitRandom {
        out: PathBuf,
        #[arg(long, default_value = "tiny")]
        model: ModelSize,
        #[arg(long, default_value = "2.1")]
        version: ModelVersion,
        #[arg(long, default_value_t = 0)]
        seed: i64,
    },
}

pub fn run(args: Args) -> Result<()> {
    let Some(cmd) = args.command else {
        print!("{}", listing(&installed()));
        return Ok(());
    };
    match cmd {
        Command::Inspect { file } => inspect(&file),
        Command::Download { size, version, dir } => download(size, version, &dir),
        Command::InitRandom { out, model, version, seed } => {
            if !crate::model::random_init::is_random_init(&out) {
                return Err(crate::util::bad_input(format!(
                    "{}: a random-init checkpoint's file name must contain 'random-init'",
                    out.display()
                )));
            }
            crate::model::random_init::write_random_checkpoint(&out, model, version, seed)?;
            println!("wrote {} (random-init SAM {version} {model}: masks are meaningless)", out.display());
            Ok(())
        }
    }
}

/// Every official checkpoint found, as (size, version, path, bytes), in search order.
pub fn installed() -> Vec<(ModelSize, ModelVersion, PathBuf, u64)> {
    let mut out = vec![];
    for version in [ModelVersion::V2_1, ModelVersion::V2_0] {
        for size in ModelSize::ALL {
            for p in official::checkpoint_candidates(size, version) {
                if let Some(m) = std::fs::metadata(&p).ok().filter(|m| m.is_file()) {
                    out.push((size, version, p, m.len()));
                }
            }
        }
    }
    out
}

/// What `sam2-tui weights` prints: the installed checkpoints (the console uses the first
/// of its size), the folders searched, and how to get one.
pub fn listing(found: &[(ModelSize, ModelVersion, PathBuf, u64)]) -> String {
    let mut s = String::new();
    if found.is_empty() {
        s.push_str("no official checkpoint installed\n");
    } else {
        s.push_str("installed:\n");
        for (size, version, path, bytes) in found {
            s.push_str(&format!(
                "  SAM {version} {:<9} {:>6.0} MB  {}\n",
                size.name(),
                *bytes as f64 / 1e6,
                path.display()
            ));
        }
    }
    s.push_str("looked in (first found wins):\n");
    let name = official::file_name(ModelSize::Tiny, ModelVersion::V2_1);
    for p in official::checkpoint_candidates(ModelSize::Tiny, ModelVersion::V2_1) {
        s.push_str(&format!("  {}\n", p.parent().unwrap_or(&p).display()));
    }
    s.push_str(&format!(
        "get one: sam2-tui weights download tiny   ({name}, about {} MB, into weights/; small, base_plus, large likewise)\n",
        official::approx_megabytes(ModelSize::Tiny)
    ));
    s.push_str("inspect one: sam2-tui weights inspect FILE\n");
    s
}

fn inspect(file: &Path) -> Result<()> {
    let format = weights::format_of(file)?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let ckpt = weights::load(file)?;
    let det = weights::detect(&ckpt)?;
    println!("file:       {}", file.display());
    println!("format:     {}", format.describe());
    println!("model:      {}", det.label());
    println!("size:       {}", det.size);
    println!("version:    {}", det.version);
    println!("tensors:    {}", det.tensors);
    println!("parameters: {}", weights::group(det.parameters));
    println!("dtype:      {}", weights::dtype_name(det.dtype));
    println!("file size:  {} bytes ({:.1} MB)", weights::group(bytes), bytes as f64 / 1e6);
    Ok(())
}

fn download(size: ModelSize, version: ModelVersion, dir: &Path) -> Result<()> {
    let name = official::file_name(size, version);
    let dest = dir.join(&name);
    if dest.exists() {
        // A file at the official name that is not that checkpoint may be the user's own
        // (a fine-tune, another size, a copy in progress): it is never replaced. Checked
        // before the download, so a refusal costs nothing.
        let found = weights::load(&dest)
            .and_then(|c| weights::detect(&c))
            .and_then(|det| weights::check_requested(&det, Some(size), Some(version), &dest).map(|()| det));
        return match found {
            Ok(det) => {
                println!("{} is already here ({}).", dest.display(), det.label());
                Ok(())
            }
            // The error names the file and what is wrong with it.
            Err(e) => Err(bad_input(format!(
                "{e:#}; not a valid {name}, so it is left as it is: move it away to download the official one"
            ))),
        };
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: cannot create directory: {e}", dir.display()))?;
    // The temp name ends in .pt so the repository's `weights/*.pt` ignore rule covers it;
    // it is removed on failure (NamedTempFile) and renamed into place on success.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".download.pt")
        .tempfile_in(dir)
        .map_err(|e| anyhow!("{}: cannot create temp file: {e}", dir.display()))?;
    let url = download_url(size, version);
    eprintln!("downloading {url} (about {} MB)", official::approx_megabytes(size));
    fetch(&url, tmp.path())?;
    let det = weights::load(tmp.path())
        .and_then(|c| weights::detect(&c))
        .map_err(|e| anyhow!("{url}: downloaded file is not a valid checkpoint: {e:#}"))?;
    weights::check_requested(&det, Some(size), Some(version), Path::new(&url))?;
    // No-clobber: a file that appeared at the name during the download is not replaced either.
    tmp.persist_noclobber(&dest).map_err(|e| anyhow!("{}: cannot move into place: {e}", dest.display()))?;
    println!("{} ({}, {} parameters)", dest.display(), det.label(), weights::group(det.parameters));
    Ok(())
}

/// Where the official checkpoint is fetched from: Meta's server, or the mirror that
/// `SAM2_TUI_WEIGHTS_MIRROR` names (any URL curl takes, `file://` too), laid out as the
/// official one (`RELEASE/FILE`, e.g. `092824/sam2.1_hiera_tiny.pt`).
fn download_url(size: ModelSize, version: ModelVersion) -> String {
    let mirror = std::env::var("SAM2_TUI_WEIGHTS_MIRROR").ok().filter(|m| !m.is_empty());
    official::url_under(mirror.as_deref().unwrap_or(official::OFFICIAL_BASE), size, version)
}

/// Runs curl (or wget when curl is missing) to fetch `url` into `out`. A transfer that
/// stalls (under a byte a second for `SAM2_TUI_DOWNLOAD_STALL_SECS`, default 60) fails
/// instead of waiting forever. SIGINT, SIGTERM or SIGHUP (a closed SSH session, the
/// console quitting) stops the transfer: the downloader is killed and the error is
/// `Interrupted` (exit 130), so the caller's temp file goes with it.
fn fetch(url: &str, out: &Path) -> Result<()> {
    super::interrupt::install();
    let stall = std::env::var("SAM2_TUI_DOWNLOAD_STALL_SECS")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(60)
        .to_string();
    let curl = Process::new("curl")
        .args(["-fL", "--retry", "2", "--connect-timeout", &stall, "--speed-limit", "1", "--speed-time", &stall])
        .args(["--progress-bar", "-o"])
        .arg(out)
        .arg(url)
        .spawn();
    let child = match curl {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Process::new("wget")
            .args(["-q", "--show-progress", &format!("--timeout={stall}"), "-O"])
            .arg(out)
            .arg(url)
            .spawn()
            .map_err(|e| anyhow!("{url}: neither curl nor wget could be run ({e}); install one, or fetch the file by hand into weights/"))?,
        Err(e) => bail!("{url}: cannot run curl: {e}"),
    };
    let status = wait_unless_interrupted(child).with_context(|| url.to_string())?;
    if !status.success() {
        let hint = match status.code() {
            Some(6) => " (could not resolve host: no network?)",
            Some(7) => " (could not connect: no network or a firewall?)",
            Some(22) => " (the server refused the request)",
            Some(28) => " (timed out)",
            _ => "",
        };
        bail!("{url}: download failed, {status}{hint}")
    }
    Ok(())
}

/// Waits for the downloader, or kills it once a signal asks this command to stop (the
/// handlers only set a flag, so the wait looks at it every 50 ms).
fn wait_unless_interrupted(mut child: std::process::Child) -> Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            // Ctrl-C in a terminal signals the whole process group: the downloader may
            // have died of the same signal before this loop saw the flag.
            if !status.success() && super::interrupt::requested() {
                return Err(anyhow::Error::new(crate::util::Interrupted));
            }
            return Ok(status);
        }
        if super::interrupt::requested() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow::Error::new(crate::util::Interrupted));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
