//! Signed models on the appliance: the pre-pull policy as a core with no
//! I/O and no clock ([`core`]), its tokio driver ([`Puller`]: polls the
//! model repository, installs versions with `nusa-model-dist` inside the
//! pull window and under the bandwidth cap, hot-swaps them in through the
//! registry, prunes old ones), and the registry's admission in signed mode
//! ([`SignedAdmission`]).

pub mod core;

mod admission;
mod driver;

pub use admission::SignedAdmission;
pub use driver::{PullConfig, Puller};
