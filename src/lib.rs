//! sam2-tui: the terminal console, the command line, configuration and benchmarks, over
//! the layers in `crates/` (see docs/ARCHITECTURE.md):
//!
//! * `sam2_api`        — names, journal, RLE, events, worker protocol (no libtorch).
//! * `sam2_engine`     — SAM 2 on libtorch, media, predictors, the worker process.
//! * `sam2_supervisor` — workers spawned, watched, restarted, fallen back (no libtorch).
//!
//! The re-exports below give the binary and the integration tests one path per module
//! (`sam2_tui::media`, `sam2_tui::supervisor`, …) whichever crate it lives in.
pub use sam2_api::{catalog, dirs, events, limits, masks_json, protocol, rle, session, tuning, util};
pub use sam2_engine::{cpu, cuda, device, media, model, predictor, trace, weights, worker};
pub use sam2_supervisor as supervisor;

pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
