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
