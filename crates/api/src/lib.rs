//! The vocabulary every layer of sam2-tui shares, and nothing else: model and device
//! names, the session journal, COCO RLE masks, the events and the worker protocol, the
//! catalogue of official checkpoints, input limits, exit codes and the engine's tuning knobs. No libtorch, no
//! terminal, no async runtime: the supervisor and any client can speak to an engine
//! worker by depending on this crate alone.
pub mod catalog;
pub mod device;
pub mod dirs;
pub mod events;
pub mod limits;
pub mod masks_json;
pub mod model;
pub mod protocol;
pub mod rle;
pub mod session;
pub mod tuning;
pub mod util;
