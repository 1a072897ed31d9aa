//! The data folder, laid out as the official backend's `DATA_PATH`: `gallery/` (the
//! videos, any depth), `posters/` (one JPEG per gallery video, remade at every start with
//! the `ffmpeg` CLI exactly as the official does) and `uploads/` (transcoded uploads).
//!
//! Every path that comes from a client goes through [`DataDir::resolve`]: relative, no
//! `..`, and after following symlinks still inside the folder it was asked under — the
//! official joins strings (`f"{DATA_PATH}/{path}"`) and serves whatever that names.
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

/// One video as the GraphQL `Video` type shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoEntry {
    /// The relay node's code: the path relative to the data folder.
    pub code: String,
    pub path: String,
    pub poster_path: Option<String>,
    pub width: i32,
    pub height: i32,
}

pub struct DataDir {
    root: PathBuf,
}

pub const GALLERY: &str = "gallery";
pub const POSTERS: &str = "posters";
pub const UPLOADS: &str = "uploads";
/// Where uploads are received and transcoded before they are published (not served).
const INCOMING: &str = ".incoming";

impl DataDir {
    /// Opens (creating when missing) the data folder and its three sub-folders.
    pub fn open(root: &Path) -> anyhow::Result<DataDir> {
        for sub in [GALLERY, POSTERS, UPLOADS, INCOMING] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", d.display()))?;
        }
        let root = root.canonicalize().map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
        // Uploads that were being received when an earlier server stopped.
        if let Ok(entries) = std::fs::read_dir(root.join(INCOMING)) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(DataDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn incoming(&self) -> PathBuf {
        self.root.join(INCOMING)
    }

    pub fn uploads(&self) -> PathBuf {
        self.root.join(UPLOADS)
    }

    /// `rel` under `base` (a sub-folder name, or "" for the data folder itself) as an
    /// existing file or folder inside it, or why not. Refused: empty, absolute, `..`,
    /// odd characters, and anything whose real path (symlinks followed) leaves `base`.
    pub fn resolve(&self, base: &str, rel: &str) -> Result<PathBuf, String> {
        let shown = rel.chars().take(200).collect::<String>();
        if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
            return Err(format!("path {shown:?} is not a path inside the data folder"));
        }
        let p = Path::new(rel);
        if !p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(format!("path {shown:?} must stay inside the data folder (no absolute paths, no '..')"));
        }
        let base_dir = if base.is_empty() { self.root.clone() } else { self.root.join(base) };
        let joined = base_dir.join(p);
        let real = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{shown}: no such file in the data folder"),
            _ => format!("{shown}: {e}"),
        })?;
        let base_real = base_dir.canonicalize().map_err(|e| format!("{}: {e}", base_dir.display()))?;
        if !real.starts_with(&base_real) {
            return Err(format!("path {shown:?} leads outside the data folder (a symlink?)"));
        }
        // The folder where uploads are received is never served nor opened.
        if real.starts_with(self.root.join(INCOMING)) {
            return Err(format!("{shown}: no such file in the data folder"));
        }
        Ok(real)
    }

    /// Every `gallery/**/*.mp4` (sorted), each with its poster remade by `ffmpeg` and its
    /// size read from the poster, as the official loader does.
    pub fn scan_gallery(
        &self,
        ffmpeg: &Path,
        ffprobe: &Path,
        board: &crate::operator::Board,
    ) -> anyhow::Result<Vec<VideoEntry>> {
        let mut files = vec![];
        walk(&self.root.join(GALLERY), &mut files);
        files.sort();
        let mut out = vec![];
        for file in files {
            let rel = file.strip_prefix(&self.root).unwrap_or(&file).to_string_lossy().into_owned();
            // Never offer what would not be served (a symlink out of the folder).
            let in_gallery = file.strip_prefix(self.root.join(GALLERY)).unwrap_or(&file).to_string_lossy().into_owned();
            if let Err(why) = self.resolve(GALLERY, &in_gallery) {
                board.warn(format!("gallery: skipping {rel}: {why}"));
                continue;
            }
            let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let poster_name = format!("{stem}.jpg");
            let poster = self.root.join(POSTERS).join(&poster_name);
            make_poster(ffmpeg, &file, &poster, board)?;
            let (width, height) = probe_size(ffprobe, &poster).unwrap_or((0, 0));
            out.push(VideoEntry {
                code: rel.clone(),
                path: rel,
                poster_path: Some(format!("{POSTERS}/{poster_name}")),
                width,
                height,
            });
        }
        Ok(out)
    }
}

/// Files ending in `.mp4` under `dir`, recursively (symlinked folders are not followed;
/// symlinked files are listed, and judged by `resolve`).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let p = e.path();
        if t.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "mp4") && !e.file_name().to_string_lossy().starts_with('.') {
            out.push(p);
        }
    }
}

/// The official loader's poster: `ffmpeg -y -i VIDEO -pix_fmt yuv420p -frames:v 1
/// -update 1 -strict unofficial POSTER`.
fn make_poster(ffmpeg: &Path, video: &Path, poster: &Path, board: &crate::operator::Board) -> anyhow::Result<()> {
    let status = std::process::Command::new(ffmpeg)
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(video)
        .args(["-pix_fmt", "yuv420p", "-frames:v", "1", "-update", "1", "-strict", "unofficial"])
        .arg(poster)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} ({e}): serve needs the ffmpeg command for posters and uploads",
                ffmpeg.display()
            )
        })?;
    if !status.success() {
        board.warn(format!("{}: ffmpeg could not make its poster ({status})", video.display()));
    }
    Ok(())
}

/// (width, height) of the first video stream of `path` (an image or a video).
pub fn probe_size(ffprobe: &Path, path: &Path) -> Option<(i32, i32)> {
    let out = std::process::Command::new(ffprobe)
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.trim().split(',');
    Some((it.next()?.trim().parse().ok()?, it.next()?.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_the_data_folder() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "x").unwrap();
        let d = DataDir::open(t.path()).unwrap();
        std::fs::write(t.path().join("gallery/a.mp4"), "v").unwrap();
        std::fs::write(t.path().join("top.txt"), "t").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), t.path().join("gallery/link.mp4")).unwrap();
        std::os::unix::fs::symlink(t.path().join("gallery/a.mp4"), t.path().join("gallery/inside.mp4")).unwrap();
        assert!(d.resolve(GALLERY, "a.mp4").is_ok());
        assert!(d.resolve(GALLERY, "./a.mp4").is_ok());
        assert!(d.resolve(GALLERY, "inside.mp4").is_ok(), "a symlink that stays inside is fine");
        assert!(d.resolve("", "gallery/a.mp4").is_ok());
        for bad in ["../top.txt", "/etc/passwd", "a/../../top.txt", "", "link.mp4", "..", "missing.mp4", "a.mp4\0"] {
            assert!(d.resolve(GALLERY, bad).is_err(), "{bad:?} must be refused");
        }
        assert!(d.resolve(POSTERS, "../gallery/a.mp4").is_err());
        assert!(d.resolve("", ".incoming").is_err());
    }
}
