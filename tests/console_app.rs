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
    let e = ops(&app.update(cmd(Command::DeleteObject)));
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
    assert_eq!(app.update(cmd(Command::CycleModel)), vec![Effect::Engine(EngineCommand::SwitchModel(ModelSize::Small))]);
    assert_eq!(app.update(cmd(Command::FallBackToCpu)), vec![Effect::Engine(EngineCommand::SwitchDevice(DeviceChoice::Cpu))]);
    assert_eq!(app.update(cmd(Command::AutoDevice)), vec![Effect::Engine(EngineCommand::SwitchDevice(DeviceChoice::Auto))]);
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
    let areas = sam2_tui::console::view::layout::areas(ratatui::layout::Rect::new(0, 0, 120, 40), &app);
    let img = sam2_tui::console::preview::fit_cells(areas.preview_inner, WIDTH, HEIGHT, app.font);
    let (col, row) = (img.x + img.width / 2, img.y + img.height / 2);
    let e = ops(&app.update(Action::Click { column: col, row, positive: false }));
    let Op::AddPrompt { points, .. } = &e[0] else { panic!("{e:?}") };
    assert_eq!(points[0].label, 0);
    assert!((points[0].x - WIDTH as f32 / 2.0).abs() <= WIDTH as f32 / img.width as f32, "{:?}", points[0]);
    assert!((points[0].y - HEIGHT as f32 / 2.0).abs() <= HEIGHT as f32 / img.height as f32, "{:?}", points[0]);
    assert!(ops(&app.update(Action::Click { column: 0, row: 0, positive: true })).is_empty(), "outside: ignored");
}
