//! The one place the console meets the supervisor: options made by
//! `config::supervisor_options` go in, and what comes back is a pair of channels.
use crate::supervisor::events::{EngineCommand, EngineEvent};
use crate::supervisor::SupervisorOptions;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

pub struct EngineLink {
    pub commands: UnboundedSender<EngineCommand>,
    pub events: UnboundedReceiver<EngineEvent>,
}

pub fn start(options: SupervisorOptions) -> anyhow::Result<EngineLink> {
    let h = crate::supervisor::start(options)?;
    Ok(EngineLink { commands: h.commands, events: h.events })
}
