//! Small helpers shared by every layer.
use std::io::Write;
use std::path::Path;

/// Writes a file so that readers never see it half-written: temp file in the same
/// directory, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_and_rename(path, bytes, true)
}

/// As `atomic_write`, without flushing to the disk: the file is whole after a crash of
/// this process (the page cache has it), only an OS crash or power loss can lose it. For
/// per-frame state whose flush would otherwise cost a disk round trip every frame.
pub fn atomic_write_unflushed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_and_rename(path, bytes, false)
}

fn write_and_rename(path: &Path, bytes: &[u8], flush: bool) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: cannot create directory: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create temp file: {e}", dir.display()))?;
    tmp.write_all(bytes).map_err(|e| anyhow::anyhow!("{}: write failed: {e}", path.display()))?;
    if flush {
        tmp.as_file().sync_all().ok();
    }
    tmp.persist(path).map_err(|e| anyhow::anyhow!("{}: cannot rename into place: {e}", path.display()))?;
    Ok(())
}
