//! The preview image path: frames decoded, masks composited in object colours, encoded as
//! halfblocks, drawn by the view; and the worker's latest-value hand-over (a slow decoder
//! drops stale requests and always ends on the newest).
use image::{Rgb, RgbImage};
use ratatui::backend::TestBackend;
use ratatui::layout::{Rect, Size};
use ratatui::style::Color;
use ratatui::Terminal;
use sam2_tui::console::action::Action;
use sam2_tui::console::layout::fit_cells;
use sam2_tui::console::preview::compose::Overlay;
use sam2_tui::console::preview::protocol::Encoder;
use sam2_tui::console::preview::worker::{render, request_for, run, PreviewRequest};
use sam2_tui::console::testing::*;
use sam2_tui::media::FrameSource;
use std::time::Duration;

/// Grey frames, decoded with an artificial delay.
struct Synthetic {
    delay: Duration,
}

impl FrameSource for Synthetic {
    fn len(&self) -> usize {
        FRAMES
    }
    fn size(&self) -> (u32, u32) {
        (WIDTH, HEIGHT)
    }
    fn fps(&self) -> f32 {
        30.0
    }
    fn frame(&mut self, _index: usize) -> anyhow::Result<RgbImage> {
        std::thread::sleep(self.delay);
        Ok(RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([100, 100, 100])))
    }
}

fn red_of(c: Color) -> u8 {
    match c {
        Color::Rgb(r, _, _) => r,
        other => panic!("not an RGB cell: {other:?}"),
    }
}

#[test]
fn the_preview_shows_the_frame_with_masks_in_object_colours() {
    let mut app = app_with_video(120, 40);
    app.update(Action::Engine(masks(0, &[(1, ellipse(150.0, 100.0, 60.0, 40.0))])));
    let req = request_for(&app).expect("a video is open");
    let mut src = Synthetic { delay: Duration::ZERO };
    let img = render(&mut src, &mut None, &Encoder::halfblocks(), &req).unwrap();
    app.update(Action::PreviewReady(img));

    let mut t = Terminal::new(TestBackend::new(120, 40)).unwrap();
    t.draw(|f| sam2_tui::console::view::draw(f, &app)).unwrap();
    let areas = app.screen_areas(Rect::new(0, 0, 120, 40));
    let rect = fit_cells(areas.preview_inner, WIDTH, HEIGHT, app.font);
    assert_eq!((req.cells.width, req.cells.height), (rect.width, rect.height));
    let cell = |x: f32, y: f32| {
        let cx = rect.x + (x / WIDTH as f32 * rect.width as f32) as u16;
        let cy = rect.y + (y / HEIGHT as f32 * rect.height as f32) as u16;
        t.backend().buffer()[(cx, cy)].clone()
    };
    // Object 1 is #ff6b6b in the dark theme: blended at 0.5 over grey 100 → red ≈ 178.
    let inside = cell(150.0, 100.0);
    assert!((165..=190).contains(&red_of(inside.fg)) && (165..=190).contains(&red_of(inside.bg)), "{inside:?}");
    let outside = cell(560.0, 320.0);
    assert!((95..=105).contains(&red_of(outside.bg)), "{outside:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_preview_drops_stale_requests_and_ends_on_the_newest() {
    let (req_tx, req_rx) = tokio::sync::watch::channel(None);
    let (act_tx, mut act_rx) = tokio::sync::mpsc::unbounded_channel();
    let src = Box::new(Synthetic { delay: Duration::from_millis(40) });
    let worker = tokio::spawn(run(src, Encoder::halfblocks(), 1000.0, req_rx, act_tx));
    const N: u64 = 40;
    for g in 0..N {
        let req =
            PreviewRequest { generation: g, frame: g as usize, cells: Size::new(20, 10), overlay: Overlay::default() };
        req_tx.send_replace(Some(req));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut shown = vec![];
    while shown.last() != Some(&(N - 1)) {
        match tokio::time::timeout(Duration::from_secs(5), act_rx.recv()).await.expect("the newest request is drawn") {
            Some(Action::PreviewReady(img)) => shown.push(img.generation),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(req_tx);
    worker.await.unwrap();
    println!("preview drew {} of {N} requests: {shown:?}", shown.len());
    assert!(shown.len() < N as usize / 2, "stale requests were not dropped: {shown:?}");
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "never goes back to an older request");
}

/// The loop's draws, until one satisfies `done` (panics after 10 s).
async fn draw_until(
    draws: &mut tokio::sync::mpsc::UnboundedReceiver<sam2_tui::console::event_loop::DrawReport>,
    what: &str,
    done: impl Fn(&sam2_tui::console::event_loop::DrawReport) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, draws.recv()).await {
            Ok(Some(r)) if done(&r) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the loop ended before {what}"),
            Err(_) => panic!("no draw with {what} within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_warning_line_moves_the_panels_the_frame_is_shown_again_at_the_new_size() {
    use sam2_tui::console::event_loop::{run as run_loop, LoopOptions};
    use sam2_tui::supervisor::events::EngineEvent;
    // Before: the image asked for at start-up no longer fitted once the random-weights
    // line pushed the panels down, nothing asked again, and the pane stayed empty.
    let app = app_with_video(200, 40);
    let terminal = Terminal::new(TestBackend::new(200, 40)).unwrap();
    let (key_tx, key_rx) = futures::channel::mpsc::unbounded::<std::io::Result<crossterm::event::Event>>();
    let (eng_tx, eng_rx) = tokio::sync::mpsc::unbounded_channel();
    let (draw_tx, mut draws) = tokio::sync::mpsc::unbounded_channel();
    let opts = LoopOptions {
        max_redraw_fps: 60.0,
        tick: Duration::from_millis(250),
        preview: Some((Box::new(Synthetic { delay: Duration::ZERO }), Encoder::halfblocks(), 60.0)),
        draws: Some(draw_tx),
        synchronized: false,
        export_dir: std::env::temp_dir(),
    };
    let looped = tokio::spawn(async move {
        let (mut terminal, mut app) = (terminal, app);
        run_loop(&mut terminal, &mut app, key_rx, eng_rx, None, opts).await.unwrap();
        (terminal, app)
    });
    let shown = |r: &sam2_tui::console::event_loop::DrawReport| {
        r.preview_cells.is_some_and(|c| r.preview_image == Some(c.as_size()))
    };
    draw_until(&mut draws, "the first frame shown", shown).await;
    // The worker turns out to run a random-init checkpoint: a warning line appears.
    let EngineEvent::WorkerStarted { pid, device, precision, mut model, restarts } =
        worker_started(sam2_tui::device::DeviceChoice::Cpu, 0)
    else {
        unreachable!()
    };
    model.random_init = true;
    let random = EngineEvent::WorkerStarted { pid, device, precision, model, restarts };
    // On this screen the preview is as tall as its pane allows, so the line shrinks it.
    let before = request_for(&app_with_video(200, 40)).unwrap().cells;
    let mut warned = app_with_video(200, 40);
    warned.update(sam2_tui::console::action::Action::Engine(random.clone()));
    let after = request_for(&warned).unwrap().cells;
    assert_ne!(before, after, "the warning line changes the preview's size here");
    eng_tx.send(random).unwrap();
    draw_until(&mut draws, "the frame shown at the new size", |r| {
        shown(r) && r.preview_cells.is_some_and(|c| c.as_size() == after)
    })
    .await;
    key_tx
        .unbounded_send(Ok(crossterm::event::Event::Key(crossterm::event::KeyEvent::new(
            crossterm::event::KeyCode::Char('q'),
            crossterm::event::KeyModifiers::NONE,
        ))))
        .unwrap();
    let (terminal, app) = tokio::time::timeout(Duration::from_secs(5), looped).await.expect("q quits").unwrap();
    // What the terminal holds: the grey frame's half blocks in the preview's place.
    let rect = sam2_tui::console::preview::worker::preview_cells(&app).unwrap();
    let centre = &terminal.backend().buffer()[(rect.x + rect.width / 2, rect.y + rect.height / 2)];
    assert!(["▀", "▄", "█", " "].contains(&centre.symbol()) && red_of(centre.bg) == 100, "{centre:?}");
}
