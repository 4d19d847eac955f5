//! The record of update attempts and the set of releases recorded bad.
//!
//! The driver persists it on the data partition beside the state. Both
//! lists are bounded, also when read back (a longer file, say from a newer
//! release after a rollback, is trimmed rather than refused: losing the
//! whole record would forget which releases are bad).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::release::ReleaseInfo;
use crate::state::Step;
use crate::{Sha256Digest, UnixSecs, Version};

/// Attempts kept, newest last.
pub const MAX_ATTEMPTS: usize = 32;
/// Bad releases kept. When full, the lowest version goes: it is the one the
/// version floor most likely refuses anyway.
pub const MAX_BAD: usize = 64;
/// Reasons are cut to this many bytes (on a character boundary).
pub const MAX_REASON_LEN: usize = 512;

/// Attempts and bad releases.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "RawHistory")]
pub struct History {
    attempts: VecDeque<Attempt>,
    bad: Vec<BadRelease>,
}

/// One try at installing a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub version: Version,
    /// An operator's forced install.
    pub forced: bool,
    pub started: UnixSecs,
    pub ended: Option<UnixSecs>,
    pub outcome: Outcome,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    InProgress,
    Succeeded,
    Failed {
        step: Step,
    },
    Abandoned,
    /// Installed, then left for the other slot by an operator.
    RolledBack,
}

/// A release that failed on this appliance after it booted (or was rolled
/// back by an operator); never installed again without force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRelease {
    pub version: Version,
    pub image_sha256: Sha256Digest,
    pub reason: String,
    pub recorded_at: UnixSecs,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens an attempt. An attempt still open (its end was lost with a
    /// power cut the state machine could not attribute) is closed as
    /// abandoned first.
    pub fn begin(&mut self, version: Version, forced: bool, now: UnixSecs) {
        self.finish(Outcome::Abandoned, Some("superseded by a new attempt"), now);
        if self.attempts.len() == MAX_ATTEMPTS {
            self.attempts.pop_front();
        }
        self.attempts.push_back(Attempt {
            version,
            forced,
            started: now,
            ended: None,
            outcome: Outcome::InProgress,
            reason: None,
        });
    }

    /// Closes the newest attempt if it is open; false if none was.
    pub fn finish(&mut self, outcome: Outcome, reason: Option<&str>, now: UnixSecs) -> bool {
        match self.attempts.back_mut() {
            Some(a) if a.outcome == Outcome::InProgress => {
                a.outcome = outcome;
                a.ended = Some(now);
                a.reason = reason.map(cut_reason);
                true
            }
            _ => false,
        }
    }

    /// Records `release` bad (again: the newest reason wins).
    pub fn record_bad(&mut self, release: &ReleaseInfo, reason: &str, now: UnixSecs) {
        self.bad.retain(|b| b.version != release.version);
        if self.bad.len() == MAX_BAD {
            if let Some(lowest) = (0..self.bad.len()).min_by_key(|&i| self.bad[i].version) {
                self.bad.swap_remove(lowest);
            }
        }
        self.bad.push(BadRelease {
            version: release.version,
            image_sha256: release.image_sha256,
            reason: cut_reason(reason),
            recorded_at: now,
        });
    }

    /// A forced install that then passed its health gate is good after all.
    pub fn clear_bad(&mut self, version: Version) -> bool {
        let before = self.bad.len();
        self.bad.retain(|b| b.version != version);
        self.bad.len() != before
    }

    pub fn bad(&self, version: Version) -> Option<&BadRelease> {
        self.bad.iter().find(|b| b.version == version)
    }

    pub fn bad_releases(&self) -> &[BadRelease] {
        &self.bad
    }

    /// Oldest first.
    pub fn attempts(&self) -> impl ExactSizeIterator<Item = &Attempt> {
        self.attempts.iter()
    }

    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.back()
    }
}

fn cut_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[derive(Deserialize)]
struct RawHistory {
    attempts: VecDeque<Attempt>,
    bad: Vec<BadRelease>,
}

impl From<RawHistory> for History {
    fn from(mut raw: RawHistory) -> Self {
        while raw.attempts.len() > MAX_ATTEMPTS {
            raw.attempts.pop_front();
        }
        for a in &mut raw.attempts {
            if let Some(r) = &mut a.reason {
                *r = cut_reason(r);
            }
        }
        // Keep the highest versions, as eviction does.
        raw.bad.sort_by_key(|b| std::cmp::Reverse(b.version));
        raw.bad.truncate(MAX_BAD);
        for b in &mut raw.bad {
            b.reason = cut_reason(&b.reason);
        }
        Self {
            attempts: raw.attempts,
            bad: raw.bad,
        }
    }
}

#[cfg(test)]
mod tests;
