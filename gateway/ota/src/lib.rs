//! The OTA updater's I/O around `nusa-ota-core`: ranged downloads that
//! resume ([`fetch`]), the TUF transport over them ([`transport`]), the
//! updater's files on the data partition ([`store`]), slot storage
//! ([`slotdev`]), the health gate ([`health`]), and the runner that drives
//! the core's state machine ([`runner`]). Publishing releases is
//! `nusa-ota-publish`'s: the appliance's updater carries no signing.

pub mod config;
pub mod fetch;
pub mod health;
pub mod runner;
pub mod slotdev;
pub mod store;
pub mod transport;
