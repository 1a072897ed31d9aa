//! One worker process: spawned with piped stdio, watched by three threads (stdout frames,
//! stderr lines, the reaper that `wait`s so no zombie is left), killed by pid. Everything
//! the threads see goes to the supervisor's one input channel, tagged with the worker's
//! generation so news from a dead worker cannot be mistaken for the live one's.
use sam2_api::protocol::{self, Request, Response};
use std::collections::VecDeque;
use std::io::BufRead;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Stderr lines kept for the death report.
pub const STDERR_TAIL: usize = 20;

#[derive(Debug)]
pub enum WorkerNews {
    Message(Response),
    /// The stdout stream broke (garbage or a half frame): the worker is untrustworthy.
    ProtocolError(String),
    StderrLine(String),
    Exited(ExitStatus),
}

pub struct WorkerProcess {
    pub generation: u64,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    threads: Vec<JoinHandle<()>>,
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
    reaped: Arc<Mutex<bool>>,
    /// Why we SIGKILLed it, if we did.
    pub killed_by_us: Option<String>,
    pub exited: bool,
}

impl WorkerProcess {
    pub fn spawn<T: Send + 'static>(
        generation: u64,
        command: &[String],
        env: &[(String, String)],
        tx: Sender<T>,
        wrap: fn(u64, WorkerNews) -> T,
    ) -> anyhow::Result<WorkerProcess> {
        let (program, args) = command.split_first().ok_or_else(|| anyhow::anyhow!("empty worker command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            // If the supervisor thread dies (console crash), the worker goes with it.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child: Child = cmd.spawn().map_err(|e| anyhow::anyhow!("{program}: cannot start worker: {e}"))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdin = child.stdin.take();
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let mut threads = vec![];

        let t = tx.clone();
        threads.push(std::thread::Builder::new().name(format!("worker{generation}-out")).spawn(move || {
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
        let tail2 = tail.clone();
        threads.push(std::thread::Builder::new().name(format!("worker{generation}-err")).spawn(move || {
            let r = std::io::BufReader::new(stderr);
            for line in r.split(b'\n') {
                let Ok(line) = line else { return };
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if !super::death::is_last_words(&line) {
                    // Kept for the log, not for the tail: it would hide the panic
                    // message just above it.
                } else {
                    let mut q = tail2.lock().unwrap_or_else(|p| p.into_inner());
                    if q.len() == STDERR_TAIL {
                        q.pop_front();
                    }
                    q.push_back(line.clone());
                }
                if t.send(wrap(generation, WorkerNews::StderrLine(line))).is_err() {
                    return;
                }
            }
        })?);

        let reaped = Arc::new(Mutex::new(false));
        let reaped2 = reaped.clone();
        threads.push(std::thread::Builder::new().name(format!("worker{generation}-wait")).spawn(move || {
            // Wait for the exit WITHOUT reaping, then reap under the lock `kill` takes: the
            // pid cannot be recycled between our check and a SIGKILL. Reaping here is what
            // keeps zombies away, whoever ends the worker.
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
            if let Ok(status) = status {
                let _ = tx.send(wrap(generation, WorkerNews::Exited(status)));
            }
        })?);

        Ok(WorkerProcess {
            generation,
            pid,
            stdin,
            threads,
            stderr_tail: tail,
            reaped,
            killed_by_us: None,
            exited: false,
        })
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

    pub fn kill(&mut self, why: &str) {
        if self.exited {
            return;
        }
        if self.killed_by_us.is_none() {
            self.killed_by_us = Some(why.to_string());
        }
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            // Not reaped yet, so the pid is still this worker (a zombie at worst).
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// After the exit news: waits for the reader threads, which end at EOF.
    pub fn join(mut self) {
        self.stdin = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if !self.exited {
            self.kill("supervisor stopped");
        }
    }
}
