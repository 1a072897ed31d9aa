//! The supervisor against real worker processes that really crash: SIGABRT, SIGSEGV, a
//! hang the watchdog must kill, an OOM-style SIGKILL, the crash-loop breaker falling back
//! to the CPU, and 100 restarts that leak nothing. Faults come from `SAM2_TUI_FAULT`.
mod common;

use sam2_tui::device::DeviceChoice;
use sam2_tui::model::config::ModelSize;
use sam2_tui::session::{Journal, Op, Point};
use sam2_tui::supervisor::events::{EngineCommand, EngineEvent, EngineState, LogLevel};
use sam2_tui::supervisor::{start, RestartPolicy, SupervisorHandle, SupervisorOptions, Watchdog};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// These tests count this process's threads, fds and children: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn options(name: &str, fault: &str) -> SupervisorOptions {
    let dir = common::scratch(&format!("supervisor-{name}"));
    let mut o = SupervisorOptions::new(dir.join("no-such-checkpoint.pt"), None).unwrap();
    o.worker_command = vec![common::bin().to_string_lossy().into(), "engine".into()];
    o.session_dir = dir.join("session");
    o.device = DeviceChoice::Cpu;
    o.set_env("SAM2_TUI_FAULT", fault);
    o.set_env("OMP_NUM_THREADS", "1");
    o.restart = RestartPolicy {
        max_retries: 1,
        window: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        fallback: vec![DeviceChoice::Cpu],
        smaller_model: false,
    };
    o.watchdog = Watchdog {
        heartbeat_timeout: Duration::from_secs(2),
        progress_timeout: Duration::from_secs(30),
        load_timeout: Duration::from_secs(60),
    };
    o
}

/// Collects events until `done` says so (or panics after `limit`, listing what came).
fn collect_until(
    h: &mut SupervisorHandle,
    limit: Duration,
    mut done: impl FnMut(&EngineEvent) -> bool,
) -> Vec<EngineEvent> {
    let t = Instant::now();
    let mut seen = vec![];
    while t.elapsed() < limit {
        if let Some(e) = h.recv_timeout(Duration::from_millis(100)) {
            let stop = done(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    }
    // Masks are bulky and say nothing about why it stalled: leave them out.
    let telling: Vec<_> = seen.iter().filter(|e| !matches!(e, EngineEvent::Masks(_) | EngineEvent::Stats(_))).collect();
    panic!("timed out after {limit:?}; events: {telling:#?}");
}

fn first_death(name: &str, fault: &str, watchdog: Option<Watchdog>) -> (String, Vec<String>) {
    let mut o = options(name, fault);
    if let Some(w) = watchdog {
        o.watchdog = w;
    }
    let mut h = start(o).unwrap();
    let events = collect_until(&mut h, Duration::from_secs(30), |e| matches!(e, EngineEvent::WorkerDied { .. }));
    h.shutdown();
    match events.into_iter().last() {
        Some(EngineEvent::WorkerDied { reason, stderr_tail }) => (reason, stderr_tail),
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_worker_that_aborts_is_named_sigabrt_with_its_last_stderr_lines() {
    let _g = serial();
    let (reason, tail) = first_death("abort", "abort@load", None);
    assert!(reason.starts_with("SIGABRT"), "{reason}");
    assert!(tail.iter().any(|l| l.contains("fault injection: firing abort@load")), "{tail:?}");
}

#[test]
fn a_worker_that_panics_leaves_the_panic_message_as_its_last_words_not_the_backtrace_hint() {
    let _g = serial();
    let (reason, tail) = first_death("panic", "panic@load", None);
    assert_eq!(reason, "exit status 101");
    let last = tail.iter().rev().find(|l| !l.trim().is_empty()).unwrap();
    // Whatever RUST_BACKTRACE says (a backtrace, or the hint to get one, comes first).
    assert!(last.ends_with(": injected panic: an invariant of our own code broke"), "{tail:?}");
}

#[test]
fn once_the_supervisor_has_stopped_a_caller_waiting_for_events_is_told_so() {
    let _g = serial();
    let mut h = start(options("ended", "")).unwrap();
    assert!(!h.has_ended(), "a running supervisor");
    assert!(h.send(EngineCommand::Shutdown));
    let events =
        collect_until(&mut h, Duration::from_secs(30), |e| matches!(e, EngineEvent::State(EngineState::Stopped)));
    assert!(matches!(events.last(), Some(EngineEvent::State(EngineState::Stopped))), "{:?}", events.last());
    // No more events will come: `segment` and `bench` stop waiting instead of polling on.
    let t = Instant::now();
    while !h.has_ended() {
        let _late = h.recv_timeout(Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_secs(10), "the supervisor's events never closed");
    }
    // And a wait returns at once.
    let t = Instant::now();
    assert!(h.recv_timeout(Duration::from_secs(5)).is_none());
    assert!(t.elapsed() < Duration::from_secs(1), "waited {:?} for a supervisor that has ended", t.elapsed());
    h.shutdown();
}

#[test]
fn a_worker_that_segfaults_is_named_sigsegv() {
    let _g = serial();
    let (reason, _) = first_death("segv", "segv@load", None);
    assert!(reason.starts_with("SIGSEGV"), "{reason}");
}

#[test]
fn a_worker_killed_by_sigkill_is_suspected_of_running_out_of_memory() {
    let _g = serial();
    let (reason, _) = first_death("oom", "oom@load", None);
    assert_eq!(reason, "killed (OOM?) by SIGKILL");
}

#[test]
fn a_worker_hung_while_starting_is_killed_by_the_load_timeout() {
    let _g = serial();
    let wd = Watchdog {
        heartbeat_timeout: Duration::from_millis(500),
        progress_timeout: Duration::from_secs(30),
        load_timeout: Duration::from_millis(1500),
    };
    let t = Instant::now();
    let (reason, _) = first_death("hang", "hang@load", Some(wd));
    assert!(reason.contains("watchdog") && reason.contains("no answer while starting"), "{reason}");
    assert!(t.elapsed() < Duration::from_secs(10), "killed within the timeout, took {:?}", t.elapsed());
}

#[test]
fn a_worker_slower_to_start_than_the_heartbeat_timeout_is_not_killed() {
    let _g = serial();
    let mut o = options("slow-start", "");
    // A loaded machine, played by a shell that waits before it becomes the worker: no
    // heartbeat for 2 s, four times the heartbeat timeout, well inside the load timeout.
    o.worker_command = vec!["sh".into(), "-c".into(), format!("sleep 2; exec '{}' engine", common::bin().display())];
    o.watchdog.heartbeat_timeout = Duration::from_millis(500);
    let mut h = start(o).unwrap();
    // The worker answers (its load of the missing checkpoint fails) instead of being killed.
    let events = collect_until(&mut h, Duration::from_secs(30), |e| {
        matches!(e, EngineEvent::WorkerDied { .. })
            || matches!(e, EngineEvent::Log { level: LogLevel::Error, message } if message.contains("no-such-checkpoint"))
    });
    h.shutdown();
    assert!(!events.iter().any(|e| matches!(e, EngineEvent::WorkerDied { .. })), "{:?}", events.last());
}

#[test]
fn a_crash_loop_on_the_accelerator_falls_back_to_cpu_and_keeps_the_journal() {
    let _g = serial();
    let mut o = options("fallback", "abort@loadx5:device=accelerator");
    o.device_label = Some("accelerator".into());
    o.restart.max_retries = 2;
    let journal_path = o.session_dir.join("journal.json");
    let mut h = start(o).unwrap();
    let prompt = Op::AddPrompt { frame: 0, object: 1, points: vec![Point::new(5.0, 6.0, true)], bbox: None };
    assert!(h.send(EngineCommand::Op(prompt.clone())));
    let events = collect_until(&mut h, Duration::from_secs(60), |e| matches!(e, EngineEvent::FellBack { .. }));
    let deaths: Vec<_> = events
        .iter()
        .filter_map(|e| if let EngineEvent::WorkerDied { reason, .. } = e { Some(reason) } else { None })
        .collect();
    assert_eq!(deaths.len(), 3, "two retries, then the third crash exhausts them: {deaths:?}");
    assert!(deaths.iter().all(|r| r.starts_with("SIGABRT")));
    let restarts: Vec<_> =
        events
            .iter()
            .filter_map(|e| {
                if let EngineEvent::State(EngineState::Restarting { attempt }) = e {
                    Some(*attempt)
                } else {
                    None
                }
            })
            .collect();
    assert_eq!(restarts, vec![1, 2]);
    match events.last().unwrap() {
        EngineEvent::FellBack { to, reason, .. } => {
            assert_eq!(*to, DeviceChoice::Cpu);
            assert!(reason.contains("3 crashes") && reason.contains("accelerator"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    // On the CPU rung the fault does not apply: the worker gets as far as loading the
    // (missing) checkpoint, which is an error answer, not a crash.
    let rest = collect_until(
        &mut h,
        Duration::from_secs(30),
        |e| matches!(e, EngineEvent::Log { level: LogLevel::Error, message } if message.contains("no-such-checkpoint")),
    );
    assert!(!rest.iter().any(|e| matches!(e, EngineEvent::WorkerDied { .. })), "{rest:#?}");
    h.shutdown();
    let journal = Journal::load(&journal_path).unwrap();
    assert_eq!(journal.ops, vec![prompt], "the prompt survived every crash on disk");
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// Processes whose parent is this test process (zombies included).
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) == Some(&me.as_str()) {
            out.push(format!("{} {}", e.file_name().to_string_lossy(), f[0]));
        }
    }
    out
}

#[test]
fn a_hundred_worker_restarts_leak_no_fds_threads_or_child_processes() {
    let _g = serial();
    let n = 100;
    let mut o = options("leaks", &format!("abort@loadx{n}"));
    o.restart = RestartPolicy {
        max_retries: u32::MAX,
        window: Duration::from_secs(3600),
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        fallback: vec![],
        smaller_model: false,
    };
    let (fds0, threads0, kids0) = (count_dir("/proc/self/fd"), count_dir("/proc/self/task"), children());
    let t = Instant::now();
    let mut h = start(o).unwrap();
    let mut deaths = 0;
    collect_until(&mut h, Duration::from_secs(400), |e| {
        if let EngineEvent::WorkerDied { reason, .. } = e {
            assert!(reason.starts_with("SIGABRT"), "{reason}");
            deaths += 1;
        }
        deaths == n
    });
    let took = t.elapsed();
    // The 101st worker survives its load (the fault is spent) and the engine stops.
    collect_until(&mut h, Duration::from_secs(30), |e| matches!(e, EngineEvent::State(EngineState::Stopped)));
    h.shutdown();
    let settle = Instant::now();
    while (count_dir("/proc/self/task") > threads0 || !children().is_empty())
        && settle.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{n} crash-restarts in {took:.1?} ({:.0} ms each, mostly libtorch start-up)",
        took.as_millis() as f64 / n as f64
    );
    assert_eq!(count_dir("/proc/self/fd"), fds0, "file descriptors leaked");
    // More threads than before is a leak; fewer is a thread the process had at the start
    // (this test may run first, while the harness's own threads settle) that has ended.
    let threads = count_dir("/proc/self/task");
    assert!(threads <= threads0, "threads leaked: {threads} now, {threads0} before");
    assert_eq!(children(), kids0, "child processes (or zombies) left behind");
}

// ---- with the real engine (the lead's model + predictor) ----

/// A random-init tiny SAM 2.1 checkpoint in the official format, made by the reference
/// (nudged so masks are not empty: see tests/fixtures/sam2_reference.py).
fn random_checkpoint() -> PathBuf {
    let dir = common::fixture_cache(&format!("supervisor-random-tiny-{}", common::fixtures_version()));
    let path = dir.join("sam2.1_hiera_tiny_random.pt");
    if !path.exists() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let script = format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom sam2_reference import make_checkpoint\nmake_checkpoint({:?}, 'tiny', '2.1', seed=5)\n",
            fixtures.to_string_lossy(),
            path.to_string_lossy()
        );
        let out = std::process::Command::new(common::python()).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    path
}

#[test]
fn a_model_switch_with_no_checkpoint_for_that_size_is_refused_and_the_working_worker_keeps_running() {
    let _g = serial();
    let mut o = options("switch-refused", "");
    o.checkpoint = random_checkpoint(); // tiny; no small checkpoint exists anywhere looked
    o.image_size = 128;
    let mut h = start(o).unwrap();
    collect_until(&mut h, Duration::from_secs(120), |e| matches!(e, EngineEvent::State(EngineState::Ready)));
    h.send(EngineCommand::SwitchModel(ModelSize::Small));
    let refused = collect_until(
        &mut h,
        Duration::from_secs(30),
        |e| matches!(e, EngineEvent::Log { level: LogLevel::Error, message } if message.contains("not switching")),
    );
    let Some(EngineEvent::Log { message, .. }) = refused.last() else { unreachable!() };
    assert!(
        message.contains("sam2-tui weights download small") && message.contains("staying on tiny"),
        "the refusal says how to get the checkpoint and what stays: {message}"
    );
    let disruptive = refused.iter().find(|e| {
        matches!(e, EngineEvent::State(EngineState::Starting | EngineState::Stopped) | EngineEvent::WorkerDied { .. })
            || matches!(e, EngineEvent::Log { message, .. } if message.starts_with("stopping worker"))
    });
    assert!(disruptive.is_none(), "the working worker was touched: {disruptive:?}");
    // Still the same live worker: switching to what runs is a no-op, not a restart.
    h.send(EngineCommand::SwitchModel(ModelSize::Tiny));
    collect_until(
        &mut h,
        Duration::from_secs(10),
        |e| matches!(e, EngineEvent::Log { message, .. } if message.contains("already running the tiny model")),
    );
    h.shutdown();
}

#[test]
fn a_missing_checkpoint_stops_the_engine_once_with_the_download_command_and_no_device_fall_back() {
    let _g = serial();
    let mut o = options("missing-checkpoint", "");
    o.device = DeviceChoice::Auto; // an accelerator rung: the old ladder fell back to the CPU
    let mut h = start(o).unwrap();
    let events =
        collect_until(&mut h, Duration::from_secs(60), |e| matches!(e, EngineEvent::State(EngineState::Stopped)));
    h.shutdown();
    assert!(
        !events.iter().any(|e| matches!(e, EngineEvent::FellBack { .. })),
        "a missing file is not the device's fault: {events:#?}"
    );
    let errors: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Log { level: LogLevel::Error, message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "one message, not one per rung and retry: {errors:#?}");
    assert!(
        errors[0].contains("no-such-checkpoint.pt") && errors[0].contains("sam2-tui weights download tiny"),
        "{}",
        errors[0]
    );
}

/// Where the square of `moving_square_video` is centred in frame `i`.
fn square_centre(i: u32) -> (u32, u32) {
    (20 + 4 * i, 30)
}

/// A frame folder: a bright square moving across a dark background.
fn moving_square_video(dir: &std::path::Path, frames: u32) -> PathBuf {
    let v = dir.join("frames");
    std::fs::create_dir_all(&v).unwrap();
    for i in 0..frames {
        let img = image::RgbImage::from_fn(96, 64, |x, y| {
            let (cx, cy) = square_centre(i);
            if x.abs_diff(cx) < 10 && y.abs_diff(cy) < 10 {
                image::Rgb([230, 200, 40])
            } else {
                image::Rgb([20, 30, 60])
            }
        });
        img.save(v.join(format!("{i:05}.jpg"))).unwrap();
    }
    v
}

/// Every final mask: (frame, object) → its RLE string.
type FinalMasks = Vec<((usize, u32), String)>;

fn segment(name: &str, fault: &str) -> (FinalMasks, Vec<EngineEvent>) {
    segment_from(name, fault, 0, false)
}

/// A click on the square in `prompt_frame` of the 12-frame clip, then a propagation
/// (backwards if `reverse`) to its end, through the faults in `fault`.
fn segment_from(name: &str, fault: &str, prompt_frame: usize, reverse: bool) -> (FinalMasks, Vec<EngineEvent>) {
    let mut o = options(name, fault);
    o.checkpoint = random_checkpoint();
    o.media = Some(moving_square_video(o.session_dir.parent().unwrap(), 12));
    // Small model input: this test is about recovery, not numerics (parity tests cover those).
    o.image_size = 256;
    o.restart.max_retries = 5;
    o.watchdog.heartbeat_timeout = Duration::from_secs(3);
    let mut h = start(o).unwrap();
    h.send(EngineCommand::Op(Op::AddPrompt {
        frame: prompt_frame,
        object: 1,
        points: {
            let (x, y) = square_centre(prompt_frame as u32);
            vec![Point::new(x as f32, y as f32, true)]
        },
        bbox: None,
    }));
    h.send(EngineCommand::Op(Op::Propagate { start: None, reverse, max_frames: None }));
    let events =
        collect_until(&mut h, Duration::from_secs(600), |e| matches!(e, EngineEvent::PropagationFinished { .. }));
    assert!(matches!(events.last(), Some(EngineEvent::PropagationFinished { cancelled: false })));
    let masks =
        h.masks.lock().unwrap().iter().map(|(k, m)| (*k, format!("{}:{}", m.rle.counts, m.score.to_bits()))).collect();
    h.shutdown();
    (masks, events)
}

#[test]
fn a_propagation_through_two_aborts_and_a_hang_ends_byte_identical_to_an_uninterrupted_one() {
    let _g = serial();
    let (clean, _) = segment("engine-clean", "");
    let (survived, events) = segment("engine-faults", "abort@frame=4,hang@frame=7,abort@frame=9");
    assert_eq!(clean.len(), 12, "one mask per frame");
    assert!(
        clean.iter().any(|(_, m)| m.split(':').next().unwrap().len() > 2),
        "all masks empty: the test would prove nothing"
    );
    assert_eq!(survived, clean, "final masks differ from the uninterrupted run");
    let deaths: Vec<_> = events
        .iter()
        .filter_map(|e| if let EngineEvent::WorkerDied { reason, .. } = e { Some(reason.clone()) } else { None })
        .collect();
    assert_eq!(deaths.len(), 3, "{deaths:?}");
    assert!(
        deaths[0].starts_with("SIGABRT") && deaths[1].contains("watchdog") && deaths[2].starts_with("SIGABRT"),
        "{deaths:?}"
    );
    let logs: Vec<_> = events
        .iter()
        .filter_map(|e| if let EngineEvent::Log { message, .. } = e { Some(message.clone()) } else { None })
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("SIGABRT")) && logs.iter().any(|l| l.starts_with("restarting")),
        "{logs:#?}"
    );
    for l in logs.iter().filter(|l| l.starts_with("recovered")) {
        println!("recovery: {l}");
    }
    assert_eq!(logs.iter().filter(|l| l.starts_with("recovered")).count(), 3);
}

#[test]
fn a_backward_propagation_that_dies_on_frame_0_still_ends_with_frame_0() {
    let _g = serial();
    // Prompt on the last frame, propagate backwards, die while frame 0 is computed: the
    // resumed run must still cover frame 0 (a reverse run *starting* at 0 covers nothing).
    let (clean, _) = segment_from("engine-reverse-clean", "", 11, true);
    let (survived, events) = segment_from("engine-reverse-fault", "abort@frame=0", 11, true);
    assert_eq!(clean.len(), 12, "one mask per frame");
    let died = events.iter().filter(|e| matches!(e, EngineEvent::WorkerDied { .. })).count();
    assert_eq!(died, 1, "the fault did not fire");
    assert_eq!(survived, clean, "final masks differ from the uninterrupted run");
}

/// Runs `ops` on the 12-frame clip through the faults in `fault` until every propagation
/// in it has finished: (the final masks, how many workers died).
fn run_ops(name: &str, fault: &str, ops: &[Op]) -> (FinalMasks, usize) {
    let mut o = options(name, fault);
    o.checkpoint = random_checkpoint();
    o.media = Some(moving_square_video(o.session_dir.parent().unwrap(), 12));
    o.image_size = 256;
    o.restart.max_retries = 5;
    o.watchdog.heartbeat_timeout = Duration::from_secs(3);
    let mut h = start(o).unwrap();
    for op in ops {
        h.send(EngineCommand::Op(op.clone()));
    }
    let passes = ops.iter().filter(|o| matches!(o, Op::Propagate { .. })).count();
    let mut finished = 0;
    let events = collect_until(&mut h, Duration::from_secs(600), |e| {
        finished += matches!(e, EngineEvent::PropagationFinished { cancelled: false }) as usize;
        finished == passes
    });
    let died = events.iter().filter(|e| matches!(e, EngineEvent::WorkerDied { .. })).count();
    let masks =
        h.masks.lock().unwrap().iter().map(|(k, m)| (*k, format!("{}:{}", m.rle.counts, m.score.to_bits()))).collect();
    h.shutdown();
    (masks, died)
}

fn click(frame: usize, object: u32) -> Op {
    let (x, y) = square_centre(frame as u32);
    Op::AddPrompt { frame, object, points: vec![Point::new(x as f32, y as f32, true)], bbox: None }
}

#[test]
fn a_crash_while_the_first_click_is_added_changes_no_mask() {
    let _g = serial();
    // The fault fires while the click's mask on frame 0 is being delivered: after the dead
    // worker wrote that frame's entry to the memory bank. The replayed click must not see
    // it (it would be fed back as the click's mask input: a correction, not a click).
    let (clean, _) = segment("first-click-clean", "");
    let (survived, events) = segment("first-click-fault", "abort@frame=0");
    let died = events.iter().filter(|e| matches!(e, EngineEvent::WorkerDied { .. })).count();
    assert_eq!(died, 1, "the fault did not fire");
    assert_eq!(survived, clean, "a crash during the first click changed the masks");
}

#[test]
fn a_crash_at_any_change_a_click_correction_or_removal_makes_to_the_bank_changes_no_mask() {
    let _g = serial();
    // Two objects tracked, then a correction on a tracked frame and a removal, then the
    // rest of the clip: every instant at which ops 0, 2 (a propagation: both objects'
    // outputs of a frame are written side by side), 3 and 4 change the memory bank on
    // disk, and the instant after each ran to its end (before the supervisor heard).
    let ops = vec![
        click(0, 1),
        click(0, 2),
        Op::Propagate { start: None, reverse: false, max_frames: Some(6) },
        click(5, 1),
        Op::RemoveObject { object: 2 },
        Op::Propagate { start: Some(5), reverse: false, max_frames: None },
    ];
    let (clean, _) = run_ops("any-instant-clean", "", &ops);
    assert!(clean.iter().any(|((f, o), _)| *f == 11 && *o == 1) && !clean.iter().any(|((_, o), _)| *o == 2));
    let mut crashes = 0;
    let mut check = |point: String| -> bool {
        let (survived, died) =
            run_ops(&format!("any-instant-{}", point.replace(['=', '.'], "-")), &format!("abort@{point}"), &ops);
        if died > 0 {
            crashes += 1;
            assert_eq!(survived, clean, "a crash at {point} changed the masks");
        }
        died > 0
    };
    for op in [0, 2, 3, 4] {
        // The writes in order, until one past the op's last change (the fault then never fires).
        let writes = (1..).take_while(|w| check(format!("op={op}.write={w}"))).count();
        assert!(writes >= 2, "op {op} made only {writes} changes to the bank");
        assert!(check(format!("op={op}.done")), "op={op}.done did not fire");
    }
    println!("{crashes} crash instants checked");
    assert!(crashes >= 7, "only {crashes} crash instants were reached");
}

#[test]
fn a_point_outside_the_opened_video_is_refused_and_never_journaled() {
    let _g = serial();
    let mut o = options("op-outside", "");
    let dir = o.session_dir.parent().unwrap().to_path_buf();
    common::random_tiny_tensors(&dir);
    o.checkpoint = dir.join("tiny.random-init.safetensors");
    o.media = Some(moving_square_video(&dir, 2));
    o.image_size = 128;
    let session_dir = o.session_dir.clone();
    let mut h = start(o).unwrap();
    collect_until(&mut h, Duration::from_secs(120), |e| matches!(e, EngineEvent::MediaInfo { .. }));
    // Far outside the 96×64 frame: the reference's positional encoding overflows to NaN.
    h.send(EngineCommand::Op(Op::AddPrompt {
        frame: 0,
        object: 1,
        points: vec![Point::new(3e38, 3e38, true)],
        bbox: None,
    }));
    let events = collect_until(
        &mut h,
        Duration::from_secs(30),
        |e| matches!(e, EngineEvent::Log { level: LogLevel::Error, message } if message.contains("refused op")),
    );
    h.shutdown();
    let Some(EngineEvent::Log { message, .. }) = events.last() else { unreachable!() };
    assert!(message.contains("outside the 96x64 frame"), "{message}");
    let journal = Journal::load(&session_dir.join("journal.json")).unwrap();
    assert_eq!(journal.ops, vec![], "the refused op is not in the journal");
}

/// Runs `ops` to their last op's end on `h`; the masks then, and the events seen.
fn masks_after(h: &mut SupervisorHandle, n_ops: usize) -> (FinalMasks, Vec<EngineEvent>) {
    let mut finished = 0;
    let events = collect_until(h, Duration::from_secs(600), |e| {
        finished += matches!(e, EngineEvent::OpFinished { cancelled: false, .. }) as usize;
        finished == n_ops
    });
    let masks =
        h.masks.lock().unwrap().iter().map(|(k, m)| (*k, format!("{}:{}", m.rle.counts, m.score.to_bits()))).collect();
    (masks, events)
}

fn click_and_propagate(object: u32) -> Vec<Op> {
    let (x, y) = square_centre(0);
    vec![
        Op::AddPrompt { frame: 0, object, points: vec![Point::new(x as f32, y as f32, true)], bbox: None },
        Op::Propagate { start: None, reverse: false, max_frames: None },
    ]
}

#[test]
fn a_supervisor_moved_to_the_next_item_keeps_its_model_and_a_crash_there_replays_that_items_journal() {
    let _g = serial();
    let recovery = |o: &mut SupervisorOptions| {
        o.checkpoint = random_checkpoint();
        o.image_size = 256;
        o.restart.max_retries = 5;
        o.watchdog.heartbeat_timeout = Duration::from_secs(3);
    };
    // The second item alone, on a fresh supervisor.
    let mut o = options("next-item-fresh", "");
    recovery(&mut o);
    let second = moving_square_video(o.session_dir.parent().unwrap(), 12);
    o.media = Some(second.clone());
    o.initial_ops = click_and_propagate(1);
    let mut h = start(o).unwrap();
    let (fresh, _) = masks_after(&mut h, 2);
    h.shutdown();

    // A first item (6 frames, object 2), then the second one on the same supervisor; its
    // worker aborts on frame 9, which only the second item reaches.
    let mut o = options("next-item-moved", "abort@frame=9");
    recovery(&mut o);
    let dir = o.session_dir.parent().unwrap().to_path_buf();
    o.set_env("SAM2_TUI_FAULT_STATE", &dir.join("fault-state.json").to_string_lossy());
    let first_dir = dir.join("first");
    std::fs::create_dir_all(&first_dir).unwrap();
    o.media = Some(moving_square_video(&first_dir, 6));
    o.initial_ops = click_and_propagate(2);
    let mut h = start(o).unwrap();
    let (first, events) = masks_after(&mut h, 2);
    assert_eq!(first.len(), 6, "{first:?}");
    let loads = |ev: &[EngineEvent]| ev.iter().filter(|e| matches!(e, EngineEvent::WorkerStarted { .. })).count();
    assert_eq!(loads(&events), 1);
    h.next_item(second, dir.join("second-session"), click_and_propagate(1)).unwrap();
    let (moved, events) = masks_after(&mut h, 2);
    h.shutdown();
    let died = events.iter().filter(|e| matches!(e, EngineEvent::WorkerDied { .. })).count();
    assert_eq!(died, 1, "the fault on frame 9 fires once");
    assert_eq!(loads(&events), 1, "only the crash costs a model load, not the move to the next item");
    assert_eq!(moved, fresh, "the second item's masks differ from a fresh supervisor's (or the first item's linger)");
}
