//! The engine: SAM 2 on libtorch. Checkpoint readers, the model, the image and video
//! predictors, media in and out, the device abstraction and the worker process that
//! serves the protocol. No terminal, no CLI parser, no async runtime: a console, a batch
//! runner or a web server embeds it the same way, through the supervisor or directly.
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod host_threads;
pub mod media;
pub mod model;
pub mod predictor;
mod shim;
pub mod trace;
pub mod weights;
pub mod worker;
