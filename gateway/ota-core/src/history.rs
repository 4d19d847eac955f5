//! The record of update attempts, and the set of releases recorded bad
//! ([`crate::bad`]) beside them.
//!
//! The driver persists it on the data partition beside the state. Both
//! lists are bounded, also when read back (a longer file, say from a newer
//! release after a rollback, is trimmed rather than refused: losing the
//! whole record would forget which releases are bad).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::bad::cut_reason;
pub use crate::bad::{BadRelease, BadReleases, MAX_BAD, MAX_REASON_LEN};
use crate::release::ReleaseInfo;
use crate::step::Step;
use crate::version::Version;
use crate::UnixSecs;

/// Attempts kept, newest last.
pub const MAX_ATTEMPTS: usize = 32;

/// Attempts and bad releases.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "RawHistory")]
pub struct History {
    attempts: VecDeque<Attempt>,
    bad: BadReleases,
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
    /// Written and verified, then not applied: the fleet brake held the
    /// release (paused or yanked) before its slot was armed.
    Braked,
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
        self.bad
            .record(release.version, release.image_sha256, reason, now);
    }

    /// A forced install that then passed its health gate is good after all.
    pub fn clear_bad(&mut self, version: Version) -> bool {
        self.bad.clear(version)
    }

    pub fn bad(&self, version: Version) -> Option<&BadRelease> {
        self.bad.get(version)
    }

    /// The set admission checks ([`crate::admit`]).
    pub fn bad_set(&self) -> &BadReleases {
        &self.bad
    }

    pub fn bad_releases(&self) -> &[BadRelease] {
        self.bad.as_slice()
    }

    /// Oldest first.
    pub fn attempts(&self) -> impl ExactSizeIterator<Item = &Attempt> {
        self.attempts.iter()
    }

    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.back()
    }
}

#[derive(Deserialize)]
struct RawHistory {
    attempts: VecDeque<Attempt>,
    bad: BadReleases,
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
        // The bad set trims itself as it is read.
        Self {
            attempts: raw.attempts,
            bad: raw.bad,
        }
    }
}

#[cfg(test)]
mod tests;
