//! `canary.json` in the registry's state folder: each running rollout as
//! the core saved it, and how the last rollout of each model ended.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nusa_rollout::Saved;
use serde::{Deserialize, Serialize};

/// The file holds a few rollouts and their last reports; anything larger
/// is not ours.
const MAX_BYTES: u64 = 4 << 20;

pub use nusa_admin::CanaryEnded as Ended;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub rollouts: BTreeMap<String, Saved>,
    #[serde(default)]
    pub ended: BTreeMap<String, Ended>,
}

pub(crate) struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    pub(crate) fn new(dir: Option<PathBuf>) -> Store {
        Store { dir }
    }

    pub(crate) fn load(&self) -> Result<File, String> {
        match &self.dir {
            Some(d) => nusa_registry::read_json_file(d, "canary.json", MAX_BYTES),
            None => Ok(File::default()),
        }
    }

    pub(crate) fn save(&self, file: &File) -> Result<(), String> {
        match &self.dir {
            Some(d) => nusa_registry::write_json_file(d, "canary.json", file),
            None => Ok(()),
        }
    }
}
