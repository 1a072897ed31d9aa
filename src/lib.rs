//! sam2-tui: SAM 2 on libtorch, a supervised engine worker and a terminal console.
pub mod bench;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod limits;
pub mod media;
pub mod model;
pub mod predictor;
pub mod session;
mod shim;
pub mod supervisor;
pub mod trace;
pub mod util;
pub mod worker;
pub mod weights;
pub mod cli;
pub mod config;
pub mod console;
