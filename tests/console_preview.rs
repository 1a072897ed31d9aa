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
