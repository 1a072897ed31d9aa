//! Predictors: the reference's `SAM2VideoPredictor` semantics on top of the model.
//!
//! * `video_predictor` — the reference's methods, in its order and under its names;
//! * `ops` — the journal's ops on a session, each op one reference call, whole or not at all;
//! * `pipeline` — a propagation's frame pipeline (encode-ahead, frames queued ahead);
//! * `batched` — all objects of a propagation frame tracked in one pass (`batch_objects`);
//! * `streams` — several videos' propagations in lockstep on one model (shared encoder
//!   batches and tracking steps);
//! * `graphs` — the CUDA graphs of a frame's fixed-shape pieces;
//! * `warm_up` — a worker's first frames tracked on a synthetic clip, before any session;
//! * `memory_bank`, `bank_undo` — the reference's output dictionaries, disk-backed, and
//!   their undo log.
mod bank_undo;
mod batched;
mod graphs;
pub mod memory_bank;
mod ops;
mod pipeline;
pub mod streams;
pub mod video_predictor;
pub mod warm_up;
pub use video_predictor::{FrameOutput, ObjectOutput, VideoOptions, VideoPredictor};
