//! Checkpoints: the official `.pt` format read bit-exactly and safely, safetensors, size
//! and version detection, one-line errors for bad files, and `sam2-tui weights inspect`.
//! Fixtures come from the real writers (`torch.save` of the official package's models,
//! `safetensors.torch.save_file`, Python's pickle) via tests/fixtures/make_checkpoints.py.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sam2_tui::model::config::{ModelSize, ModelVersion};
use sam2_tui::weights::{self, Checkpoint};
use tch::Kind;

/// The fixture folder, generated once (about 15 s) and reused while the script is unchanged.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_checkpoints.py")).unwrap();
        let stamp = format!("{:016x}", checksum(&script));
        let dir = common::fixture_cache("checkpoints").join(stamp);
        if !dir.join("DONE").is_file() {
            // Older generations are large (~600 MB); keep only the current one.
            for old in std::fs::read_dir(dir.parent().unwrap()).unwrap().flatten() {
                if old.path() != dir {
                    let _ = std::fs::remove_dir_all(old.path());
                }
            }
            common::run_fixture("make_checkpoints.py", &[dir.to_str().unwrap()]);
        }
        dir
    })
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The checksum make_checkpoints.py writes: Σ (byte_i + 1)·(i + 1) mod 2^64.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| acc.wrapping_add((b as u64 + 1).wrapping_mul(i as u64 + 1)))
}

fn tensor_bytes(t: &tch::Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let n = t.numel();
    let mut out = vec![0u8; n * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut out, n);
    out
}

/// Every key of the manifest is in the checkpoint with the same dtype, shape and bytes,
/// and the checkpoint holds nothing else.
fn assert_matches_python(ckpt: &Checkpoint, manifest: &str) {
    let text = std::fs::read_to_string(fixture(manifest)).unwrap();
    let m: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let ours: Vec<&String> = ckpt.tensors.keys().collect();
    let theirs: Vec<&String> = m.keys().collect();
    assert_eq!(ours, theirs, "key sets differ");
    for (key, want) in &m {
        let t = &ckpt.tensors[key];
        assert_eq!(weights::dtype_name(t.kind()), want["dtype"].as_str().unwrap(), "{key}: dtype");
        let shape: Vec<i64> = want["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(t.size(), shape, "{key}: shape");
        let sum: u64 = want["checksum"].as_str().unwrap().parse().unwrap();
        assert_eq!(checksum(&tensor_bytes(t)), sum, "{key}: bytes differ from what torch holds");
        assert_eq!(t.device(), tch::Device::Cpu);
    }
}

fn load_err(path: &Path) -> String {
    match weights::load(path) {
        Ok(c) => match weights::detect(&c) {
            Ok(d) => panic!("{} loaded as {d:?}", path.display()),
            Err(e) => format!("{e:#}"),
        },
        Err(e) => format!("{e:#}"),
    }
}

/// One line, starting with the path.
fn assert_one_line_naming(err: &str, path: &Path) {
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(err.starts_with(&format!("{}: ", path.display())), "does not start with the path: {err}");
}

#[test]
fn official_tiny_2_1_loads_bit_exactly_and_is_detected() {
    let path = fixture("sam2.1_hiera_tiny.pt");
    let ckpt = weights::load(&path).unwrap();
    let det = weights::detect(&ckpt).unwrap();
    assert_eq!(det.size, ModelSize::Tiny);
    assert_eq!(det.version, ModelVersion::V2_1);
    assert_eq!(det.parameters, 38_962_498);
    assert_eq!(det.tensors, 471);
    assert_eq!(det.dtype, Kind::Float);
    assert_matches_python(&ckpt, "sam2.1_hiera_tiny.manifest.json");
}

#[test]
fn official_tiny_2_0_loads_bit_exactly_and_is_detected_as_2_0() {
    let path = fixture("sam2_hiera_tiny.pt");
    let ckpt = weights::load(&path).unwrap();
    let det = weights::detect(&ckpt).unwrap();
    assert_eq!((det.size, det.version), (ModelSize::Tiny, ModelVersion::V2_0));
    assert_eq!(det.parameters, 38_962_498 - 16_512);
    assert_eq!(det.tensors, 468);
    assert_matches_python(&ckpt, "sam2_hiera_tiny.manifest.json");
}

#[test]
fn safetensors_with_the_same_keys_load_to_the_same_tensors() {
    let ckpt = weights::load(&fixture("sam2.1_hiera_tiny.safetensors")).unwrap();
    let det = weights::detect(&ckpt).unwrap();
    assert_eq!((det.size, det.version, det.parameters), (ModelSize::Tiny, ModelVersion::V2_1, 38_962_498));
    assert_matches_python(&ckpt, "sam2.1_hiera_tiny.manifest.json");
}

#[test]
fn a_bare_bf16_state_dict_loads_as_bf16() {
    let ckpt = weights::load(&fixture("sam2.1_hiera_tiny_bf16_bare.pt")).unwrap();
    let det = weights::detect(&ckpt).unwrap();
    assert_eq!((det.size, det.dtype, det.parameters), (ModelSize::Tiny, Kind::BFloat16, 38_962_498));
    assert_matches_python(&ckpt, "sam2.1_hiera_tiny_bf16_bare.manifest.json");
}

#[test]
fn views_with_strides_offsets_and_shared_storage_load_as_python_sees_them() {
    // transposed, sliced, every-other-column, 0-dim, fp16, bf16 with offset, Parameter
    let ckpt = weights::load(&fixture("views.pt")).unwrap();
    assert_matches_python(&ckpt, "views.manifest.json");
    let base = &ckpt.tensors["base"];
    assert!(ckpt.tensors["transposed"].equal(&base.tr()));
    assert!(ckpt.tensors["rows_2_to_5"].equal(&base.narrow(0, 2, 3)));
    // Not SAM 2, so detection says so.
    let err = format!("{:#}", weights::detect(&ckpt).unwrap_err());
    assert!(err.contains("not a SAM 2 checkpoint"), "{err}");
}

#[test]
fn a_reduce_of_os_system_in_a_torch_zip_is_refused_and_nothing_runs() {
    let marker = fixture("PWNED");
    let _ = std::fs::remove_file(&marker);
    for name in ["evil_system.pt", "evil_plain.pkl"] {
        let path = fixture(name);
        let err = load_err(&path);
        assert_one_line_naming(&err, &path);
        assert!(err.contains("'posix.system'") && err.contains("unsafe pickle"), "{err}");
        assert!(!marker.exists(), "{name}: the payload ran");
    }
}

#[test]
fn a_builtins_eval_payload_is_refused_naming_the_global() {
    let path = fixture("evil_eval.pt");
    let err = load_err(&path);
    assert_one_line_naming(&err, &path);
    assert!(err.contains("'builtins.eval'"), "{err}");
    assert!(!fixture("PWNED").exists());
}

#[test]
fn a_checkpoint_cut_in_half_is_a_one_line_truncation_error() {
    let dir = common::scratch("weights_truncated");
    let whole = std::fs::read(fixture("sam2.1_hiera_tiny_bf16_bare.pt")).unwrap();
    let path = dir.join("half.pt");
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let err = load_err(&path);
    assert_one_line_naming(&err, &path);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_corrupted_storage_byte_is_caught_by_the_crc() {
    let dir = common::scratch("weights_corrupt");
    let mut bytes = std::fs::read(fixture("views.pt")).unwrap();
    // Flip one byte in the middle of the first storage (after the pickle).
    let at = bytes.windows(7).position(|w| w == b"/data/0").unwrap() + 200;
    bytes[at] ^= 0x55;
    let path = dir.join("corrupt.pt");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&path);
    assert_one_line_naming(&err, &path);
    assert!(err.contains("CRC") || err.contains("corrupt"), "{err}");
}

#[test]
fn non_checkpoints_are_one_line_errors_naming_the_file() {
    let dir = common::scratch("weights_bad_files");
    let empty = dir.join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("notes.safetensors");
    std::fs::write(&text, b"hello, this is not a checkpoint\n").unwrap();
    let cases: [(PathBuf, &str); 6] = [
        (fixture("photo.pt"), "JPEG"),
        (empty, "empty file"),
        (text, "not a checkpoint"),
        (fixture("no_data_pkl.pt"), "no data.pkl"),
        (fixture("other_model.pt"), "not a SAM 2 checkpoint"),
        (dir.join("missing.pt"), "cannot open"),
    ];
    for (path, what) in cases {
        let err = load_err(&path);
        assert_one_line_naming(&err, &path);
        assert!(err.contains(what), "{}: expected '{what}' in: {err}", path.display());
    }
}

#[test]
fn a_sam2_file_with_a_part_missing_is_rejected_as_incomplete() {
    let mut ckpt = weights::load(&fixture("sam2.1_hiera_tiny_bf16_bare.pt")).unwrap();
    ckpt.tensors.retain(|k, _| !k.starts_with("memory_attention."));
    let err = format!("{:#}", weights::detect(&ckpt).unwrap_err());
    assert!(err.contains("incomplete") && err.contains("memory_attention"), "{err}");

    let mut ckpt = weights::load(&fixture("sam2.1_hiera_tiny_bf16_bare.pt")).unwrap();
    ckpt.tensors.remove("sam_mask_decoder.iou_token.weight");
    let err = format!("{:#}", weights::detect(&ckpt).unwrap_err());
    assert!(err.contains("38,962,498"), "{err}");
}

#[test]
fn a_size_mismatch_names_both_sizes() {
    let ckpt = weights::load(&fixture("sam2_hiera_tiny.pt")).unwrap();
    let det = weights::detect(&ckpt).unwrap();
    let path = Path::new("weights/sam2_hiera_tiny.pt");
    assert!(weights::check_requested(&det, Some(ModelSize::Tiny), None, path).is_ok());
    assert!(weights::check_requested(&det, None, Some(ModelVersion::V2_0), path).is_ok());
    let err = weights::check_requested(&det, Some(ModelSize::Large), None, path).unwrap_err().to_string();
    assert!(err.contains("tiny") && err.contains("large") && err.starts_with("weights/sam2_hiera_tiny.pt: "), "{err}");
    let err = weights::check_requested(&det, None, Some(ModelVersion::V2_1), path).unwrap_err().to_string();
    assert!(err.contains("SAM 2.0 tiny") && err.contains("SAM 2.1 tiny"), "{err}");
}

#[test]
fn cli_inspect_describes_a_good_file() {
    let path = fixture("sam2.1_hiera_tiny.pt");
    let out = Command::new(common::bin()).args(["weights", "inspect"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let bytes = weights::group(std::fs::metadata(&path).unwrap().len());
    for want in ["PyTorch zip archive", "SAM 2.1 tiny", "471", "38,962,498", "float32", &format!("{bytes} bytes")] {
        assert!(stdout.contains(want), "missing '{want}' in:\n{stdout}");
    }
}

#[test]
fn cli_inspect_fails_with_exit_2_and_one_line_on_a_bad_file() {
    let path = fixture("photo.pt");
    let out = Command::new(common::bin()).args(["weights", "inspect"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A file that is not a checkpoint is bad input: exit 2, as every command (README, Exit codes).
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()) && stderr.contains("JPEG"), "{stderr}");
}

/// A file:// mirror laid out as Meta's server, holding the official-format tiny 2.1, in
/// `dir/mirror`.
fn mirror_with_tiny(dir: &Path) {
    let release = dir.join("mirror/092824");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(fixture("sam2.1_hiera_tiny.pt"), release.join("sam2.1_hiera_tiny.pt")).unwrap();
}

/// `weights download tiny --dir out` from the mirror in `dir/mirror`.
fn download_from_mirror(dir: &Path, out: &Path) -> std::process::Output {
    Command::new(common::bin())
        .args(["weights", "download", "tiny", "--dir"])
        .arg(out)
        .env("SAM2_TUI_WEIGHTS_MIRROR", format!("file://{}", dir.join("mirror").display()))
        .output()
        .unwrap()
}

#[test]
fn download_from_a_mirror_verifies_and_places_the_checkpoint_and_a_second_run_keeps_it() {
    let dir = common::scratch("weights-mirror");
    mirror_with_tiny(&dir);
    let out = dir.join("weights");
    let download = || download_from_mirror(&dir, &out);
    let first = download();
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{said}{}", String::from_utf8_lossy(&first.stderr));
    assert!(said.contains("sam2.1_hiera_tiny.pt (SAM 2.1 tiny"), "{said}");
    let placed = std::fs::read(out.join("sam2.1_hiera_tiny.pt")).unwrap();
    assert!(placed == std::fs::read(fixture("sam2.1_hiera_tiny.pt")).unwrap(), "the mirror's bytes, whole");
    let second = download();
    assert!(String::from_utf8_lossy(&second.stdout).contains("is already here"), "{second:?}");
}

#[test]
fn a_download_never_replaces_a_file_at_the_official_name_that_is_not_that_checkpoint() {
    let dir = common::scratch("weights-occupied");
    mirror_with_tiny(&dir);
    // The user's own file under the official name: a SAM 2.0 checkpoint, valid but not 2.1.
    let out = dir.join("weights");
    std::fs::create_dir_all(&out).unwrap();
    let theirs = out.join("sam2.1_hiera_tiny.pt");
    std::fs::copy(fixture("sam2_hiera_tiny.pt"), &theirs).unwrap();
    let before = std::fs::read(&theirs).unwrap();
    let run = download_from_mirror(&dir, &out);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "bad input, refused before any download: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&theirs.display().to_string()) && err.contains("SAM 2.0 tiny"),
        "names the file and what it is: {err}"
    );
    assert!(err.contains("left as it is"), "{err}");
    assert!(std::fs::read(&theirs).unwrap() == before, "the user's file is untouched");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "nothing else written: {left:?}");
}

#[test]
fn a_download_that_stalls_fails_in_one_line_and_leaves_nothing_behind() {
    let dir = common::scratch("weights-stall");
    // A server that takes every connection and never answers.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = vec![];
        while let Ok((c, _)) = server.accept() {
            held.push(c);
        }
    });
    let out = dir.join("weights");
    let t0 = std::time::Instant::now();
    let run = Command::new(common::bin())
        .args(["weights", "download", "tiny", "--dir"])
        .arg(&out)
        .env("SAM2_TUI_WEIGHTS_MIRROR", format!("http://127.0.0.1:{port}/sam2"))
        .env("SAM2_TUI_DOWNLOAD_STALL_SECS", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(last.contains("download failed") && last.contains("timed out"), "{err}");
    // Three tries of two stalled seconds each, with curl's pauses between them.
    assert!(t0.elapsed().as_secs() < 30, "took {:?}", t0.elapsed());
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// How a download is interrupted.
enum Interrupt {
    /// SIGTERM to the command alone (the console quitting, `kill`).
    Term,
    /// SIGINT to its whole process group, the downloader too (ctrl-c in a terminal).
    CtrlC,
}

#[test]
fn an_interrupted_download_stops_its_transfer_and_leaves_nothing_behind() {
    interrupt_a_download(Interrupt::Term, "weights-interrupted-term");
    interrupt_a_download(Interrupt::CtrlC, "weights-interrupted-ctrl-c");
}

fn interrupt_a_download(how: Interrupt, scratch: &str) {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let dir = common::scratch(scratch);
    // A server that starts sending a big file and then holds the connection open.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let out = dir.join("weights");
    let mut run = Command::new(common::bin())
        .args(["weights", "download", "tiny", "--dir"])
        .arg(&out)
        .env("SAM2_TUI_WEIGHTS_MIRROR", format!("http://127.0.0.1:{port}/sam2"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let (mut transfer, _) = server.accept().unwrap();
    transfer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 200000000\r\n\r\n").unwrap();
    transfer.write_all(&[7u8; 1 << 16]).unwrap();
    let pid = run.id() as i32;
    // SAFETY: kill(2) on a child this test started and has not yet reaped, or on the
    // process group it leads.
    unsafe {
        match how {
            Interrupt::Term => libc::kill(pid, libc::SIGTERM),
            Interrupt::CtrlC => libc::kill(-pid, libc::SIGINT),
        }
    };
    let mut err = String::new();
    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{scratch}: interrupted, as the other commands report it: {err}");
    assert_eq!(err.trim_end().lines().last().map(|l| l.contains("interrupted")), Some(true), "{err}");
    // The downloader is gone with it: its end of the transfer is closed, not left running.
    transfer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut request = vec![0u8; 1 << 16];
    let closed = loop {
        match transfer.read(&mut request) {
            Ok(0) => break true,
            Ok(_) => continue, // the downloader's request
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(_) => break true, // reset
        }
    };
    assert!(closed, "{scratch}: the downloader still holds the transfer open");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{scratch}: the partial download is removed: {left:?}");
}
