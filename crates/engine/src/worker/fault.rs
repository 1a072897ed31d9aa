//! Fault injection for crash-supervision tests and rehearsals: real aborts, real
//! segfaults, real hangs and real kills, triggered by `SAM2_TUI_FAULT`.
//!
//! Syntax: comma-separated `KIND@POINT[xN][:device=LABEL]`, KIND one of abort, segv, hang,
//! stall (the model thread wedges while the heartbeat goes on: a deadlock in our own
//! code), oom, panic (a Rust panic: a bug in our own code); POINT one of `load`, `frame=N`,
//! `op=N` (the op sequence number), `op=N.write=W` (just before the W-th change, from 1,
//! that op N makes to the memory bank on disk: the instants at which a crash can leave
//! the bank different), `op=N.done` (after op N ran to its end, before the supervisor
//! hears of it). `xN` fires N
//! times per session (default once); `device=LABEL` restricts it to a worker whose device
//! label matches. Each firing is recorded in the state file (`SAM2_TUI_FAULT_STATE`)
//! BEFORE the fault is triggered, so a restarted worker does not die at the same place
//! forever. Without a state file a fault fires every time.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub use sam2_api::protocol::{FAULT_ENV, FAULT_STATE_ENV};

/// Set while a `hang` fault is active, so the heartbeat thread goes quiet too (a real
/// wedged process sends nothing).
pub static HANGING: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Abort,
    Segv,
    Hang,
    Stall,
    Oom,
    Panic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    Load,
    Frame(usize),
    Op(u64),
    BankWrite { op: u64, write: u32 },
    OpDone(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub point: FaultPoint,
    pub times: u32,
    pub device: Option<String>,
    /// The spec text, the key of this fault in the state file.
    pub key: String,
}

pub fn parse(spec: &str) -> Result<Vec<Fault>, String> {
    spec.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_one).collect()
}

fn parse_one(text: &str) -> Result<Fault, String> {
    let bad = |why: &str| format!("{FAULT_ENV}: bad fault '{text}': {why}");
    let (main, device) = match text.split_once(':') {
        Some((m, q)) => {
            let label = q.strip_prefix("device=").ok_or_else(|| bad("qualifier must be device=LABEL"))?;
            (m, Some(label.to_string()))
        }
        None => (text, None),
    };
    let (kind, rest) = main.split_once('@').ok_or_else(|| bad("expected KIND@POINT"))?;
    let kind = match kind {
        "abort" => FaultKind::Abort,
        "segv" => FaultKind::Segv,
        "hang" => FaultKind::Hang,
        "stall" => FaultKind::Stall,
        "oom" => FaultKind::Oom,
        "panic" => FaultKind::Panic,
        _ => return Err(bad("kind must be abort, segv, hang, stall, oom or panic")),
    };
    let (point, times) = match rest.rsplit_once('x') {
        Some((p, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (p, n.parse::<u32>().map_err(|_| bad("bad repeat count"))?)
        }
        _ => (rest, 1),
    };
    let point = if point == "load" {
        FaultPoint::Load
    } else if let Some(n) = point.strip_prefix("frame=") {
        FaultPoint::Frame(n.parse().map_err(|_| bad("frame must be a number"))?)
    } else if let Some((op, write)) = point.strip_prefix("op=").and_then(|r| r.split_once(".write=")) {
        FaultPoint::BankWrite {
            op: op.parse().map_err(|_| bad("op must be a number"))?,
            write: write.parse().map_err(|_| bad("write must be a number"))?,
        }
    } else if let Some(n) = point.strip_prefix("op=").and_then(|r| r.strip_suffix(".done")) {
        FaultPoint::OpDone(n.parse().map_err(|_| bad("op must be a number"))?)
    } else if let Some(n) = point.strip_prefix("op=") {
        FaultPoint::Op(n.parse().map_err(|_| bad("op must be a number"))?)
    } else {
        return Err(bad("point must be load, frame=N, op=N, op=N.write=W or op=N.done"));
    };
    Ok(Fault { kind, point, times, device, key: text.to_string() })
}

/// The faults of this worker plus the file that remembers which already fired.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    faults: Vec<Fault>,
    state: Option<PathBuf>,
    pub device_label: String,
}

impl FaultPlan {
    /// Reads `SAM2_TUI_FAULT`/`SAM2_TUI_FAULT_STATE`; a bad spec is an error (a test that
    /// misspells its fault must not silently pass).
    pub fn from_env() -> anyhow::Result<Self> {
        let faults = match std::env::var(FAULT_ENV) {
            Ok(s) => parse(&s).map_err(anyhow::Error::msg)?,
            Err(_) => vec![],
        };
        let state = std::env::var_os(FAULT_STATE_ENV).map(PathBuf::from);
        Ok(FaultPlan { faults, state, device_label: String::new() })
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Whether any fault waits inside op `seq`'s changes to the memory bank.
    pub fn watches_bank_writes_of(&self, seq: u64) -> bool {
        self.faults.iter().any(|f| matches!(f.point, FaultPoint::BankWrite { op, .. } if op == seq))
    }

    /// Triggers the first armed fault at `point`, if any (does not return when one fires).
    pub fn check(&self, point: FaultPoint) {
        let Some(fault) =
            self.faults.iter().find(|f| f.point == point && f.device.as_deref().is_none_or(|d| d == self.device_label))
        else {
            return;
        };
        if let Some(state) = &self.state {
            // Its session's folder is gone: this worker now serves another session (serve
            // hands a closed session's worker on), whose firings it cannot know. Firing
            // would break "once per session", and recording would make the folder again.
            if !state.parent().is_some_and(std::path::Path::is_dir) {
                return;
            }
            let mut fired = read_state(state);
            let count = fired.entry(fault.key.clone()).or_insert(0);
            if *count >= fault.times {
                return;
            }
            *count += 1;
            // Recorded before the crash: the next worker must see this firing.
            if let Err(e) = sam2_api::util::atomic_write(state, serde_json::to_string(&fired).unwrap().as_bytes()) {
                eprintln!("fault injection: {e:#}");
            }
        }
        eprintln!("fault injection: firing {} ({:?} at {:?})", fault.key, fault.kind, fault.point);
        trigger(fault.kind);
    }
}

fn read_state(path: &Path) -> BTreeMap<String, u32> {
    std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Really crashes: these are the failure modes of Metal/MPS that supervision must survive.
pub fn trigger(kind: FaultKind) -> ! {
    // An injected crash needs no core file (they are large and slow to write).
    // SAFETY: setrlimit reads a fully initialised rlimit; nothing else is touched.
    unsafe {
        let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
    // These crash the process on purpose, the test hook's whole point: none returns, so
    // no Rust invariant is observed afterwards.
    match kind {
        // SAFETY: abort takes nothing and never returns.
        FaultKind::Abort => unsafe { libc::abort() },
        // SAFETY: a deliberate fault; the process dies on the read.
        FaultKind::Segv => unsafe {
            // A volatile read of an unmapped address: the kernel sends SIGSEGV.
            let p = 16usize as *const u64;
            let v = std::ptr::read_volatile(p);
            eprintln!("unreachable: read {v}");
            libc::abort()
        },
        FaultKind::Hang => {
            HANGING.store(true, Ordering::SeqCst);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        // Only the thread that hit the fault point waits; the heartbeat thread goes on.
        FaultKind::Stall => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        // SAFETY: signals this very process, which dies of it.
        FaultKind::Oom => unsafe {
            // What the kernel's OOM killer (or jetsam on macOS) does to a process.
            libc::raise(libc::SIGKILL);
            libc::abort()
        },
        FaultKind::Panic => panic!("injected panic: an invariant of our own code broke"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_of_the_fault_spec() {
        let f = parse("abort@frame=7,hang@frame=9, segv@op=3 ,oom@loadx5:device=cuda").unwrap();
        assert_eq!(f[0].kind, FaultKind::Abort);
        assert_eq!(f[0].point, FaultPoint::Frame(7));
        assert_eq!(f[0].times, 1);
        assert_eq!(f[2].point, FaultPoint::Op(3));
        assert_eq!(f[3].kind, FaultKind::Oom);
        assert_eq!(f[3].point, FaultPoint::Load);
        assert_eq!(f[3].times, 5);
        assert_eq!(f[3].device.as_deref(), Some("cuda"));
        assert_eq!(parse("abort@frame=3x5").unwrap()[0].times, 5);
        assert_eq!(parse("abort@op=2.write=4").unwrap()[0].point, FaultPoint::BankWrite { op: 2, write: 4 });
        assert_eq!(parse("abort@op=2.done").unwrap()[0].point, FaultPoint::OpDone(2));
        assert_eq!(parse("stall@frame=6").unwrap()[0].kind, FaultKind::Stall);
    }

    #[test]
    fn a_worker_whose_sessions_folder_is_gone_fires_nothing_and_makes_no_folder() {
        let t = tempfile::tempdir().unwrap();
        let session = t.path().join("closed-session");
        let plan = FaultPlan {
            faults: parse("panic@frame=1").unwrap(),
            state: Some(session.join("fault-state.json")),
            device_label: String::new(),
        };
        plan.check(FaultPoint::Frame(1));
        assert!(!session.exists(), "the closed session's folder was made again");
        // With its session's folder there, the same plan fires, once, and records it.
        std::fs::create_dir(&session).unwrap();
        let first = std::panic::catch_unwind(|| plan.check(FaultPoint::Frame(1)));
        assert!(first.is_err(), "the fault did not fire");
        assert!(session.join("fault-state.json").is_file());
        plan.check(FaultPoint::Frame(1));
    }

    #[test]
    fn refuses_misspelled_faults() {
        for bad in ["crash@load", "abort", "abort@frame=x", "abort@step=3", "abort@op=2.write=x", "abort@load:gpu=1"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
