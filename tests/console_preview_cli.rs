//! `sam2-tui preview`: one frame with a `segment` result's masks printed to the terminal.
mod common;
use sam2_tui::rle::Rle;
use std::process::Command;

fn write_inputs(name: &str) -> std::path::PathBuf {
    let dir = common::scratch(name);
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 90]));
    img.save(dir.join("frame.png")).unwrap();
    let mut m = vec![0u8; 32 * 24];
    for y in 6..18 {
        for x in 8..24 {
            m[y * 32 + x] = 1;
        }
    }
    let rle = Rle::encode(&m, 24, 32);
    let doc = serde_json::json!({
        "video": {"width": 32, "height": 24, "frames": 1, "fps": 25.0, "source": "frame.png"},
        "model": "SAM 2.1 tiny",
        "frames": [{"frame": 0, "objects": [{"id": 1, "score": 3.5, "rle": rle}]}]
    });
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/masks.json"), doc.to_string()).unwrap();
    dir
}

fn preview(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).arg("preview").args(args).env("TERM", "xterm-256color").output().unwrap()
}

#[test]
fn prints_the_frame_with_its_masks_as_terminal_graphics() {
    let dir = write_inputs("preview_cli_masks");
    let frame = dir.join("frame.png");
    let plain = preview(&[frame.to_str().unwrap(), "--width", "16"]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let masked = preview(&[frame.to_str().unwrap(), "--width", "16", "--masks", dir.join("out").to_str().unwrap()]);
    assert!(masked.status.success(), "{}", String::from_utf8_lossy(&masked.stderr));
    let (p, m) = (String::from_utf8_lossy(&plain.stdout), String::from_utf8_lossy(&masked.stdout));
    assert!(m.contains("\x1b["), "no terminal colours in {m:?}");
    assert!(m.contains("frame 0 of 1 · 1 object(s)"), "{m}");
    assert!(p.contains("0 object(s)"), "{p}");
    let (p_rows, m_rows): (Vec<&str>, Vec<&str>) = (p.lines().collect(), m.lines().collect());
    assert_eq!(p_rows.len(), m_rows.len());
    assert_eq!(p_rows[0], m_rows[0], "the mask's top is below the first row");
    assert_ne!(p_rows[2], m_rows[2], "the mask changes the middle rows");
    assert!(!m.contains("\x1b_G"), "no kitty query when stdout is not a terminal");
}

#[test]
fn a_broken_masks_file_is_one_line_naming_it() {
    let dir = write_inputs("preview_cli_bad");
    std::fs::write(dir.join("out/masks.json"), "{\"frames\": 3}").unwrap();
    let out = preview(&[dir.join("frame.png").to_str().unwrap(), "--masks", dir.join("out").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("masks.json: not a sam2-tui masks.json"), "{err}");
    let out = preview(&[dir.join("frame.png").to_str().unwrap(), "--frame", "4"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no frame 4 (it has 1)"));
}

#[test]
fn a_mask_whose_score_was_nan_is_read_like_any_other() {
    // `segment` writes a non-finite score as null plus its name (JSON has no NaN); the
    // reader is the writer's own type, so it reads what the writer writes.
    let dir = write_inputs("preview_cli_nan_score");
    let path = dir.join("out/masks.json");
    let text =
        std::fs::read_to_string(&path).unwrap().replace("\"score\":3.5", "\"score\":null,\"score_nonfinite\":\"NaN\"");
    assert!(text.contains("score_nonfinite"), "{text}");
    std::fs::write(&path, text).unwrap();
    let out = preview(&[
        dir.join("frame.png").to_str().unwrap(),
        "--width",
        "16",
        "--masks",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 object(s)"));
}

/// A portrait frame whose object 2 covers the middle, as a `segment` result.
fn write_tall_inputs(name: &str) -> std::path::PathBuf {
    let dir = common::scratch(name);
    let (w, h) = (40u32, 160u32);
    image::RgbImage::from_fn(w, h, |_, y| image::Rgb([40, (y / 2) as u8, 90])).save(dir.join("frame.png")).unwrap();
    let m: Vec<u8> =
        (0..h).flat_map(|y| (0..w).map(move |x| (8..32).contains(&x) as u8 * (40..120).contains(&y) as u8)).collect();
    let rle = Rle::encode(&m, h as usize, w as usize);
    let doc = serde_json::json!({
        "video": {"width": w, "height": h, "frames": 1, "fps": 25.0, "source": "frame.png"},
        "model": "SAM 2.1 tiny",
        "frames": [{"frame": 0, "objects": [{"id": 2, "score": 3.5, "rle": rle}]}]
    });
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/masks.json"), doc.to_string()).unwrap();
    dir
}

#[test]
fn a_tall_frame_fits_the_terminal_height_and_object_2_is_drawn_in_the_consoles_colour() {
    let dir = write_tall_inputs("preview_cli_tall");
    let out = Command::new(common::bin())
        .args([
            "preview",
            dir.join("frame.png").to_str().unwrap(),
            "--masks",
            dir.join("out").to_str().unwrap(),
            "--alpha",
            "1",
        ])
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "160")
        .env("LINES", "48")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = s.lines().count();
    assert!(rows <= 47, "{rows} lines do not fit a 48-row terminal with its prompt");
    let [r, g, b] = sam2_tui::config::Theme::dark().object(2).0;
    assert!(s.contains(&format!("2;{r};{g};{b}m")), "object 2 is not in the console's colour");
}
