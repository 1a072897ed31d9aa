//! The console's state logic: which journal ops each edit produces, undo/redo, objects,
//! frame jumps with a count, quitting with unsaved changes.
use sam2_tui::console::action::{Action, Command, InputKey};
use sam2_tui::console::app::{Effect, Modal};
use sam2_tui::console::testing::*;
use sam2_tui::device::DeviceChoice;
use sam2_tui::model::config::ModelSize;
use sam2_tui::session::{Op, Point};
use sam2_tui::supervisor::events::{EngineCommand, EngineEvent, EngineState};

fn cmd(c: Command) -> Action {
    Action::Command(c)
}

fn ops(effects: &[Effect]) -> Vec<Op> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Engine(EngineCommand::Op(op)) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn each_point_sends_every_point_of_the_object_on_that_frame() {
    let mut app = app_with_video(120, 40);
    let (cx, cy) = (WIDTH as f32 / 2.0, HEIGHT as f32 / 2.0);
    let first = app.update(cmd(Command::PointPositive));
    assert_eq!(
        ops(&first),
        vec![Op::AddPrompt { frame: 0, object: 1, points: vec![Point::new(cx, cy, true)], bbox: None }]
    );
    app.update(cmd(Command::CursorRight)); // one step = width / 64 = 10 px
    let second = app.update(cmd(Command::PointNegative));
    assert_eq!(
        ops(&second),
        vec![Op::AddPrompt {
            frame: 0,
            object: 1,
            points: vec![Point::new(cx, cy, true), Point::new(cx + 10.0, cy, false)],
            bbox: None
        }]
    );
    assert!(app.dirty);
    assert_eq!(app.journal.ops.len(), 2);
}

#[test]
fn a_box_is_two_presses_and_keeps_the_points() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    assert!(app.update(cmd(Command::BoxToggle)).is_empty(), "starting a box sends nothing");
    app.update(cmd(Command::CursorUpFast)); // 100 px up
    app.update(cmd(Command::CursorLeftFast)); // 100 px left
    let done = app.update(cmd(Command::BoxToggle));
    let ops: [Op; 1] = ops(&done).try_into().unwrap();
    let [Op::AddPrompt { points, bbox, .. }] = ops else { panic!() };
    assert_eq!(points.len(), 1);
    assert_eq!(bbox, Some([220.0, 80.0, 320.0, 180.0]), "corners are ordered");
    assert!(app.box_anchor.is_none());
}

#[test]
fn escape_abandons_a_box_without_sending_anything() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::BoxToggle));
    app.update(cmd(Command::CursorRightFast));
    assert!(app.update(cmd(Command::Cancel)).is_empty());
    assert!(app.box_anchor.is_none());
    assert!(app.journal.ops.is_empty());
}

#[test]
fn undo_and_redo_resend_the_resulting_prompt_set() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    app.update(cmd(Command::CursorDown));
    app.update(cmd(Command::PointPositive));
    let undone = ops(&app.update(cmd(Command::Undo)));
    assert_eq!(undone.len(), 1);
    let Op::AddPrompt { points, .. } = &undone[0] else { panic!("{undone:?}") };
    assert_eq!(points.len(), 1, "back to the first point only");
    // Undoing the first point leaves nothing: the frame is cleared for the object.
    assert_eq!(ops(&app.update(cmd(Command::Undo))), vec![Op::ClearFrame { frame: 0, object: 1 }]);
    assert!(ops(&app.update(cmd(Command::Undo))).is_empty(), "nothing left to undo");
    let redone = ops(&app.update(cmd(Command::Redo)));
    let Op::AddPrompt { points, .. } = &redone[0] else { panic!() };
    assert_eq!(points.len(), 1);
    let redone = ops(&app.update(cmd(Command::Redo)));
    let Op::AddPrompt { points, .. } = &redone[0] else { panic!() };
    assert_eq!(points.len(), 2);
}

#[test]
fn a_new_edit_drops_the_redo_history() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    app.update(cmd(Command::Undo));
    app.update(cmd(Command::PointNegative));
    assert!(ops(&app.update(cmd(Command::Redo))).is_empty());
}

#[test]
fn objects_are_created_switched_and_deleted() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    app.update(cmd(Command::NewObject));
    assert_eq!(app.selected_object(), 2);
    let e = ops(&app.update(cmd(Command::PointPositive)));
    assert!(matches!(e[0], Op::AddPrompt { object: 2, .. }));
    app.update(cmd(Command::NextObject));
    assert_eq!(app.selected_object(), 1, "tab wraps around");
    app.update(cmd(Command::DeleteObject)); // it has a prompt: asks first
    let e = ops(&app.update(Action::Yes));
    assert_eq!(e, vec![Op::RemoveObject { object: 1 }]);
    assert_eq!(app.objects, vec![2]);
    assert!(app.prompts.keys().all(|(_, o)| *o == 2));
    // An object the engine never heard of is deleted locally only.
    app.update(cmd(Command::NewObject));
    assert!(ops(&app.update(cmd(Command::DeleteObject))).is_empty());
}

#[test]
fn a_count_then_f_jumps_to_that_frame_and_prefetches_it() {
    let mut app = app_with_video(120, 40);
    app.update(Action::Digit(1));
    app.update(Action::Digit(2));
    app.update(Action::Digit(0));
    let e = app.update(cmd(Command::JumpToFrame));
    assert_eq!(app.frame, 120);
    assert_eq!(e, vec![Effect::Engine(EngineCommand::Prefetch(120))]);
    assert_eq!(app.count, None, "the count is used up");
    app.update(Action::Digit(5));
    app.update(cmd(Command::NextFrame));
    assert_eq!(app.frame, 125, "a count repeats a motion");
    app.update(Action::Digit(9));
    app.update(Action::Digit(9));
    app.update(Action::Digit(9));
    app.update(cmd(Command::JumpToFrame));
    assert_eq!(app.frame, 125, "out-of-range jumps are refused");
    app.update(cmd(Command::LastFrame));
    assert_eq!(app.frame, FRAMES - 1);
    app.update(cmd(Command::NextFrame));
    assert_eq!(app.frame, FRAMES - 1, "clamped at the end");
    app.update(cmd(Command::FirstFrame));
    assert_eq!(app.frame, 0);
}

#[test]
fn quitting_with_unsaved_changes_asks_first() {
    let mut app = app_with_video(120, 40);
    assert_eq!(app.update(cmd(Command::Quit)), vec![Effect::Quit], "nothing to lose: quits");
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    assert!(app.update(cmd(Command::Quit)).is_empty());
    assert_eq!(app.modal, Modal::ConfirmQuit);
    app.update(Action::Dismiss);
    assert!(!app.should_quit);
    app.update(cmd(Command::Quit));
    let e = app.update(Action::SaveAndQuit);
    assert_eq!(e, vec![Effect::Save(app.session_path.clone())]);
    let e = app.update(Action::Saved(Ok(app.session_path.clone())));
    assert_eq!(e, vec![Effect::Quit]);
    assert!(!app.dirty);
}

#[test]
fn propagation_follows_progress_and_escape_cancels_it() {
    let mut app = app_with_video(120, 40);
    assert!(ops(&app.update(cmd(Command::PropagateForward))).is_empty(), "no prompts: nothing to propagate");
    app.update(cmd(Command::PointPositive));
    let e = ops(&app.update(cmd(Command::PropagateBackward)));
    assert_eq!(e, vec![Op::Propagate { start: Some(0), reverse: true, max_frames: None }]);
    app.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 300 })));
    app.update(Action::Engine(progress(17, 17, 300, 12.0)));
    assert_eq!(app.frame, 17, "the preview follows the propagation");
    assert_eq!(app.update(cmd(Command::Cancel)), vec![Effect::Engine(EngineCommand::Cancel)]);
}

#[test]
fn engine_keys_send_switch_commands() {
    let mut app = app_with_video(120, 40);
    assert_eq!(
        app.update(cmd(Command::CycleModel)),
        vec![Effect::Engine(EngineCommand::SwitchModel(ModelSize::Small))]
    );
    assert_eq!(
        app.update(cmd(Command::FallBackToCpu)),
        vec![Effect::Engine(EngineCommand::SwitchDevice(DeviceChoice::Cpu))]
    );
    assert_eq!(
        app.update(cmd(Command::AutoDevice)),
        vec![Effect::Engine(EngineCommand::SwitchDevice(DeviceChoice::Auto))]
    );
    app.update(cmd(Command::SetWatermark));
    assert!(matches!(app.modal, Modal::Watermark(_)));
    for _ in 0..5 {
        app.update(Action::Input(InputKey::Backspace));
    }
    for c in "1.2".chars() {
        app.update(Action::Input(InputKey::Char(c)));
    }
    assert_eq!(app.update(Action::Input(InputKey::Submit)), vec![Effect::Engine(EngineCommand::SetWatermark(1.2))]);
    app.update(cmd(Command::SetWatermark));
    for c in "9".chars() {
        app.update(Action::Input(InputKey::Char(c)));
    }
    assert_eq!(app.modal, Modal::Watermark("1.29".into()), "prefilled with the current ratio");
    for _ in 0..4 {
        app.update(Action::Input(InputKey::Backspace));
    }
    app.update(Action::Input(InputKey::Char('9')));
    assert!(app.update(Action::Input(InputKey::Submit)).is_empty(), "out of range: refused");
    assert!(app.log.back().unwrap().message.contains("from 0 to 2"));
}

#[test]
fn a_saved_journal_resumes_objects_and_prompts() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    app.update(cmd(Command::NewObject));
    app.update(cmd(Command::BoxToggle));
    app.update(cmd(Command::CursorRightFast));
    app.update(cmd(Command::CursorDownFast));
    app.update(cmd(Command::BoxToggle));
    let journal = app.journal.clone();
    let mut resumed = app_with_video(120, 40);
    resumed.resume(journal);
    assert_eq!(resumed.objects, vec![1, 2]);
    assert_eq!(resumed.prompts, app.prompts);
    assert!(!resumed.dirty);
}

#[test]
fn a_click_in_the_preview_places_a_point_where_it_lands() {
    let mut app = app_with_video(120, 40);
    let areas = app.screen_areas(ratatui::layout::Rect::new(0, 0, 120, 40));
    let img = sam2_tui::console::layout::fit_cells(areas.preview_inner, WIDTH, HEIGHT, app.font);
    let (col, row) = (img.x + img.width / 2, img.y + img.height / 2);
    let e = ops(&app.update(Action::Click { column: col, row, positive: false }));
    let Op::AddPrompt { points, .. } = &e[0] else { panic!("{e:?}") };
    assert_eq!(points[0].label, 0);
    assert!((points[0].x - WIDTH as f32 / 2.0).abs() <= WIDTH as f32 / img.width as f32, "{:?}", points[0]);
    assert!((points[0].y - HEIGHT as f32 / 2.0).abs() <= HEIGHT as f32 / img.height as f32, "{:?}", points[0]);
    assert!(ops(&app.update(Action::Click { column: 0, row: 0, positive: true })).is_empty(), "outside: ignored");
}

#[test]
fn the_model_cycle_goes_on_from_the_size_last_asked_for_not_the_one_still_loaded() {
    let mut app = app_with_video(120, 40); // tiny is loaded
    assert_eq!(
        app.update(cmd(Command::CycleModel)),
        vec![Effect::Engine(EngineCommand::SwitchModel(ModelSize::Small))]
    );
    // The supervisor refused small (no checkpoint for it): tiny still runs, and the next
    // `m` asks for the next size instead of small again.
    assert_eq!(
        app.update(cmd(Command::CycleModel)),
        vec![Effect::Engine(EngineCommand::SwitchModel(ModelSize::BasePlus))]
    );
    let said = &app.log.back().unwrap().message;
    assert!(
        said.contains("base_plus") && said.contains("new worker"),
        "an engine restart says what it will do: {said}"
    );
}

#[test]
fn a_click_shows_busy_until_its_masks_come_and_its_latency_lands_in_the_performance_panel() {
    use sam2_tui::console::view::header::state_text;
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    let (state, class) = state_text(&app);
    assert_eq!((state.as_str(), class), ("busy: click on frame 0", 1), "not 'ready' while the click runs");
    app.update(Action::Engine(masks(0, &[(1, ellipse(300.0, 170.0, 120.0, 80.0))])));
    assert_eq!(state_text(&app).0, "ready");
    assert!(app.perf.click_ms.is_some(), "the click's latency is measured");
}

#[test]
fn cancelling_says_which_frame_it_finishes_and_leaves_no_stale_cancel_hint_or_eta() {
    use sam2_tui::console::view::{header::state_text, hints::hints};
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    app.update(Action::Engine(masks(0, &[(1, ellipse(300.0, 170.0, 120.0, 80.0))])));
    app.update(cmd(Command::PropagateForward));
    app.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 24 })));
    app.update(Action::Engine(progress(12, 12, 24, 0.1)));
    assert!(app.update(cmd(Command::Cancel)).contains(&Effect::Engine(EngineCommand::Cancel)));
    assert_eq!(state_text(&app).0, "cancelling · finishing frame 13");
    assert!(!hints(&app).iter().any(|(_, what)| what.contains("cancel")), "no second cancel is offered");
    app.update(Action::Engine(EngineEvent::PropagationFinished { cancelled: true }));
    app.update(Action::Engine(EngineEvent::State(EngineState::Ready)));
    assert_eq!(state_text(&app).0, "ready");
    assert_eq!(app.perf.eta_secs(), None, "no ETA once the pass is over");
}

#[test]
fn deleting_an_object_with_prompts_asks_first_and_any_other_key_keeps_it() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::PointPositive));
    app.update(Action::Engine(masks(0, &[(1, ellipse(300.0, 170.0, 120.0, 80.0))])));
    assert!(app.update(cmd(Command::DeleteObject)).is_empty(), "nothing is deleted yet");
    assert_eq!(app.modal, Modal::ConfirmDelete(1));
    app.update(Action::Dismiss);
    assert_eq!(app.object_work(1), (1, 1), "the prompts and masks are still there");
    app.update(cmd(Command::DeleteObject));
    let gone = ops(&app.update(Action::Yes));
    assert_eq!(gone, vec![Op::RemoveObject { object: 1 }]);
    assert_eq!(app.modal, Modal::None);
}

#[test]
fn an_object_without_prompts_or_masks_is_deleted_without_asking() {
    let mut app = app_with_video(120, 40);
    app.update(cmd(Command::NewObject));
    app.update(cmd(Command::DeleteObject));
    assert_eq!(app.modal, Modal::None);
    assert_eq!(app.objects, vec![1]);
}

#[test]
fn precision_defaults_to_auto_and_the_header_says_what_auto_chose() {
    use sam2_tui::device::{Precision, PrecisionChoice, PrecisionChoiceExt};
    let mut app = app_with_video(160, 40);
    assert_eq!(app.engine.precision_choice, PrecisionChoice::Auto);
    assert_eq!(PrecisionChoice::Auto.resolve(DeviceChoice::Cuda), Precision::Bf16, "the official demo's CUDA autocast");
    app.update(Action::Engine(EngineEvent::WorkerStarted {
        pid: 7,
        device: DeviceChoice::Cuda,
        precision: Precision::Bf16,
        model: sam2_tui::supervisor::events::ModelLabel {
            size: ModelSize::Tiny,
            version: sam2_tui::model::config::ModelVersion::V2_1,
            random_init: false,
        },
        restarts: 0,
    }));
    let screen = {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 40)).unwrap();
        t.draw(|f| sam2_tui::console::view::draw(f, &app)).unwrap();
        format!("{:?}", t.backend().buffer())
    };
    assert!(screen.contains("cuda bf16 (auto)"), "{screen}");
}

/// Object 1 prompted on frame 0, then a forward pass that reports frames 0..=last and is
/// cancelled there.
fn cancelled_pass(app: &mut sam2_tui::console::app::App, last: usize) {
    app.update(cmd(Command::PointPositive));
    app.update(Action::Engine(masks(0, &[(1, ellipse(300.0, 170.0, 120.0, 80.0))])));
    app.update(cmd(Command::PropagateForward));
    app.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 24 })));
    for f in 0..=last {
        app.update(Action::Engine(progress(f, f + 1, 24, 2.0)));
    }
    app.update(cmd(Command::Cancel));
    app.update(Action::Engine(EngineEvent::PropagationFinished { cancelled: true }));
    app.update(Action::Engine(EngineEvent::OpFinished { index: 1, cancelled: true }));
}

#[test]
fn a_cancelled_pass_is_saved_as_far_as_it_ran_not_as_a_whole_video_pass() {
    let mut app = app_with_video(120, 40);
    cancelled_pass(&mut app, 12);
    assert_eq!(app.journal.ops[1], Op::Propagate { start: Some(0), reverse: false, max_frames: Some(12) });
}

#[test]
fn a_resumed_session_announces_its_replays_and_esc_skips_all_of_them() {
    let mut app = app_with_video(120, 40);
    cancelled_pass(&mut app, 12);
    app.update(cmd(Command::PropagateForward));
    let journal = app.journal.clone();
    let mut resumed = app_with_video(120, 40);
    resumed.resume(journal);
    assert!(resumed.log.iter().any(|l| l.message.contains("replaying 2 saved propagation")), "{:?}", resumed.log);
    resumed.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 13 })));
    assert!(sam2_tui::console::view::header::state_text(&resumed)
        .0
        .starts_with("replaying saved propagation (2 left)"));
    assert_eq!(resumed.update(cmd(Command::Cancel)), vec![Effect::Engine(EngineCommand::Cancel)]);
    resumed.update(Action::Engine(EngineEvent::PropagationFinished { cancelled: true }));
    resumed.update(Action::Engine(EngineEvent::State(EngineState::Ready)));
    // The second replayed pass starts by itself in the supervisor: it is stopped at once.
    let second = resumed.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 300 })));
    assert_eq!(second, vec![Effect::Engine(EngineCommand::Cancel)]);
    resumed.update(Action::Engine(EngineEvent::PropagationFinished { cancelled: true }));
    assert_eq!(resumed.replay_left, 0);
}

#[test]
fn a_session_saved_for_the_video_is_offered_and_declining_it_never_overwrites_it() {
    let dir = std::env::temp_dir().join(format!("sam2tui-offer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("clip.session.json");
    let mut earlier = app_with_video(120, 40);
    earlier.update(cmd(Command::PointPositive));
    earlier.journal.save(&saved).unwrap();

    let mut app = app_with_video(120, 40);
    app.offer_session(saved.clone(), earlier.journal.clone());
    assert!(matches!(app.modal, Modal::OfferSession { .. }));
    app.update(Action::Dismiss);
    assert_eq!(app.session_path, dir.join("clip.session-2.json"), "`s` goes to a new file");

    let mut again = app_with_video(120, 40);
    again.offer_session(saved.clone(), earlier.journal.clone());
    let sent = ops(&again.update(Action::Yes));
    assert_eq!(sent, earlier.journal.ops, "resuming sends the saved ops to the engine");
    assert_eq!(again.session_path, saved);
    assert_eq!(again.prompts, earlier.prompts);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rendered(app: &sam2_tui::console::app::App) -> String {
    let (w, h) = app.size;
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
    t.draw(|f| sam2_tui::console::view::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n").collect()
}

#[test]
fn the_watermark_key_on_a_cpu_worker_says_it_is_an_mps_setting_and_opens_nothing() {
    let mut app = app_with_video(120, 40);
    app.update(Action::Engine(worker_started(DeviceChoice::Cpu, 0)));
    assert!(app.update(cmd(Command::SetWatermark)).is_empty());
    assert_eq!(app.modal, Modal::None);
    assert!(app.log.back().unwrap().message.contains("MPS"), "{:?}", app.log.back());
}

#[test]
fn a_device_slower_than_one_frame_a_second_shows_seconds_per_frame() {
    let mut app = app_with_video(160, 48);
    app.update(cmd(Command::PointPositive));
    app.update(cmd(Command::PropagateForward));
    app.update(Action::Engine(EngineEvent::State(EngineState::Propagating { done: 0, total: 24 })));
    app.update(Action::Engine(progress(1, 2, 24, 0.08)));
    let s = rendered(&app);
    assert!(s.contains("12.5 s/frame"), "{s}");
    assert!(s.contains("frame 1 of 300"), "one frame numbering: {s}");
}

#[test]
fn the_help_overlay_shows_every_binding_at_150x44() {
    let mut app = app_with_video(150, 44);
    app.update(cmd(Command::Help));
    let s = rendered(&app);
    for what in ["this help", "right click −point", "count prefix", "cursor left"] {
        assert!(s.contains(what), "'{what}' is cut off:\n{s}");
    }
}

#[test]
fn a_help_overlay_taller_than_the_screen_scrolls_with_the_cursor_keys() {
    let mut app = app_with_video(80, 24);
    app.update(cmd(Command::Help));
    assert!(!rendered(&app).contains("right click −point"), "the last line does not fit at first");
    for _ in 0..5 {
        app.update(Action::HelpScroll(10));
    }
    let s = rendered(&app);
    assert!(s.contains("right click −point") && s.contains("scroll"), "scrolled to the end:\n{s}");
    assert_eq!(app.modal, Modal::Help, "scrolling does not close it");
}

#[test]
fn the_log_scrolls_back_and_wraps_long_lines_instead_of_cutting_them() {
    let mut app = app_with_video(100, 40);
    let long = format!("{} END", "x".repeat(150));
    app.update(Action::Note { error: true, message: long });
    for i in 0..30 {
        app.update(Action::Note { error: false, message: format!("line {i}") });
    }
    assert!(!rendered(&app).contains("END"), "scrolled off below 30 newer lines");
    for _ in 0..6 {
        app.update(cmd(Command::LogOlder));
    }
    let s = rendered(&app);
    assert!(s.contains("END") && s.contains("lines back"), "the long line's end is shown, wrapped:\n{s}");
}

#[test]
fn with_no_checkpoint_the_console_offers_the_download_and_y_starts_it() {
    let mut app = app_with_video(120, 40);
    app.modal = Modal::OfferDownload(ModelSize::Tiny);
    let s = rendered(&app);
    assert!(s.contains("156 MB") && s.contains("into weights/"), "size and destination are said:\n{s}");
    assert_eq!(app.update(Action::Yes), vec![Effect::Download(ModelSize::Tiny)]);
    assert_eq!(app.modal, Modal::None);
}
