//! One NVIDIA GPU shared by the server's workers side by side: CUDA MPS, NVIDIA's
//! Multi-Process Service (not Apple's Metal Performance Shaders, the `mps` device).
//!
//! Each session is a worker process of its own, so that a crash takes one session down
//! and its supervisor brings it back. Without MPS a GPU time-slices between processes:
//! only one worker's kernels run at any instant. Under an MPS daemon the workers'
//! kernels run on the GPU's multiprocessors at the same time.
//!
//! Off by default, because measured it gained nothing to speak of: on an H100 with the
//! tiny model, 8 sessions at once gave 106.7 aggregate frames/s time-sliced and 112.3
//! under MPS (one session alone: 77.2 and 83.1, the same noise). One session's frame
//! already keeps that GPU about 92 % busy (6.0 ms of kernels in 6.5 ms), so there is
//! little idle time for another process's kernels to fill. It can pay where a session
//! leaves the GPU idle: small models on large GPUs, workers waiting on their CPU.
//!
//! `--cuda-mps auto` starts a private daemon when the engine may run on CUDA
//! (`--device cuda` or `auto`) and `nvidia-cuda-mps-control` is on PATH, and goes on
//! without one otherwise; `on` insists (no working daemon is an error at start); `off`
//! (the default) never starts one. A daemon the environment already names
//! (`CUDA_MPS_PIPE_DIRECTORY`) is the operator's: the workers inherit it, and serve
//! neither starts nor stops anything.
//!
//! The private daemon is `nvidia-cuda-mps-control -f`, a child of the server (killed with
//! it should the server die), its pipe and log folders in a temporary folder of the
//! server's own. Its MPS server is started and seen running before any worker starts: a
//! daemon whose server cannot start (a GPU in exclusive mode, a container without the
//! right) is stopped again, and serve goes on without MPS (`auto`) or stops (`on`). At
//! shutdown, after every session has closed, the daemon is told to quit.
//!
//! What MPS changes for crashes: NVIDIA documents that a fatal GPU fault in one client
//! is reported to every client of the same GPU, so such a fault can end every worker at
//! once; each session's supervisor then restores it on a fresh worker, as after any
//! death. A worker that aborts or is killed (the usual crash, and the one
//! `SAM2_TUI_FAULT` injects) touches no other.
use sam2_api::device::DeviceChoice;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `--cuda-mps`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    Auto,
    On,
    #[default]
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            _ => Err(format!("expected auto, on or off, got '{s}'")),
        }
    }
}

/// How the workers share the GPU.
pub enum Sharing {
    /// Time-sliced, as any processes are: why there is no MPS (for the log).
    None(String),
    /// The operator's daemon, at this pipe folder (inherited by the workers).
    Operators(PathBuf),
    /// A daemon of the server's own.
    Private(Daemon),
}

impl Sharing {
    /// The environment the workers need (the private daemon's pipe folder).
    pub fn worker_env(&self) -> Option<(&'static str, String)> {
        match self {
            Sharing::Private(d) => Some((PIPE_ENV, d.pipe_dir().to_string_lossy().into_owned())),
            _ => None,
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Sharing::None(why) => format!("GPU sharing: none, workers time-sliced ({why})"),
            Sharing::Operators(p) => format!("GPU sharing: CUDA MPS, the daemon at {}", p.display()),
            Sharing::Private(d) => {
                format!("GPU sharing: CUDA MPS, a private daemon (pipes and logs in {})", d.dir.path().display())
            }
        }
    }
}

const PIPE_ENV: &str = "CUDA_MPS_PIPE_DIRECTORY";
const LOG_ENV: &str = "CUDA_MPS_LOG_DIRECTORY";
/// How long the daemon may take to open its control pipe, and its server to start
/// (the tests' stand-in needs far less).
const START_TIMEOUT: Duration = Duration::from_secs(if cfg!(test) { 2 } else { 15 });
/// How long one control command, and the daemon's quit, may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides and sets up the sharing: `program` is the control program
/// (`nvidia-cuda-mps-control`), `operators` the pipe folder the environment names.
pub fn start(mode: Mode, device: DeviceChoice, program: &Path, operators: Option<PathBuf>) -> anyhow::Result<Sharing> {
    if !matches!(device, DeviceChoice::Cuda | DeviceChoice::Auto) {
        let why = format!("the engine runs on {device}");
        anyhow::ensure!(mode != Mode::On, "--cuda-mps on needs a CUDA device, but {why}");
        return Ok(Sharing::None(why));
    }
    // The workers inherit the environment: they use the operator's daemon whatever the mode.
    if let Some(pipe) = operators {
        return Ok(Sharing::Operators(pipe));
    }
    if mode == Mode::Off {
        return Ok(Sharing::None("--cuda-mps off".into()));
    }
    let Some(found) = find_program(program) else {
        let why = format!("{} is not on PATH (it comes with NVIDIA's driver)", program.display());
        anyhow::ensure!(mode != Mode::On, "--cuda-mps on: {why}");
        return Ok(Sharing::None(why));
    };
    match Daemon::start(&found) {
        Ok(d) => Ok(Sharing::Private(d)),
        Err(e) if mode == Mode::Auto => Ok(Sharing::None(format!("the MPS daemon did not start: {e:#}"))),
        Err(e) => Err(e.context("--cuda-mps on: the MPS daemon did not start")),
    }
}

/// A private MPS control daemon; told to quit when dropped.
pub struct Daemon {
    program: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(program: &Path) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("sam2-tui-mps-").tempdir()?;
        for sub in ["pipe", "log"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        let mut cmd = Command::new(program);
        cmd.arg("-f")
            .env(PIPE_ENV, dir.path().join("pipe"))
            .env(LOG_ENV, dir.path().join("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A Ctrl-C is the server's to answer; a server that dies takes its daemon with it.
        sam2_supervisor::process::tie_to_this_process(&mut cmd, libc::SIGTERM);
        let child = cmd.spawn().map_err(|e| anyhow::anyhow!("{}: cannot start: {e}", program.display()))?;
        let mut d = Daemon { program: program.to_path_buf(), child, dir };
        d.wait_until_serving()?;
        Ok(d)
    }

    /// The folder the workers' CUDA finds the daemon through.
    pub fn pipe_dir(&self) -> PathBuf {
        self.dir.path().join("pipe")
    }

    /// The control pipe open, then the MPS server started and listed (a failure to start
    /// it shows here rather than in every worker's first CUDA call).
    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let since = Instant::now();
        while !self.pipe_dir().join("control").exists() {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the control daemon exited ({status}) before opening its pipe");
            }
            anyhow::ensure!(since.elapsed() < START_TIMEOUT, "no control pipe after {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        self.command(&format!("start_server -uid {uid}"))?;
        loop {
            if !self.command("get_server_list")?.trim().is_empty() {
                return Ok(());
            }
            anyhow::ensure!(since.elapsed() < START_TIMEOUT, "its MPS server did not start within {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One control command (a line on the control program's stdin); its output.
    fn command(&self, line: &str) -> anyhow::Result<String> {
        let mut c = Command::new(&self.program)
            .env(PIPE_ENV, self.pipe_dir())
            .env(LOG_ENV, self.dir.path().join("log"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = c.stdin.take() {
            writeln!(stdin, "{line}")?;
        }
        if wait_for(&mut c, COMMAND_TIMEOUT).is_none() {
            let _ = c.kill();
            let _ = c.wait();
            anyhow::bail!("`{line}` got no answer within {COMMAND_TIMEOUT:?}");
        }
        let mut out = String::new();
        if let Some(mut stdout) = c.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out)?;
        }
        Ok(out)
    }
}

impl Drop for Daemon {
    /// `quit` (the daemon stops its server first), then a kill if it has not gone.
    fn drop(&mut self) {
        let asked = self.command("quit").is_ok();
        if !asked || wait_for(&mut self.child, COMMAND_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child's exit within `limit`, or None.
fn wait_for(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let since = Instant::now();
    loop {
        match c.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if since.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// `program` itself when it names a path, else the first executable of that name on PATH.
fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.components().count() > 1 {
        return executable(program).then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    //! The real daemon needs an NVIDIA driver, which this machine has not: these run the
    //! lifecycle against a stand-in control program with the real one's interface (`-f`
    //! runs the daemon in the foreground; a client reads one command on stdin), which
    //! writes what it was asked to a file. The real daemon is exercised on the GPU
    //! machine (README, "serve on CUDA").
    use super::*;

    /// A stand-in `nvidia-cuda-mps-control` in `dir`; `server_starts`: whether
    /// `start_server` brings a server up.
    fn stand_in(dir: &Path, server_starts: bool) -> PathBuf {
        let log = dir.join("asked");
        let start = if server_starts { r#"touch "$P/server""# } else { ":" };
        let script = format!(
            r#"#!/bin/sh
P="$CUDA_MPS_PIPE_DIRECTORY"
if [ "$1" = -f ]; then
  echo "daemon logs=$CUDA_MPS_LOG_DIRECTORY" >> {log}
  touch "$P/control"
  while [ ! -e "$P/quit" ]; do sleep 0.02; done
  echo "daemon stopped" >> {log}
  exit 0
fi
read line
echo "$line" >> {log}
case "$line" in
  start_server*) {start} ;;
  get_server_list) [ -e "$P/server" ] && echo 4242 ;;
  quit) touch "$P/quit" ;;
esac
exit 0
"#,
            log = log.display()
        );
        let p = dir.join("nvidia-cuda-mps-control");
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    fn asked(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("asked")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    #[test]
    fn a_private_daemon_has_its_server_running_before_any_worker_and_quits_at_the_end() {
        let t = tempfile::tempdir().unwrap();
        let program = stand_in(t.path(), true);
        let sharing = start(Mode::Auto, DeviceChoice::Cuda, &program, None).unwrap();
        let Sharing::Private(d) = &sharing else { panic!("expected a private daemon: {}", sharing.describe()) };
        let dir = d.dir.path().to_path_buf();
        let (key, value) = sharing.worker_env().unwrap();
        assert_eq!((key, PathBuf::from(&value)), (PIPE_ENV, dir.join("pipe")), "the workers find the daemon");
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let log_line = format!("daemon logs={}", dir.join("log").display());
        assert_eq!(asked(t.path())[..3], [log_line, format!("start_server -uid {uid}"), "get_server_list".into()]);
        drop(sharing);
        assert_eq!(asked(t.path()).last().map(String::as_str), Some("daemon stopped"), "{:?}", asked(t.path()));
        assert!(asked(t.path()).contains(&"quit".to_string()));
        assert!(!dir.exists(), "the daemon's folder is the server's own and goes with it");
    }

    #[test]
    fn a_daemon_whose_server_cannot_start_is_stopped_and_auto_goes_on_without_it_but_on_refuses() {
        let t = tempfile::tempdir().unwrap();
        let program = stand_in(t.path(), false);
        let started = Instant::now();
        let sharing = start(Mode::Auto, DeviceChoice::Auto, &program, None).unwrap();
        assert!(matches!(sharing, Sharing::None(_)), "{}", sharing.describe());
        assert!(sharing.describe().contains("did not start"), "{}", sharing.describe());
        assert!(started.elapsed() >= START_TIMEOUT, "it waited for the server");
        assert_eq!(asked(t.path()).last().map(String::as_str), Some("daemon stopped"), "no daemon is left running");
        let e = start(Mode::On, DeviceChoice::Cuda, &program, None).err().expect("on insists");
        assert!(format!("{e:#}").starts_with("--cuda-mps on: the MPS daemon did not start"), "{e:#}");
    }

    #[test]
    fn without_the_control_program_auto_goes_on_time_sliced_and_on_is_a_one_line_error() {
        let missing = Path::new("no-such-nvidia-cuda-mps-control");
        let sharing = start(Mode::Auto, DeviceChoice::Cuda, missing, None).unwrap();
        assert_eq!(
            sharing.describe(),
            "GPU sharing: none, workers time-sliced (no-such-nvidia-cuda-mps-control is not on PATH (it comes with NVIDIA's driver))"
        );
        assert!(sharing.worker_env().is_none());
        let e = start(Mode::On, DeviceChoice::Cuda, missing, None).err().unwrap();
        assert_eq!(
            format!("{e:#}"),
            "--cuda-mps on: no-such-nvidia-cuda-mps-control is not on PATH (it comes with NVIDIA's driver)"
        );
    }

    #[test]
    fn the_operators_daemon_is_used_as_it_is_and_other_devices_need_none() {
        let t = tempfile::tempdir().unwrap();
        let program = stand_in(t.path(), true);
        let theirs = PathBuf::from("/run/their-mps");
        for mode in [Mode::On, Mode::Auto, Mode::Off] {
            let sharing = start(mode, DeviceChoice::Cuda, &program, Some(theirs.clone())).unwrap();
            assert!(matches!(&sharing, Sharing::Operators(p) if *p == theirs), "{mode:?}: {}", sharing.describe());
            assert!(sharing.worker_env().is_none(), "the workers inherit the operator's environment");
        }
        assert!(asked(t.path()).is_empty(), "nothing is started nor stopped");
        for device in [DeviceChoice::Cpu, DeviceChoice::Mps] {
            assert!(matches!(start(Mode::Auto, device, &program, None).unwrap(), Sharing::None(_)));
            assert!(start(Mode::On, device, &program, None).is_err());
        }
        assert!(matches!(start(Mode::Off, DeviceChoice::Cuda, &program, None).unwrap(), Sharing::None(_)));
        assert!(asked(t.path()).is_empty());
    }
}
