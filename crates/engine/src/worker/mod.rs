//! The engine worker (`sam2-tui engine`): one model on one device, spoken to over framed
//! stdio by the supervisor. A crash here (MPS SIGABRT, segfault, OOM kill) costs this one
//! process; the supervisor restarts it and replays the journal.
pub mod fault;
pub mod host_memory;
pub use sam2_api::protocol;
pub mod server;
pub mod stats;
