//! First run: what a new user sees before any checkpoint is installed, and how they find
//! out where one goes.
mod common;
use std::process::Command;

#[test]
fn weights_alone_lists_what_is_installed_and_where_it_looks() {
    let dir = common::scratch("first_run_weights");
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/sam2.1_hiera_small.pt"), vec![0u8; 2_000_000]).unwrap();
    let out = Command::new(common::bin())
        .arg("weights")
        .current_dir(&dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        s.contains("SAM 2.1 small") && s.contains("weights/sam2.1_hiera_small.pt"),
        "lists the installed file:\n{s}"
    );
    assert!(
        s.contains("looked in") && s.contains(&dir.join("data/sam2-tui/weights").display().to_string()),
        "names where it looks:\n{s}"
    );
    assert!(s.contains("sam2-tui weights download tiny"), "says how to get one:\n{s}");
}

#[test]
fn a_console_without_a_checkpoint_says_what_to_download_how_big_and_where_before_starting_anything() {
    let cfg = sam2_tui::config::Config::default();
    let dir = common::scratch("first_run_console");
    let nowhere = dir.join("weights/sam2.1_hiera_tiny.pt");
    let said = sam2_tui::config::missing_checkpoint(&cfg, &nowhere).expect("the file is missing");
    assert!(said.contains("sam2-tui weights download tiny"), "{said}");
    assert!(said.contains("156 MB") && said.contains("into weights/"), "{said}");
    let mut given = cfg.clone();
    given.engine.checkpoint = Some(nowhere.clone());
    let said = sam2_tui::config::missing_checkpoint(&given, &nowhere).unwrap();
    assert!(
        said.starts_with(&nowhere.display().to_string()) && said.contains("--checkpoint"),
        "a given file is named as given: {said}"
    );
}
