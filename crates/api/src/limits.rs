//! Limits on what a user gives, in one place (README, "Limits"). Each is checked where the
//! input is read, before any model work, so that a huge or endless input is one clear line
//! and exit code 2 rather than an OOM kill that the supervisor would replay, or a hang.
use crate::util::bad_input;
use std::io::Read;
use std::path::Path;

/// Largest `--prompts` / `--session` file: a hand-written or saved session is kilobytes;
/// this leaves room for very long sessions and stops `/dev/zero`-like inputs.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Points in one prompt (one object on one frame). The reference has no limit, but every
/// point is a token of the mask decoder's attention: 4 M points took 20 GB.
pub const MAX_POINTS_PER_PROMPT: usize = 256;
/// Operations in one session journal (a click is one op; a day of clicking is thousands).
pub const MAX_OPS_PER_JOURNAL: usize = 100_000;
/// Object ids are 1..=255: the palette PNGs store an object per 8-bit index.
pub const MAX_OBJECT_ID: u32 = 255;

/// The one object-id check: ids are 1..=`MAX_OBJECT_ID` (0 is the background of the
/// annotation PNGs, which hold one byte per pixel).
pub fn check_object_id(id: u32) -> Result<(), String> {
    if (1..=MAX_OBJECT_ID).contains(&id) {
        Ok(())
    } else {
        Err(format!("object id {id} must be 1..={MAX_OBJECT_ID} (0 is the background of the annotation PNGs)"))
    }
}
/// Largest frame side in pixels (8K video is 7680 wide). Checked on image headers and
/// video stream parameters before anything is decoded, so a PNG claiming 100000² pixels
/// is refused without allocating for it.
pub const MAX_FRAME_SIDE: u32 = 8192;

/// The file's metadata, refusing anything but a regular file where a file is expected:
/// opening a FIFO for reading blocks until a writer comes, and a device such as
/// `/dev/zero` never ends. Follows symlinks (a link to a file is fine).
pub fn regular_file(path: &Path, what: &str) -> anyhow::Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path)
        .map_err(|e| bad_input(format!("{}: cannot read {what}: {}", path.display(), crate::util::io_reason(&e))))?;
    if meta.is_dir() {
        return Err(bad_input(format!("{}: is a directory, expected a {what} file", path.display())));
    }
    if !meta.is_file() {
        return Err(bad_input(format!(
            "{}: not a regular file (a FIFO, socket or device), expected a {what} file",
            path.display()
        )));
    }
    Ok(meta)
}

/// Reads a JSON input file of at most `MAX_JSON_BYTES`, never more than that from the
/// stream even if the file grows while it is read.
pub fn read_input_text(path: &Path, what: &str) -> anyhow::Result<String> {
    let too_big =
        || bad_input(format!("{}: {what} file larger than the {} MiB limit", path.display(), MAX_JSON_BYTES >> 20));
    let meta = regular_file(path, what)?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(too_big());
    }
    let file = std::fs::File::open(path)
        .map_err(|e| bad_input(format!("{}: cannot read {what}: {}", path.display(), crate::util::io_reason(&e))))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad_input(format!("{}: cannot read {what}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| bad_input(format!("{}: {what} file is not UTF-8 text", path.display())))
}

/// Refuses a frame size beyond `MAX_FRAME_SIDE` (or an empty one), naming the file.
pub fn check_frame_size(path: &Path, (width, height): (u32, u32)) -> anyhow::Result<()> {
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(bad_input(format!(
            "{}: frame size {width}x{height} is outside 1..={MAX_FRAME_SIDE} pixels a side",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_opening_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("prompts.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path alive for the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opening it would block for ever: returning at all is the test.
        let e = read_input_text(&fifo, "prompts").unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        assert_eq!(crate::util::exit::code_of(&e), crate::util::exit::BAD_INPUT);
    }

    #[test]
    fn a_device_and_a_directory_are_refused() {
        for p in ["/dev/zero", "/tmp"] {
            let e = read_input_text(Path::new(p), "session").unwrap_err();
            assert!(format!("{e:#}").starts_with(p), "{e:#}");
        }
    }

    #[test]
    fn a_json_file_over_the_limit_is_refused_before_it_is_read() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(MAX_JSON_BYTES + 1).unwrap();
        let e = read_input_text(f.path(), "prompts").unwrap_err();
        assert!(format!("{e:#}").contains("16 MiB limit"), "{e:#}");
    }

    #[test]
    fn frame_sizes_beyond_the_limit_are_refused() {
        assert!(check_frame_size(Path::new("a.png"), (7680, 4320)).is_ok());
        assert!(check_frame_size(Path::new("a.png"), (100_000, 100_000)).is_err());
        assert!(check_frame_size(Path::new("a.png"), (0, 10)).is_err());
    }
}
