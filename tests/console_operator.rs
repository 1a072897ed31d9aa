//! `serve --console`'s operator view, from status values: what it draws (whole-screen
//! snapshots) and what its keys ask of the server. No server runs here
//! (`serve_console.rs` drives the real one in a terminal).
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use sam2_serve::operator::{
    Control, Level, LogEntry, ServerStatus, SessionStatus, Settings, Streaming, Switch, WorkerInfo,
};
use sam2_tui::config::Theme;
use sam2_tui::console::keymap::Keymap;
use sam2_tui::console::operator::app::{Action, Modal, OperatorApp};
use sam2_tui::console::testing::{cuda_stats, mps_stats};
use sam2_tui::device::{DeviceChoice, Precision, PrecisionChoice};
use sam2_tui::model::config::{ModelSize, ModelVersion};
use sam2_tui::supervisor::events::{EngineState, ModelLabel, WorkerStats};

fn worker(pid: u32, device: DeviceChoice, precision: Precision) -> WorkerInfo {
    WorkerInfo {
        pid,
        device,
        precision,
        model: ModelLabel { size: ModelSize::Tiny, version: ModelVersion::V2_1, random_init: false },
    }
}

fn log(time: &str, level: Level, text: &str) -> LogEntry {
    LogEntry { time: time.into(), level, text: text.into() }
}

/// Two sessions on CUDA: one streaming, one idle after a worker restart; a third starting.
fn busy_server() -> ServerStatus {
    let mut streaming = SessionStatus::new(
        "3f2a1b9c-0000-4000-8000-000000000001",
        "gallery/05_default_juggle.mp4",
        240,
        Some(worker(5101, DeviceChoice::Cuda, Precision::Bf16)),
    );
    streaming.objects = 2;
    streaming.engine = EngineState::Propagating { done: 120, total: 240 };
    streaming.streaming = Some(Streaming { from_frame: 0, sent: 120, fps: 41.5 });
    streaming.frames_streamed = 120;
    streaming.stats = Some(cuda_stats());
    let mut restarted = SessionStatus::new(
        "a7c0ffee-0000-4000-8000-000000000002",
        "uploads/7d3e.mp4",
        96,
        Some(worker(5140, DeviceChoice::Cuda, Precision::Bf16)),
    );
    restarted.objects = 1;
    restarted.frames_streamed = 96;
    restarted.restarts = 1;
    restarted.stats = Some(WorkerStats {
        cuda: cuda_stats().cuda.map(|mut c| {
            c.allocated = 75 << 30;
            c
        }),
        ..cuda_stats()
    });
    ServerStatus {
        address: "http://127.0.0.1:7263".into(),
        serving: true,
        settings: Settings {
            model: Some(ModelSize::Tiny),
            device: DeviceChoice::Cuda,
            precision: PrecisionChoice::Auto,
        },
        max_sessions: 8,
        starting: 1,
        spare_workers: 1,
        draining: false,
        sessions: vec![streaming, restarted],
        log: [
            log("14:02:11", Level::Info, "POST /graphql 200 startSession (0.412 s)"),
            log("14:02:12", Level::Info, "POST /graphql 200 addPoints (0.087 s)"),
            log(
                "14:02:40",
                Level::Error,
                "session a7c0ffee: worker died (SIGABRT; last words: MPSNDArray error); restarting it and resuming",
            ),
            log("14:02:42", Level::Warn, "session a7c0ffee: worker 5140 restarted (restart 1)"),
            log("14:03:01", Level::Info, "POST /propagate_in_video 200 stream started (0.122 s)"),
        ]
        .into(),
    }
}

fn app(status: ServerStatus, width: u16, height: u16) -> OperatorApp {
    let mut app = OperatorApp::new(Theme::dark(), Keymap::default(), status);
    app.update(Action::Resize { width, height });
    app
}

fn screen(app: &OperatorApp) -> TestBackend {
    let (w, h) = app.size;
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| sam2_tui::console::operator::view::draw(f, app)).unwrap();
    t.backend().clone()
}

fn key(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn ctrl(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

#[test]
fn two_sessions_on_cuda_one_streaming_one_restarted() {
    insta::assert_snapshot!(screen(&app(busy_server(), 120, 32)));
}

#[test]
fn an_idle_server_on_the_cpu_at_the_smallest_size() {
    let mut s = busy_server();
    s.settings = Settings { model: Some(ModelSize::Tiny), device: DeviceChoice::Cpu, precision: PrecisionChoice::Fp32 };
    let mut row = SessionStatus::new(
        "0badcafe-0000-4000-8000-000000000003",
        "gallery/01_testsrc.mp4",
        24,
        Some(worker(777, DeviceChoice::Cpu, Precision::Fp32)),
    );
    row.stats = Some(WorkerStats { rss_bytes: 612 << 20, mps: None, cuda: None, ..mps_stats() });
    s.sessions = vec![row];
    s.starting = 0;
    s.spare_workers = 0;
    s.log.truncate(2);
    insta::assert_snapshot!(screen(&app(s, 80, 24)));
}

#[test]
fn draining_with_no_session_left() {
    let mut s = busy_server();
    s.sessions.clear();
    s.starting = 0;
    s.draining = true;
    s.log.push_back(log(
        "14:05:00",
        Level::Warn,
        "draining: no new sessions; stopping once the 0 open sessions have closed",
    ));
    insta::assert_snapshot!(screen(&app(s, 100, 24)));
}

#[test]
fn the_help_line_names_the_operator_keys_and_the_help_explains_them() {
    let mut a = app(busy_server(), 120, 32);
    let text = format!("{:?}", screen(&a));
    for hint in ["m model", "r precision", "c cpu", "D auto device", "ctrl-d drain", "q/ctrl-c stop", "? help"] {
        assert!(text.contains(hint), "the help line lacks '{hint}':\n{text}");
    }
    a.update(key('?'));
    assert_eq!(a.modal, Modal::Help);
    let text = format!("{:?}", screen(&a));
    assert!(text.contains("drain: refuse new sessions, stop once the open ones have closed"), "{text}");
    assert!(a.update(key('x')).is_empty() && a.modal == Modal::None, "any key closes the help, and does nothing else");
}

#[test]
fn keys_switch_model_precision_and_device_for_the_server() {
    let mut a = app(busy_server(), 120, 32);
    assert_eq!(a.update(key('m')), [Control::Switch(Switch::Model(ModelSize::Small))], "tiny → small");
    assert_eq!(a.update(key('m')), [Control::Switch(Switch::Model(ModelSize::BasePlus))], "from the size asked last");
    assert_eq!(a.update(key('r')), [Control::Switch(Switch::Precision(PrecisionChoice::Fp32))], "auto → fp32");
    let mut s = busy_server();
    s.settings.precision = PrecisionChoice::Fp32;
    a.update(Action::Status(Box::new(s)));
    assert_eq!(a.update(key('r')), [Control::Switch(Switch::Precision(PrecisionChoice::Bf16))], "fp32 → bf16");
    assert_eq!(a.update(key('c')), [Control::Switch(Switch::Device(DeviceChoice::Cpu))]);
    assert_eq!(a.update(key('D')), [Control::Switch(Switch::Device(DeviceChoice::Auto))]);
    assert!(a.update(key('p')).is_empty(), "the console's own keys do nothing to a server");
}

#[test]
fn drain_is_asked_once_and_stopping_with_sessions_open_asks_first() {
    let mut a = app(busy_server(), 120, 32);
    assert_eq!(a.update(ctrl('d')), [Control::Drain]);
    let mut s = busy_server();
    s.draining = true;
    a.update(Action::Status(Box::new(s)));
    assert!(a.update(ctrl('d')).is_empty(), "already draining");
    assert!(format!("{:?}", screen(&a)).contains("draining: no new sessions"));

    assert!(a.update(key('q')).is_empty(), "two sessions are open: it asks");
    assert_eq!(a.modal, Modal::ConfirmStop);
    assert!(format!("{:?}", screen(&a)).contains("stop the server now? its 2 open session(s) are closed"));
    assert!(a.update(key('n')).is_empty() && a.modal == Modal::None, "any other key keeps it serving");
    a.update(key('q'));
    assert_eq!(a.update(key('y')), [Control::Stop]);
    assert!(a.stopping && a.update(key('q')).is_empty(), "asked once");

    let mut idle = app(ServerStatus::default(), 80, 24);
    assert_eq!(idle.update(ctrl('c')), [Control::Stop], "no session open: it stops at once");
}
