//! The supervisor: spawns and watches engine workers, keeps the journal, restarts and
//! falls back. Used by the console and the headless commands alike.
pub mod events;
