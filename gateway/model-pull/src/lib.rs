//! Signed models on the appliance: the pre-pull policy as a core with no
//! I/O and no clock ([`core`]), its tokio driver ([`Puller`]: polls the
//! model repository, installs versions with `nusa-model-dist` inside the
//! pull window and under the bandwidth cap, hot-swaps them in through the
//! registry, prunes old ones), the registry's admission in signed mode
//! ([`SignedAdmission`]) and its decryptor of encrypted versions
//! ([`KeyFileDecryptor`]).

pub mod core;

mod admission;
mod decrypt;
mod driver;

pub use admission::SignedAdmission;
pub use decrypt::KeyFileDecryptor;
pub use driver::{PullConfig, Puller};
