//! Helpers of the `serve` tests: a `sam2-tui serve` process on a free port, the
//! conformance client (`tests/serve/conformance.py`), a small HTTP/1.0 client, and the
//! test data (a generated clip, a random-init checkpoint with usable masks).
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `sam2-tui serve`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts `serve` on `data` with `checkpoint` on the CPU in fp32 (unless `args` name
    /// a `--device`), plus `args`, with `env` added; waits until /healthy answers.
    pub fn start(name: &str, data: &Path, checkpoint: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log = super::scratch(&format!("serve-log-{name}")).join("serve.log");
        let mut cmd = Command::new(super::bin());
        cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--data"])
            .arg(data)
            .arg("--checkpoint")
            .arg(checkpoint)
            .args(if args.contains(&"--device") { &[][..] } else { &["--device", "cpu", "--precision", "fp32"][..] })
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Its own process group, as a command started from a shell is: `interrupt` signals
        // it the way a terminal's Ctrl-C does.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("cannot start sam2-tui serve");
        let mut s = Server { child: Some(child), url: format!("http://127.0.0.1:{port}"), port, log };
        s.wait_healthy(Duration::from_secs(300));
        s
    }

    fn wait_healthy(&mut self, within: Duration) {
        let t0 = Instant::now();
        loop {
            if let Ok(r) = request(self.port, "GET", "/healthy", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("serve exited ({status}) before it was healthy; its log:\n{}", self.log_text());
            }
            assert!(t0.elapsed() < within, "serve not healthy after {within:?}; its log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGINT to serve's whole process group, as a Ctrl-C at its terminal sends it, and
    /// wait; the exit status.
    pub fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.take()?;
        // SAFETY: kill(2) on the process group our own child leads.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGINT);
        }
        wait_exit(child)
    }

    /// SIGTERM and wait (sessions closed, workers stopped); the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        wait_exit(child)
    }
}

/// The exit status of a server asked to stop; killed after 30 s.
fn wait_exit(mut child: Child) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pids of `pid`'s live child processes (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // "pid (comm) state ppid …": comm may hold spaces, so read after its ')'.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let mut f = after.split_whitespace();
        let (state, ppid) = (f.next().unwrap_or(""), f.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(pid) && state != "Z" {
            out.push(child);
        }
    }
    out
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.0 request (the server closes the connection after the body, so a stream
/// is read to its end).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(900)))?;
    s.set_write_timeout(Some(Duration::from_secs(900)))?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = vec![];
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Ok(Reply { status, headers, body: raw[split + 4..].to_vec() })
}

/// A GraphQL call: the answer's JSON.
pub fn graphql(port: u16, query: &str, variables: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"query": query, "variables": variables}).to_string();
    let r = request(port, "POST", "/graphql", &[("Content-Type", "application/json")], body.as_bytes())
        .unwrap_or_else(|e| panic!("graphql request failed: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The message of a GraphQL answer's first error (panics when it has none).
pub fn error_of(v: &serde_json::Value) -> String {
    v["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("expected an error, got {v}")).to_string()
}

/// The parts of a multipart/x-savi-stream body: (frame_index, results JSON).
pub fn stream_parts(body: &[u8]) -> Vec<serde_json::Value> {
    let mut out = vec![];
    let mut rest = body;
    while !rest.is_empty() {
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("part header end");
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        assert!(head.starts_with("--frame\r\n"), "bad part boundary: {head:?}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .trim()
            .parse()
            .unwrap();
        let body_start = head_end + 4;
        out.push(serde_json::from_slice(&rest[body_start..body_start + len]).unwrap());
        rest = &rest[body_start + len..];
    }
    out
}

pub const M_START: &str = "mutation S($input: StartSessionInput!) { startSession(input: $input) { sessionId } }";
pub const M_CLOSE: &str = "mutation C($input: CloseSessionInput!) { closeSession(input: $input) { success } }";
pub const M_ADD: &str = "mutation A($input: AddPointsInput!) { addPoints(input: $input) { frameIndex rleMaskList { objectId rleMask { counts size } } } }";

/// A gallery clip (ffmpeg's test source, H.264 at 24 fps as the demo's transcoder writes)
/// in `data/gallery/<name>`, made once.
pub fn make_clip(data: &Path, name: &str, seconds: f32, size: &str) -> PathBuf {
    let gallery = data.join("gallery");
    std::fs::create_dir_all(&gallery).unwrap();
    let path = gallery.join(name);
    if !path.exists() {
        let partial = data.join(format!(".{name}.partial.mp4"));
        let ok = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size={size}:rate=24:duration={seconds}"))
            .args(["-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p"])
            .arg(&partial)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg could not make the test clip");
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// A random-init tiny SAM 2.1 checkpoint whose masks are neither empty nor full (the
/// parity fixtures' nudge), made once per fixture version.
pub fn present_checkpoint() -> PathBuf {
    let dir = super::fixture_cache(&format!("serve-present-tiny-{}", super::fixtures_version()));
    let path = dir.join("sam2.1_hiera_tiny.pt");
    if !path.exists() {
        let fixtures = repo().join("tests/fixtures");
        let script = format!(
            "import sys\nsys.path.insert(0, {:?})\nfrom sam2_reference import make_checkpoint\nmake_checkpoint({:?}, 'tiny', '2.1', seed=0)\n",
            fixtures.to_string_lossy(),
            path.to_string_lossy()
        );
        let out = Command::new(super::python()).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    path
}

/// `conformance.py run URL --out OUT --seed SEED [extra]`; panics with its output on failure.
pub fn conformance_run(url: &str, out: &Path, seed: u32, extra: &[&str]) -> String {
    let o = Command::new(super::python())
        .arg(repo().join("tests/serve/conformance.py"))
        .args(["run", url, "--out"])
        .arg(out)
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .output()
        .expect("cannot run conformance.py");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "conformance.py run {url} failed:\n{text}");
    text
}

/// `conformance.py compare A B`: (passed, its report).
pub fn conformance_compare(a: &Path, b: &Path) -> (bool, String) {
    let o = Command::new(super::python())
        .arg(repo().join("tests/serve/conformance.py"))
        .arg("compare")
        .arg(a)
        .arg(b)
        .output()
        .expect("cannot run conformance.py");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

/// The `timings` object of a transcript.
pub fn timings(transcript: &Path) -> serde_json::Value {
    // Through conformance.py's own reader: a recorded transcript is gzipped.
    let code = "import json,sys; sys.path.insert(0, sys.argv[2]); import conformance as c; \
                print(json.dumps(c.load_transcript(sys.argv[1])['timings']))";
    let o = Command::new(super::python())
        .args(["-c", code])
        .arg(transcript)
        .arg(repo().join("tests/serve"))
        .output()
        .expect("cannot run python");
    assert!(o.status.success(), "cannot read {}: {}", transcript.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
