//! The media layer, specified against the tools the reference uses: FFmpeg's own decode,
//! Pillow's JPEG decoding and bicubic resize, SAM 2's preprocessing, pycocotools, NumPy.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_fixture, scratch};
use image::RgbImage;
use sam2_tui::media::{self, outputs, overlay::OverlayWriter, prefetch::Prefetcher, preprocess};

/// Runs the system `ffmpeg` quietly; panics with its stderr on failure.
fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn has_encoder(name: &str) -> bool {
    let out = Command::new("ffmpeg").args(["-hide_banner", "-encoders"]).output().expect("ffmpeg runs");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().nth(1) == Some(name))
}

/// A testsrc2 clip: moving coloured patterns and a frame counter, so every frame differs.
fn test_clip(dir: &Path, name: &str, frames: usize, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let n = frames.to_string();
    let mut args = vec!["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-frames:v", &n];
    args.extend_from_slice(extra);
    let p = path.to_str().unwrap().to_string();
    args.push(&p);
    ffmpeg(&args);
    path
}

/// FFmpeg's own RGB decode of every frame.
fn ffmpeg_rgb_frames(path: &Path, w: usize, h: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            path.to_str().unwrap(),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout.chunks(w * h * 3).map(|c| c.to_vec()).collect()
}

/// `ffprobe -count_frames`: frames the decoder actually produces.
fn ffprobe_frame_count(path: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---- video files ---------------------------------------------------------------------

#[test]
fn mp4_frames_count_size_and_pixels_match_ffmpeg() {
    let dir = scratch("media_mp4_pixels");
    let clip = test_clip(&dir, "clip.mp4", 12, &["-pix_fmt", "yuv420p"]);
    let mut src = media::open(&clip).unwrap();
    assert_eq!(src.len(), 12);
    assert_eq!(src.size(), (320, 240));
    assert!((src.fps() - 10.0).abs() < 1e-3, "fps {}", src.fps());
    let reference = ffmpeg_rgb_frames(&clip, 320, 240);
    assert_eq!(reference.len(), 12);
    for (i, want) in reference.iter().enumerate() {
        let got = src.frame(i).unwrap();
        assert_eq!(got.dimensions(), (320, 240));
        assert_eq!(max_abs_diff(got.as_raw(), want), 0, "frame {i} differs from ffmpeg's decode");
    }
}

/// What the reference's video predictor reads from an `.mp4`: decord scales each decoded
/// picture straight to S×S with swscale's bilinear filter; the `ffmpeg` CLI's
/// `scale=S:S:flags=bilinear` to RGB24 gives decord's bytes (checked against decord when
/// `serve`'s frame extraction was built on it, see crates/serve/src/frames.rs).
fn decord_rgb_frames(path: &Path, side: usize) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", path.to_str().unwrap()])
        .args(["-vf", &format!("scale={side}:{side}:flags=bilinear"), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout.chunks(side * side * 3).map(|c| c.to_vec()).collect()
}

#[test]
fn video_frames_scaled_for_the_model_are_decords_and_the_full_size_frames_stay_as_they_were() {
    let dir = scratch("media_decord_scaling");
    // A small clip at two model sides (up and down), and an HD one tagged BT.709.
    let small = test_clip(&dir, "small.mp4", 6, &["-pix_fmt", "yuv420p"]);
    let hd = dir.join("hd.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=24",
        "-frames:v",
        "4",
        "-pix_fmt",
        "yuv420p",
        "-colorspace",
        "bt709",
        hd.to_str().unwrap(),
    ]);
    for (clip, (w, h), side) in [(&small, (320, 240), 256), (&small, (320, 240), 512), (&hd, (1280, 720), 1024)] {
        let mut src = media::open(clip).unwrap();
        assert!(src.scale_for_model(side as u32), "a video file scales frames for the model");
        let want = decord_rgb_frames(clip, side);
        let full = ffmpeg_rgb_frames(clip, w, h);
        // Backwards, so the decoder's seek-and-window path is covered too.
        for i in (0..want.len()).rev() {
            let got = src.model_frame(i).unwrap().expect("a model-side frame");
            assert_eq!(got.dimensions(), (side as u32, side as u32));
            let diff = max_abs_diff(got.as_raw(), &want[i]);
            assert_eq!(
                diff,
                0,
                "{}: frame {i} at {side}: differs from decord's scaling by up to {diff}",
                clip.display()
            );
            assert_eq!(max_abs_diff(src.frame(i).unwrap().as_raw(), &full[i]), 0, "full-size frame {i} changed");
        }
    }
    // Frame folders have no such scaling: the reference resizes those with Pillow.
    let folder = dir.join("frames");
    std::fs::create_dir_all(&folder).unwrap();
    solid_png(&folder.join("00000.png"), 9);
    let mut src = media::open(&folder).unwrap();
    assert!(!src.scale_for_model(256));
    assert!(src.model_frame(0).unwrap().is_none());
}

#[test]
fn mkv_and_webm_frame_counts_are_exact() {
    let dir = scratch("media_containers");
    let mut clips = vec![test_clip(&dir, "clip.mkv", 23, &["-c:v", "libx264", "-bf", "2"])];
    if has_encoder("libvpx-vp9") {
        clips.push(test_clip(&dir, "vp9.webm", 17, &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]));
    }
    if has_encoder("libvpx") {
        clips.push(test_clip(
            &dir,
            "vp8.webm",
            19,
            &["-c:v", "libvpx", "-auto-alt-ref", "1", "-lag-in-frames", "8", "-b:v", "1M"],
        ));
    }
    clips.push(test_clip(&dir, "mjpeg.avi", 9, &["-c:v", "mjpeg"]));
    for clip in clips {
        let mut src = media::open(&clip).unwrap();
        let want = ffprobe_frame_count(&clip);
        assert_eq!(src.len(), want, "{}", clip.display());
        // The last frame is really there, and matches FFmpeg's decode.
        let reference = ffmpeg_rgb_frames(&clip, 320, 240);
        let last = src.frame(want - 1).unwrap();
        assert!(max_abs_diff(last.as_raw(), &reference[want - 1]) <= 1, "{}: last frame differs", clip.display());
    }
}

#[test]
fn backwards_and_random_seeks_return_the_same_frames_as_sequential_decode() {
    let dir = scratch("media_seek");
    // Short GOPs with B-frames, so seeks land on keyframes and decode across reorderings.
    let clip = test_clip(&dir, "gop.mp4", 40, &["-c:v", "libx264", "-g", "8", "-bf", "3", "-pix_fmt", "yuv420p"]);
    let mut src = media::open(&clip).unwrap();
    let sequential: Vec<RgbImage> = (0..40).map(|i| src.frame(i).unwrap()).collect();
    // Every frame is distinct (testsrc2 moves), so a wrong index cannot pass.
    for w in sequential.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    let order: Vec<usize> = (0..40).rev().chain([7, 8, 3, 33, 16, 15, 0, 39, 24, 24, 9]).collect();
    for i in order {
        assert!(src.frame(i).unwrap() == sequential[i], "frame {i} after a seek differs from the sequential decode");
    }
}

#[test]
fn decoding_300_frames_in_sequence_keeps_memory_flat() {
    let dir = scratch("media_streaming");
    let clip = test_clip(&dir, "long.mp4", 300, &["-c:v", "libx264", "-preset", "ultrafast"]);
    let mut src = media::open(&clip).unwrap();
    assert_eq!(src.len(), 300);
    for i in 0..30 {
        src.frame(i).unwrap();
    }
    let before = rss_kib();
    for i in 30..300 {
        src.frame(i).unwrap();
    }
    let growth = rss_kib().saturating_sub(before);
    // 270 more frames of 320x240 RGB would be 62 MB if they were kept.
    assert!(growth < 8 * 1024, "RSS grew by {growth} KiB over 270 frames");
}

// ---- stills --------------------------------------------------------------------------

fn solid_png(path: &Path, value: u8) {
    RgbImage::from_pixel(6, 4, image::Rgb([value, 255 - value, 7])).save(path).unwrap();
}

#[test]
fn frame_folder_is_ordered_by_the_number_in_the_names() {
    let dir = scratch("media_folder");
    for n in [2u8, 10, 1] {
        solid_png(&dir.join(format!("{n}.png")), n);
    }
    std::fs::write(dir.join("notes.txt"), "not a frame").unwrap();
    let mut src = media::open(&dir).unwrap();
    assert_eq!(src.len(), 3);
    assert_eq!(src.size(), (6, 4));
    assert_eq!(src.fps(), 25.0);
    let firsts: Vec<u8> = (0..3).map(|i| src.frame(i).unwrap().get_pixel(0, 0)[0]).collect();
    assert_eq!(firsts, vec![1, 2, 10]);
}

#[test]
fn jpeg_frames_decode_exactly_as_pillow_does() {
    let dir = scratch("media_jpeg");
    let names = run_fixture("media_reference.py", &["images", dir.to_str().unwrap()]);
    let jpegs: Vec<&str> = names.lines().filter(|n| n.ends_with(".jpg")).collect();
    assert!(jpegs.len() >= 5);
    let mut args = vec!["decode", dir.to_str().unwrap()];
    args.extend(&jpegs);
    run_fixture("media_reference.py", &args);
    for name in jpegs {
        let mut src = media::open(&dir.join(name)).unwrap();
        assert_eq!(src.len(), 1);
        let got = src.frame(0).unwrap();
        let want = std::fs::read(dir.join(format!("{name}.rgb"))).unwrap();
        assert_eq!(got.as_raw().len(), want.len(), "{name}: size");
        let differing = got.as_raw().iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "{name}: {differing} bytes differ from Pillow (max {})",
            max_abs_diff(got.as_raw(), &want)
        );
    }
}

#[test]
fn jpeg_frame_folder_in_sam2_naming_reads_in_order() {
    let dir = scratch("media_jpeg_folder");
    for (i, v) in [(0, 20u8), (1, 120), (12, 220)] {
        RgbImage::from_pixel(16, 8, image::Rgb([v, v, v])).save(dir.join(format!("{i:05}.jpg"))).unwrap();
    }
    let mut src = media::open(&dir).unwrap();
    assert_eq!(src.len(), 3);
    let greys: Vec<u8> = (0..3).map(|i| src.frame(i).unwrap().get_pixel(3, 3)[1]).collect();
    assert!(greys[0] < greys[1] && greys[1] < greys[2], "{greys:?}");
}

#[test]
fn a_single_image_is_a_one_frame_video() {
    let dir = scratch("media_single");
    let path = dir.join("still.png");
    solid_png(&path, 42);
    let mut src = media::open(&path).unwrap();
    assert_eq!((src.len(), src.size()), (1, (6, 4)));
    assert_eq!(src.frame(0).unwrap().get_pixel(5, 3).0, [42, 213, 7]);
    let err = src.frame(1).unwrap_err().to_string();
    assert!(err.contains("still.png") && err.contains("out of range"), "{err}");
}

// ---- errors --------------------------------------------------------------------------

fn open_err(path: &Path) -> String {
    match media::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_get_one_line_errors_naming_the_file() {
    let dir = scratch("media_errors");
    let missing = open_err(&dir.join("missing.mp4"));
    assert!(missing.contains("missing.mp4") && missing.contains("no such file"), "{missing}");

    std::fs::write(dir.join("notes.mp4"), "this is not a video at all").unwrap();
    let not_video = open_err(&dir.join("notes.mp4"));
    assert!(not_video.contains("notes.mp4"), "{not_video}");

    // An audio-only file has no video stream.
    let audio = dir.join("tone.m4a");
    ffmpeg(&["-f", "lavfi", "-i", "sine=duration=0.2", audio.to_str().unwrap()]);
    let no_video = open_err(&audio);
    assert!(no_video.contains("tone.m4a: no video stream"), "{no_video}");

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = open_err(&empty);
    assert!(e.contains("empty/: no .jpg/.png frames"), "{e}");

    let unnumbered = dir.join("unnumbered");
    std::fs::create_dir_all(&unnumbered).unwrap();
    solid_png(&unnumbered.join("00001.png"), 1);
    solid_png(&unnumbered.join("cover.png"), 2);
    let e = open_err(&unnumbered);
    assert!(e.contains("cover.png") && e.contains("no number"), "{e}");

    let corrupt = dir.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    solid_png(&corrupt.join("00000.png"), 1);
    // A broken header is found when the folder is opened (every frame's header is read
    // then, to refuse mixed sizes before any model work)…
    std::fs::write(corrupt.join("00007.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let e = open_err(&corrupt);
    assert!(e.contains("00007.png") && e.contains("cannot read image header"), "{e}");
    // …broken pixel data only when the frame is decoded.
    let whole = std::fs::read(corrupt.join("00000.png")).unwrap();
    std::fs::write(corrupt.join("00007.png"), &whole[..43]).unwrap();
    let mut src = media::open(&corrupt).unwrap();
    let e = src.frame(1).unwrap_err().to_string();
    assert!(e.starts_with("frame 00007.png: decode failed:"), "{e}");

    let clip = test_clip(&dir, "clip.mp4", 10, &[]);
    let mut src = media::open(&clip).unwrap();
    let e = src.frame(120).unwrap_err().to_string();
    assert!(e.ends_with("clip.mp4: frame 120 out of range (10 frames)"), "{e}");
    for e in [missing, not_video, no_video] {
        assert!(!e.contains('\n'), "multi-line error: {e}");
    }
}

// ---- preprocessing -------------------------------------------------------------------

#[test]
fn bicubic_resize_is_byte_identical_to_pillow() {
    let dir = scratch("media_resize");
    run_fixture("media_reference.py", &["images", dir.to_str().unwrap()]);
    let cases: &[(&str, u32, u32)] = &[
        ("noise_960x540.png", 1024, 1024),
        ("noise_960x540.png", 256, 256),
        ("noise_960x540.png", 512, 512),
        ("gradient_640x480.png", 1024, 1024),
        ("gradient_640x480.png", 256, 256),
        ("checker_640x480.png", 512, 512),
        ("checker_640x480.png", 333, 97),
        ("noise_37x23.png", 1024, 1024),
        ("noise_37x23.png", 256, 256),
        ("noise_37x23.png", 37, 100),
        ("noise_37x23.png", 10, 23),
    ];
    let specs: Vec<String> = cases.iter().map(|(n, w, h)| format!("{n}:{w}:{h}")).collect();
    let mut args = vec!["resize", dir.to_str().unwrap()];
    args.extend(specs.iter().map(|s| s.as_str()));
    run_fixture("media_reference.py", &args);
    for (name, w, h) in cases {
        let img = image::open(dir.join(name)).unwrap().to_rgb8();
        let got = preprocess::resize_bicubic_pillow(&img, *w, *h);
        let want = std::fs::read(dir.join(format!("{name}.{w}x{h}.rgb"))).unwrap();
        assert_eq!(got.dimensions(), (*w, *h));
        let differing = got.as_raw().iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name} -> {w}x{h}: {differing} bytes differ from Pillow");
    }
}

#[test]
fn model_input_is_bit_identical_to_the_reference_preprocessing() {
    let dir = scratch("media_model_input");
    run_fixture("media_reference.py", &["images", dir.to_str().unwrap()]);
    for (name, size) in [("gradient_640x480.png", 1024u32), ("noise_37x23.png", 64)] {
        let out = dir.join(format!("{name}.{size}.f32"));
        let png = dir.join(name);
        run_fixture(
            "media_reference.py",
            &["model_input", png.to_str().unwrap(), &size.to_string(), out.to_str().unwrap()],
        );
        let want: Vec<f32> =
            std::fs::read(&out).unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let img = image::open(&png).unwrap().to_rgb8();
        let t = preprocess::to_model_input(&img, size);
        assert_eq!(t.size(), vec![1, 3, size as i64, size as i64]);
        assert_eq!(t.kind(), tch::Kind::Float);
        let got = Vec::<f32>::try_from(t.view([-1])).unwrap();
        let differing = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{name} at {size}: {differing} values differ");
    }
}

// ---- prefetch ------------------------------------------------------------------------

#[test]
fn prefetcher_serves_planned_frames_from_its_queue_in_either_direction() {
    let dir = scratch("media_prefetch");
    let clip = test_clip(&dir, "clip.mp4", 20, &["-c:v", "libx264", "-g", "5"]);
    let mut direct = media::open(&clip).unwrap();
    let mut pf = Prefetcher::new(media::open(&clip).unwrap(), 64);
    assert_eq!(pf.len(), 20);
    pf.hint(5..20);
    for i in 5..20 {
        let f = pf.get(i).unwrap();
        assert_eq!(f.index, i);
        assert!(f.image == direct.frame(i).unwrap(), "frame {i}");
        assert_eq!(f.pixels.size(), vec![1, 64, 64, 3]);
    }
    assert_eq!((pf.hits, pf.misses), (15, 0));
    pf.hint((0..=9).rev());
    for i in (0..=9).rev() {
        let f = pf.get(i).unwrap();
        assert!(f.image == direct.frame(i).unwrap(), "frame {i} (reverse)");
        let want = preprocess::to_model_input(&f.image, 64);
        assert!(f.input().equal(&want));
    }
    assert_eq!((pf.hits, pf.misses), (25, 0));
}

#[test]
fn prefetcher_with_parallel_resizers_still_delivers_every_frame_in_the_asked_order() {
    let dir = scratch("media_prefetch_parallel");
    let clip = test_clip(&dir, "clip.mp4", 24, &["-c:v", "libx264", "-g", "5"]);
    let mut direct = media::open(&clip).unwrap();
    let mut pf = Prefetcher::with_resizers(media::open(&clip).unwrap(), 48, tch::Device::Cpu, 3);
    pf.hint(0..24);
    for i in 0..24 {
        let f = pf.get(i).unwrap();
        assert_eq!(f.index, i);
        assert!(f.image == direct.frame(i).unwrap(), "frame {i}");
        assert!(f.input().equal(&preprocess::to_model_input(&f.image, 48)), "frame {i} input");
    }
    assert_eq!((pf.hits, pf.misses), (24, 0));
    // Skipping ahead within the plan is still a hit; the frames jumped over are dropped.
    pf.hint((0..24).rev());
    assert_eq!(pf.get(23).unwrap().index, 23);
    assert_eq!(pf.get(20).unwrap().index, 20);
    assert!(pf.get(19).unwrap().image == direct.frame(19).unwrap());
    assert_eq!((pf.hits, pf.misses), (27, 0));
}

/// A source whose first frame is huge and the rest tiny: one resizer spends a long time
/// on frame 0 while the others race through the frames after it.
struct OneSlowFrame {
    frames: usize,
}

impl media::FrameSource for OneSlowFrame {
    fn len(&self) -> usize {
        self.frames
    }
    fn size(&self) -> (u32, u32) {
        (16, 16)
    }
    fn fps(&self) -> f32 {
        25.0
    }
    fn frame(&mut self, index: usize) -> anyhow::Result<RgbImage> {
        let side = if index == 0 { 4096 } else { 16 };
        Ok(RgbImage::from_pixel(side, side, image::Rgb([index as u8, 7, 9])))
    }
}

#[test]
fn prefetcher_with_a_resizer_stalled_on_one_frame_neither_loses_the_frames_after_it_nor_runs_away() {
    // Before: while `get(0)` waited, the other resizers delivered frames far past the
    // window; `get` dropped them, and a later `get` of one of them waited forever (CI hung
    // here). Run in a thread so a hang is a failure with a message, not a stuck suite.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pf = Prefetcher::with_resizers(Box::new(OneSlowFrame { frames: 300 }), 48, tch::Device::Cpu, 3);
        pf.hint(0..300);
        let mut most_held = 0;
        for i in 0..300 {
            let f = pf.get(i).unwrap();
            assert_eq!((f.index, f.image.get_pixel(0, 0)[0]), (i, i as u8));
            most_held = most_held.max(pf.frames_held());
        }
        done_tx.send((pf.hits, pf.misses, most_held)).unwrap();
    });
    let (hits, misses, most_held) = done_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the prefetcher delivered every planned frame (it hung or panicked)");
    assert_eq!((hits, misses), (300, 0));
    // Memory stays at a handful of frames whatever the stall: the decoder waits.
    assert!(most_held <= Prefetcher::most_ahead(3), "{most_held} frames held ahead");
}

#[test]
fn prefetcher_decodes_unplanned_frames_directly_and_follows_on() {
    let dir = scratch("media_prefetch_miss");
    let clip = test_clip(&dir, "clip.mp4", 12, &[]);
    let mut direct = media::open(&clip).unwrap();
    let mut pf = Prefetcher::new(media::open(&clip).unwrap(), 32);
    pf.hint(0..12);
    assert!(pf.get(0).unwrap().image == direct.frame(0).unwrap());
    // A jump the plan did not foresee, then the frames after it.
    assert!(pf.get(9).unwrap().image == direct.frame(9).unwrap());
    assert!(pf.get(10).unwrap().image == direct.frame(10).unwrap());
    assert!(pf.get(11).unwrap().image == direct.frame(11).unwrap());
    assert_eq!(pf.misses, 1);
    assert_eq!(pf.hits, 3);
    let e = pf.get(12).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn prefetcher_forwards_decode_errors_for_the_frame_asked() {
    let dir = scratch("media_prefetch_error");
    for i in 0..4 {
        solid_png(&dir.join(format!("{i:05}.png")), i as u8);
    }
    // A sound header (the folder opens: every header is read then) over broken pixels.
    let whole = std::fs::read(dir.join("00002.png")).unwrap();
    std::fs::write(dir.join("00002.png"), &whole[..43]).unwrap();
    let mut pf = Prefetcher::new(media::open(&dir).unwrap(), 16);
    pf.hint(0..4);
    assert!(pf.get(0).is_ok());
    assert!(pf.get(1).is_ok());
    let e = pf.get(2).unwrap_err().to_string();
    assert!(e.contains("00002.png: decode failed"), "{e}");
    assert!(pf.get(3).is_ok());
    assert_eq!(pf.hits, 4);
}

// ---- outputs -------------------------------------------------------------------------

fn rect_logits(w: usize, h: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> Vec<f32> {
    let mut v = vec![-3.5f32; w * h];
    for y in y0..y1 {
        for x in x0..x1 {
            v[y * w + x] = 2.25 + (x + y) as f32 * 0.125;
        }
    }
    v
}

#[test]
fn output_directory_reads_back_with_pycocotools_pillow_and_numpy() {
    let dir = scratch("media_outputs");
    let out = dir.join("out");
    let (w, h) = (9usize, 7usize);
    let info =
        outputs::VideoInfo { width: w as u32, height: h as u32, frames: 3, fps: 10.0, source: "clip.mp4".into() };
    let mut writer = outputs::OutputWriter::new(&out, info.clone(), "sam2.1_hiera_tiny", true).unwrap();
    let stale = rect_logits(w, h, 0, 0, 9, 7);
    writer.add_logits(0, 1, &stale, 0.1).unwrap();
    let a = rect_logits(w, h, 1, 1, 5, 4);
    let b = rect_logits(w, h, 3, 2, 8, 6);
    let t = |v: &[f32]| tch::Tensor::from_slice(v).reshape([h as i64, w as i64]);
    writer.add(1, 1, &t(&a), 0.9).unwrap();
    writer.add(1, 2, &t(&b), 0.8).unwrap();
    writer.add(2, 2, &t(&b), 0.7).unwrap();
    // A later propagation overwrites frame 0 (after its PNG was already written).
    writer.add(0, 1, &t(&a), 0.95).unwrap();
    assert!(out.join("annotations/00001.png").exists(), "frames are written as the stream moves on");
    assert!(!out.join("masks.json").exists(), "masks.json comes last");
    writer.finish().unwrap();

    let summary: serde_json::Value =
        serde_json::from_str(&run_fixture("media_reference.py", &["read_outputs", out.to_str().unwrap()])).unwrap();
    assert_eq!(summary["video"]["width"], 9);
    assert_eq!(summary["video"]["frames"], 3);
    assert_eq!(summary["video"]["source"], "clip.mp4");
    assert_eq!(summary["model"], "sam2.1_hiera_tiny");
    let frames = summary["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    let pixels = |x0: usize, y0: usize, x1: usize, y1: usize| -> serde_json::Value {
        let mut p = vec![];
        for y in y0..y1 {
            for x in x0..x1 {
                p.push(serde_json::json!([y, x]));
            }
        }
        serde_json::Value::Array(p)
    };
    // Frame 0: the overwrite won, with its score.
    let f0 = &frames[0];
    assert_eq!(f0["objects"].as_array().unwrap().len(), 1);
    assert_eq!(f0["objects"][0]["pixels"], pixels(1, 1, 5, 4));
    assert!((f0["objects"][0]["score"].as_f64().unwrap() - 0.95).abs() < 1e-6);
    // Frame 1: two objects, decoded by pycocotools exactly.
    let f1 = &frames[1];
    assert_eq!(f1["objects"][0]["id"], 1);
    assert_eq!(f1["objects"][0]["pixels"], pixels(1, 1, 5, 4));
    assert_eq!(f1["objects"][1]["pixels"], pixels(3, 2, 8, 6));
    assert_eq!(f1["objects"][1]["coco_area"], 20);
    for f in frames {
        assert_eq!(f["png_mode"], "P");
        assert_eq!(f["png_size"], serde_json::json!([9, 7]));
        assert_eq!(f["png_palette_head"], serde_json::json!([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]));
    }
    // Palette indices are object ids; the overlap (x 3..5, y 2..4) goes to the smaller id.
    let idx = &f1["png_index"];
    assert_eq!(idx[2][3], 1);
    assert_eq!(idx[5][7], 2);
    assert_eq!(idx[0][0], 0);
    assert_eq!(f1["png_counts"], serde_json::json!({"0": 63 - 12 - 16, "1": 12, "2": 16}));
    assert_eq!(frames[0]["png_counts"], serde_json::json!({"0": 51, "1": 12}));
    // Logits: float32, C order, latest values.
    let logits = &summary["logits"];
    assert_eq!(logits.as_object().unwrap().len(), 4);
    let l0 = &logits["1/00000.npy"];
    assert_eq!(l0["dtype"], "float32");
    assert_eq!(l0["shape"], serde_json::json!([7, 9]));
    assert_eq!(l0["fortran"], false);
    let values: Vec<f32> = l0["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(values, a);
}

#[test]
fn output_writer_refuses_what_it_cannot_write() {
    let dir = scratch("media_outputs_bad");
    let info = outputs::VideoInfo { width: 4, height: 3, frames: 2, fps: 25.0, source: "x".into() };
    let mut w = outputs::OutputWriter::new(&dir, info, "m", false).unwrap();
    let ok = vec![1.0f32; 12];
    assert!(w.add_logits(0, 0, &ok, 1.0).unwrap_err().to_string().contains("object id 0"));
    assert!(w.add_logits(2, 1, &ok, 1.0).unwrap_err().to_string().contains("out of range"));
    let wrong = tch::Tensor::zeros([3, 5], (tch::Kind::Float, tch::Device::Cpu));
    assert!(w.add(0, 1, &wrong, 1.0).unwrap_err().to_string().contains("do not match"));
    w.add_logits(1, 1, &ok, 1.0).unwrap();
    w.finish().unwrap();
    assert!(!dir.join("logits").exists());
}

#[test]
fn overlay_video_decodes_back_with_every_frame_and_coloured_masks() {
    let dir = scratch("media_overlay");
    let (w, h) = (101u32, 61u32); // odd on purpose
    let path = dir.join("overlay.mp4");
    let mut ov = OverlayWriter::create(&path, w, h, 12.0).unwrap();
    let grey = RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
    let mut mask = vec![0u8; (w * h) as usize];
    for y in 10..50 {
        for x in 20..80 {
            mask[(y * w + x) as usize] = 1;
        }
    }
    for _ in 0..7 {
        ov.write(&grey, &[(1, &mask)]).unwrap();
    }
    assert!(!path.exists(), "the video appears only when finished");
    ov.finish().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let mut back = media::open(&path).unwrap();
    assert_eq!(back.len(), 7);
    // 4:2:0 video needs even sides: an odd size gains one repeated edge row/column.
    assert_eq!(back.size(), (w + 1, h + 1));
    let last = back.frame(6).unwrap();
    let inside = last.get_pixel(50, 30).0;
    let outside = last.get_pixel(5, 5).0;
    let color = sam2_tui::media::blend::object_color(1);
    let expect = color.map(|c| ((128.0 + c as f32) / 2.0).round() as u8);
    assert!(max_abs_diff(&inside, &expect) <= 12, "inside {inside:?}, expected about {expect:?}");
    assert!(max_abs_diff(&outside, &[128, 128, 128]) <= 4, "outside {outside:?}");
}

// ---- bundled demo --------------------------------------------------------------------

#[test]
fn demo_clip_and_prompts_are_usable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clip = root.join("assets/demo.mp4");
    assert!(std::fs::metadata(&clip).unwrap().len() < 300 * 1024);
    let mut src = media::open(&clip).unwrap();
    assert_eq!(src.len(), 24);
    let (w, h) = src.size();
    let text = std::fs::read_to_string(root.join("assets/demo_prompts.json")).unwrap();
    let prompts: sam2_tui::session::journal::PromptsFile = serde_json::from_str(&text).unwrap();
    assert!(!prompts.objects.is_empty());
    let frame0 = src.frame(0).unwrap();
    for o in &prompts.objects {
        for p in &o.points {
            assert!(p.x >= 0.0 && p.y >= 0.0 && (p.x as u32) < w && (p.y as u32) < h);
            // Prompts sit on a shape, not on the grey-ish background.
            let px = frame0.get_pixel(p.x as u32, p.y as u32).0;
            let spread = px.iter().max().unwrap() - px.iter().min().unwrap();
            assert!(spread > 60, "object {} prompt at ({}, {}) is on {px:?}", o.id, p.x, p.y);
        }
    }
}
