//! Predictors: the reference's `SAM2VideoPredictor` semantics on top of the model.
pub mod memory_bank;
pub mod video_predictor;
pub use video_predictor::{FrameOutput, ObjectOutput, VideoOptions, VideoPredictor};
