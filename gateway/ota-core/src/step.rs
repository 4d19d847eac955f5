//! The step an attempt failed at: named by the state machine's failures
//! and by the history's outcomes, so it sits below both.

use serde::{Deserialize, Serialize};

/// The step an attempt failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Check,
    Download,
    Write,
    Verify,
    Arm,
    SwitchBoot,
    Reboot,
    Boot,
    Health,
    MarkGood,
    Rollback,
}

impl Step {
    /// Lower-case, as traces and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Check => "check",
            Step::Download => "download",
            Step::Write => "write",
            Step::Verify => "verify",
            Step::Arm => "arm",
            Step::SwitchBoot => "switch_boot",
            Step::Reboot => "reboot",
            Step::Boot => "boot",
            Step::Health => "health",
            Step::MarkGood => "mark_good",
            Step::Rollback => "rollback",
        }
    }
}
