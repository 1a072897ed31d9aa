//! `serve --cuda-mps`: the session workers sharing an NVIDIA GPU through a private CUDA
//! MPS daemon (crate `sam2-serve`, module `cuda_mps`), wired into the server. The real
//! daemon needs an NVIDIA driver, which this machine has not: the server here runs a
//! stand-in control program with the real one's interface (`-f`: the daemon in the
//! foreground; a client reads one command on stdin) that writes down what it is asked.
//! The real daemon ran on the GPU machine (README, "serve on CUDA").
mod common;

use common::serve::{children_of, free_port, make_clip, present_checkpoint, Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A stand-in `nvidia-cuda-mps-control` in `dir`, writing what it is asked to `dir/asked`.
fn stand_in(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        r#"#!/bin/sh
P="$CUDA_MPS_PIPE_DIRECTORY"
if [ "$1" = -f ]; then
  touch "$P/control"; echo "daemon" >> {asked}
  while [ ! -e "$P/quit" ]; do sleep 0.02; done
  echo "daemon stopped" >> {asked}; exit 0
fi
read line; echo "$line" >> {asked}
case "$line" in
  start_server*) touch "$P/server" ;;
  get_server_list) [ -e "$P/server" ] && echo 4242 ;;
  quit) touch "$P/quit" ;;
esac
"#,
        asked = dir.join("asked").display()
    );
    let p = dir.join("nvidia-cuda-mps-control");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The value of `key` in process `pid`'s environment.
fn env_of(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{key}=")).map(str::to_string)
    })
}

#[test]
fn cuda_mps_on_with_the_engine_on_the_cpu_is_refused_in_one_line_before_anything_starts() {
    let work = common::scratch("serve-mps-refused");
    let data = work.join("data");
    let out = Command::new(common::bin())
        .args(["serve", "--port", &free_port().to_string(), "--data"])
        .arg(&data)
        .arg("--checkpoint")
        .arg(present_checkpoint())
        .args(["--device", "cpu", "--cuda-mps", "on"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bad input: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--cuda-mps on shares an NVIDIA GPU, but the engine runs on cpu (--device)"), "{stderr}");
    assert!(!data.exists(), "nothing was made before the refusal");
}

#[test]
fn a_private_mps_daemon_serves_every_worker_and_is_told_to_quit_when_the_server_stops() {
    let work = common::scratch("serve-mps-private");
    let data = work.join("data");
    make_clip(&data, "01_testsrc.mp4", 1.0, "320x240");
    let nvidia = work.join("nvidia-bin");
    stand_in(&nvidia);
    let path = format!("{}:{}", nvidia.display(), std::env::var("PATH").unwrap_or_default());
    let args =
        ["--device", "auto", "--precision", "fp32", "--image-size", "256", "--warm-workers", "2", "--cuda-mps", "on"];
    let mut server = Server::start("mps-private", &data, &present_checkpoint(), &args, &[("PATH", &path)]);
    let log = server.log_text();
    let folder = log
        .lines()
        .find_map(|l| l.split_once("GPU sharing: CUDA MPS, a private daemon (pipes and logs in ")?.1.strip_suffix(')'))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no GPU sharing line:\n{log}"));
    let asked = || std::fs::read_to_string(nvidia.join("asked")).unwrap_or_default();
    assert!(asked().lines().any(|l| l.starts_with("start_server -uid ")), "the MPS server first: {}", asked());

    // Both spare workers (started in the background) find the daemon's pipe folder.
    let pipe = folder.join("pipe").to_string_lossy().into_owned();
    let t0 = Instant::now();
    loop {
        let workers: Vec<u32> = children_of(server.pid())
            .into_iter()
            .filter(|&p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.ends_with(b"engine\0")))
            .collect();
        if workers.len() == 2 {
            for w in workers {
                assert_eq!(env_of(w, "CUDA_MPS_PIPE_DIRECTORY").as_deref(), Some(pipe.as_str()), "worker {w}");
            }
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "two spare workers did not start:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }

    assert!(server.stop().is_some_and(|s| s.success()), "serve stops cleanly:\n{}", server.log_text());
    let asked = asked();
    assert!(asked.lines().any(|l| l == "quit"), "{asked}");
    assert_eq!(asked.lines().last(), Some("daemon stopped"), "{asked}");
    assert!(!folder.exists(), "the daemon's folder was the server's own and is gone");
}
