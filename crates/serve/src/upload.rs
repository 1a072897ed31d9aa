//! `uploadVideo`: the official's checks and transcode, with the `ffprobe`/`ffmpeg`
//! commands (the official probes with PyAV and transcodes with the `ffmpeg` CLI):
//! H.264 (libx264, CRF 23), 24 fps, at most 1280 wide (landscape) or 720 high (portrait),
//! at most `max_upload_seconds` kept, yuv420p; named by the SHA-256 of the result under
//! `uploads/`. Everything happens in a private folder under the data folder that is
//! removed whatever the outcome, so a refused upload leaves nothing behind.
use crate::data::{DataDir, VideoEntry, UPLOADS};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub struct UploadLimits {
    pub max_bytes: u64,
    pub max_seconds: f64,
    pub max_input_seconds: f64,
}

/// What ffprobe says about a file.
#[derive(Debug, Default)]
struct Probe {
    video_streams: usize,
    width: Option<i64>,
    height: Option<i64>,
    rotation: f64,
    duration: Option<f64>,
    frames: Option<u64>,
}

/// Transcodes the uploaded `input` (already on disk, inside `incoming`), publishes it in
/// `uploads/`, and returns its `Video`.
pub async fn process(
    data: &DataDir,
    ffmpeg: &Path,
    ffprobe: &Path,
    limits: &UploadLimits,
    upload: std::fs::File,
    start_time_sec: Option<f64>,
    duration_time_sec: Option<f64>,
) -> Result<VideoEntry, String> {
    let work = tempfile::Builder::new()
        .prefix("upload-")
        .tempdir_in(data.incoming())
        .map_err(|e| format!("cannot receive the upload: {e}"))?;
    let in_path = work.path().join("in");
    let out_path = work.path().join("out.mp4");
    let size = copy_limited(upload, &in_path, limits.max_bytes).await?;
    if size == 0 {
        return Err("not valid video file (the upload is empty)".into());
    }
    let p = probe(ffprobe, &in_path).await.map_err(|_| "not valid video file".to_string())?;
    if p.video_streams == 0 {
        return Err("video container does not contain a video stream".into());
    }
    let (Some(mut w), Some(mut h)) = (p.width, p.height) else {
        return Err("video container does not contain width or height metadata".into());
    };
    if w <= 0 || h <= 0 {
        return Err("video container does not contain width or height metadata".into());
    }
    let duration = match p.duration {
        Some(d) if d > 0.0 && d.is_finite() => d,
        _ => return Err("video container does not contain time duration metadata".into()),
    };
    if duration > limits.max_input_seconds {
        return Err(format!(
            "the video is {duration:.1} s long, more than this server accepts ({:.0} s); trim it first",
            limits.max_input_seconds
        ));
    }
    if matches!(p.rotation.round() as i64, 90 | -90 | 270 | -270) {
        std::mem::swap(&mut w, &mut h);
    }
    let start = start_time_sec.unwrap_or(0.0);
    if !start.is_finite() || start < 0.0 {
        return Err(format!("startTimeSec must be 0 or more, got {start}"));
    }
    let keep = match duration_time_sec {
        Some(d) if !d.is_finite() || d <= 0.0 => return Err(format!("durationTimeSec must be more than 0, got {d}")),
        Some(d) => d.min(limits.max_seconds),
        None => limits.max_seconds,
    };
    let (tw, th) = target_size(w as f64, h as f64);
    transcode(ffmpeg, &in_path, &out_path, start, keep, tw, th).await?;
    let _ = tokio::fs::remove_file(&in_path).await;
    let out = probe(ffprobe, &out_path).await.unwrap_or_default();
    if out.frames.unwrap_or(0) == 0 || !out_path.is_file() {
        return Err("transcode produced empty video; check seek time or your input video".into());
    }
    let bytes = tokio::fs::read(&out_path).await.map_err(|e| format!("cannot read the transcoded video: {e}"))?;
    let hash = format!("{:x}", Sha256::digest(&bytes));
    let key = format!("{UPLOADS}/{hash}.mp4");
    let dest = data.uploads().join(format!("{hash}.mp4"));
    tokio::fs::rename(&out_path, &dest).await.map_err(|e| format!("cannot store the upload: {e}"))?;
    drop(work);
    Ok(VideoEntry {
        code: key.clone(),
        path: key,
        poster_path: None,
        width: out.width.unwrap_or(tw as i64) as i32,
        height: out.height.unwrap_or(th as i64) as i32,
    })
}

/// The official's output size: the aspect ratio kept within 1280 wide (landscape) or 720
/// high (portrait), truncated, then rounded up to even.
pub fn target_size(w: f64, h: f64) -> (u32, u32) {
    let r = w / h;
    let (w, h) = if r < 1.0 {
        let h = h.min(720.0);
        (h * r, h)
    } else {
        let w = w.min(1280.0);
        (w, w / r)
    };
    let (mut w, mut h) = (w as u32, h as u32);
    w += w % 2;
    h += h % 2;
    (w, h)
}

/// Copies the received upload to `dest`, refusing it past `max` bytes.
async fn copy_limited(src: std::fs::File, dest: &Path, max: u64) -> Result<u64, String> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let len = src.metadata().map(|m| m.len()).unwrap_or(0);
        if len > max {
            return Err(too_large(len, max));
        }
        let mut out = std::fs::File::create(&dest).map_err(|e| format!("cannot receive the upload: {e}"))?;
        let n =
            std::io::copy(&mut src.take(max + 1), &mut out).map_err(|e| format!("cannot receive the upload: {e}"))?;
        if n > max {
            return Err(too_large(n, max));
        }
        Ok(n)
    })
    .await
    .map_err(|e| format!("cannot receive the upload: {e}"))?
}

pub fn too_large(len: u64, max: u64) -> String {
    format!(
        "the upload is larger than this server accepts ({} MB at most{})",
        max.div_ceil(1 << 20),
        if len > 0 { format!(", got {:.1} MB", len as f64 / (1 << 20) as f64) } else { String::new() }
    )
}

async fn probe(ffprobe: &Path, path: &Path) -> Result<Probe, String> {
    let out = tokio::process::Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "format=duration:stream=codec_type,width,height,duration,nb_read_packets:stream_side_data=rotation:stream_tags=rotate",
            "-of",
            "json",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", ffprobe.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let num = |v: &serde_json::Value| -> Option<f64> {
        v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
    };
    let mut p = Probe::default();
    let container = v.pointer("/format/duration").and_then(num);
    let streams = v.get("streams").and_then(|s| s.as_array()).cloned().unwrap_or_default();
    let mut stream_duration = None;
    for s in streams.iter().filter(|s| s.get("codec_type").and_then(|t| t.as_str()) == Some("video")) {
        p.video_streams += 1;
        if p.video_streams > 1 {
            continue;
        }
        p.width = s.get("width").and_then(|x| x.as_i64());
        p.height = s.get("height").and_then(|x| x.as_i64());
        p.frames = s.get("nb_read_packets").and_then(num).map(|f| f as u64);
        stream_duration = s.get("duration").and_then(num);
        let side = s
            .get("side_data_list")
            .and_then(|l| l.as_array())
            .and_then(|l| l.iter().find_map(|d| d.get("rotation").and_then(num)));
        let tag = s.pointer("/tags/rotate").and_then(num);
        p.rotation = side.or(tag).unwrap_or(0.0);
    }
    // As the official: the longer of the container's and the stream's durations.
    p.duration = match (container, stream_duration) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(p)
}

async fn transcode(
    ffmpeg: &Path,
    input: &Path,
    output: &PathBuf,
    seek: f64,
    keep: f64,
    w: u32,
    h: u32,
) -> Result<(), String> {
    // The official's command line (data/transcoder.py), threads as its default.
    let mut command = tokio::process::Command::new(ffmpeg);
    command
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-threads",
            "1",
            "-ss",
            &format!("{seek:.2}"),
            "-t",
            &format!("{keep:.2}"),
        ])
        .arg("-i")
        .arg(input)
        .args(["-threads", "1", "-vf", &format!("fps=24,scale={w}:{h},setsar=1:1")])
        .args(["-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", "-threads", "1"])
        .arg(output)
        .arg("-y");
    crate::ffmpeg::run(ffmpeg, command, "transcoding failed").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_the_official_transcoder() {
        assert_eq!(target_size(320.0, 240.0), (320, 240));
        assert_eq!(target_size(1920.0, 1080.0), (1280, 720));
        assert_eq!(target_size(1080.0, 1920.0), (406, 720));
        assert_eq!(target_size(333.0, 201.0), (334, 202));
        assert_eq!(target_size(4000.0, 3000.0), (1280, 960));
    }
}
