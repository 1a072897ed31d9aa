//! The supervisor's recovery paths as specifications, on a fake clock: each test plays a
//! worker (its answers, its death) into the machine and reads what the machine does.
//! Nothing here starts a process or sleeps.
use super::*;
use crate::options::{Recycling, RestartPolicy, Watchdog};
use sam2_api::device::{DeviceChoice, Precision, PrecisionChoice};
use sam2_api::events::ModelLabel;
use sam2_api::rle::Rle;
use sam2_api::session::Point;
use std::os::unix::process::ExitStatusExt;

const SIGABRT: i32 = libc::SIGABRT;
const SIGKILL: i32 = libc::SIGKILL;
/// The clip every test worker opens: 10 frames of 100×80.
const FRAMES: usize = 10;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Two retries within a minute after 100 ms and 200 ms, then the CPU; watchdog 10 s
/// without a heartbeat, 60 s without progress, 300 s to start.
fn options() -> SupervisorOptions {
    SupervisorOptions {
        worker_command: vec!["sam2-tui".into(), "engine".into()],
        checkpoint: "/weights/tiny.pt".into(),
        size: Some(ModelSize::Tiny),
        version: None,
        device: DeviceChoice::Cuda,
        precision: PrecisionChoice::Auto,
        image_size: 1024,
        media: Some("/clip.mp4".into()),
        session_dir: "/session".into(),
        fill_holes: true,
        env: vec![],
        tuning: Default::default(),
        restart: RestartPolicy {
            max_retries: 2,
            window: secs(60),
            initial_backoff: ms(100),
            max_backoff: secs(1),
            fallback: vec![DeviceChoice::Cpu],
            smaller_model: false,
        },
        watchdog: Watchdog { heartbeat_timeout: secs(10), progress_timeout: secs(60), load_timeout: secs(300) },
        recycling: Recycling::default(),
        device_label: None,
        initial_ops: vec![],
    }
}

fn click(frame: usize) -> Op {
    Op::AddPrompt { frame, object: 1, points: vec![Point::new(10.0, 10.0, true)], bbox: None }
}

fn propagate() -> Op {
    Op::Propagate { start: None, reverse: false, max_frames: None }
}

/// The mask a worker delivers on `frame` (its score names the frame and the worker).
fn mask(frame: usize, generation: u64) -> Vec<ObjectMask> {
    vec![ObjectMask { object: 1, rle: Rle::encode(&[1; 4], 2, 2), score: (generation * 100 + frame as u64) as f32 }]
}

#[derive(Default)]
struct FakeHost {
    files: Vec<PathBuf>,
}

impl Host for FakeHost {
    fn exists(&self, path: &Path) -> bool {
        self.is_file(path)
    }
    fn is_file(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path)
    }
    fn official_checkpoint(&self, size: ModelSize, _: ModelVersion) -> PathBuf {
        PathBuf::from(format!("/official/{}.pt", size.name()))
    }
    fn env_has(&self, _: &str) -> bool {
        false
    }
}

/// The machine on a fake clock, with the driver's bookkeeping played back: spawns
/// succeed (pid 1000 + generation) unless told otherwise, the mask store and the journal
/// on disk follow the outputs.
struct Sim {
    m: Machine,
    now: Instant,
    /// Outputs since the last `take`.
    out: Vec<Output>,
    /// The generation of the newest worker.
    worker: u64,
    spawn_error: Option<String>,
    masks: store::MaskStore,
    journal_on_disk: Option<Journal>,
    /// The newest LoadModel request: what the worker's Loaded answer echoes.
    load: Option<Request>,
}

impl Sim {
    fn new(opts: SupervisorOptions) -> Sim {
        Sim::with_host(opts, FakeHost::default())
    }

    fn with_host(opts: SupervisorOptions, host: FakeHost) -> Sim {
        Sim::set_up(opts, host, |_| {})
    }

    /// A machine taking over a session another worker ran (`Machine::adopt`).
    fn adopting(opts: SupervisorOptions, completed: usize, progress: Option<PropagationProgress>) -> Sim {
        Sim::set_up(opts, FakeHost::default(), |m| m.adopt(completed, progress))
    }

    fn set_up(opts: SupervisorOptions, host: FakeHost, before_start: impl FnOnce(&mut Machine)) -> Sim {
        let now = Instant::now();
        let journal = Journal { version: Journal::VERSION, ops: opts.initial_ops.clone() };
        let mut m = Machine::new(opts, journal, Box::new(host), now);
        before_start(&mut m);
        let mut s = Sim {
            m,
            now,
            out: vec![],
            worker: 0,
            spawn_error: None,
            masks: Default::default(),
            journal_on_disk: None,
            load: None,
        };
        s.input(Input::Tick);
        s
    }

    /// A machine whose first worker is up, with the clip open and nothing to do.
    fn ready(opts: SupervisorOptions) -> Sim {
        let mut s = Sim::new(opts);
        s.bring_up();
        s.take();
        s
    }

    fn input(&mut self, input: Input) {
        let mut pending = VecDeque::from([input]);
        while let Some(i) = pending.pop_front() {
            for o in self.m.handle(i, self.now) {
                match &o {
                    Output::Spawn { generation, .. } => {
                        self.worker = *generation;
                        let pid = match &self.spawn_error {
                            Some(e) => Err(e.clone()),
                            None => Ok(1000 + *generation as u32),
                        };
                        pending.push_back(Input::Spawned { generation: *generation, pid });
                    }
                    Output::Masks(MaskChange::Insert { frame, objects }) => self.masks.insert(*frame, objects),
                    Output::Masks(MaskChange::Completed(op)) => self.masks.apply_completed(op),
                    Output::Masks(MaskChange::Clear) => self.masks = Default::default(),
                    Output::SaveJournal { journal, .. } => self.journal_on_disk = Some(journal.clone()),
                    Output::Send { request: r @ Request::LoadModel { .. }, .. } => self.load = Some(r.clone()),
                    _ => {}
                }
                self.out.push(o);
            }
        }
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Lets `d` pass, firing every deadline the machine asks for on the way, as the
    /// driver does.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1000 {
            match self.m.deadline() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.input(Input::Tick);
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("the machine keeps asking for the same deadline");
    }

    fn command(&mut self, c: EngineCommand) {
        self.input(Input::Command(c));
    }

    fn op(&mut self, op: Op) {
        self.command(EngineCommand::Op(op));
    }

    fn says(&mut self, r: Response) {
        self.input(Input::Worker { generation: self.worker, news: WorkerNews::Message(r) });
    }

    fn news(&mut self, news: WorkerNews) {
        self.input(Input::Worker { generation: self.worker, news });
    }

    fn stderr(&mut self, line: &str) {
        self.news(WorkerNews::StderrLine(line.into()));
    }

    fn dies_of(&mut self, signal: i32) {
        self.news(WorkerNews::Exited(ExitStatus::from_raw(signal)));
    }

    fn exits(&mut self, code: i32) {
        self.news(WorkerNews::Exited(ExitStatus::from_raw(code << 8)));
    }

    fn heartbeat(&mut self) {
        self.says(Response::Heartbeat { stats: Default::default() });
    }

    fn hello(&mut self) {
        self.says(Response::Hello { version: PROTOCOL_VERSION, pid: 1, torch_version: "2.11.0".into() });
    }

    /// The worker loads what it was asked to (auto resolves to the CPU).
    fn loaded(&mut self) {
        let Some(Request::LoadModel { size, device, .. }) = self.load.clone() else { panic!("no model to load") };
        let device = if device == DeviceChoice::Auto { DeviceChoice::Cpu } else { device };
        self.says(Response::Loaded {
            model: ModelLabel {
                size: size.unwrap_or(ModelSize::Tiny),
                version: ModelVersion::V2_1,
                random_init: false,
            },
            device,
            precision: Precision::Fp32,
            device_label: device.to_string(),
        });
    }

    /// The start-up handshake, answered in full: hello, model, clip, bank restored.
    fn bring_up(&mut self) {
        self.hello();
        self.loaded();
        self.says(Response::MediaInfo { width: 100, height: 80, frames: FRAMES, fps: 25.0 });
        let restored = self.out.iter().rev().find_map(|o| match o {
            Output::Send { request: Request::Restore { ops }, .. } => Some(ops.len()),
            _ => None,
        });
        self.says(Response::Restored { ops: restored.expect("asked to restore") });
    }

    fn frame(&mut self, seq: u64, frame: usize) {
        let objects = mask(frame, self.worker);
        self.says(Response::Frame { seq, frame, objects, timings: Default::default() });
    }

    fn done(&mut self, seq: u64, cancelled: bool) {
        self.says(Response::OpDone { seq, cancelled });
    }

    /// Op `seq` is a click on `frame`: its mask, then done.
    fn answer_click(&mut self, seq: u64, frame: usize) {
        self.frame(seq, frame);
        self.done(seq, false);
    }

    fn saved_ops(&self) -> Vec<Op> {
        self.journal_on_disk.as_ref().map(|j| j.ops.clone()).unwrap_or_default()
    }

    /// (frame, score) of every mask in the store.
    fn stored(&self) -> Vec<(usize, f32)> {
        self.masks.iter().map(|((f, _), m)| (*f, m.score)).collect()
    }
}

fn requests(out: &[Output]) -> Vec<Request> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<EngineEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Emit(e) => Some(e.clone()),
            Output::Log { level, message } => Some(EngineEvent::Log { level: *level, message: message.clone() }),
            _ => None,
        })
        .collect()
}

fn logs(out: &[Output]) -> Vec<String> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::Log { message, .. } => Some(message),
            _ => None,
        })
        .collect()
}

fn deaths(out: &[Output]) -> Vec<String> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::WorkerDied { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn spawns(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Spawn { .. })).count()
}

fn kills(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Kill { .. })).count()
}

fn applied(out: &[Output]) -> Vec<(u64, Op)> {
    requests(out)
        .into_iter()
        .filter_map(|r| match r {
            Request::Apply { seq, op } => Some((seq, op)),
            _ => None,
        })
        .collect()
}

fn load_devices(out: &[Output]) -> Vec<(DeviceChoice, Option<ModelSize>)> {
    requests(out)
        .into_iter()
        .filter_map(|r| match r {
            Request::LoadModel { device, size, .. } => Some((device, size)),
            _ => None,
        })
        .collect()
}

fn has_event(out: &[Output], want: &EngineEvent) -> bool {
    events(out).iter().any(|e| e == want)
}

// ---- start-up ----

#[test]
fn a_new_worker_is_greeted_loaded_given_the_clip_and_restored_before_any_op_is_sent() {
    let mut s = Sim::new(options());
    s.op(click(0)); // while the worker starts: journaled, not sent
    s.bring_up();
    let out = s.take();
    let names: Vec<&str> = requests(&out)
        .iter()
        .map(|r| match r {
            Request::Hello { .. } => "hello",
            Request::LoadModel { .. } => "load",
            Request::OpenMedia { .. } => "open",
            Request::Restore { .. } => "restore",
            Request::Apply { .. } => "apply",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["hello", "load", "open", "restore", "apply"]);
    assert!(requests(&out).contains(&Request::OpenMedia {
        path: "/clip.mp4".into(),
        bank_dir: Some("/session/bank-0".into()),
        fill_holes: true
    }));
    assert!(requests(&out).contains(&Request::Restore { ops: vec![] }), "a first worker restores nothing");
    assert_eq!(applied(&out), [(0, click(0))]);
}

#[test]
fn an_op_is_on_disk_before_it_is_sent_to_the_worker() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    let out = s.take();
    let saved = out.iter().position(|o| matches!(o, Output::SaveJournal { .. })).expect("saved");
    let sent = out.iter().position(|o| matches!(o, Output::Send { request: Request::Apply { .. }, .. })).expect("sent");
    assert!(saved < sent);
    assert_eq!(s.saved_ops(), [click(0)]);
}

#[test]
fn an_op_outside_the_opened_clip_is_refused_and_never_journaled() {
    let mut s = Sim::ready(options());
    s.op(click(FRAMES));
    let out = s.take();
    assert!(logs(&out).iter().any(|l| l.starts_with("refused op") && l.contains("out of range")), "{out:?}");
    assert!(applied(&out).is_empty());
    assert_eq!(s.journal_on_disk, None);
}

// ---- the watchdog ----

#[test]
fn a_ready_worker_silent_for_the_heartbeat_timeout_is_killed_and_replaced() {
    let mut s = Sim::ready(options());
    s.advance(secs(9));
    s.heartbeat(); // alive: the clock starts over
    s.advance(secs(9));
    assert_eq!(kills(&s.take()), 0);
    s.advance(secs(1));
    let out = s.take();
    assert_eq!(kills(&out), 1);
    assert!(logs(&out).iter().any(|l| l.contains("watchdog: killing worker 1001: no heartbeat for 10.0s")), "{out:?}");
    s.dies_of(SIGKILL);
    let out = s.take();
    assert_eq!(deaths(&out), ["SIGKILL by the watchdog (no heartbeat for 10.0s)"], "ours, not an OOM");
    s.advance(ms(100));
    assert_eq!(spawns(&s.take()), 1);
}

#[test]
fn a_busy_worker_whose_heartbeat_ticks_but_whose_op_makes_no_progress_is_killed_after_the_progress_timeout() {
    let mut s = Sim::ready(options());
    s.op(propagate());
    s.frame(0, 0);
    for _ in 0..11 {
        s.advance(secs(5)); // a device hang: the heartbeat thread still runs
        s.heartbeat();
    }
    assert_eq!(kills(&s.take()), 0, "55 s without a frame is within the progress timeout");
    s.advance(secs(5));
    let out = s.take();
    assert_eq!(kills(&out), 1);
    s.dies_of(SIGKILL);
    assert_eq!(deaths(&s.take()), ["SIGKILL by the watchdog (no progress for 60.0s)"]);
}

#[test]
fn a_worker_still_starting_is_judged_by_the_load_timeout_alone() {
    let mut s = Sim::new(options());
    s.hello(); // then loading, with no heartbeat: a slow start on a loaded machine
    s.advance(secs(299));
    assert_eq!(kills(&s.take()), 0, "29 heartbeat timeouts without a heartbeat while starting");
    s.advance(secs(1));
    assert_eq!(kills(&s.take()), 1);
    s.dies_of(SIGKILL);
    let out = s.take();
    assert_eq!(deaths(&out), ["SIGKILL by the watchdog (no answer while starting for 300s)"]);
    assert!(has_event(&out, &EngineEvent::State(EngineState::Restarting { attempt: 1 })));
}

#[test]
fn a_worker_is_killed_once_and_then_only_its_exit_is_awaited() {
    let mut s = Sim::ready(options());
    s.advance(secs(10));
    assert_eq!(kills(&s.take()), 1);
    assert_eq!(s.m.deadline(), None, "nothing to time while the kill takes effect");
    s.advance(secs(60));
    assert_eq!(kills(&s.take()), 0);
}

#[test]
fn a_worker_asked_to_stop_that_does_not_exit_is_killed_after_the_grace() {
    let mut s = Sim::ready(options());
    s.command(EngineCommand::SwitchDevice(DeviceChoice::Cpu));
    let out = s.take();
    assert!(requests(&out).contains(&Request::Shutdown));
    assert!(out.contains(&Output::CloseStdin { generation: 1 }));
    s.advance(RETIRE_GRACE - ms(1));
    assert_eq!(kills(&s.take()), 0);
    s.advance(ms(1));
    assert_eq!(kills(&s.take()), 1);
    s.dies_of(SIGKILL);
    let out = s.take();
    assert!(deaths(&out).is_empty(), "a worker we retired is not a crash: {out:?}");
    assert_eq!(spawns(&out), 1, "its replacement starts at once");
}

#[test]
fn the_deadline_asked_for_is_the_earliest_timer() {
    let mut s = Sim::new(options());
    let t0 = s.now;
    assert_eq!(s.m.deadline(), Some(t0 + secs(300)), "starting: the load timeout");
    s.bring_up();
    assert_eq!(s.m.deadline(), Some(t0 + secs(10)), "ready and idle: the heartbeat timeout");
    s.dies_of(SIGABRT);
    assert_eq!(s.m.deadline(), Some(t0 + ms(100)), "after a crash: the backoff");
}

// ---- crashes ----

#[test]
fn a_crash_mid_propagation_resumes_from_the_frame_after_the_last_delivered_and_keeps_the_masks() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    s.op(propagate());
    (0..5).for_each(|f| s.frame(1, f));
    let before = s.stored();
    s.dies_of(SIGABRT);
    let out = s.take();
    assert!(deaths(&out)[0].starts_with("SIGABRT"));
    assert_eq!(s.stored(), before, "a death takes no mask away");
    s.advance(ms(99));
    assert_eq!(spawns(&s.take()), 0, "not before the backoff");
    s.advance(ms(1));
    s.bring_up();
    let out = s.take();
    assert!(requests(&out).contains(&Request::Restore { ops: vec![click(0)] }), "the bank holds the click");
    assert_eq!(
        applied(&out),
        [(1, Op::Propagate { start: Some(5), reverse: false, max_frames: Some(4) })],
        "frames 0..=4 are not recomputed"
    );
    assert!(has_event(&out, &EngineEvent::State(EngineState::Propagating { done: 5, total: FRAMES })));
    (5..FRAMES).for_each(|f| s.frame(1, f));
    s.done(1, false);
    let out = s.take();
    assert!(has_event(&out, &EngineEvent::PropagationFinished { cancelled: false }));
    let workers: Vec<u64> = s.stored().iter().map(|(_, score)| *score as u64 / 100).collect();
    assert_eq!(workers, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2], "frames 0..=4 from the first worker, 5..=9 from the second");
    assert_eq!(s.saved_ops(), [click(0), propagate()], "the journal is as the user wrote it");
}

#[test]
fn a_crash_during_a_click_restores_the_bank_and_sends_the_click_again() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    s.op(click(3));
    s.frame(1, 3); // delivered, but the op did not finish
    s.take();
    s.dies_of(SIGABRT);
    s.advance(ms(100));
    s.bring_up();
    let out = s.take();
    // Always a Restore, with the completed ops only: the dead worker may have written the
    // click to its bank before it died, and the new one takes that back.
    assert!(requests(&out).contains(&Request::Restore { ops: vec![click(0)] }));
    assert_eq!(applied(&out), [(1, click(3))]);
}

#[test]
fn a_crash_during_the_very_first_click_still_restores_an_empty_bank() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.frame(0, 0);
    s.take();
    s.dies_of(SIGABRT);
    s.advance(ms(100));
    s.bring_up();
    let out = s.take();
    assert!(requests(&out).contains(&Request::Restore { ops: vec![] }));
    assert_eq!(applied(&out), [(0, click(0))]);
}

#[test]
fn a_crash_during_load_restarts_after_the_backoff() {
    let mut s = Sim::new(options());
    s.hello();
    s.stderr("loading /weights/tiny.pt");
    s.dies_of(SIGABRT);
    let out = s.take();
    assert!(deaths(&out)[0].starts_with("SIGABRT"));
    assert!(has_event(&out, &EngineEvent::State(EngineState::Restarting { attempt: 1 })));
    assert!(logs(&out).iter().any(|l| l == "restarting the cuda worker in 100 ms (attempt 1 of 2)"), "{out:?}");
    s.advance(ms(100));
    let out = s.take();
    assert_eq!(spawns(&out), 1);
    assert!(requests(&out).contains(&Request::Hello { version: PROTOCOL_VERSION }));
}

#[test]
fn a_crash_loop_exhausts_the_retries_within_the_window_and_falls_back_to_the_cpu_on_a_fresh_bank() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    let mut backoffs = vec![];
    for _ in 0..2 {
        s.dies_of(SIGABRT);
        let t = s.now;
        while spawns(&s.out) == 0 {
            s.advance(ms(10));
        }
        backoffs.push((s.now - t).as_millis());
        s.bring_up();
        s.take();
    }
    assert_eq!(backoffs, [100, 200], "exponential backoff");
    s.take();
    s.dies_of(SIGABRT); // the third crash within the minute
    let out = s.take();
    let fell = events(&out).into_iter().find(|e| matches!(e, EngineEvent::FellBack { .. }));
    let Some(EngineEvent::FellBack { from, to, reason }) = fell else { panic!("{out:?}") };
    assert_eq!((from, to), (DeviceChoice::Cuda, DeviceChoice::Cpu));
    assert!(reason.starts_with("3 crashes within 60s on cuda"), "{reason}");
    assert!(out.contains(&Output::RemoveDir("/session/bank-0".into())), "the bank is the cuda model's");
    assert_eq!(spawns(&out), 1, "no backoff onto a new rung");
    s.bring_up();
    let out = s.take();
    assert_eq!(load_devices(&out), [(DeviceChoice::Cpu, Some(ModelSize::Tiny))]);
    assert!(requests(&out).contains(&Request::OpenMedia {
        path: "/clip.mp4".into(),
        bank_dir: Some("/session/bank-1".into()),
        fill_holes: true
    }));
    assert!(requests(&out).contains(&Request::Restore { ops: vec![] }));
    assert_eq!(applied(&out), [(0, click(0))], "the whole journal is replayed");
}

#[test]
fn a_worker_restarted_after_a_death_is_not_asked_to_warm_up_first() {
    let mut o = options();
    o.tuning.warm_up = true;
    let mut s = Sim::new(o);
    let warm = |out: &[Output]| {
        requests(out).iter().find_map(|r| match r {
            Request::LoadModel { tuning, .. } => Some(tuning.warm_up),
            _ => None,
        })
    };
    s.bring_up();
    assert_eq!(warm(&s.take()), Some(true), "the first worker warms up (a spare worker, before any session)");
    s.dies_of(SIGABRT);
    s.advance(secs(1));
    s.hello();
    assert_eq!(warm(&s.take()), Some(false), "its replacement resumes the session without a warm-up");
}

#[test]
fn crashes_further_apart_than_the_window_are_retried_without_falling_back() {
    let mut s = Sim::ready(options());
    for _ in 0..5 {
        s.dies_of(SIGABRT);
        s.advance(secs(61));
        s.bring_up();
    }
    let out = s.take();
    assert_eq!(deaths(&out).len(), 5);
    assert!(!events(&out).iter().any(|e| matches!(e, EngineEvent::FellBack { .. })));
    let attempts: Vec<u32> = events(&out)
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::State(EngineState::Restarting { attempt }) => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 1, 1, 1, 1]);
}

#[test]
fn the_fallback_ladder_is_walked_rung_by_rung_then_smaller_models_then_the_engine_stops() {
    let mut o = options();
    o.size = Some(ModelSize::Small);
    o.restart.max_retries = 0;
    o.restart.fallback = vec![DeviceChoice::Mps, DeviceChoice::Cuda, DeviceChoice::Cpu];
    o.restart.smaller_model = true;
    let mut s = Sim::new(o);
    for _ in 0..4 {
        s.hello();
        s.dies_of(SIGABRT); // while loading, on every rung
        s.advance(ms(1));
    }
    let out = s.take();
    assert_eq!(
        load_devices(&out),
        [
            (DeviceChoice::Cuda, Some(ModelSize::Small)),
            (DeviceChoice::Mps, Some(ModelSize::Small)),
            // cuda is skipped: it is where the walk started
            (DeviceChoice::Cpu, Some(ModelSize::Small)),
            (DeviceChoice::Cpu, Some(ModelSize::Tiny)),
        ]
    );
    let falls: Vec<(DeviceChoice, DeviceChoice)> = events(&out)
        .into_iter()
        .filter_map(|e| match e {
            EngineEvent::FellBack { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    use DeviceChoice::{Cpu, Cuda, Mps};
    assert_eq!(falls, [(Cuda, Mps), (Mps, Cpu), (Cpu, Cpu)]);
    assert!(logs(&out).iter().any(|l| l.starts_with("giving up")), "{out:?}");
    assert!(has_event(&out, &EngineEvent::State(EngineState::Stopped)));
    assert_eq!(spawns(&out), 4, "nothing starts after the last rung");
    assert_eq!(s.m.deadline(), None);
}

#[test]
fn a_worker_that_cannot_be_started_counts_as_a_crash() {
    let mut o = options();
    o.restart.max_retries = 1;
    o.restart.fallback = vec![];
    let mut s = Sim::ready(o);
    s.spawn_error = Some("sam2-tui: cannot start worker: No such file or directory".into());
    s.dies_of(SIGABRT);
    s.advance(secs(1));
    let out = s.take();
    assert!(logs(&out).iter().any(|l| l.contains("cannot start worker")));
    assert!(logs(&out).iter().any(|l| l.starts_with("giving up")), "the second failure exhausts one retry: {out:?}");
}

#[test]
fn a_worker_that_sends_garbage_is_killed_and_its_death_is_put_down_to_the_protocol() {
    let mut s = Sim::ready(options());
    s.news(WorkerNews::ProtocolError("undecodable frame".into()));
    assert_eq!(kills(&s.take()), 1);
    s.dies_of(SIGKILL);
    assert_eq!(deaths(&s.take()), ["SIGKILL by the watchdog (protocol error: undecodable frame)"]);
}

#[test]
fn news_from_a_dead_worker_changes_nothing() {
    let mut s = Sim::ready(options());
    s.op(propagate());
    s.dies_of(SIGABRT);
    s.advance(ms(100));
    s.take();
    // The first worker's last frame, arriving late.
    s.input(Input::Worker {
        generation: 1,
        news: WorkerNews::Message(Response::Frame {
            seq: 0,
            frame: 0,
            objects: mask(0, 1),
            timings: Default::default(),
        }),
    });
    assert!(s.take().is_empty());
    assert!(s.stored().is_empty());
}

#[test]
fn a_dead_workers_last_stderr_lines_come_with_its_death_without_the_backtrace_hint() {
    let mut s = Sim::ready(options());
    s.stderr("thread 'main' panicked at src/engine.rs:1:1:");
    s.stderr("injected panic");
    s.stderr("note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace");
    s.exits(101);
    let died = events(&s.take()).into_iter().find_map(|e| match e {
        EngineEvent::WorkerDied { reason, stderr_tail } => Some((reason, stderr_tail)),
        _ => None,
    });
    let (reason, tail) = died.unwrap();
    assert_eq!(reason, "exit status 101");
    assert_eq!(tail, ["thread 'main' panicked at src/engine.rs:1:1:", "injected panic"]);
}

#[test]
fn a_load_error_that_names_the_checkpoint_stops_the_engine_once_without_falling_back() {
    let mut s = Sim::new(options());
    s.hello();
    s.says(Response::Error { seq: None, message: "/weights/tiny.pt: no such file".into() });
    let out = s.take();
    assert!(!events(&out).iter().any(|e| matches!(e, EngineEvent::FellBack { .. })));
    let errors: Vec<_> =
        events(&out).into_iter().filter(|e| matches!(e, EngineEvent::Log { level: LogLevel::Error, .. })).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(format!("{errors:?}").contains("sam2-tui weights download tiny"));
    s.exits(0);
    s.advance(secs(60));
    assert_eq!(spawns(&s.take()), 0, "stopped until the user switches");
}

// ---- recycling ----

#[test]
fn recycling_after_n_frames_replaces_the_worker_at_a_frame_boundary_and_the_propagation_goes_on() {
    let mut o = options();
    o.recycling.after_frames = Some(3);
    let mut s = Sim::ready(o);
    s.op(click(0));
    s.answer_click(0, 0); // frame 1 of this worker
    s.op(propagate());
    s.frame(1, 0);
    s.take();
    s.frame(1, 1); // frame 3
    let out = s.take();
    assert_eq!(requests(&out), [Request::Cancel], "stopped at the next frame boundary");
    s.done(1, true);
    let out = s.take();
    assert!(!has_event(&out, &EngineEvent::PropagationFinished { cancelled: true }), "the user sees no cancel");
    assert!(requests(&out).contains(&Request::Shutdown));
    s.exits(0);
    let out = s.take();
    assert!(deaths(&out).is_empty(), "a planned restart is not a crash");
    assert_eq!(spawns(&out), 1, "no backoff");
    s.bring_up();
    let out = s.take();
    assert!(!out.iter().any(|o| matches!(o, Output::RemoveDir(_))), "same model, same bank");
    assert!(requests(&out).contains(&Request::Restore { ops: vec![click(0)] }));
    assert_eq!(applied(&out), [(1, Op::Propagate { start: Some(2), reverse: false, max_frames: Some(7) })]);
}

#[test]
fn a_new_watermark_recycles_an_idle_worker_at_once_with_the_new_environment() {
    let mut s = Sim::ready(options());
    s.command(EngineCommand::SetWatermark(1.2));
    let out = s.take();
    assert_eq!(requests(&out), [Request::Cancel, Request::Shutdown]);
    s.exits(0);
    let out = s.take();
    let env = out.iter().find_map(|o| match o {
        Output::Spawn { env, .. } => Some(env.clone()),
        _ => None,
    });
    assert!(env.unwrap().contains(&("PYTORCH_MPS_HIGH_WATERMARK_RATIO".into(), "1.2".into())));
}

// ---- adopting a session another worker ran ----

#[test]
fn an_adopted_session_is_restored_from_its_bank_and_its_propagation_goes_on() {
    let mut opts = options();
    opts.initial_ops = vec![click(0), propagate(), click(5)];
    let mut progress = PropagationProgress::default();
    (0..=3).for_each(|f| progress.record(f));
    let mut s = Sim::adopting(opts, 1, Some(progress));
    s.bring_up();
    let out = s.take();
    assert!(requests(&out).contains(&Request::Restore { ops: vec![click(0)] }), "the done op is not recomputed");
    let rest = Op::Propagate { start: Some(4), reverse: false, max_frames: Some(FRAMES - 1 - 4) };
    assert_eq!(applied(&out), [(1, rest)], "the propagation goes on after frame 3");
    (4..FRAMES).for_each(|f| s.frame(1, f));
    s.done(1, false);
    let out = s.take();
    assert!(has_event(&out, &EngineEvent::OpFinished { index: 1, cancelled: false }));
    assert_eq!(applied(&out), [(2, click(5))], "the op sent after it follows");
}

// ---- cancel ----

#[test]
fn cancel_stops_a_propagation_and_journals_the_frames_it_ran() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    s.op(propagate());
    (0..4).for_each(|f| s.frame(1, f));
    s.take();
    s.command(EngineCommand::Cancel);
    assert_eq!(requests(&s.take()), [Request::Cancel]);
    s.done(1, true);
    let out = s.take();
    assert!(has_event(&out, &EngineEvent::PropagationFinished { cancelled: true }));
    assert!(has_event(&out, &EngineEvent::OpFinished { index: 1, cancelled: true }));
    let as_ran = Op::Propagate { start: Some(0), reverse: false, max_frames: Some(3) };
    assert_eq!(s.saved_ops(), [click(0), as_ran], "a replay recomputes what the user saw, no more");
}

#[test]
fn cancel_while_the_worker_is_being_replaced_journals_what_ran_and_the_next_op_follows() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    s.op(propagate());
    (0..3).for_each(|f| s.frame(1, f));
    s.op(click(5));
    s.dies_of(SIGABRT);
    s.command(EngineCommand::Cancel);
    let out = s.take();
    assert!(has_event(&out, &EngineEvent::OpFinished { index: 1, cancelled: true }));
    s.advance(ms(100));
    s.bring_up();
    let out = s.take();
    let as_ran = Op::Propagate { start: Some(0), reverse: false, max_frames: Some(2) };
    assert!(requests(&out).contains(&Request::Restore { ops: vec![click(0), as_ran] }));
    assert_eq!(applied(&out), [(2, click(5))], "the propagation is not resumed");
}

#[test]
fn a_propagation_cancelled_when_its_worker_dies_is_finished_not_resumed() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    s.op(propagate());
    (0..3).for_each(|f| s.frame(1, f));
    s.command(EngineCommand::Cancel);
    s.dies_of(SIGABRT);
    let out = s.take();
    assert!(has_event(&out, &EngineEvent::PropagationFinished { cancelled: true }));
    s.advance(ms(100));
    s.bring_up();
    assert!(applied(&s.take()).is_empty());
}

// ---- shutdown and switches ----

#[test]
fn shutdown_stops_the_worker_and_the_machine_finishes_when_it_has_exited() {
    let mut s = Sim::ready(options());
    s.op(propagate());
    s.take();
    s.command(EngineCommand::Shutdown);
    let out = s.take();
    assert_eq!(requests(&out), [Request::Cancel, Request::Shutdown]);
    assert!(!s.m.is_finished());
    s.dies_of(SIGABRT); // how it ends does not matter now
    let out = s.take();
    assert!(deaths(&out).is_empty());
    assert_eq!(events(&out), [EngineEvent::State(EngineState::Stopped)]);
    assert!(s.m.is_finished());
    assert_eq!(s.m.deadline(), None);
}

#[test]
fn the_client_dropping_its_commands_is_a_shutdown() {
    let mut s = Sim::ready(options());
    s.input(Input::CommandsClosed);
    s.exits(0);
    assert!(s.m.is_finished());
}

#[test]
fn a_device_switch_replays_the_journal_on_a_fresh_bank_with_the_crash_history_forgotten() {
    let mut o = options();
    o.restart.max_retries = 1;
    let mut s = Sim::ready(o);
    s.op(click(0));
    s.answer_click(0, 0);
    s.dies_of(SIGABRT); // one crash: the only retry is used
    s.advance(ms(100));
    s.bring_up();
    s.take();
    s.command(EngineCommand::SwitchDevice(DeviceChoice::Mps));
    s.exits(0);
    s.bring_up();
    let out = s.take();
    assert_eq!(load_devices(&out), [(DeviceChoice::Mps, Some(ModelSize::Tiny))]);
    assert!(requests(&out).contains(&Request::Restore { ops: vec![] }));
    assert_eq!(applied(&out), [(0, click(0))]);
    s.answer_click(0, 0);
    s.dies_of(SIGABRT);
    let out = s.take();
    assert!(
        has_event(&out, &EngineEvent::State(EngineState::Restarting { attempt: 1 })),
        "a retry, not a fall back: {out:?}"
    );
}

fn load_precisions(out: &[Output]) -> Vec<PrecisionChoice> {
    requests(out)
        .into_iter()
        .filter_map(|r| match r {
            Request::LoadModel { precision, .. } => Some(precision),
            _ => None,
        })
        .collect()
}

#[test]
fn a_precision_switch_loads_a_new_worker_with_it_and_replays_the_journal_on_a_fresh_bank() {
    let mut s = Sim::ready(options());
    s.op(click(0));
    s.answer_click(0, 0);
    s.take();
    s.command(EngineCommand::SwitchPrecision(PrecisionChoice::Fp16));
    s.exits(0);
    s.bring_up();
    let out = s.take();
    assert_eq!(load_precisions(&out), [PrecisionChoice::Fp16]);
    assert_eq!(load_devices(&out), [(DeviceChoice::Cuda, Some(ModelSize::Tiny))], "same device and model");
    assert!(requests(&out).contains(&Request::Restore { ops: vec![] }), "a fresh bank");
    assert_eq!(applied(&out), [(0, click(0))], "the journal is replayed");
}

#[test]
fn a_precision_switch_that_fails_to_load_goes_back_to_the_precision_that_worked() {
    let mut s = Sim::ready(options());
    s.command(EngineCommand::SwitchPrecision(PrecisionChoice::Fp16));
    s.exits(0);
    s.hello();
    s.says(Response::Error { seq: None, message: "fp16 is not supported here".into() });
    let out = s.take();
    assert!(logs(&out).iter().any(|l| l.starts_with("the switch failed (fp16 is not supported here)")));
    s.exits(0);
    s.hello();
    assert_eq!(load_precisions(&s.take()), [PrecisionChoice::Auto]);
}

#[test]
fn a_model_switch_that_fails_to_load_goes_back_to_the_model_that_worked() {
    let host = FakeHost { files: vec!["/official/small.pt".into()] };
    let mut s = Sim::with_host(options(), host);
    s.bring_up();
    s.command(EngineCommand::SwitchModel(ModelSize::Small));
    s.exits(0);
    s.hello();
    s.says(Response::Error { seq: None, message: "out of memory".into() });
    let out = s.take();
    assert!(logs(&out)
        .iter()
        .any(|l| l.starts_with("the switch failed (out of memory); going back to /weights/tiny.pt")));
    s.exits(0);
    s.hello();
    let out = s.take();
    assert!(matches!(
        &requests(&out)[..],
        [Request::Hello { .. }, Request::LoadModel { checkpoint, size: Some(ModelSize::Tiny), .. }]
            if checkpoint == Path::new("/weights/tiny.pt")
    ));
}

#[test]
fn a_model_switch_with_no_checkpoint_leaves_the_working_worker_alone() {
    let mut s = Sim::ready(options());
    s.command(EngineCommand::SwitchModel(ModelSize::Large));
    let out = s.take();
    assert!(requests(&out).is_empty() && spawns(&out) == 0);
    assert!(logs(&out)[0].contains("weights download large") && logs(&out)[0].ends_with("staying on tiny"));
}
