//! The session: the journal of operations (the spine every layer shares).
pub mod journal;
pub use journal::{Journal, ObjectId, Op, Point};
