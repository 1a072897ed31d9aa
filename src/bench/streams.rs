//! `bench --streams N`: N videos tracked at once in one worker (issue #18), against one
//! video alone in the same invocation. Each stream is the bench clip with the same clicks
//! on frame 0, then `runs` forward propagations; the streams' propagations run in
//! lockstep (`supervisor::streams`). A round is one propagation of every stream: its wall
//! time runs from the end of the previous round to the last stream's end.
//!
//! * aggregate FPS: the round's frames over all streams / its wall time;
//! * per-stream FPS: a stream's frames / the time from the round's start to its own end;
//! * ratios: the aggregate FPS over the FPS of one stream alone (the same clip, clicks
//!   and runs, in lockstep), and over one video on the single-video path (`segment`'s,
//!   with its CUDA graphs), the comparison a user who could run videos one after another
//!   makes.
//!
//! Medians over the rounds after the warm-up ones.
use super::measure::{RowSpec, StageMs};
use super::median;
use crate::events::StageTimings;
use crate::session::{Op, Point};
use crate::supervisor::streams::{self, StreamJob, StreamNews};
use serde::Serialize;
use std::time::Instant;

/// One stream count's figures.
#[derive(Clone, Debug, Serialize)]
pub struct StreamsResult {
    pub streams: usize,
    pub objects_per_stream: usize,
    pub frames_per_stream: usize,
    /// Median over the measured rounds.
    pub aggregate_fps: f64,
    /// Per stream, the median over the measured rounds.
    pub per_stream_fps: Vec<f64>,
    /// Every round's aggregate FPS, warm-up rounds first.
    pub aggregate_fps_runs: Vec<f64>,
    /// Median stage times of the measured rounds' frames (all streams'); a lockstep
    /// step's tracking stages are the whole step's, shared by its streams' frames.
    pub stages_ms: Option<StageMs>,
    pub crashes: Vec<String>,
}

/// Runs `n` streams of `spec`'s clip and clicks; `spec.runs` rounds.
pub fn measure(spec: &RowSpec, version: crate::model::config::ModelVersion, n: usize) -> anyhow::Result<StreamsResult> {
    let session = tempfile::Builder::new().prefix("sam2-tui-bench-streams-").tempdir()?;
    let opts = super::measure::worker_options(spec, version, session.path())?;
    let clicks = spec.clicks.iter().enumerate().map(|(i, &(x, y))| Op::AddPrompt {
        frame: 0,
        object: i as u32 + 1,
        points: vec![Point::new(x, y, true)],
        bbox: None,
    });
    let propagations = (0..spec.runs).map(|_| Op::Propagate { start: None, reverse: false, max_frames: None });
    let ops: Vec<Op> = clicks.chain(propagations).collect();
    let first = spec.clicks.len();
    let jobs: Vec<StreamJob> = (0..n).map(|_| StreamJob { media: spec.frames_dir.clone(), ops: ops.clone() }).collect();

    // Per round: its start, each stream's frames and end.
    let mut round_start: Vec<Option<Instant>> = vec![None; spec.runs + 1];
    let mut frames = vec![vec![0usize; n]; spec.runs];
    let mut ended: Vec<Vec<Option<Instant>>> = vec![vec![None; n]; spec.runs];
    let mut crashes = vec![];
    let mut timings: Vec<Vec<StageTimings>> = vec![vec![]; spec.runs];
    let results = streams::run(&opts, &jobs, &|| false, &mut |news| {
        match news {
            StreamNews::Frame { stream, op, timings: t, .. } if op >= first => {
                frames[op - first][stream] += 1;
                timings[op - first].push(*t);
            }
            StreamNews::OpDone { stream, op, .. } => {
                let now = Instant::now();
                match op.checked_sub(first) {
                    Some(r) => ended[r][stream] = Some(now),
                    // The clicks' end is the first round's start.
                    None => round_start[0] = Some(now),
                }
                if let Some(r) = op.checked_sub(first) {
                    if ended[r].iter().all(Option::is_some) {
                        round_start[r + 1] = Some(now);
                    }
                }
            }
            StreamNews::WorkerDied { reason } => crashes.push(reason),
            _ => {}
        }
        None
    })?;
    for (i, r) in results.into_iter().enumerate() {
        r.map_err(|e| anyhow::anyhow!("stream {i}: {e}"))?;
    }
    let warmup = spec.warmup.min(spec.runs.saturating_sub(1));
    let mut aggregate_fps_runs = vec![];
    let mut per_stream: Vec<Vec<f64>> = vec![vec![]; n];
    for r in 0..spec.runs {
        let start = round_start[r].ok_or_else(|| anyhow::anyhow!("round {r} never started"))?;
        let end = round_start[r + 1].ok_or_else(|| anyhow::anyhow!("round {r} never ended"))?;
        aggregate_fps_runs.push(frames[r].iter().sum::<usize>() as f64 / (end - start).as_secs_f64());
        if r >= warmup {
            for s in 0..n {
                let own = ended[r][s].expect("every stream ended") - start;
                per_stream[s].push(frames[r][s] as f64 / own.as_secs_f64());
            }
        }
    }
    Ok(StreamsResult {
        streams: n,
        objects_per_stream: spec.clicks.len(),
        frames_per_stream: frames[0][0],
        aggregate_fps: median(&aggregate_fps_runs[warmup..]).unwrap_or(0.0),
        per_stream_fps: per_stream.iter().map(|v| median(v).unwrap_or(0.0)).collect(),
        aggregate_fps_runs,
        stages_ms: StageMs::median_of(&timings[warmup..].concat()),
        crashes,
    })
}

/// The terminal line of one stream count, with its ratios to one stream alone (in
/// lockstep, the same path) and to one video on the single-video path (`single` FPS).
pub fn line(spec: &RowSpec, r: &StreamsResult, alone: Option<&StreamsResult>, single: Option<f64>) -> String {
    let per: Vec<String> = r.per_stream_fps.iter().map(|f| format!("{f:.1}")).collect();
    let mut ratio = match alone {
        Some(a) if a.aggregate_fps > 0.0 => format!(", {:.2}x one stream", r.aggregate_fps / a.aggregate_fps),
        _ => String::new(),
    };
    if let Some(s) = single.filter(|s| *s > 0.0) {
        ratio += &format!(", {:.2}x one video on the single-video path ({s:.1} FPS)", r.aggregate_fps / s);
    }
    format!(
        "streams {} {} {}{}: {} stream(s) x {} object(s), {} frames each: aggregate {:.1} FPS{ratio}; per stream [{}] \
         FPS{}",
        spec.size,
        spec.device,
        spec.precision,
        if spec.random_init { " (random-init)" } else { "" },
        r.streams,
        r.objects_per_stream,
        r.frames_per_stream,
        r.aggregate_fps,
        per.join(", "),
        if r.crashes.is_empty() { String::new() } else { format!("; {} crash(es)", r.crashes.len()) }
    ) + &r.stages_ms.map(stages_line).unwrap_or_default()
}

/// Where a step's time goes, under the streams line: the tracking stages are the step's
/// (every stream's frame at once), the write-out one stream's frame, and the time
/// between a stream's frames the whole step.
fn stages_line(s: StageMs) -> String {
    format!(
        "\n  median ms: frames decoded {:.1}, image encoder {:.1}, tracking {:.1}, write-out {:.1} per stream (holes \
         {:.1}, memory bank {:.1}, to video size {:.1}), step {:.1}",
        s.decode,
        s.image_encoder,
        s.memory_attention + s.mask_decoder + s.memory_encoder,
        s.write_out,
        s.fill_holes,
        s.bank_write,
        s.to_video,
        s.total
    )
}
