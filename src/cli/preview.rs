//! `sam2-tui preview FRAME_OR_VIDEO [--masks DIR] [--frame N]`: prints one frame, with the
//! masks of a `segment --out DIR` result drawn over it, straight to the terminal — a quick
//! look over SSH without the dashboard. The console's graphics stack (its probe, encoder
//! and fit: sixel, kitty, iTerm2 or coloured half blocks) and the one object palette.
use crate::masks_json::MasksJson;
use crate::media::blend::{blend_masks, object_color};
use anyhow::{anyhow, bail};
use ratatui::layout::Rect;
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
    /// Width in terminal cells at most (default: the terminal's; the height always fits).
    #[arg(long)]
    pub width: Option<u32>,
    /// Mask opacity, 0..1.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
}

/// The masks of one frame from a `segment` output directory, as (object id, row-major 0/1).
pub fn frame_masks(dir: &Path, frame: usize, width: u32, height: u32) -> anyhow::Result<Vec<(u32, Vec<u8>)>> {
    let path = dir.join("masks.json");
    let doc = MasksJson::read(&path)?;
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
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // The console's graphics stack: its probe (a terminal only: piped output gets coloured
    // half blocks, no queries to a terminal that is not there), its encoder, its fit.
    let picker = if tty { probed_picker() } else { ratatui_image::picker::Picker::halfblocks() };
    let encoder = crate::console::preview::protocol::Encoder::new(picker, crate::config::Graphics::Auto, None);
    let (cols, rows) = terminal_cells();
    // Both dimensions: the image and its caption line fit on one screen with the prompt.
    let area =
        Rect::new(0, 0, args.width.map(|w| w as u16).unwrap_or(cols).min(cols).max(1), rows.saturating_sub(2).max(1));
    let cells = crate::console::layout::fit_cells(area, img.width(), img.height(), encoder.font());
    let (pw, ph) = encoder.pixels_for(cells.as_size());
    let resized = image::imageops::resize(&img, pw.max(1), ph.max(1), image::imageops::FilterType::Triangle);
    let protocol = encoder.encode(image::DynamicImage::ImageRgb8(resized), cells.as_size())?;
    let rect = Rect::new(0, 0, cells.width, cells.height);
    if tty {
        let opts = ratatui::TerminalOptions { viewport: ratatui::Viewport::Inline(cells.height) };
        let mut term =
            ratatui::Terminal::with_options(ratatui::backend::CrosstermBackend::new(std::io::stdout()), opts)?;
        term.draw(|f| {
            let a = f.area();
            f.render_widget(ratatui_image::Image::new(&protocol), Rect::new(a.x, a.y, rect.width, rect.height));
        })?;
        println!();
    } else {
        let mut buf = ratatui::buffer::Buffer::empty(rect);
        ratatui::widgets::Widget::render(ratatui_image::Image::new(&protocol), rect, &mut buf);
        print!("{}", ansi_rows(&buf));
    }
    println!("{} · frame {} of {n} · {objects} object(s)", args.input.display(), args.frame);
    Ok(())
}

/// Asks the terminal which graphics it draws (the console's probe), in raw mode.
fn probed_picker() -> ratatui_image::picker::Picker {
    if crossterm::terminal::enable_raw_mode().is_err() {
        return ratatui_image::picker::Picker::halfblocks();
    }
    let answer = crate::console::preview::probe::query(std::time::Duration::from_millis(1000));
    let _ = crossterm::terminal::disable_raw_mode();
    answer
        .map(|a| crate::console::preview::probe::picker(&a))
        .unwrap_or_else(|_| ratatui_image::picker::Picker::halfblocks())
}

/// The terminal's size in cells: `COLUMNS`/`LINES` when set (scripts, piped output), else
/// the terminal's own, else 80×24.
fn terminal_cells() -> (u16, u16) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u16>().ok()).filter(|&v| v > 0);
    match (env("COLUMNS"), env("LINES")) {
        (Some(c), Some(r)) => (c, r),
        _ => crossterm::terminal::size().unwrap_or((80, 24)),
    }
}

/// A buffer of coloured cells as text with truecolor escapes, row by row.
fn ansi_rows(buf: &ratatui::buffer::Buffer) -> String {
    use ratatui::style::Color;
    let code = |c: Color, fg: bool| match c {
        Color::Rgb(r, g, b) => format!("\x1b[{};2;{r};{g};{b}m", if fg { 38 } else { 48 }),
        _ => String::new(),
    };
    let a = buf.area;
    let mut out = String::new();
    for y in a.top()..a.bottom() {
        for x in a.left()..a.right() {
            let cell = &buf[(x, y)];
            out += &code(cell.fg, true);
            out += &code(cell.bg, false);
            out += cell.symbol();
        }
        out += "\x1b[0m\n";
    }
    out
}
