//! The tamper-evident audit log of admin actions.
//!
//! One file of JSON lines (`<data>/audit/audit.log`). Each [`Record`] carries
//! the SHA-256 of the previous record's line (`prev`) and of its own content
//! (`hash`), so an edited, removed or reordered record breaks the chain and
//! [`verify`] says which. Truncating the tail keeps the chain intact; only a
//! [`Checkpoint`] of the head kept elsewhere (signed with a
//! [`CheckpointKey`]) detects it. See README.md for the format and for what
//! verification can and cannot see.
//!
//! Architecture invariants: the library reads no clock (every `at` comes
//! from the caller); no line of more than [`MAX_LINE`] bytes is ever written
//! or held in memory while reading.

mod auditor;
mod checkpoint;
mod error;
mod lines;
mod log;
mod record;
#[cfg(test)]
mod test_support;
mod verify;

pub use auditor::Auditor;
pub use checkpoint::{
    checkpoint, checkpoint_message, checkpoints_path, key_id, read_checkpoints, verify_checkpoint,
    Checkpoint, CheckpointFile, CheckpointKey, CHECKPOINT_DOMAIN,
};
pub use error::AuditError;
pub use log::{AuditLog, TailDamage, MAX_LIST};
pub use record::{Actor, ActorKind, Entry, Outcome, Record, GENESIS};
pub use verify::{verify, Problem, ProblemKind, VerifyReport, MAX_PROBLEMS};

/// The longest line the log holds, its newline included. Appends that would
/// write a longer one are refused; readers treat a longer one as damage and
/// never buffer more than this.
pub const MAX_LINE: usize = 64 * 1024;
