//! Checkpoints: the official SAM 2 / 2.1 `.pt` files read unmodified and safely (a zip
//! reader plus a pickle VM that only rebuilds tensors), `.safetensors` with the same keys,
//! detection of size and version, and where the official files live.
//!
//! Memory: the file is memory-mapped and each tensor is copied once out of the mapping,
//! so loading the 898 MB large model costs one copy of the weights plus page cache.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

mod detect;
pub mod pickle;
mod safetensors_file;
mod torch_zip;

pub use detect::{check_requested, detect, dtype_name, expected_parameters, group, Detected, BUFFER_KEY};
pub use sam2_api::catalog::{self as official, checkpoint_candidates, default_checkpoint};

/// A loaded checkpoint: the state dict as CPU tensors, keyed like the reference's modules.
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, tch::Tensor>,
}

/// What a file's bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` (zip archive with `data.pkl`).
    TorchZip,
    Safetensors,
}

impl Format {
    pub fn describe(self) -> &'static str {
        match self {
            Format::TorchZip => "PyTorch zip archive (torch.save)",
            Format::Safetensors => "safetensors",
        }
    }
}

/// Recognises the format from the first bytes, or says what the file looks like instead.
fn sniff(bytes: &[u8]) -> Result<Format> {
    if bytes.is_empty() {
        bail!("empty file (0 bytes), not a checkpoint")
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    if bytes.len() >= 9 && bytes[8] == b'{' {
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        if header.checked_add(8).is_some_and(|end| end <= bytes.len() as u64) {
            return Ok(Format::Safetensors);
        }
        bail!("truncated safetensors file (header says {header} bytes, file is {})", bytes.len())
    }
    if bytes[0] == 0x80 {
        // A bare pickle: the legacy torch format or plain `pickle.dump`. Run it through the
        // safe VM anyway so a hostile one is reported for what it is.
        pickle::unpickle(bytes)?;
        bail!("a bare pickle (legacy torch format or pickle.dump), not a torch.save zip checkpoint; re-save it with a current torch.save")
    }
    let what = if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "a JPEG image"
    } else if bytes.starts_with(b"\x89PNG") {
        "a PNG image"
    } else if bytes.starts_with(b"<") {
        "an HTML/XML document (a failed download?)"
    } else if bytes.starts_with(b"\x1f\x8b") {
        "a gzip archive"
    } else {
        "an unrecognised file"
    };
    let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    bail!("{what} (starts with {}), not a checkpoint (.pt zip from torch.save or .safetensors)", head.join(" "))
}

fn map(path: &Path) -> Result<memmap2::Mmap> {
    // What the file is, judged before it is opened (opening a FIFO blocks until a writer
    // comes); every refusal is the user's input (exit 2).
    let bad = |why: String| sam2_api::util::bad_input(format!("{}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot open: {}", sam2_api::util::io_reason(&e))))?;
    if meta.is_dir() {
        return Err(bad("is a directory, not a checkpoint".into()));
    }
    if !meta.is_file() {
        return Err(bad("not a regular file (a FIFO, socket or device), not a checkpoint".into()));
    }
    if meta.len() == 0 {
        return Err(bad("empty file (0 bytes), not a checkpoint".into()));
    }
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {}", sam2_api::util::io_reason(&e))))?;
    // SAFETY: the mapping is read-only and lives only while we copy out of it. If another
    // process truncates the file meanwhile, reads may fault; that is the mmap contract
    // every checkpoint loader (torch included) accepts.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| anyhow!("{}: cannot map: {e}", path.display()))
}

/// The file's format, without loading its tensors (for `weights inspect`).
pub fn format_of(path: &Path) -> Result<Format> {
    let bytes = map(path)?;
    sniff(&bytes).map_err(|e| sam2_api::util::bad_input(format!("{}: {e:#}", path.display())))
}

/// Loads a `.pt` (torch zip) or `.safetensors` checkpoint into CPU tensors. Errors are
/// one line, `"PATH: problem"`.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = map(path)?;
    let tensors = tensors_in(&bytes).map_err(|e| {
        sam2_api::util::bad_input(format!("{}: {}", path.display(), format!("{e:#}").replace('\n', " ")))
    })?;
    Ok(Checkpoint { path: path.to_path_buf(), tensors })
}

/// The tensors of a checkpoint file's bytes, whichever format they are in (the fuzz
/// targets feed it arbitrary bytes: an error or tensors, never a panic).
pub fn tensors_in(bytes: &[u8]) -> Result<BTreeMap<String, tch::Tensor>> {
    match sniff(bytes)? {
        Format::TorchZip => torch_zip::TorchZip::open(bytes)?.tensors(),
        Format::Safetensors => safetensors_file::tensors(bytes),
    }
}
