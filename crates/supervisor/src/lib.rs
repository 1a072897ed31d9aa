//! The supervisor: spawns and watches engine workers, keeps the journal, restarts and
//! falls back. Used by the console and the headless commands alike.
//!
//! * `options`  — what to run and the policies (restart, watchdog, recycling).
//! * `policy`   — the crash-loop breaker and fallback ladder (a pure state machine).
//! * `death`    — naming how a worker died (SIGABRT, SIGSEGV, killed (OOM?), exit 1).
//! * `machine`  — the core: handshake, dispatch, watchdog, lifecycle as a pure state
//!   machine (inputs and a time in, outputs out), unit-tested with fake time.
//! * `process`  — one worker process: spawn, its reader threads, kill, reap.
//! * `store`    — the journal on disk, finished masks, and propagation resume points.
//! * `driver`   — the I/O edge that runs the machine on its own thread; `start`.
//! * `streams`  — several videos in one worker, propagated in lockstep (its own driver).
//! * `shared`   — one worker shared by several sessions, each a stream fed as it goes.
pub mod death;
pub mod driver;
pub mod machine;
pub use sam2_api::events;
pub mod options;
pub mod policy;
pub mod process;
pub mod session_dirs;
pub mod shared;
pub mod store;
pub mod streams;

pub use driver::{start, SupervisorHandle};
pub use options::{Recycling, RestartPolicy, SupervisorOptions, Watchdog};
