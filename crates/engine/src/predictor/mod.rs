//! Predictors: the reference's `SAM2VideoPredictor` semantics on top of the model.
mod bank_undo;
pub mod memory_bank;
pub mod video_predictor;
pub use video_predictor::{FrameOutput, ObjectOutput, VideoOptions, VideoPredictor};
