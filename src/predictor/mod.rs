//! Predictors: the reference's `SAM2ImagePredictor` and `SAM2VideoPredictor` semantics on
//! top of the model modules.
pub mod video_predictor;
pub use video_predictor::{FrameOutput, ObjectOutput, VideoOptions, VideoPredictor};
