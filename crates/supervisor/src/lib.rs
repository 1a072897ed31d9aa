//! The supervisor: spawns and watches engine workers, keeps the journal, restarts and
//! falls back. Used by the console and the headless commands alike.
//!
//! * `options`  — what to run and the policies (restart, watchdog, recycling).
//! * `policy`   — the crash-loop breaker and fallback ladder (a pure state machine).
//! * `death`    — naming how a worker died (SIGABRT, SIGSEGV, killed (OOM?), exit 1).
//! * `process`  — one worker process: spawn, its reader threads, kill, reap.
//! * `store`    — the journal on disk, finished masks, and propagation resume points.
//! * `core`     — the loop that ties them together; `start` runs it on its own thread.
pub mod core;
pub mod death;
pub use sam2_api::events;
pub mod options;
pub mod policy;
pub mod process;
pub mod session_dirs;
pub mod store;

pub use self::core::{start, SupervisorHandle};
pub use options::{Recycling, RestartPolicy, SupervisorOptions, Watchdog};
