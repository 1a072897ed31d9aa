//! `sam2-tui preview`: one frame with a `segment` result's masks printed to the terminal.
mod common;
use sam2_tui::media::rle::Rle;
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
    assert!(err.contains("masks.json: not a segment masks.json"), "{err}");
    let out = preview(&[dir.join("frame.png").to_str().unwrap(), "--frame", "4"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no frame 4 (it has 1)"));
}
