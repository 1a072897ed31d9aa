//! Whole-screen snapshots: the console drawn into a `TestBackend` after feeding it the
//! actions and engine events of each situation. The preview shows its schematic (no frame
//! decoder in these tests), so the marks are visible as characters.
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use sam2_tui::console::action::{Action, Command};
use sam2_tui::console::app::App;
use sam2_tui::console::testing::*;
use sam2_tui::device::DeviceChoice;
use sam2_tui::model::config::{ModelSize, ModelVersion};
use sam2_tui::supervisor::events::{EngineEvent, EngineState, LogLevel, ModelLabel};

fn screen(app: &App) -> TestBackend {
    let (w, h) = app.size;
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| sam2_tui::console::view::draw(f, app)).unwrap();
    t.backend().clone()
}

fn run(app: &mut App, cmds: &[Command]) {
    for c in cmds {
        app.update(Action::Command(*c));
    }
}

/// Object 1 with a positive and a negative point and its mask on frame 0.
fn prompted(width: u16, height: u16) -> App {
    let mut app = app_with_video(width, height);
    run(
        &mut app,
        &[Command::PointPositive, Command::CursorRightFast, Command::CursorRightFast, Command::PointNegative],
    );
    app.update(Action::Engine(masks(0, &[(1, ellipse(300.0, 170.0, 120.0, 80.0))])));
    // The measured key-to-masks time is a few microseconds here: a typical value instead,
    // so the snapshot does not depend on the machine.
    app.perf.click_ms = Some(180.0);
    app
}

#[test]
fn idle() {
    let app = app_with_video(120, 40);
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn box_being_drawn() {
    let mut app = prompted(120, 40);
    run(
        &mut app,
        &[
            Command::NewObject,
            Command::CursorUpFast,
            Command::BoxToggle,
            Command::CursorDownFast,
            Command::CursorDownFast,
            Command::CursorRightFast,
        ],
    );
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn propagating() {
    let mut app = prompted(120, 40);
    run(&mut app, &[Command::PropagateForward]);
    app.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 300 })));
    for i in 1..=90 {
        app.update(Action::Engine(masks(i, &[(1, ellipse(300.0 + i as f32, 170.0, 120.0, 80.0))])));
        app.update(Action::Engine(progress(i, i, 300, 8.0 + (i % 7) as f32)));
    }
    app.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 90, total: 300 })));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn crashed_and_restarting() {
    let mut app = prompted(120, 40);
    app.update(Action::Engine(EngineEvent::State(EngineState::Crashed { reason: "SIGABRT".into() })));
    app.update(Action::Engine(EngineEvent::WorkerDied {
        reason: "SIGABRT".into(),
        stderr_tail: vec![
            "MPSLibrary::MPSKey_Create internal error: Unable to get MPS kernel ndArrayIdentityTranspose".into(),
        ],
    }));
    app.update(Action::Engine(EngineEvent::Log {
        level: LogLevel::Info,
        message: "restarting in 500 ms (attempt 2 of 3)".into(),
    }));
    app.update(Action::Engine(EngineEvent::State(EngineState::Restarting { attempt: 2 })));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn fell_back_to_cpu() {
    let mut app = prompted(120, 40);
    app.update(Action::Engine(EngineEvent::FellBack {
        from: DeviceChoice::Mps,
        to: DeviceChoice::Cpu,
        reason: "3 crashes in 120 s".into(),
    }));
    app.update(Action::Engine(worker_started(DeviceChoice::Cpu, 3)));
    app.update(Action::Engine(EngineEvent::Stats(cpu_stats())));
    app.update(Action::Engine(EngineEvent::State(EngineState::Ready)));
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn help_overlay() {
    let mut app = app_with_video(120, 40);
    run(&mut app, &[Command::Help]);
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn narrow_80x24() {
    let app = prompted(80, 24);
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn wide_200x60_on_cuda_with_random_weights() {
    let mut app = prompted(200, 60);
    app.update(Action::Engine(EngineEvent::WorkerStarted {
        pid: 777,
        device: DeviceChoice::Cuda,
        precision: sam2_tui::device::Precision::Bf16,
        model: ModelLabel { size: ModelSize::Large, version: ModelVersion::V2_0, random_init: true },
        restarts: 0,
    }));
    app.update(Action::Engine(EngineEvent::Stats(cuda_stats())));
    run(&mut app, &[Command::NewObject, Command::CursorDownFast, Command::PointPositive]);
    app.update(Action::Engine(masks(
        0,
        &[(1, ellipse(300.0, 170.0, 120.0, 80.0)), (2, ellipse(330.0, 280.0, 60.0, 40.0))],
    )));
    // The second click was timed for real (a millisecond or two, depending on the
    // machine's load): the same typical value as `prompted` gives.
    app.perf.click_ms = Some(180.0);
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn quit_question_when_unsaved() {
    let mut app = prompted(100, 30);
    run(&mut app, &[Command::Quit]);
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn too_small_60x20() {
    let app = prompted(60, 20);
    insta::assert_snapshot!(screen(&app));
}
