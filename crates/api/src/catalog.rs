//! The official checkpoints: where Meta publishes them and where sam2-tui looks for them.
use std::path::{Path, PathBuf};

use crate::model::{ModelSize, ModelVersion};

/// `sam2.1_hiera_tiny.pt`, `sam2_hiera_large.pt`, …
pub fn file_name(size: ModelSize, version: ModelVersion) -> String {
    let prefix = match version {
        ModelVersion::V2_1 => "sam2.1",
        ModelVersion::V2_0 => "sam2",
    };
    format!("{prefix}_hiera_{}.pt", size.name())
}

/// Where Meta publishes the checkpoints, one folder per release.
pub const OFFICIAL_BASE: &str = "https://dl.fbaipublicfiles.com/segment_anything_2";

pub fn url(size: ModelSize, version: ModelVersion) -> String {
    url_under(OFFICIAL_BASE, size, version)
}

/// The checkpoint's address under `base`, laid out as Meta's server (`RELEASE/FILE`):
/// the official one, or a mirror of it.
pub fn url_under(base: &str, size: ModelSize, version: ModelVersion) -> String {
    let release = match version {
        ModelVersion::V2_1 => "092824",
        ModelVersion::V2_0 => "072824",
    };
    format!("{}/{release}/{}", base.trim_end_matches('/'), file_name(size, version))
}

/// The approximate download size, for messages ("large is 898 MB").
pub fn approx_megabytes(size: ModelSize) -> u32 {
    match size {
        ModelSize::Tiny => 156,
        ModelSize::Small => 184,
        ModelSize::BasePlus => 323,
        ModelSize::Large => 898,
    }
}

/// The data folder's weights folder (`~/.local/share/sam2-tui/weights` on Linux; see
/// `dirs`).
pub fn data_dir_weights() -> Option<PathBuf> {
    Some(crate::dirs::data_dir().join("weights"))
}

/// The repository the running binary was built in (`<repo>/target/release/sam2-tui`),
/// recognised by its `weights/` folder next to a Cargo.toml.
fn binary_repo() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("Cargo.toml").is_file() && d.join("weights").is_dir())
        .map(Path::to_path_buf)
}

/// Every place the official file is looked for, in order: `./weights/`, the binary's
/// repository `weights/`, the data directory.
pub fn checkpoint_candidates(size: ModelSize, version: ModelVersion) -> Vec<PathBuf> {
    let name = file_name(size, version);
    let mut dirs = vec![PathBuf::from("weights")];
    if let Some(repo) = binary_repo() {
        dirs.push(repo.join("weights"));
    }
    if let Some(d) = data_dir_weights() {
        dirs.push(d);
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = d.join(&name);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The first candidate that exists, else `weights/<official name>` (so that an error
/// about it points where `sam2-tui weights download` puts it).
pub fn default_checkpoint(size: ModelSize, version: ModelVersion) -> PathBuf {
    let candidates = checkpoint_candidates(size, version);
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| candidates[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_official_release_folders() {
        assert_eq!(
            url(ModelSize::Tiny, ModelVersion::V2_1),
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
        );
        assert_eq!(
            url(ModelSize::BasePlus, ModelVersion::V2_0),
            "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt"
        );
    }

    #[test]
    fn default_checkpoint_falls_back_to_the_weights_folder() {
        let p = default_checkpoint(ModelSize::Large, ModelVersion::V2_0);
        assert!(p.ends_with("weights/sam2_hiera_large.pt"), "{}", p.display());
    }
}
