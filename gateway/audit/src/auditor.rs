//! nusad's side of the log: one [`AuditLog`], each record also written to
//! the journal (`tracing`, target `audit`), the time read here. A record
//! that cannot be written is logged as an error, never a reason to undo
//! the action it records (the action already happened).

use std::path::Path;

use crate::{checkpoint, AuditError, AuditLog, Checkpoint, CheckpointKey, Entry, Record};

pub struct Auditor {
    log: AuditLog,
    key_path: std::path::PathBuf,
}

impl Auditor {
    /// The log at `dir/audit.log`, its checkpoint key at
    /// `dir/checkpoint.key` (made at the first checkpoint).
    pub fn open(dir: &Path) -> Result<Auditor, AuditError> {
        let log = AuditLog::open(&dir.join("audit.log"))?;
        if let Some(damage) = log.tail_damage() {
            tracing::warn!(target: "audit", damage = ?damage, "the audit log ended in a partial line (a power cut?): appending after it");
        }
        Ok(Auditor {
            log,
            key_path: dir.join("checkpoint.key"),
        })
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// Appends `entry` now, and writes it to the journal. Blocking (one
    /// write and fsync): call it off the runtime's workers when it matters.
    pub fn record(&self, entry: Entry) -> Option<Record> {
        let (actor, action, target) = (
            entry.actor.clone(),
            entry.action.clone(),
            entry.target.clone(),
        );
        match self.try_record(entry) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(target: "audit", actor = %actor, action = %action, target = %target, error = %e, "writing the audit log");
                None
            }
        }
    }

    /// As `record`, with the error (an entry the log refuses, or the file).
    pub fn try_record(&self, entry: Entry) -> Result<Record, AuditError> {
        let r = self.log.append(entry, now_s())?;
        tracing::info!(target: "audit", seq = r.seq, actor = %r.entry.actor, action = %r.entry.action, target = %r.entry.target, outcome = %r.entry.outcome, "audit");
        Ok(r)
    }

    /// The checkpoint key's public half (hex), to check checkpoints with;
    /// an error when no checkpoint was ever taken here.
    pub fn checkpoint_public_key(&self) -> Result<String, AuditError> {
        Ok(CheckpointKey::load(&self.key_path)?.public_key_hex())
    }

    /// Signs the head now with the box's checkpoint key (made 0600 at the
    /// first checkpoint) and keeps it in `checkpoints.jsonl`; the caller
    /// also shows it to the operator, who keeps a copy off the box.
    pub fn checkpoint(&self) -> Result<(Checkpoint, String), AuditError> {
        let key = CheckpointKey::load_or_create(&self.key_path)?;
        let cp = checkpoint(&self.log, &key, now_s())?;
        tracing::info!(target: "audit", seq = cp.seq, hash = %cp.hash, key_id = %cp.key_id, "audit checkpoint");
        Ok((cp, key.public_key_hex()))
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
