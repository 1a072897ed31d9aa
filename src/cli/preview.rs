//! `sam2-tui preview FRAME_OR_VIDEO [--masks DIR] [--frame N]`: prints one frame, with the
//! masks of a `segment --out DIR` result drawn over it, straight to the terminal (viuer:
//! kitty, iTerm2 or coloured half blocks) — a quick look over SSH without the dashboard.
use crate::media::blend::{blend_masks, object_color};
use crate::media::rle::Rle;
use anyhow::{anyhow, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A video, a frame folder or an image.
    pub input: PathBuf,
    /// A `segment` output directory (its masks.json is read).
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Frame index (0-based).
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// Width in terminal cells (default: fit the terminal).
    #[arg(long)]
    pub width: Option<u32>,
    /// Mask opacity, 0..1.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
}

#[derive(Deserialize)]
struct MasksJson {
    frames: Vec<FrameEntry>,
}

#[derive(Deserialize)]
struct FrameEntry {
    frame: usize,
    objects: Vec<ObjectEntry>,
}

#[derive(Deserialize)]
struct ObjectEntry {
    id: u32,
    #[allow(dead_code)]
    score: f32,
    rle: Rle,
}

/// The masks of one frame from a `segment` output directory, as (object id, row-major 0/1).
pub fn frame_masks(dir: &Path, frame: usize, width: u32, height: u32) -> anyhow::Result<Vec<(u32, Vec<u8>)>> {
    let path = dir.join("masks.json");
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let doc: MasksJson = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a segment masks.json: {e}", path.display()))?;
    let Some(entry) = doc.frames.into_iter().find(|f| f.frame == frame) else { return Ok(vec![]) };
    let mut out = vec![];
    for o in entry.objects {
        if o.rle.size != [height, width] {
            bail!(
                "{}: frame {frame}, object {}: mask is {}x{}, the frame is {width}x{height}",
                path.display(),
                o.id,
                o.rle.width(),
                o.rle.height()
            );
        }
        let bits = o.rle.decode().map_err(|e| anyhow!("{}: frame {frame}, object {}: {e}", path.display(), o.id))?;
        out.push((o.id, bits));
    }
    Ok(out)
}

/// The frame with its overlay, as printed.
pub fn composed(args: &Args) -> anyhow::Result<(image::RgbImage, usize, usize)> {
    let mut source = crate::media::open(&args.input)?;
    let n = source.len();
    if args.frame >= n {
        bail!("{}: no frame {} (it has {n})", args.input.display(), args.frame);
    }
    let frame = source.frame(args.frame)?;
    let masks = match &args.masks {
        Some(dir) => frame_masks(dir, args.frame, frame.width(), frame.height())?,
        None => vec![],
    };
    let layers: Vec<([u8; 3], &[u8])> = masks.iter().map(|(id, m)| (object_color(*id), m.as_slice())).collect();
    Ok((blend_masks(&frame, &layers, args.alpha), masks.len(), n))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.alpha) {
        return Err(crate::util::bad_input(format!("--alpha must be in [0, 1], got {}", args.alpha)));
    }
    // Every failure here is the input's (the video, the frame number, the masks).
    let (img, objects, n) = composed(&args).map_err(crate::util::as_bad_input)?;
    // Piped output gets plain coloured blocks: no graphics-protocol queries to a terminal
    // that is not there (they would wait for an answer and litter the output).
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let conf = viuer::Config {
        absolute_offset: false,
        width: args.width,
        use_kitty: tty,
        use_iterm: tty,
        ..Default::default()
    };
    viuer::print(&image::DynamicImage::ImageRgb8(img), &conf).map_err(|e| anyhow!("cannot print the image: {e}"))?;
    println!("{} · frame {} of {n} · {objects} object(s)", args.input.display(), args.frame);
    Ok(())
}
