//! The set of releases recorded bad: what admission refuses without force
//! and what the history keeps. A leaf below both, so that `release` need
//! not import `history`. Bounded, also when read back (see `history`).

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::version::Version;
use crate::UnixSecs;

/// Bad releases kept. When full, the lowest version goes: it is the one the
/// version floor most likely refuses anyway.
pub const MAX_BAD: usize = 64;
/// Reasons are cut to this many bytes (on a character boundary).
pub const MAX_REASON_LEN: usize = 512;

/// A release that failed on this appliance after it booted (or was rolled
/// back by an operator); never installed again without force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRelease {
    pub version: Version,
    pub image_sha256: Sha256Digest,
    pub reason: String,
    pub recorded_at: UnixSecs,
}

/// At most [`MAX_BAD`] releases, one record per version. Written as the
/// list of its records.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<BadRelease>", into = "Vec<BadRelease>")]
pub struct BadReleases(Vec<BadRelease>);

impl BadReleases {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `version` bad (again: the newest reason wins).
    pub fn record(
        &mut self,
        version: Version,
        image_sha256: Sha256Digest,
        reason: &str,
        now: UnixSecs,
    ) {
        self.0.retain(|b| b.version != version);
        if self.0.len() == MAX_BAD {
            if let Some(lowest) = (0..self.0.len()).min_by_key(|&i| self.0[i].version) {
                self.0.swap_remove(lowest);
            }
        }
        self.0.push(BadRelease {
            version,
            image_sha256,
            reason: cut_reason(reason),
            recorded_at: now,
        });
    }

    /// Forgets `version`; false if it was not recorded.
    pub fn clear(&mut self, version: Version) -> bool {
        let before = self.0.len();
        self.0.retain(|b| b.version != version);
        self.0.len() != before
    }

    pub fn get(&self, version: Version) -> Option<&BadRelease> {
        self.0.iter().find(|b| b.version == version)
    }

    pub fn as_slice(&self) -> &[BadRelease] {
        &self.0
    }
}

impl From<Vec<BadRelease>> for BadReleases {
    fn from(mut raw: Vec<BadRelease>) -> Self {
        // Keep the highest versions, as eviction does.
        raw.sort_by_key(|b| std::cmp::Reverse(b.version));
        raw.truncate(MAX_BAD);
        for b in &mut raw {
            b.reason = cut_reason(&b.reason);
        }
        Self(raw)
    }
}

impl From<BadReleases> for Vec<BadRelease> {
    fn from(set: BadReleases) -> Self {
        set.0
    }
}

/// `reason` cut to [`MAX_REASON_LEN`] bytes on a character boundary.
pub(crate) fn cut_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
