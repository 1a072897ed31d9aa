//! The engine's tuning knobs as a user sets them: the config file's `[tuning]`, then
//! `--tune KEY=VALUE`, then the environment (`SAM2_TUI_<KNOB>`), and `sam2-tui doctor`
//! saying for every knob which one won.
mod common;

use std::process::Command;

#[test]
fn doctor_lists_every_knob_with_its_value_and_where_it_came_from() {
    let dir = common::scratch("tuning-doctor");
    let config = dir.join("config.toml");
    std::fs::write(&config, "[tuning]\npipeline_depth = 2\nencode_batch = 2\nfused = false\n").unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.args(["doctor", "--json", "--tune", "encode_batch=3", "--tune", "fused=off"])
        .env("SAM2_TUI_CONFIG", &config)
        .env("SAM2_TUI_FUSED", "1");
    for &(_, env) in sam2_tui::tuning::KNOBS {
        if env != "SAM2_TUI_FUSED" {
            cmd.env_remove(env);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let knobs = report["tuning"].as_array().unwrap();
    assert_eq!(knobs.len(), sam2_tui::tuning::KNOBS.len(), "every knob, once");
    let knob = |name: &str| {
        let k = knobs.iter().find(|k| k["name"] == name).unwrap_or_else(|| panic!("{name} missing"));
        (k["value"].as_str().unwrap().to_string(), k["source"].as_str().unwrap().to_string())
    };
    assert_eq!(knob("pipeline_depth"), ("2".into(), "config".into()));
    assert_eq!(knob("encode_batch"), ("3".into(), "cli".into()), "--tune wins over the config");
    assert_eq!(knob("fused"), ("true".into(), "env".into()), "the environment wins over both");
    assert_eq!(knob("tf32"), ("true".into(), "default".into()));
    let env = |name: &str| knobs.iter().find(|k| k["name"] == name).unwrap()["env"].clone();
    assert_eq!(env("keep_freed"), "SAM2_TUI_KEEP_FREED");

    // The text report has the same lines.
    let mut cmd = Command::new(common::bin());
    cmd.args(["doctor", "--tune", "encode_batch=3"]).env("SAM2_TUI_CONFIG", &config);
    for &(_, env) in sam2_tui::tuning::KNOBS {
        cmd.env_remove(env);
    }
    let text = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
    let line = |name: &str| text.lines().find(|l| l.trim_start().starts_with(&format!("{name} "))).map(str::to_string);
    let encode = line("encode_batch").unwrap_or_else(|| panic!("no encode_batch line: {text}"));
    assert!(encode.contains(" 3 ") && encode.contains("cli") && encode.contains("SAM2_TUI_ENCODE_BATCH"), "{encode}");
    let trace = line("trace").unwrap_or_else(|| panic!("no trace line: {text}"));
    assert!(trace.contains("none") && trace.contains("default"), "{trace}");
}

#[test]
fn an_environment_value_that_does_not_parse_is_named_and_ignored() {
    let config = common::scratch("tuning-doctor-env").join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(common::bin())
        .args(["doctor", "--json"])
        .env("SAM2_TUI_PIPELINE_DEPTH", "deep")
        .env("SAM2_TUI_CONFIG", &config)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = report["tuning_notes"].to_string();
    assert!(notes.contains("SAM2_TUI_PIPELINE_DEPTH=deep"), "{notes}");
    let depth = report["tuning"].as_array().unwrap().iter().find(|k| k["name"] == "pipeline_depth").unwrap().clone();
    assert_eq!((depth["value"].as_str(), depth["source"].as_str()), (Some("0"), Some("default")));
}
