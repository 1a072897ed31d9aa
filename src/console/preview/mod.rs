//! The preview image: compositing (frame + masks + marks), resizing to the exact cell
//! rectangle, and encoding for the terminal's graphics protocol — all off the UI thread.
//! Requests go through a latest-value channel, so a slow link drops stale frames instead of
//! queueing them, and the preview rate is capped on its own (see `worker`).
pub mod compose;
pub mod probe;
pub mod protocol;
pub mod worker;
