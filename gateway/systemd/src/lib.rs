//! `nusad` under systemd: socket activation (the listeners systemd bound,
//! taken from `LISTEN_FDS`) and service notifications (`READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `STOPPING=1`). Both are inert when systemd is not there:
//! without `LISTEN_FDS` nusad binds its configured addresses, without
//! `NOTIFY_SOCKET` every notification is a no-op. The units are in the
//! repository's `systemd/` folder.

mod activation;
pub mod notify;

pub use activation::{Activated, ActivationError, HTTPS, METRICS, QUIC};
