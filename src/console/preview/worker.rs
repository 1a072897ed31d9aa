//! The preview worker: a task that takes the newest request from a `watch` channel, decodes,
//! composites and encodes it on a blocking thread, hands the result back as an action, and
//! waits out the preview frame interval. Requests that arrive meanwhile overwrite each other,
//! so only the newest is ever drawn: a slow link drops frames, it never falls behind.
use super::compose::{compose, Overlay};
use super::protocol::Encoder;
use crate::console::action::{Action, PreviewImage};
use crate::console::app::App;
use crate::media::FrameSource;
use image::{DynamicImage, RgbImage};
use ratatui::layout::{Rect, Size};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Clone, Debug, PartialEq)]
pub struct PreviewRequest {
    pub generation: u64,
    pub frame: usize,
    pub cells: Size,
    pub overlay: Overlay,
}

/// What the preview should show for this state (None: nothing to show yet).
pub fn request_for(app: &App) -> Option<PreviewRequest> {
    let rect = preview_cells(app)?;
    let t = &app.theme.ui;
    let mut ov = Overlay { alpha: app.mask_alpha, ..Default::default() };
    if let Some(masks) = app.masks.get(&app.frame) {
        for om in masks.iter().filter(|m| m.score > 0.0) {
            ov.masks.push((om.rle.clone(), app.theme.object(om.object).0));
        }
    }
    let sel = app.selected_object();
    for ((frame, obj), set) in &app.prompts {
        if *frame != app.frame {
            continue;
        }
        if let Some(b) = set.bbox {
            ov.boxes.push((b, if *obj == sel { t.bbox.0 } else { app.theme.object(*obj).0 }));
        }
        for p in &set.points {
            let positive = p.label == 1;
            let c = match (*obj == sel, positive) {
                (true, true) => t.positive.0,
                (true, false) => t.negative.0,
                _ => app.theme.object(*obj).0,
            };
            ov.points.push((p.x, p.y, positive, c));
        }
    }
    if let Some((ax, ay)) = app.box_anchor {
        let (cx, cy) = app.cursor;
        ov.boxes.push(([ax.min(cx), ay.min(cy), ax.max(cx), ay.max(cy)], t.bbox.0));
    }
    ov.cursor = Some((app.cursor.0, app.cursor.1, t.crosshair.0));
    Some(PreviewRequest {
        generation: app.scene_version,
        frame: app.frame,
        cells: Size::new(rect.width, rect.height),
        overlay: ov,
    })
}

/// Where the preview image goes on the screen as the layout stands (None: no video yet,
/// or no room). The layout changes with more than the scene (a warning line appears under
/// the header), and an image made for another size would not be drawn at all.
pub fn preview_cells(app: &App) -> Option<Rect> {
    let m = app.media?;
    let areas = app.screen_areas(Rect::new(0, 0, app.size.0, app.size.1));
    let rect = crate::console::layout::fit_cells(areas.preview_inner, m.width, m.height, app.font);
    (rect.width > 0 && rect.height > 0).then_some(rect)
}

/// Decodes (reusing the last frame when it is the same), composites and encodes one request.
pub fn render(
    source: &mut dyn FrameSource,
    cache: &mut Option<(usize, Arc<RgbImage>)>,
    encoder: &Encoder,
    req: &PreviewRequest,
) -> anyhow::Result<PreviewImage> {
    let frame = match cache {
        Some((i, img)) if *i == req.frame => img.clone(),
        _ => {
            let img = Arc::new(source.frame(req.frame)?);
            *cache = Some((req.frame, img.clone()));
            img
        }
    };
    let (w, h) = encoder.pixels_for(req.cells);
    let composed = compose(&frame, &req.overlay, w, h);
    let protocol = encoder.encode(DynamicImage::ImageRgb8(composed), req.cells)?;
    Ok(PreviewImage { frame: req.frame, generation: req.generation, protocol: Arc::new(protocol) })
}

/// Runs until the request channel closes. `max_fps` caps preview images per second.
pub async fn run(
    source: Box<dyn FrameSource>,
    encoder: Encoder,
    max_fps: f32,
    mut requests: watch::Receiver<Option<PreviewRequest>>,
    actions: mpsc::UnboundedSender<Action>,
) {
    let interval = Duration::from_secs_f32(1.0 / max_fps.max(0.1));
    let mut source = Some(source);
    let mut cache: Option<(usize, Arc<RgbImage>)> = None;
    let mut last_error: Option<String> = None;
    while requests.changed().await.is_ok() {
        let Some(req) = requests.borrow_and_update().clone() else { continue };
        let started = Instant::now();
        let (mut src, mut c, enc) =
            (source.take().expect("source is returned after each job"), cache.take(), encoder.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let r = render(src.as_mut(), &mut c, &enc, &req);
            (src, c, r)
        })
        .await;
        let Ok((src, c, result)) = joined else {
            let _ =
                actions.send(Action::Note { error: true, message: "preview worker panicked; preview stopped".into() });
            return;
        };
        source = Some(src);
        cache = c;
        match result {
            Ok(img) => {
                last_error = None;
                if actions.send(Action::PreviewReady(img)).is_err() {
                    return;
                }
            }
            Err(e) => {
                // Say it once, not at every frame.
                let msg = format!("{e:#}");
                if last_error.as_deref() != Some(msg.as_str()) {
                    let _ = actions.send(Action::Note { error: true, message: format!("preview: {msg}") });
                }
                last_error = Some(msg);
            }
        }
        tokio::time::sleep_until((started + interval).into()).await;
    }
}
