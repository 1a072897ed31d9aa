//! One worker process: spawned with piped stdio, watched by three threads (stdout frames,
//! stderr lines, the reaper that `wait`s so no zombie is left), killed by pid. Everything
//! the threads see goes to the supervisor's input channel, tagged with the worker's
//! generation so news from a dead worker cannot be mistaken for the live one's. The exit
//! is always a worker's last news: the reaper reports it only once both readers have
//! ended, so every frame and stderr line the worker wrote comes before it.
use super::machine::WorkerNews;
use sam2_api::protocol::{self, Request, Response};
use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::mpsc::UnboundedSender;

pub struct WorkerProcess {
    pub generation: u64,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    reaper: Option<JoinHandle<()>>,
    reaped: Arc<Mutex<bool>>,
    /// Set once the exit news has arrived: the pid may belong to another process now.
    pub exited: bool,
}

impl WorkerProcess {
    pub fn spawn<T: Send + 'static>(
        generation: u64,
        command: &[String],
        env: &[(String, String)],
        tx: UnboundedSender<T>,
        wrap: fn(u64, WorkerNews) -> T,
    ) -> anyhow::Result<WorkerProcess> {
        let (program, args) = command.split_first().ok_or_else(|| anyhow::anyhow!("empty worker command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // If the supervisor thread dies (console crash), the worker goes with it.
        tie_to_this_process(&mut cmd, libc::SIGKILL);
        let mut child: Child = cmd.spawn().map_err(|e| anyhow::anyhow!("{program}: cannot start worker: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let mut readers = vec![];

        let t = tx.clone();
        readers.push(std::thread::Builder::new().name(format!("worker{generation}-out")).spawn(move || {
            let mut r = std::io::BufReader::new(stdout);
            loop {
                match protocol::read_frame::<Response>(&mut r) {
                    Ok(Some(m)) => {
                        if t.send(wrap(generation, WorkerNews::Message(m))).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = t.send(wrap(generation, WorkerNews::ProtocolError(e.to_string())));
                        return;
                    }
                }
            }
        })?);

        let t = tx.clone();
        readers.push(std::thread::Builder::new().name(format!("worker{generation}-err")).spawn(move || {
            let r = std::io::BufReader::new(stderr);
            for line in r.split(b'\n') {
                let Ok(line) = line else { return };
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if t.send(wrap(generation, WorkerNews::StderrLine(line))).is_err() {
                    return;
                }
            }
        })?);

        let reaped = Arc::new(Mutex::new(false));
        let reaped2 = reaped.clone();
        let reaper = std::thread::Builder::new().name(format!("worker{generation}-wait")).spawn(move || {
            // Wait for the exit WITHOUT reaping, then reap under the lock `kill` takes: the
            // pid cannot be recycled between our check and a SIGKILL. Reaping here is what
            // keeps zombies away, whoever ends the worker.
            // SAFETY: `waitid` writes only into `info`, a zeroed `siginfo_t` (a plain C
            // struct for which all-zero bytes are a valid value) that lives across the
            // call; `pid` is our own unreaped child, so it names no other process.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                while libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) != 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {}
            }
            let mut done = reaped2.lock().unwrap_or_else(|p| p.into_inner());
            let status = child.wait();
            *done = true;
            drop(done);
            // The pipes reach EOF once the process is gone: everything it wrote is
            // delivered before its exit.
            for r in readers {
                let _ = r.join();
            }
            if let Ok(status) = status {
                let _ = tx.send(wrap(generation, WorkerNews::Exited(status)));
            }
        })?;

        Ok(WorkerProcess { generation, pid, stdin, reaper: Some(reaper), reaped, exited: false })
    }

    /// Sends a request; a broken pipe is not an error here (the exit news will follow).
    pub fn send(&mut self, req: &Request) -> bool {
        match self.stdin.as_mut() {
            Some(w) => protocol::write_frame(w, req).is_ok(),
            None => false,
        }
    }

    /// Closes stdin: a healthy worker finishes and exits on its own.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL, unless it has already been reaped.
    pub fn kill(&mut self) {
        if self.exited {
            return;
        }
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            // SAFETY: `kill` is a plain syscall with no memory arguments. Under the
            // `reaped` lock the reaper cannot reap, so `pid` is still our child (a
            // zombie at worst) and the signal cannot reach a process that reused the pid.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// After the exit news: waits for the reaper (which has already joined the readers).
    pub fn join(mut self) {
        self.exited = true;
        self.stdin = None;
        if let Some(t) = self.reaper.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if !self.exited {
            self.kill();
        }
    }
}

/// A child that belongs to this process: in a process group of its own, so that a Ctrl-C
/// (or a closed terminal), which signals the terminal's foreground group, is for this
/// process to answer — close its sessions, stop its worker — and not for the child to die
/// of mid-frame and be restarted; and, on Linux, sent `death_signal` should the thread
/// that spawns it die (`PR_SET_PDEATHSIG` follows the forking thread, so spawn from one
/// that lives as long as the child should). A worker whose supervisor is gone ends anyway:
/// its stdin closes.
pub fn tie_to_this_process(cmd: &mut Command, death_signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec, where another thread of
    // the parent may have held a lock at fork time. It makes a single system call,
    // `prctl(PR_SET_PDEATHSIG)`, which allocates nothing and takes no lock, so it cannot
    // deadlock or see half-updated state.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, death_signal);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = death_signal;
}
