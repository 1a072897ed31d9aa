//! The supervisor ↔ worker wire protocol: round trips, refusal of bad frames (never a
//! panic), a randomized decoder hammer, and a real `sam2-tui engine` process on the wire.
mod common;

use sam2_tui::device::{DeviceChoice, PrecisionChoice};
use sam2_tui::rle::Rle;
use sam2_tui::session::{Op, Point};
use sam2_tui::supervisor::events::{ObjectMask, StageTimings};
use sam2_tui::tuning::Tuning;
use sam2_tui::worker::protocol::{
    decode, encode, read_frame, write_frame, FrameError, Request, Response, StreamOp, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use std::io::Cursor;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sample_requests() -> Vec<Request> {
    vec![
        Request::Hello { version: PROTOCOL_VERSION },
        Request::LoadModel {
            checkpoint: "/w/sam2.1_hiera_tiny.pt".into(),
            size: None,
            version: None,
            device: DeviceChoice::Mps,
            precision: PrecisionChoice::Bf16,
            image_size: 1024,
            device_label: Some("accelerator".into()),
            tuning: Tuning {
                pipeline_depth: 2,
                cuda_graphs: false,
                trace: Some("/t/trace.json".into()),
                ..Default::default()
            },
        },
        Request::OpenMedia { path: "/v/clip.mp4".into(), bank_dir: Some("/s/bank-0".into()), fill_holes: true },
        Request::Restore { ops: vec![Op::Reset] },
        Request::Apply {
            seq: 7,
            op: Op::AddPrompt {
                frame: 3,
                object: 2,
                points: vec![Point::new(10.5, 20.0, true)],
                bbox: Some([1.0, 2.0, 30.0, 40.0]),
            },
        },
        Request::Apply { seq: 8, op: Op::Propagate { start: Some(4), reverse: true, max_frames: Some(9) } },
        Request::Cancel,
        Request::Prefetch { frame: 12 },
        Request::Stats,
        Request::Shutdown,
        Request::OpenStream {
            stream: 2,
            path: "/v/b.mp4".into(),
            bank_dir: "/s/stream-2/bank".into(),
            fill_holes: true,
        },
        Request::RestoreStream { stream: 2, ops: vec![Op::Reset] },
        Request::ApplyStream(StreamOp { stream: 2, seq: 0, op: Op::Reset }),
        Request::PropagateStreams {
            passes: vec![
                StreamOp { stream: 0, seq: 3, op: Op::Propagate { start: None, reverse: false, max_frames: None } },
                StreamOp { stream: 2, seq: 1, op: Op::Propagate { start: Some(4), reverse: true, max_frames: None } },
            ],
        },
        Request::CancelStream { stream: 2 },
        Request::CloseStream { stream: 2 },
    ]
}

fn sample_responses() -> Vec<Response> {
    let mask: Vec<u8> = (0..48).map(|i| (i % 5 == 0) as u8).collect();
    vec![
        Response::Hello { version: 1, pid: 42, torch_version: "2.11.0".into() },
        Response::Frame {
            seq: 8,
            frame: 5,
            objects: vec![ObjectMask { object: 2, rle: Rle::encode(&mask, 6, 8), score: 3.25 }],
            timings: StageTimings { image_encoder_ms: 12.5, total_ms: 40.0, ..Default::default() },
        },
        Response::OpDone { seq: 8, cancelled: true },
        Response::Error { seq: Some(8), message: "frame 99 out of range".into() },
        Response::Heartbeat { stats: Default::default() },
        Response::Bye,
        Response::StreamFrame {
            stream: 2,
            seq: 1,
            frame: 4,
            objects: vec![ObjectMask { object: 1, rle: Rle::encode(&mask, 6, 8), score: -0.5 }],
            timings: StageTimings::default(),
        },
        Response::StreamDone { stream: 2, seq: 1, cancelled: false },
        Response::StreamError { stream: 0, seq: 3, message: "frame 00004.png: decode failed".into() },
        Response::StreamClosed { stream: 2 },
    ]
}

#[test]
fn every_request_and_response_round_trips_through_a_frame() {
    for r in sample_requests() {
        let (back, used) = decode::<Request>(&encode(&r)).unwrap();
        assert_eq!(back, r);
        assert_eq!(used, encode(&r).len());
    }
    for r in sample_responses() {
        let mut stream = Vec::new();
        write_frame(&mut stream, &r).unwrap();
        write_frame(&mut stream, &r).unwrap();
        let mut cur = Cursor::new(stream);
        assert_eq!(read_frame::<Response>(&mut cur).unwrap(), Some(r.clone()));
        assert_eq!(read_frame::<Response>(&mut cur).unwrap(), Some(r));
        assert_eq!(read_frame::<Response>(&mut cur).unwrap(), None, "clean end of stream");
    }
}

#[test]
fn non_finite_scores_cross_the_wire_intact() {
    let mask = |object, score| ObjectMask { object, rle: Rle::encode(&[0u8; 6], 2, 3), score };
    let r = Response::Frame {
        seq: 1,
        frame: 0,
        objects: vec![mask(1, f32::NAN), mask(2, f32::INFINITY), mask(3, f32::NEG_INFINITY), mask(4, -1.5)],
        timings: StageTimings::default(),
    };
    let (back, _) = decode::<Response>(&encode(&r)).unwrap();
    let Response::Frame { objects, .. } = back else { panic!("{back:?}") };
    assert!(objects[0].score.is_nan());
    assert_eq!(objects[1].score, f32::INFINITY);
    assert_eq!(objects[2].score, f32::NEG_INFINITY);
    assert_eq!(objects[3].score, -1.5);
    // A peer of the previous version wrote `null`: still refused, never read as a number.
    let old = br#"{"type":"frame","seq":1,"frame":0,"objects":[{"object":1,"rle":{"size":[2,3],"counts":"6"},"score":null}],"timings":{"decode_ms":0,"image_encoder_ms":0,"memory_attention_ms":0,"mask_decoder_ms":0,"memory_encoder_ms":0,"total_ms":0}}"#;
    let mut framed = (old.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(old);
    assert!(matches!(decode::<Response>(&framed), Err(FrameError::Malformed(_))));
}

#[test]
fn oversized_truncated_and_garbage_frames_are_refused_with_an_error() {
    let big = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
    assert_eq!(read_frame::<Request>(&mut Cursor::new(big.to_vec())), Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1)));
    assert!(matches!(decode::<Request>(&u32::MAX.to_le_bytes()), Err(FrameError::TooLarge(_))));

    let full = encode(&Request::Stats);
    for cut in 1..full.len() {
        let r = read_frame::<Request>(&mut Cursor::new(full[..cut].to_vec()));
        assert!(matches!(r, Err(FrameError::Truncated { .. })), "cut at {cut}: {r:?}");
        assert!(decode::<Request>(&full[..cut]).is_err());
    }

    let mut garbage = 5u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"\xff{}}x");
    assert!(matches!(read_frame::<Request>(&mut Cursor::new(garbage)), Err(FrameError::Malformed(_))));
    // Valid JSON, unknown message type.
    let unknown = [&10u32.to_le_bytes()[..], br#"{"type":1}"#.as_slice()].concat();
    assert!(matches!(decode::<Request>(&unknown), Err(FrameError::Malformed(_))));
    let wrong =
        [&(br#"{"type":"launch"}"#.len() as u32).to_le_bytes()[..], br#"{"type":"launch"}"#.as_slice()].concat();
    assert!(matches!(decode::<Request>(&wrong), Err(FrameError::Malformed(_))));
}

/// xorshift64*: deterministic, dependency-free randomness for the hammer below.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The stable-Rust stand-in for `cargo fuzz run protocol_decode` (nightly is not
/// available here): 100k random and mutated frames; the decoder must answer each with a
/// message or an error, never a panic, and never claim more bytes than it was given.
#[test]
fn the_decoder_survives_a_hundred_thousand_random_and_mutated_frames() {
    let seeds: Vec<Vec<u8>> =
        sample_requests().iter().map(encode).chain(sample_responses().iter().map(encode)).collect();
    let mut rng = Rng(0x5EED_5A42);
    let (mut ok, mut err) = (0usize, 0usize);
    for i in 0..100_000 {
        let mut buf = if i % 4 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        // 0, 1 or 2 mutations: untouched seeds keep the success path exercised too.
        for _ in 0..rng.below(3) {
            if buf.is_empty() {
                break;
            }
            let at = rng.below(buf.len());
            match rng.below(5) {
                0 => buf[at] ^= 1 << rng.below(8),
                1 => buf[at] = rng.next() as u8,
                2 => buf.truncate(at),
                3 => buf.insert(at, rng.next() as u8),
                _ => {
                    // Rewrite the length prefix (oversized / inconsistent lengths).
                    let l = (rng.next() as u32).to_le_bytes();
                    let n = buf.len().min(4);
                    buf[..n].copy_from_slice(&l[..n]);
                }
            }
        }
        let a = std::panic::catch_unwind(|| decode::<Request>(&buf).map(|(_, used)| used));
        let b = std::panic::catch_unwind(|| read_frame::<Response>(&mut Cursor::new(buf.clone())).map(|_| ()));
        match a.expect("decode panicked") {
            Ok(used) => {
                assert!(used <= buf.len());
                ok += 1
            }
            Err(_) => err += 1,
        }
        let _ = b.expect("read_frame panicked");
    }
    // Both outcomes were exercised: the mutations are neither all fatal nor all harmless.
    assert!(ok > 1000 && err > 1000, "ok {ok} err {err}");
}

// ---- a real worker process on the wire ----

/// A worker spoken to over its pipes. Its messages are read on a thread of their own, so
/// a wedged worker (whose heartbeat may go on) fails the test after a deadline instead of
/// hanging it; its stderr is drained (a full pipe would block it) and shown on failure.
struct Wire {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    news: std::sync::mpsc::Receiver<Option<Response>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// How long a test waits for any one message.
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

impl Wire {
    fn start(env: &[(&str, &str)]) -> Wire {
        let mut cmd = Command::new(common::bin());
        cmd.arg("engine").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("SAM2_TUI_FAULT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, news) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            let message = read_frame::<Response>(&mut stdout).unwrap_or_else(|e| panic!("worker's stdout: {e}"));
            let end = message.is_none();
            if tx.send(message).is_err() || end {
                return;
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut pipe, text) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
                text.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Wire { child, stdin, news, stderr }
    }
    /// A worker that has said hello and loaded `checkpoint` on the CPU at model input 128.
    fn loaded(env: &[(&str, &str)], checkpoint: &std::path::Path, tuning: Tuning) -> Wire {
        let mut w = Wire::start(env);
        w.send(&Request::Hello { version: PROTOCOL_VERSION });
        assert!(matches!(w.answer(), Response::Hello { .. }));
        w.send(&Request::LoadModel {
            checkpoint: checkpoint.to_path_buf(),
            size: None,
            version: None,
            device: DeviceChoice::Cpu,
            precision: PrecisionChoice::Fp32,
            image_size: 128,
            device_label: None,
            tuning,
        });
        assert!(matches!(w.answer(), Response::Loaded { .. }));
        w
    }
    fn send(&mut self, r: &Request) {
        write_frame(&mut self.stdin, r).unwrap();
    }
    /// The next message, heartbeats included (None: the worker closed stdout).
    fn next(&mut self) -> Option<Response> {
        self.news.recv_timeout(ANSWER_WITHIN).unwrap_or_else(|e| {
            panic!(
                "no message from the worker within {ANSWER_WITHIN:?} ({e}); its stderr:\n{}",
                self.stderr.lock().unwrap()
            )
        })
    }
    /// The next message that is not a heartbeat.
    fn answer(&mut self) -> Response {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            match self.next() {
                Some(Response::Heartbeat { .. }) if Instant::now() < deadline => continue,
                Some(Response::Heartbeat { .. }) => {
                    panic!("only heartbeats for {ANSWER_WITHIN:?}; its stderr:\n{}", self.stderr.lock().unwrap())
                }
                Some(r) => return r,
                None => panic!("worker closed stdout; its stderr:\n{}", self.stderr.lock().unwrap()),
            }
        }
    }
}

#[test]
fn a_worker_answers_hello_with_its_version_and_refuses_a_foreign_one() {
    let mut w = Wire::start(&[]);
    w.send(&Request::Hello { version: PROTOCOL_VERSION + 1 });
    assert!(matches!(w.answer(), Response::Error { seq: None, message } if message.contains("not supported")));
    w.send(&Request::Hello { version: PROTOCOL_VERSION });
    match w.answer() {
        Response::Hello { version, pid, torch_version } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert_eq!(pid, w.child.id());
            assert!(torch_version.starts_with("2."));
        }
        r => panic!("{r:?}"),
    }
    w.send(&Request::Shutdown);
    assert_eq!(w.answer(), Response::Bye);
    assert!(w.child.wait().unwrap().success());
}

#[test]
fn an_engine_error_is_an_answer_and_the_worker_lives_on() {
    let mut w = Wire::start(&[]);
    w.send(&Request::LoadModel {
        checkpoint: "/nonexistent/sam2.1_hiera_tiny.pt".into(),
        size: None,
        version: None,
        device: DeviceChoice::Cpu,
        precision: PrecisionChoice::Fp32,
        image_size: 1024,
        device_label: None,
        tuning: Default::default(),
    });
    assert!(matches!(w.answer(), Response::Error { seq: None, message } if message.contains("/nonexistent/")));
    w.send(&Request::Apply { seq: 3, op: Op::Reset });
    assert!(matches!(w.answer(), Response::Error { seq: Some(3), .. }));
    w.send(&Request::Stats);
    assert!(matches!(w.next(), Some(Response::Heartbeat { .. })));
    w.send(&Request::Shutdown);
    assert!(w.child.wait().unwrap().success());
}

#[test]
fn an_image_size_the_model_cannot_take_is_an_error_answer_not_a_panic() {
    // A real checkpoint: the size is judged where the model is built (it panicked there).
    let dir = common::fixture_cache("worker-protocol");
    let checkpoint = dir.join("tiny.random-init.safetensors");
    if !checkpoint.exists() {
        common::random_tiny_tensors(&dir);
    }
    let mut w = Wire::start(&[]);
    w.send(&Request::LoadModel {
        checkpoint,
        size: None,
        version: None,
        device: DeviceChoice::Cpu,
        precision: PrecisionChoice::Fp32,
        image_size: 100,
        device_label: None,
        tuning: Default::default(),
    });
    match w.answer() {
        Response::Error { seq: None, message } => assert!(message.contains("image size 100"), "{message}"),
        r => panic!("{r:?}"),
    }
    w.send(&Request::Shutdown);
    assert!(w.child.wait().unwrap().success());
}

#[test]
fn heartbeats_arrive_twice_a_second_with_real_process_numbers() {
    let mut w = Wire::start(&[]);
    let t = Instant::now();
    let mut beats = vec![];
    while beats.len() < 3 {
        if let Some(Response::Heartbeat { stats }) = w.next() {
            beats.push((t.elapsed(), stats));
        }
    }
    let gap = beats[2].0 - beats[1].0;
    assert!(gap > Duration::from_millis(300) && gap < Duration::from_millis(1500), "gap {gap:?}");
    let s = &beats[2].1;
    assert!(s.rss_bytes > 10 << 20, "rss {}", s.rss_bytes);
    assert!(s.threads >= 1);
    assert!(s.torch_version.starts_with("2."));
    drop(w.stdin);
    assert!(w.child.wait().unwrap().success(), "stdin EOF ends the worker cleanly");
}

#[test]
fn a_garbage_frame_gets_an_error_and_a_clean_exit_not_a_crash() {
    let mut w = Wire::start(&[]);
    use std::io::Write;
    w.stdin.write_all(&((MAX_FRAME_BYTES as u32) + 7).to_le_bytes()).unwrap();
    w.stdin.flush().unwrap();
    assert!(matches!(w.answer(), Response::Error { seq: None, message } if message.contains("exceeds")));
    let status = w.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The knobs travel in `LoadModel`, and the worker's own environment wins over them (a
/// variable set for one run reaches the worker whoever started it). `logits_dir` shows
/// where a knob went: the worker writes each frame's logits there.
/// The tests' random-init tiny checkpoint, made once.
fn random_tiny_checkpoint() -> std::path::PathBuf {
    let cache = common::fixture_cache("worker-protocol");
    let checkpoint = cache.join("tiny.random-init.safetensors");
    if !checkpoint.exists() {
        common::random_tiny_tensors(&cache);
    }
    checkpoint
}

#[test]
fn the_tuning_load_model_carries_applies_with_the_worker_s_environment_on_top() {
    let dir = common::scratch("worker-protocol-tuning");
    let checkpoint = random_tiny_checkpoint();
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]))
        .save(frames.join("00000.png"))
        .unwrap();
    let run = |name: &str, env: &[(&str, &str)]| {
        let tuning = Tuning { logits_dir: Some(dir.join(name).join("from-protocol")), ..Default::default() };
        let mut w = Wire::loaded(env, &checkpoint, tuning);
        w.send(&Request::OpenMedia {
            path: frames.clone(),
            bank_dir: Some(dir.join(name).join("bank")),
            fill_holes: true,
        });
        assert!(matches!(w.answer(), Response::MediaInfo { .. }));
        let click = Op::AddPrompt { frame: 0, object: 1, points: vec![Point::new(20.0, 20.0, true)], bbox: None };
        w.send(&Request::Apply { seq: 0, op: click });
        assert!(matches!(w.answer(), Response::Frame { frame: 0, .. }));
        assert!(matches!(w.answer(), Response::OpDone { seq: 0, .. }));
        w.send(&Request::Shutdown);
        assert!(w.child.wait().unwrap().success());
    };
    run("protocol", &[]);
    assert!(dir.join("protocol/from-protocol/1/00000.npy").exists(), "the protocol's knob applied");
    let from_env = dir.join("env/from-env");
    run("env", &[("SAM2_TUI_LOGITS_DIR", from_env.to_str().unwrap())]);
    assert!(from_env.join("1/00000.npy").exists(), "the worker's environment won");
    assert!(!dir.join("env/from-protocol").exists());
}

/// What a worker says during a lockstep propagation, heartbeats and the long stream's
/// frames left out: `(what, stream)`.
fn answers_until_quiet(w: &mut Wire, expected: usize) -> Vec<(String, Option<u32>)> {
    let mut seen = vec![];
    while seen.len() < expected {
        let (what, stream) = match w.answer() {
            Response::StreamFrame { stream: 0, .. } => continue,
            Response::StreamFrame { stream, .. } => ("frame".to_string(), Some(stream)),
            Response::StreamDone { stream, seq, .. } => (format!("done {seq}"), Some(stream)),
            Response::StreamError { stream, message, .. } => (format!("error {message}"), Some(stream)),
            Response::MediaInfo { frames, .. } => (format!("opened ({frames} frames)"), None),
            Response::Error { message, .. } => (format!("error {message}"), None),
            other => (format!("{other:?}"), None),
        };
        seen.push((what, stream));
    }
    seen
}

/// A lockstep propagation takes in what arrives while it runs: another stream's open,
/// click and propagation run between its steps (that stream is done long before the
/// propagation under way), while a request on the propagating stream, and everything
/// after a request that is not a stream's, wait for its end, in the order they came. A
/// close of the propagating stream waits for it too, then lets the stream go.
#[test]
fn a_propagation_under_way_takes_in_a_new_stream_and_holds_back_what_must_wait() {
    let dir = common::scratch("worker-protocol-admission");
    let folder = |name: &str, n: u32| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5 + i) as u8, 90]))
                .save(d.join(format!("{i:05}.png")))
                .unwrap();
        }
        d
    };
    let (long, short) = (folder("long", 80), folder("short", 3));
    let mut w = Wire::loaded(&[], &random_tiny_checkpoint(), Tuning::default());
    let open = |stream: u32, path: &std::path::Path| Request::OpenStream {
        stream,
        path: path.to_path_buf(),
        bank_dir: dir.join(format!("bank-{stream}")),
        fill_holes: true,
    };
    let op = |stream: u32, seq: u64, op: Op| StreamOp { stream, seq, op };
    let click = Op::AddPrompt { frame: 0, object: 1, points: vec![Point::new(20.0, 20.0, true)], bbox: None };
    let propagate = Op::Propagate { start: None, reverse: false, max_frames: None };
    w.send(&open(0, &long));
    assert!(matches!(w.answer(), Response::MediaInfo { frames: 80, .. }));
    w.send(&Request::ApplyStream(op(0, 0, click.clone())));
    assert_eq!(answers_until_quiet(&mut w, 1), [("done 0".to_string(), Some(0))]);

    w.send(&Request::PropagateStreams { passes: vec![op(0, 1, propagate.clone())] });
    // Sent while stream 0 propagates, all at once:
    w.send(&open(1, &short));
    w.send(&Request::ApplyStream(op(1, 0, click)));
    w.send(&Request::PropagateStreams { passes: vec![op(1, 1, propagate)] });
    w.send(&Request::ApplyStream(op(0, 2, Op::RemoveObject { object: 1 })));
    w.send(&Request::CloseStream { stream: 0 });
    w.send(&Request::Prefetch { frame: 0 });
    w.send(&open(2, &short));

    let seen = answers_until_quiet(&mut w, 12);
    let s = |what: &str, stream: Option<u32>| (what.to_string(), stream);
    let want = [
        // Stream 1, between stream 0's steps: opened, clicked, propagated to its end.
        s("opened (3 frames)", None),
        s("frame", Some(1)),
        s("done 0", Some(1)),
        s("frame", Some(1)),
        s("frame", Some(1)),
        s("frame", Some(1)),
        s("done 1", Some(1)),
        // Stream 0's propagation ends; then what waited for it, in the order it came:
        // the removal on stream 0, the request that is not a stream's (the worker holds
        // no single session, so an error), and the open behind that.
        s("done 1", Some(0)),
    ];
    assert_eq!(seen[..want.len()], want, "{seen:#?}");
    let rest = &seen[want.len()..];
    let removal_done = rest.iter().position(|a| *a == s("done 2", Some(0))).expect("the removal ends");
    let closed = rest.iter().position(|a| *a == s("StreamClosed { stream: 0 }", None)).expect("stream 0 let go");
    let prefetch = rest.iter().position(|(what, _)| what.contains("prefetch before open_media")).expect("prefetch");
    let opened = rest.iter().position(|a| *a == s("opened (3 frames)", None)).expect("stream 2 opens");
    assert!(removal_done < closed && closed < prefetch && prefetch < opened, "{seen:#?}");
    // Nothing of stream 0 is left: an op on it is refused.
    w.send(&Request::ApplyStream(op(0, 3, Op::Reset)));
    assert_eq!(answers_until_quiet(&mut w, 1), [s("error stream 0 is not open", Some(0))]);
    w.send(&Request::Shutdown);
    assert!(w.child.wait().unwrap().success());
}
