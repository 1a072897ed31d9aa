//! The console in a real sixel terminal: xterm (`-ti vt340`, 256 colour registers) on a
//! virtual X display runs the console on the demo clip; xdotool clicks the middle of the
//! preview; xwd takes screenshots. The preview region must hold the frame's colours, and
//! the mask's colour where the mask the console exported says the mask is — pixel
//! statistics against the decoded frame, not a golden image.
//!
//! Needs Xvfb, xterm, xwd (x11-apps), xdotool and the fixed font (xfonts-base): the
//! `make test` set-up installs them.
mod common;
use sam2_tui::config::{Config, Theme};
use sam2_tui::console::action::Action;
use sam2_tui::console::app::App;
use sam2_tui::console::keymap::Keymap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COLS: u16 = 140;
const ROWS: u16 = 45;

/// A screenshot as RGB rows.
struct Shot {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Shot {
    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }
}

/// Reads an XWD (X Window Dump) of a TrueColor ZPixmap, as xwd writes it for Xvfb.
fn read_xwd(bytes: &[u8]) -> Shot {
    let field = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let (header_size, format, width, height) = (field(0), field(2), field(4), field(5));
    let (byte_order, bpp, bytes_per_line) = (field(7), field(11), field(12));
    let (red, green, blue) = (field(14) as u32, field(15) as u32, field(16) as u32);
    let ncolors = field(19);
    assert_eq!(format, 2, "ZPixmap");
    assert!(bpp == 32 || bpp == 24, "{bpp} bits per pixel");
    let data = &bytes[header_size + ncolors * 12..];
    let chan = |v: u32, mask: u32| ((v & mask) >> mask.trailing_zeros()) as u8;
    let mut rgb = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let o = y * bytes_per_line + x * bpp / 8;
            let mut b = [0u8; 4];
            b[..bpp / 8].copy_from_slice(&data[o..o + bpp / 8]);
            let v = if byte_order == 0 { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) >> (32 - bpp) };
            rgb.push([chan(v, red), chan(v, green), chan(v, blue)]);
        }
    }
    Shot { width, height, rgb }
}

fn screenshot(display: &str) -> Shot {
    let out =
        Command::new("xwd").args(["-root", "-silent", "-display", display]).output().expect("xwd runs (x11-apps)");
    assert!(out.status.success(), "xwd: {}", String::from_utf8_lossy(&out.stderr));
    read_xwd(&out.stdout)
}

fn dist(a: [u8; 3], b: [u8; 3]) -> f32 {
    a.iter().zip(b).map(|(&x, y)| (x as f32 - y as f32).abs()).sum::<f32>() / 3.0
}

/// Stops the X server and the terminal when the test ends, however it ends: SIGTERM first,
/// so that Xvfb removes its lock file and socket (killed outright it leaves them, and a later
/// run that picks that display finds a socket with no server behind it), then SIGKILL.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            // SAFETY: kill(2) on the pid of a child this struct owns and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A display number no X server holds or has left its lock file or socket behind for.
fn free_display() -> u32 {
    let start = 40 + std::process::id() % 50;
    (start..start + 200)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists() && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("a free X display number")
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < timeout, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn random_checkpoint() -> PathBuf {
    let dir = common::fixture_cache(&format!("console-e2e-{}", common::fixtures_version()));
    let path = dir.join("sam2.1_hiera_tiny_random.pt");
    if !path.exists() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let script = format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom sam2_reference import make_checkpoint\nmake_checkpoint({:?}, 'tiny', '2.1', seed=9)\n",
            fixtures.to_string_lossy(),
            path.to_string_lossy()
        );
        let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    path
}

#[test]
fn in_a_sixel_xterm_the_preview_shows_the_frame_and_the_mask_where_the_mask_is() {
    let dir = common::scratch("console_xterm");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.mp4");
    let export = dir.join("export");
    let data = dir.join("data");
    let n = free_display();
    let display = format!(":{n}");
    let mut procs = Processes(vec![]);
    procs.0.push(
        Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs (package xvfb)"),
    );
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    wait_until("the X server", Duration::from_secs(20), || {
        assert!(matches!(procs.0[0].try_wait(), Ok(None)), "Xvfb {display} exited at start");
        socket.exists().then_some(())
    });

    let console = format!(
        "{} {} --device cpu --image-size 256 --checkpoint {} --session {} --export-dir {}",
        common::bin().display(),
        demo.display(),
        random_checkpoint().display(),
        dir.join("session.json").display(),
        export.display()
    );
    procs.0.push(
        Command::new("xterm")
            .args(["-display", &display, "-ti", "vt340", "-b", "0", "-fn", "fixed", "-geometry"])
            .arg(format!("{COLS}x{ROWS}+0+0"))
            .args(["-xrm", "XTerm*decTerminalID: vt340", "-xrm", "XTerm*numColorRegisters: 256"])
            .args(["-xrm", "XTerm*allowWindowOps: true", "-e", "sh", "-c", &console])
            .env("SAM2_TUI_DATA", &data)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xterm runs (package xterm)"),
    );
    let log = data.join("sam2-tui.log");
    let said = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(what);
    wait_until("the graphics probe", Duration::from_secs(60), || said("preview: ").then_some(()));
    assert!(
        said("preview: Sixel"),
        "xterm -ti vt340 was not detected as sixel:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // Where the console draws the image: its own layout for this terminal and font.
    let shot = screenshot(&display);
    let (cw, ch) = (shot.width.min(COLS as usize * 6) / COLS as usize, 13usize);
    let mut source = sam2_tui::media::open(&demo).unwrap();
    let frame = source.frame(0).unwrap();
    let (vw, vh) = frame.dimensions();
    let mut app =
        App::new(&Config::default(), Theme::dark(), Keymap::default(), Some(demo.clone()), dir.join("s.json"));
    app.update(Action::Resize { width: COLS, height: ROWS });
    app.update(Action::MediaOpened { width: vw, height: vh, frames: source.len(), fps: source.fps() });
    app.font = (cw as u16, ch as u16);
    let areas = app.screen_areas(ratatui::layout::Rect::new(0, 0, COLS, ROWS));
    let cells = sam2_tui::console::layout::fit_cells(areas.preview_inner, vw, vh, app.font);
    let (x0, y0) = (cells.x as usize * cw, cells.y as usize * ch);
    let (w, h) = (cells.width as usize * cw, cells.height as usize * ch);
    let expected = image::imageops::resize(&frame, w as u32, h as u32, image::imageops::FilterType::Triangle);

    // A click in the middle of the preview places a positive point there.
    let click = Command::new("xdotool")
        .args(["mousemove", &(x0 + w / 2).to_string(), &(y0 + h / 2).to_string(), "click", "1"])
        .env("DISPLAY", &display)
        .status()
        .expect("xdotool runs");
    assert!(click.success());
    let colour = Theme::dark().object(1).0;
    // Wait for the mask to be drawn: pixels of the object's colour in the preview.
    let near_colour = |s: &Shot| {
        let mut k = 0;
        for y in (y0..y0 + h).step_by(2) {
            for x in (x0..x0 + w).step_by(2) {
                k += (dist(s.at(x, y), colour) < 40.0) as usize;
            }
        }
        k
    };
    wait_until("the mask in the preview", Duration::from_secs(180), || {
        (near_colour(&screenshot(&display)) > 20).then_some(())
    });
    // Export what the console shows, then look at the screen once more.
    Command::new("xdotool").args(["key", "e"]).env("DISPLAY", &display).status().unwrap();
    let masks_json = export.join("masks.json");
    wait_until("the export", Duration::from_secs(60), || masks_json.exists().then_some(()));
    std::thread::sleep(Duration::from_millis(500)); // the export's log line redraws; let it settle
    let shot = screenshot(&display);
    let masks = sam2_tui::cli::preview::frame_masks(&export, 0, vw, vh).unwrap();
    let (_, bits) = masks.iter().find(|(id, _)| *id == 1).expect("object 1 on frame 0");

    // Pixel statistics over the preview rectangle, away from mask edges and the marks.
    let alpha = Config::default().console.mask_alpha;
    let (mut off_diff, mut off_n, mut in_to_frame, mut in_to_blend, mut in_n) = (0f64, 0usize, 0f64, 0f64, 0usize);
    let mask_at = |x: usize, y: usize| {
        let mx = ((x as f32 + 0.5) / w as f32 * vw as f32) as usize;
        let my = ((y as f32 + 0.5) / h as f32 * vh as f32) as usize;
        bits[my.min(vh as usize - 1) * vw as usize + mx.min(vw as usize - 1)] != 0
    };
    for y in (4..h - 4).step_by(2) {
        for x in (4..w - 4).step_by(2) {
            let inside = mask_at(x, y);
            if (x.abs_diff(w / 2) < 12 && y.abs_diff(h / 2) < 12)
                || [(-4, 0), (4, 0), (0, -4), (0, 4)]
                    .iter()
                    .any(|(dx, dy)| mask_at((x as i64 + dx) as usize, (y as i64 + dy) as usize) != inside)
            {
                continue;
            }
            let got = shot.at(x0 + x, y0 + y);
            let want = expected.get_pixel(x as u32, y as u32).0;
            if inside {
                in_to_frame += dist(got, want) as f64;
                let blend: [u8; 3] =
                    std::array::from_fn(|i| (want[i] as f32 * (1.0 - alpha) + colour[i] as f32 * alpha).round() as u8);
                in_to_blend += dist(got, blend) as f64;
                in_n += 1;
            } else {
                off_diff += dist(got, want) as f64;
                off_n += 1;
            }
        }
    }
    let png = dir.join("console-xterm.png");
    let img = image::RgbImage::from_fn(
        shot.width.min(COLS as usize * cw) as u32,
        (ROWS as usize * ch).min(shot.height) as u32,
        |x, y| image::Rgb(shot.at(x as usize, y as usize)),
    );
    img.save(&png).unwrap();
    println!("screenshot: {}", png.display());
    assert!(off_n > 1000 && in_n > 100, "too few pixels to judge: {off_n} outside, {in_n} inside the mask");
    let off = off_diff / off_n as f64;
    let (to_frame, to_blend) = (in_to_frame / in_n as f64, in_to_blend / in_n as f64);
    println!("outside the mask: mean |Δ| to the frame {off:.1}; inside: to the frame {to_frame:.1}, to frame+mask colour {to_blend:.1}");
    assert!(off < 20.0, "outside the mask the preview is not the frame (mean |Δ| {off:.1})");
    assert!(
        to_blend < 20.0 && to_blend + 10.0 < to_frame,
        "inside the mask the preview does not carry the mask's colour"
    );
}
