//! `sam2-tui bench`: FPS, per-stage latency, memory and crashes per model size × device ×
//! object count, each row a supervised propagation over a synthetic clip with one click
//! per object on frame 0 (for several objects, a grid: `bench::clip::clicks`); with more
//! than one object count, the marginal cost of one more object per frame.
//! `--streams N` measures N videos tracked at once in one worker against one alone
//! (`bench::streams`).
//! See `crate::bench` for what is measured and how.
use crate::bench::{clip, machine::Machine, measure, reference, report, streams};
use crate::device::{DeviceChoice, Precision};
use crate::model::config::{ModelSize, ModelVersion};
use crate::util::bad_input;
use anyhow::bail;
use measure::{RowResult, RowSpec, RowStatus};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "tiny,small,base_plus,large")]
    pub sizes: Vec<ModelSize>,
    /// Devices to measure (default: cpu, plus cuda and mps where available). A device
    /// that is not available gets an "unavailable" row.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<DeviceChoice>,
    /// Objects to track, one click each on frame 0 (a grid over the frame for more than
    /// one); a list measures each count and reports the marginal cost of one more
    /// object per frame, e.g. `--objects 1,4,16`. The reference (`--reference`) tracks
    /// the same clicks with its per-object loop.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = parse_objects)]
    pub objects: Vec<usize>,
    /// Videos tracked at once in one worker (each the clip with the same clicks, its own
    /// session), propagated in lockstep: reports the aggregate and per-stream FPS and the
    /// ratio to one stream alone, measured in the same run (instead of the usual rows).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub streams: Option<u32>,
    /// Frames in the clip (default: 8 on cpu, 200 on an accelerator).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Size of the synthetic frames, WIDTHxHEIGHT.
    #[arg(long, default_value = "960x540", value_parser = parse_resolution)]
    pub resolution: (u32, u32),
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Propagations per row; on an accelerator the first is a warm-up left out of the
    /// medians (default: 1 on cpu, 3 on an accelerator).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Where to look for the official checkpoints (default: weights/ and the other usual
    /// places). A size without one is measured with random-init weights, labelled so.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// One checkpoint file to measure (with a single --sizes entry).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Measure on this frame folder instead of a synthetic clip (all its frames).
    #[arg(long)]
    pub frames_dir: Option<PathBuf>,
    /// CPU threads for the engine (OMP_NUM_THREADS of the worker).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the results, the machine and the settings as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also time the official Python predictor (scripts/bench_reference.py, needs the
    /// `sam2` package) on the same frames and checkpoint, before each row.
    #[arg(long)]
    pub reference: bool,
    /// Model input size (1024 for the official models; smaller only for tests).
    #[arg(long, default_value_t = 1024, hide = true, value_parser = crate::model::config::parse_image_size)]
    pub image_size: i64,
    /// Config file whose [engine] and [supervisor] settings the rows run under (worker
    /// environment, threads, timeouts); each row sets its own size, device and precision.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn parse_objects(s: &str) -> Result<usize, String> {
    let max = crate::limits::MAX_OBJECT_ID as usize - 1;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}': expected an object count from 1 to {max}")),
    }
}

fn parse_resolution(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}': expected WIDTHxHEIGHT, e.g. 960x540"))?;
    let w: u32 = w.trim().parse().map_err(|_| format!("'{s}': bad width"))?;
    let h: u32 = h.trim().parse().map_err(|_| format!("'{s}': bad height"))?;
    if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
        return Err(format!("'{s}': width and height must be 16..8192"));
    }
    Ok((w, h))
}

/// Where clips and random-init checkpoints are kept between runs.
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("SAM2_TUI_CACHE")
        .map(PathBuf::from)
        .or_else(|| directories::ProjectDirs::from("", "", "sam2-tui").map(|d| d.cache_dir().to_path_buf()));
    base.unwrap_or_else(std::env::temp_dir).join("bench")
}

/// Why a device cannot be measured here, or None when it can.
fn unavailable(device: DeviceChoice) -> Option<&'static str> {
    match device {
        DeviceChoice::Cuda if !tch::Cuda::is_available() => Some("CUDA is not available on this machine"),
        DeviceChoice::Mps if !tch::utils::has_mps() => Some("MPS is not available on this machine"),
        _ => None,
    }
}

/// The checkpoint for one size: --checkpoint, else the official file (in --checkpoint-dir
/// or the usual places), else a random-init one in the cache (a `.pt` in the official
/// layout when the reference must read it too; the reference script writes that one).
fn checkpoint_for(a: &Args, size: ModelSize, cache: &Path) -> anyhow::Result<(PathBuf, ModelVersion, bool)> {
    let real = match (&a.checkpoint, &a.checkpoint_dir) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(d)) => {
            Some(d.join(crate::weights::official::file_name(size, ModelVersion::V2_1))).filter(|p| p.is_file())
        }
        (None, None) => Some(crate::weights::default_checkpoint(size, ModelVersion::V2_1)).filter(|p| p.is_file()),
    };
    if let Some(path) = real {
        let det = super::checks::checkpoint(&path, Some(size))?;
        let random = crate::model::random_init::is_random_init(&path);
        return Ok((path, det.version, random));
    }
    let stem = format!("sam2.1_hiera_{}.random-init", size.name());
    if a.reference {
        return Ok((cache.join(format!("{stem}.pt")), ModelVersion::V2_1, true));
    }
    let path = cache.join(format!("{stem}.safetensors"));
    if !path.is_file() {
        eprintln!("bench: no {size} weights found; writing random-init ones to {}", path.display());
        crate::model::random_init::write_random_checkpoint(&path, size, ModelVersion::V2_1, 0)?;
    }
    Ok((path, ModelVersion::V2_1, true))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.sizes.is_empty() {
        return Err(bad_input("--sizes: give at least one model size"));
    }
    if a.checkpoint.is_some() && a.sizes.len() != 1 {
        return Err(bad_input("--checkpoint measures one file: give exactly one --sizes entry"));
    }
    if a.runs == Some(0) || a.frames == Some(0) {
        return Err(bad_input("--runs and --frames must be at least 1"));
    }
    if a.streams.is_some() && (a.reference || a.objects.len() > 1) {
        return Err(bad_input(
            "--streams measures one object count against itself alone: give one --objects value, and no --reference \
             (the reference tracks one video at a time)",
        ));
    }
    let cache = cache_dir();
    let mut devices = a.devices.clone();
    if devices.is_empty() {
        devices.push(DeviceChoice::Cpu);
        devices.extend([DeviceChoice::Cuda, DeviceChoice::Mps].into_iter().filter(|d| unavailable(*d).is_none()));
    }
    // `auto` is measured as whatever it resolves to, and named so in the row.
    for d in devices.iter_mut() {
        if *d == DeviceChoice::Auto {
            *d = crate::device::choice_of(crate::device::DeviceChoiceExt::resolve(DeviceChoice::Auto)?);
        }
    }
    devices.dedup();
    let given_clip = match &a.frames_dir {
        Some(dir) => {
            let src = crate::media::open(dir)?;
            let (w, h) = src.size();
            Some((dir.canonicalize().unwrap_or_else(|_| dir.clone()), w, h, src.len()))
        }
        None => None,
    };

    let mut machine = Machine::probe();
    if let Some(n) = a.streams {
        return run_streams(&a, n as usize, &devices, &cache, given_clip.as_ref(), machine);
    }
    let mut rows: Vec<RowResult> = vec![];
    let mut clips: (Option<PathBuf>, Option<PathBuf>) = (None, None);
    for &device in &devices {
        let on_cpu = device == DeviceChoice::Cpu;
        for (&size, &objects) in a.sizes.iter().flat_map(|s| a.objects.iter().map(move |n| (s, n))) {
            if let Some(why) = unavailable(device) {
                let mut r = RowResult::unavailable(size, device, a.precision, why);
                r.objects = objects;
                rows.push(r);
                continue;
            }
            let row = bench_row(&a, size, device, objects, &cache, given_clip.as_ref(), &mut clips, on_cpu)
                .unwrap_or_else(|e| {
                    let mut r = RowResult::empty(size, device, a.precision, RowStatus::Failed);
                    r.objects = objects;
                    r.error = Some(format!("{e:#}"));
                    r
                });
            if device == DeviceChoice::Cuda {
                if let Some(n) = &row.device_name {
                    machine.add_gpu(n);
                }
            }
            if device == DeviceChoice::Mps {
                machine.add_gpu("Apple MPS");
            }
            eprintln!("bench: {}", report::table(std::slice::from_ref(&row))[1..].join("\n       "));
            rows.push(row);
        }
    }

    for line in report::table(&rows) {
        println!("{line}");
    }
    let marginal = report::marginal_costs(&rows);
    for m in &marginal {
        println!("{}", m.line());
    }
    if let Some(path) = &a.json {
        let (w, h) = given_clip.as_ref().map(|c| (c.1, c.2)).unwrap_or(a.resolution);
        let clicks = clip::clicks(w, h, a.objects.iter().copied().max().unwrap_or(1));
        let (cx, cy) = clicks[0];
        let settings = report::Settings {
            resolution: (w, h),
            image_size: a.image_size,
            precision: a.precision.to_string(),
            threads: a.threads,
            click: if a.objects == [1] {
                format!("positive ({cx:.1}, {cy:.1}) on frame 0, object 1")
            } else {
                format!(
                    "one positive click per object on frame 0: object 1 at ({cx:.1}, {cy:.1}) alone, else a grid \
                     ({} for {} objects)",
                    clicks.iter().map(|(x, y)| format!("({x:.1}, {y:.1})")).collect::<Vec<_>>().join(" "),
                    clicks.len()
                )
            },
            frames_dir_cpu: clips.0.map(|p| p.display().to_string()),
            frames_dir_accelerator: clips.1.map(|p| p.display().to_string()),
        };
        report::Report { machine, settings, rows: rows.clone(), marginal }.write_json(path)?;
        eprintln!("bench: wrote {}", path.display());
    }
    if rows.iter().any(|r| r.status == RowStatus::Failed) {
        bail!(
            "{} of {} rows failed (see the table)",
            rows.iter().filter(|r| r.status == RowStatus::Failed).count(),
            rows.len()
        );
    }
    Ok(())
}

/// `--streams N`: per size and device, one stream alone then N at once.
fn run_streams(
    a: &Args,
    n: usize,
    devices: &[DeviceChoice],
    cache: &Path,
    given_clip: Option<&(PathBuf, u32, u32, usize)>,
    machine: Machine,
) -> anyhow::Result<()> {
    let objects = a.objects.first().copied().unwrap_or(1);
    let mut results = vec![];
    let mut failed = 0;
    for &device in devices {
        if let Some(why) = unavailable(device) {
            println!("streams {device}: unavailable: {why}");
            continue;
        }
        for &size in &a.sizes {
            let mut clips = (None, None);
            let on_cpu = device == DeviceChoice::Cpu;
            let (spec, version) = row_spec(a, size, device, objects, cache, given_clip, &mut clips, on_cpu)?;
            // One video as `segment` tracks it (the single-video path, with its CUDA
            // graphs): what N streams at once must beat, beside one stream in lockstep.
            eprintln!("bench: {size} on {device}, one video on the single-video path …");
            let single = crate::bench::measure::measure(&spec, version).fps;
            let mut alone = None;
            for count in [1, n] {
                eprintln!("bench: {size} on {device}, {count} stream(s) …");
                match streams::measure(&spec, version, count) {
                    Ok(r) => {
                        println!("{}", streams::line(&spec, &r, alone.as_ref(), single));
                        if count == 1 {
                            alone = Some(r.clone());
                        }
                        results.push(StreamsRow {
                            size,
                            device,
                            precision: a.precision,
                            single_video_fps: single,
                            result: r,
                        });
                    }
                    Err(e) => {
                        failed += 1;
                        println!("streams {size} {device} {}: {count} stream(s) failed: {e:#}", a.precision);
                    }
                }
            }
        }
    }
    if let Some(path) = &a.json {
        let doc = serde_json::json!({ "machine": machine, "streams": results });
        crate::util::atomic_write(path, &serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("bench: wrote {}", path.display());
    }
    if failed > 0 {
        bail!("{failed} streams measurement(s) failed");
    }
    Ok(())
}

/// One stream count's figures with what they were measured on.
#[derive(serde::Serialize)]
struct StreamsRow {
    size: ModelSize,
    device: DeviceChoice,
    precision: Precision,
    /// One video on the single-video path (as `segment` runs it), same clip and clicks.
    single_video_fps: Option<f64>,
    #[serde(flatten)]
    result: streams::StreamsResult,
}

#[allow(clippy::too_many_arguments)]
fn bench_row(
    a: &Args,
    size: ModelSize,
    device: DeviceChoice,
    objects: usize,
    cache: &Path,
    given_clip: Option<&(PathBuf, u32, u32, usize)>,
    clips: &mut (Option<PathBuf>, Option<PathBuf>),
    on_cpu: bool,
) -> anyhow::Result<RowResult> {
    // The reference runs first: with no real weights it writes the random-init .pt that
    // both then read, so the two load the very same file.
    let reference = if a.reference {
        let frames_dir = clip_for(a, cache, given_clip, on_cpu)?.0;
        let (checkpoint, _, _) = checkpoint_for(a, size, cache)?;
        eprintln!("bench: reference {size} on {device} ({}) …", frames_dir.display());
        Some(reference::run(size, device, a.precision, objects, &frames_dir, &checkpoint, a.threads))
    } else {
        None
    };
    let (spec, version) = row_spec(a, size, device, objects, cache, given_clip, clips, on_cpu)?;
    eprintln!(
        "bench: {size} on {device} ({} precision, {objects} object(s), {} run(s), {}{}) …",
        a.precision,
        spec.runs,
        spec.frames_dir.display(),
        if spec.random_init { ", random-init weights" } else { "" }
    );
    let mut row = measure::measure(&spec, version);
    match reference {
        Some(Ok(r)) => row.reference = Some(r),
        Some(Err(e)) => row.error = Some(format!("reference: {e:#}")),
        None => {}
    }
    Ok(row)
}

/// The frames folder and its size: `--frames-dir`, else the synthetic clip.
fn clip_for(
    a: &Args,
    cache: &Path,
    given_clip: Option<&(PathBuf, u32, u32, usize)>,
    on_cpu: bool,
) -> anyhow::Result<(PathBuf, (u32, u32))> {
    Ok(match given_clip {
        Some((dir, w, h, _)) => (dir.clone(), (*w, *h)),
        None => {
            let n = a.frames.unwrap_or(if on_cpu { 8 } else { 200 });
            let (w, h) = a.resolution;
            (clip::ensure(cache, w, h, n)?, (w, h))
        }
    })
}

/// What one row measures: the clip, the checkpoint, the clicks, the runs.
#[allow(clippy::too_many_arguments)]
fn row_spec(
    a: &Args,
    size: ModelSize,
    device: DeviceChoice,
    objects: usize,
    cache: &Path,
    given_clip: Option<&(PathBuf, u32, u32, usize)>,
    clips: &mut (Option<PathBuf>, Option<PathBuf>),
    on_cpu: bool,
) -> anyhow::Result<(RowSpec, ModelVersion)> {
    let (frames_dir, (w, h)) = clip_for(a, cache, given_clip, on_cpu)?;
    *(if on_cpu { &mut clips.0 } else { &mut clips.1 }) = Some(frames_dir.clone());
    let (checkpoint, version, random_init) = checkpoint_for(a, size, cache)?;
    let spec = RowSpec {
        config: crate::config::Config::load(a.config.as_deref())?,
        size,
        device,
        precision: a.precision,
        image_size: a.image_size,
        checkpoint,
        random_init,
        frames_dir,
        clicks: clip::clicks(w, h, objects),
        runs: a.runs.unwrap_or(if on_cpu { 1 } else { 3 }),
        warmup: if on_cpu { 0 } else { 1 },
        threads: a.threads,
        stall_timeout: Duration::from_secs(900),
    };
    Ok((spec, version))
}

#[cfg(test)]
mod tests {
    use super::{parse_objects, parse_resolution};

    #[test]
    fn object_counts_are_1_to_254() {
        assert_eq!(parse_objects("16"), Ok(16));
        assert!(parse_objects("0").is_err() && parse_objects("255").is_err() && parse_objects("x").is_err());
    }

    #[test]
    fn resolutions_are_width_x_height_within_bounds() {
        assert_eq!(parse_resolution("960x540"), Ok((960, 540)));
        assert_eq!(parse_resolution("64X48"), Ok((64, 48)));
        assert!(parse_resolution("960").is_err());
        assert!(parse_resolution("0x10").is_err());
    }
}
