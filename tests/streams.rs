//! Several videos tracked at once in one worker (issue #18, `supervisor::streams`,
//! `predictor::streams`): each stream gets the masks it gets alone, a cancelled stream
//! leaves the others alone, and a worker crash mid-run changes no mask.
//!
//! Three clips of different content and length, each with its own journal (objects
//! prompted on different frames, a box, a reverse pass on one stream), on nudged
//! random-init weights (`common::present_tiny_checkpoint`, so the masks are not empty) at
//! model input 256 on the CPU in fp32. "Alone" is `segment --session … --logits` on the
//! same clip and journal: the ordinary single-session path, objects one by one. "At
//! once" is the three streams in one worker, their propagations in lockstep (shared
//! image-encoder batches, every stream's objects in one tracking step).
//!
//! The bound: masks (the RLE each frame's result carries) byte-identical; logits within
//! 1e-3 (the parity journals' bound; at once the objects of all streams go through larger
//! matrix products, which round differently, measured max |Δ| is printed).
mod common;

use sam2_tui::supervisor::streams::{self, StreamJob, StreamNews};
use sam2_tui::supervisor::SupervisorOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const LOGIT_BOUND: f32 = 1e-3;

/// (clip frames, clip offset, journal ops as JSON)
fn streams_spec() -> Vec<(u32, u32, Vec<&'static str>)> {
    vec![
        (
            8,
            0,
            vec![
                r#"{"op":"add_prompt","frame":0,"object":1,"points":[[30,20,1]]}"#,
                r#"{"op":"add_prompt","frame":1,"object":2,"box":[60,8,100,48]}"#,
                r#"{"op":"propagate"}"#,
                r#"{"op":"propagate","start":6,"reverse":true,"max_frames":3}"#,
            ],
        ),
        (
            8,
            5,
            vec![
                r#"{"op":"add_prompt","frame":0,"object":1,"points":[[100,40,1]]}"#,
                r#"{"op":"add_prompt","frame":2,"object":3,"points":[[20,50,1],[40,30,0]]}"#,
                r#"{"op":"propagate"}"#,
            ],
        ),
        // Shorter: it ends while the others go on.
        (5, 11, vec![r#"{"op":"add_prompt","frame":0,"object":1,"box":[10,10,60,50]}"#, r#"{"op":"propagate"}"#]),
    ]
}

/// Per (object, frame): the mask's RLE (as JSON) and the logits.
type Results = BTreeMap<(u32, usize), (serde_json::Value, Vec<f32>)>;

struct Setup {
    dir: PathBuf,
    checkpoint: PathBuf,
    clips: Vec<PathBuf>,
    journals: Vec<Vec<sam2_tui::session::Op>>,
    /// Each stream's results alone (`segment`).
    alone: Vec<Results>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = common::scratch("streams");
        let checkpoint = common::present_tiny_checkpoint(&common::fixture_cache("objects-independence"));
        let mut s = Setup { dir, checkpoint, clips: vec![], journals: vec![], alone: vec![] };
        for (i, (frames, offset, ops)) in streams_spec().into_iter().enumerate() {
            let clip = s.dir.join(format!("clip{i}.mp4"));
            common::pattern_clip(&clip, frames, offset);
            let (journal, alone) = segment_alone(&s.dir, &s.checkpoint, &clip, &ops, &format!("{i}"));
            s.journals.push(journal);
            s.alone.push(alone);
            s.clips.push(clip);
        }
        s
    })
}

/// `ops` (journal ops as JSON) run on `clip` by `segment`, the ordinary single-session
/// path: the parsed journal and its results (kept under `dir/alone{name}`).
fn segment_alone(
    dir: &Path,
    checkpoint: &Path,
    clip: &Path,
    ops: &[&str],
    name: &str,
) -> (Vec<sam2_tui::session::Op>, Results) {
    let journal = format!(r#"{{"version":1,"ops":[{}]}}"#, ops.join(","));
    let session = dir.join(format!("journal{name}.json"));
    std::fs::write(&session, &journal).unwrap();
    let parsed: sam2_tui::session::Journal = serde_json::from_str(&journal).unwrap();
    let out = dir.join(format!("alone{name}"));
    let o = Command::new(common::bin())
        .arg("segment")
        .arg(clip)
        .arg("--session")
        .arg(&session)
        .arg("--out")
        .arg(&out)
        .arg("--checkpoint")
        .arg(checkpoint)
        .args(["--device", "cpu", "--image-size", "256", "--logits"])
        .env("OMP_NUM_THREADS", "2")
        .env("XDG_DATA_HOME", dir.join("data"))
        .output()
        .unwrap();
    assert!(o.status.success(), "segment {name} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    (parsed.ops, segment_results(&out))
}

/// A `segment` output folder's results.
fn segment_results(out: &Path) -> Results {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("masks.json")).unwrap()).unwrap();
    let mut r = Results::new();
    for f in doc["frames"].as_array().unwrap() {
        let frame = f["frame"].as_u64().unwrap() as usize;
        for o in f["objects"].as_array().unwrap() {
            let id = o["id"].as_u64().unwrap() as u32;
            let logits = npy_f32(&out.join(format!("logits/{id}/{frame:05}.npy")));
            r.insert((id, frame), (o["rle"].clone(), logits));
        }
    }
    r
}

/// The data of a float32 `.npy` file (as `media::npy` writes them: version 1, C order).
fn npy_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + header..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// What a streams run gave: per stream its results, and the worker deaths it heard of.
struct Run {
    streams: Vec<Results>,
    results: Vec<Result<(), String>>,
    deaths: Vec<String>,
    /// The streams whose propagation was cancelled.
    cancelled: Vec<usize>,
    /// The streams the worker let go, in the order it did, each with whether every op of
    /// it had ended by then.
    let_go: Vec<(usize, bool)>,
}

/// The three streams at once in one worker; `env` for the worker, `cancel` = (stream,
/// at its Nth delivered frame of its propagation).
fn at_once(name: &str, env: &[(&str, &str)], cancel: Option<(usize, usize)>) -> Run {
    let s = setup();
    let jobs: Vec<StreamJob> =
        s.clips.iter().zip(&s.journals).map(|(c, ops)| StreamJob { media: c.clone(), ops: ops.clone() }).collect();
    run_streams(name, jobs, env, cancel)
}

/// A streams worker's options for a run in `s.dir/name` (emptied first): CPU, model
/// input 256, each stream's logits under the run's `logits` folder (returned).
fn worker_options(name: &str) -> (SupervisorOptions, PathBuf) {
    let s = setup();
    let dir = s.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut opts = SupervisorOptions::new(s.checkpoint.clone(), None).unwrap();
    opts.worker_command = vec![common::bin().to_string_lossy().into_owned(), "engine".into()];
    opts.device = sam2_tui::device::DeviceChoice::Cpu;
    opts.image_size = 256;
    opts.session_dir = dir.join("session");
    opts.set_env("OMP_NUM_THREADS", "2");
    let logits = dir.join("logits");
    opts.tuning.logits_dir = Some(logits.clone());
    (opts, logits)
}

/// `jobs` at once in one worker (see `at_once`).
fn run_streams(name: &str, jobs: Vec<StreamJob>, env: &[(&str, &str)], cancel: Option<(usize, usize)>) -> Run {
    let width = jobs.len();
    run_streams_in(name, jobs, width, env, cancel)
}

/// `jobs` in one worker, `width` at once: a job takes the place of one that has ended.
fn run_streams_in(
    name: &str,
    jobs: Vec<StreamJob>,
    width: usize,
    env: &[(&str, &str)],
    cancel: Option<(usize, usize)>,
) -> Run {
    let (mut opts, logits) = worker_options(name);
    // A hung worker is found within seconds (heartbeats come twice a second); a wedged
    // one whose heartbeat goes on, once nothing else came for 15 s (a step here takes
    // well under one).
    opts.watchdog.heartbeat_timeout = std::time::Duration::from_secs(3);
    opts.watchdog.progress_timeout = std::time::Duration::from_secs(15);
    for (k, v) in env {
        opts.set_env(k, v);
    }
    let mut masks: Vec<BTreeMap<(u32, usize), serde_json::Value>> = vec![BTreeMap::new(); jobs.len()];
    let mut deaths = vec![];
    let mut cancelled = vec![];
    let mut delivered = vec![0usize; jobs.len()];
    let mut ops_done = vec![0usize; jobs.len()];
    let mut let_go = vec![];
    let mut next = jobs.clone().into_iter();
    let results = streams::run_admitting(&opts, width, &mut || next.next(), &|| false, &mut |news| {
        match news {
            StreamNews::Frame { stream, op, frame, objects, .. } => {
                for o in objects {
                    masks[stream].insert((o.object, frame), serde_json::to_value(&o.rle).unwrap());
                }
                if matches!(jobs[stream].ops[op], sam2_tui::session::Op::Propagate { .. }) {
                    delivered[stream] += 1;
                    if cancel == Some((stream, delivered[stream])) {
                        return Some(stream);
                    }
                }
            }
            StreamNews::OpDone { stream, cancelled: was_cancelled, .. } => {
                ops_done[stream] += 1;
                if was_cancelled {
                    cancelled.push(stream);
                }
            }
            StreamNews::Closed { stream } => let_go.push((stream, ops_done[stream] == jobs[stream].ops.len())),
            StreamNews::WorkerDied { reason } => deaths.push(reason),
            _ => {}
        }
        None
    })
    .unwrap();
    let streams = masks
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.into_iter()
                .map(|((id, frame), rle)| {
                    let l = npy_f32(&logits.join(format!("{i}/{id}/{frame:05}.npy")));
                    ((id, frame), (rle, l))
                })
                .collect()
        })
        .collect();
    Run { streams, results, deaths, cancelled, let_go }
}

/// `got` holds exactly `want`'s masks (byte for byte) and logits within the bound, on
/// every (object, frame) of `want`; returns the largest logit difference.
fn assert_same(what: &str, got: &Results, want: &Results) -> f32 {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: not the same (object, frame) results"
    );
    let mut worst = 0f32;
    for (k, (rle, logits)) in want {
        let (g_rle, g_logits) = &got[k];
        assert_eq!(g_rle, rle, "{what}: object {} frame {}: the mask differs", k.0, k.1);
        assert_eq!(g_logits.len(), logits.len());
        let d = g_logits.iter().zip(logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        worst = worst.max(d);
    }
    assert!(worst <= LOGIT_BOUND, "{what}: max |dlogit| {worst:e} > {LOGIT_BOUND:e}");
    worst
}

fn has_foreground(r: &Results) -> bool {
    r.values().any(|(rle, _)| serde_json::from_value::<sam2_tui::rle::Rle>(rle.clone()).unwrap().area() > 0)
}

#[test]
fn three_streams_at_once_give_each_stream_the_masks_it_gets_alone() {
    let s = setup();
    let run = at_once("at-once", &[], None);
    assert!(run.deaths.is_empty() && run.cancelled.is_empty(), "{:?} {:?}", run.deaths, run.cancelled);
    for (i, (got, want)) in run.streams.iter().zip(&s.alone).enumerate() {
        assert_eq!(run.results[i], Ok(()), "stream {i}");
        assert!(has_foreground(want), "stream {i}: empty masks prove nothing");
        let worst = assert_same(&format!("stream {i}"), got, want);
        eprintln!("stream {i}: {} results, masks identical, max |dlogit| {worst:e}", want.len());
    }
    // A stream that has ended is let go by the worker (its video, features and memory
    // bank freed), not kept until the worker exits: a long manifest's worker holds only
    // the videos it is tracking.
    let mut let_go = run.let_go.clone();
    let_go.sort();
    assert_eq!(let_go, [(0, true), (1, true), (2, true)], "each stream let go once, after its last op");
}

#[test]
fn streams_of_one_object_each_tracked_as_one_batch_give_each_the_masks_it_gets_alone() {
    // Two streams of one object each, both from frame 0: on every step their pairs have
    // as many memories and pointers, so the whole tracking step runs as one batched step
    // over both streams' frames (on CUDA, one graph per memory shape). Different clips
    // and prompts, so a pair given the other stream's frame or memory would show.
    let s = setup();
    let click = [r#"{"op":"add_prompt","frame":0,"object":1,"points":[[30,20,1]]}"#, r#"{"op":"propagate"}"#];
    let (ops, alone) = segment_alone(&s.dir, &s.checkpoint, &s.clips[0], &click, "-click0");
    let jobs = vec![
        StreamJob { media: s.clips[0].clone(), ops },
        StreamJob { media: s.clips[2].clone(), ops: s.journals[2].clone() },
    ];
    let run = run_streams("one-object-each", jobs, &[], None);
    assert!(run.deaths.is_empty(), "{:?}", run.deaths);
    for (i, want) in [&alone, &s.alone[2]].into_iter().enumerate() {
        assert_eq!(run.results[i], Ok(()), "stream {i}");
        assert!(has_foreground(want), "stream {i}: empty masks prove nothing");
        let worst = assert_same(&format!("stream {i} of one object"), &run.streams[i], want);
        eprintln!("stream {i} of one object: {} results, masks identical, max |dlogit| {worst:e}", want.len());
    }
}

#[test]
fn streams_whose_banks_agree_step_as_one_batch_while_a_newcomer_fills_its_own() {
    // Three places, four videos of one object each. The short one ends after two frames
    // and the fourth takes its place while the two others go on: for its first steps the
    // newcomer has fewer memories and pointers than they have, so the two step as one
    // batch (on CUDA, their graph) and the newcomer apart. Each still gets the masks it
    // gets alone.
    let s = setup();
    let click = |prompt: &'static str, i: usize| {
        [prompt, if i == 0 { r#"{"op":"propagate","max_frames":1}"# } else { r#"{"op":"propagate"}"# }]
    };
    let clicks = [
        (&s.clips[2], r#"{"op":"add_prompt","frame":0,"object":1,"box":[10,10,60,50]}"#),
        (&s.clips[0], r#"{"op":"add_prompt","frame":0,"object":1,"points":[[30,20,1]]}"#),
        (&s.clips[1], r#"{"op":"add_prompt","frame":0,"object":1,"points":[[100,40,1]]}"#),
        (&s.clips[0], r#"{"op":"add_prompt","frame":0,"object":1,"points":[[90,30,1]]}"#),
    ];
    let (jobs, alone): (Vec<StreamJob>, Vec<Results>) = clicks
        .iter()
        .enumerate()
        .map(|(i, (clip, prompt))| {
            let (ops, alone) = segment_alone(&s.dir, &s.checkpoint, clip, &click(prompt, i), &format!("-newcomer{i}"));
            (StreamJob { media: (*clip).clone(), ops }, alone)
        })
        .unzip();
    let run = run_streams_in("newcomer", jobs, 3, &[], None);
    assert!(run.deaths.is_empty(), "{:?}", run.deaths);
    for (i, want) in alone.iter().enumerate() {
        assert_eq!(run.results[i], Ok(()), "stream {i}");
        assert!(has_foreground(want), "stream {i}: empty masks prove nothing");
        let worst = assert_same(&format!("stream {i}"), &run.streams[i], want);
        eprintln!("stream {i}: {} results, masks identical, max |dlogit| {worst:e}", want.len());
    }
}

#[test]
fn cancelling_one_stream_leaves_the_others_results_unchanged() {
    let s = setup();
    // Stream 0 stops after two frames of its first propagation (its reverse pass still runs).
    let run = at_once("cancel", &[], Some((0, 2)));
    for i in [1, 2] {
        assert_eq!(run.results[i], Ok(()), "stream {i}");
        assert_same(&format!("stream {i} beside a cancelled one"), &run.streams[i], &s.alone[i]);
    }
    assert_eq!(run.cancelled, vec![0], "only stream 0's propagation was cancelled");
    assert_eq!(run.results[0], Ok(()), "a cancelled propagation is not a failure");
}

#[test]
fn a_worker_crash_hang_or_stall_mid_run_gives_every_stream_the_same_masks() {
    let s = setup();
    // The worker aborts as a frame 3 is about to be delivered, in the middle of the
    // lockstep propagation; a new one restores every stream and goes on, and hangs (its
    // heartbeat too) as a frame 5 is about to be: the watchdog kills it, a third worker
    // goes on and wedges as a frame 6 is about to be, its heartbeat still beating (a
    // deadlock in the engine): the watchdog kills it for lack of progress, a fourth ends.
    let run = at_once("crash", &[("SAM2_TUI_FAULT", "abort@frame=3,hang@frame=5,stall@frame=6")], None);
    assert_eq!(run.deaths.len(), 3, "a crash, a hang and a stall: {:?}", run.deaths);
    assert!(run.deaths[0].contains("SIGABRT"), "{}", run.deaths[0]);
    assert!(run.deaths[1].contains("watchdog (no heartbeat"), "{}", run.deaths[1]);
    assert!(run.deaths[2].contains("watchdog (no progress for 15.0s"), "{}", run.deaths[2]);
    for (i, (got, want)) in run.streams.iter().zip(&s.alone).enumerate() {
        assert_eq!(run.results[i], Ok(()), "stream {i}");
        assert_same(&format!("stream {i} after a crash"), got, want);
    }
}

#[test]
fn a_stream_whose_input_breaks_mid_run_fails_alone() {
    let s = setup();
    // A frame folder whose fifth frame is cut short after its header: the folder opens
    // (every header is read), the frame fails to decode when the propagation gets there.
    let broken = common::batch_outputs::broken_frame_folder(&s.clips[0], &s.dir.join("broken-frames"));
    let click: sam2_tui::session::Journal = serde_json::from_str(
        r#"{"version":1,"ops":[{"op":"add_prompt","frame":0,"object":1,"points":[[30,20,1]]},{"op":"propagate"}]}"#,
    )
    .unwrap();
    let jobs = vec![
        StreamJob { media: broken, ops: click.ops },
        StreamJob { media: s.clips[1].clone(), ops: s.journals[1].clone() },
    ];
    let run = run_streams("broken", jobs, &[], None);
    let message = run.results[0].as_ref().expect_err("the broken stream fails");
    eprintln!("the broken stream: {message}");
    assert!(message.contains("00004.png"), "the error names the broken frame: {message}");
    let frames: Vec<usize> = run.streams[0].keys().map(|(_, f)| *f).collect();
    assert_eq!(frames, [0, 1, 2, 3], "the frames before the broken one are delivered");
    assert!(run.deaths.is_empty(), "{:?}", run.deaths);
    assert_eq!(run.results[1], Ok(()));
    assert_same("stream beside a broken one", &run.streams[1], &s.alone[1]);
}

/// Web sessions on a shared worker (`run_interactive`, `serve --streams`): each stream is
/// opened, fed its journal op by op as its last op ends, then closed. Stream 1 first gets
/// an op the engine refuses (a frame out of range): that op fails alone and the stream
/// goes on; stream 2's propagation is cancelled as soon as it is asked for. Streams 0
/// and 1 end with the masks they get alone, every stream is let go, and the worker's
/// heartbeats are passed on.
#[test]
fn streams_fed_op_by_op_get_the_masks_of_their_journals_and_a_failed_op_fails_alone() {
    use sam2_tui::session::{Op, Point};
    use sam2_tui::supervisor::streams::StreamCommand;
    use std::collections::VecDeque;
    let s = setup();
    let (opts, logits) = worker_options("fed");
    let dir = s.dir.join("fed");

    let refused = Op::AddPrompt { frame: 999, object: 1, points: vec![Point::new(10.0, 10.0, true)], bbox: None };
    let propagate = Op::Propagate { start: None, reverse: false, max_frames: None };
    let mut feeds: Vec<VecDeque<Op>> = vec![
        s.journals[0].iter().cloned().collect(),
        std::iter::once(refused).chain(s.journals[1].iter().cloned()).collect(),
        VecDeque::from([s.journals[2][0].clone(), propagate]),
    ];
    let (commands, intake) = tokio::sync::mpsc::unbounded_channel();
    for (i, clip) in s.clips.iter().enumerate() {
        let bank = dir.join(format!("bank-{i}"));
        commands.send(StreamCommand::Open { media: clip.clone(), bank }).unwrap();
    }
    let mut masks: Vec<BTreeMap<(u32, usize), serde_json::Value>> = vec![BTreeMap::new(); 3];
    let (mut failed, mut cancelled, mut closed) = (vec![], vec![], vec![]);
    let (mut opened, mut heartbeats) = (0, vec![]);
    let results = streams::run_interactive(&opts, intake, &|| false, &mut |news| {
        // The stream whose next op (or close) goes now.
        let next = match news {
            StreamNews::Opened { stream, .. } => {
                opened += 1;
                Some(stream)
            }
            StreamNews::Frame { stream, frame, objects, .. } => {
                for o in objects {
                    masks[stream].insert((o.object, frame), serde_json::to_value(&o.rle).unwrap());
                }
                None
            }
            StreamNews::OpFailed { stream, op, message } => {
                failed.push((stream, op, message));
                Some(stream)
            }
            StreamNews::OpDone { stream, cancelled: c, .. } => {
                if c {
                    cancelled.push(stream);
                }
                Some(stream)
            }
            StreamNews::Closed { stream } => {
                closed.push(stream);
                if closed.len() == 3 {
                    commands.send(StreamCommand::End).unwrap();
                }
                None
            }
            StreamNews::WorkerStarted { .. } => None,
            StreamNews::Stats(stats) => {
                heartbeats.push(stats.device_kind);
                None
            }
            other => panic!("unexpected news: {other:?}"),
        };
        if let Some(stream) = next {
            match feeds[stream].pop_front() {
                Some(op @ Op::Propagate { .. }) if stream == 2 => {
                    commands.send(StreamCommand::Op { stream, op }).unwrap();
                    commands.send(StreamCommand::Cancel { stream }).unwrap();
                }
                Some(op) => commands.send(StreamCommand::Op { stream, op }).unwrap(),
                None => commands.send(StreamCommand::Close { stream }).unwrap(),
            }
        }
        None
    })
    .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
    assert_eq!(opened, 3);
    // What an operator's view shows of the shared worker, as a worker of its own shows it.
    assert!(heartbeats.iter().any(|d| d == "cpu"), "the worker's heartbeats are heard: {heartbeats:?}");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].0, failed[0].1), (1, 0), "stream 1's first op fails: {failed:?}");
    assert!(failed[0].2.contains("999"), "the error names the frame: {}", failed[0].2);
    assert_eq!(cancelled, vec![2], "stream 2's propagation was cancelled");
    closed.sort();
    assert_eq!(closed, vec![0, 1, 2], "every stream is let go");
    for i in [0, 1] {
        let got: Results = std::mem::take(&mut masks[i])
            .into_iter()
            .map(|((id, frame), rle)| ((id, frame), (rle, npy_f32(&logits.join(format!("{i}/{id}/{frame:05}.npy"))))))
            .collect();
        assert!(has_foreground(&s.alone[i]), "stream {i}: empty masks prove nothing");
        assert_same(&format!("stream {i} fed op by op"), &got, &s.alone[i]);
    }
}
