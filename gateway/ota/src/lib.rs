//! The OTA updater's I/O around `nusa-ota-core`: ranged downloads that
//! resume ([`fetch`]), and (next) the slot writer, the persisted state and
//! the runner that drives the core's state machine.

pub mod fetch;
pub mod publish;
pub mod transport;
