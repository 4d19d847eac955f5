//! The fleet brake: releases the release engineers paused or yanked.
//!
//! It is signed data in the release repository, under the same trust as
//! the releases: the TUF target `brake/<sequence>/brake.json`
//! ([`brake_target`]), signed by the targets role. Each change publishes
//! the whole brake again under the next sequence number (targets are
//! immutable groups; two publishers racing for one number: the second is
//! refused), and the device reads the highest one. TUF's version and
//! expiry checks keep the brake as fresh as the metadata.
//!
//! - A **paused** release is not started (refused at check time) and a
//!   release written but not yet armed is not applied; a resume lifts the
//!   pause and boxes take the release on their next check.
//! - A **yanked** release is the same, for good: it cannot be resumed or
//!   paused again. A box already running it is not rolled back (see the
//!   README: an automatic fleet-wide rollback is a bigger risk than the
//!   release; the operator decides with `nusactl update rollback`).
//!
//! An entry names a version, and a variant or (none) every variant. A
//! leaf beside `bad`: `release` does not import it, `state` does.

use serde::{Deserialize, Serialize};

use crate::bad::cut_reason;
use crate::release::{Refusal, Variant};
use crate::version::Version;
use crate::UnixSecs;

/// The folder of the brake's targets in the repository.
pub const BRAKE_DIR: &str = "brake";
/// The brake's file name inside `brake/<sequence>/`.
pub const BRAKE_FILE: &str = "brake.json";
/// Entries kept per list; a brake with more is refused when read.
pub const MAX_ENTRIES: usize = 1024;
/// Longest "who" kept.
pub const MAX_BY_LEN: usize = 128;

/// The target name of the brake with `sequence`: `brake/<sequence>/brake.json`.
pub fn brake_target(sequence: u64) -> String {
    format!("{BRAKE_DIR}/{sequence}/{BRAKE_FILE}")
}

/// The sequence of a brake target name; `None` for every other name
/// (releases included: their second part is a semantic version).
pub fn brake_sequence(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(BRAKE_DIR)?.strip_prefix('/')?;
    let (seq, file) = rest.split_once('/')?;
    if file != BRAKE_FILE || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = seq.parse().ok()?;
    // One spelling per number: no leading zeros.
    (n.to_string() == seq).then_some(n)
}

/// Pause or yank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrakeKind {
    Pause,
    Yank,
}

/// One paused or yanked release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrakeEntry {
    pub version: Version,
    /// `None`: every variant of the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<Variant>,
    pub reason: String,
    /// Who: the release engineer's name as given to `nusactl release`.
    pub by: String,
    /// When, unix seconds (the publisher's clock).
    pub at: UnixSecs,
}

impl BrakeEntry {
    fn covers(&self, version: Version, variant: &Variant) -> bool {
        self.version == version && self.variant.as_ref().is_none_or(|v| v == variant)
    }
}

/// The paused and yanked releases, as published. `sequence` is the number
/// in its target name (0: the repository publishes no brake).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawBrake")]
pub struct Brake {
    pub sequence: u64,
    paused: Vec<BrakeEntry>,
    yanked: Vec<BrakeEntry>,
}

#[derive(Deserialize)]
struct RawBrake {
    sequence: u64,
    #[serde(default)]
    paused: Vec<BrakeEntry>,
    #[serde(default)]
    yanked: Vec<BrakeEntry>,
}

impl TryFrom<RawBrake> for Brake {
    type Error = BrakeError;

    fn try_from(raw: RawBrake) -> Result<Self, BrakeError> {
        if raw.paused.len() > MAX_ENTRIES || raw.yanked.len() > MAX_ENTRIES {
            return Err(BrakeError::TooMany { max: MAX_ENTRIES });
        }
        let cut = |mut e: BrakeEntry| {
            e.reason = cut_reason(&e.reason);
            e.by = cut_to(&e.by, MAX_BY_LEN);
            e
        };
        Ok(Self {
            sequence: raw.sequence,
            paused: raw.paused.into_iter().map(cut).collect(),
            yanked: raw.yanked.into_iter().map(cut).collect(),
        })
    }
}

/// A brake change that does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrakeError {
    #[error("release {version} is yanked ({reason}); a yank is permanent")]
    Yanked { version: Version, reason: String },
    #[error("release {version}{variant} is not paused")]
    NotPaused { version: Version, variant: String },
    #[error("a brake lists at most {max} paused and {max} yanked releases")]
    TooMany { max: usize },
}

impl Brake {
    /// Whether the brake holds `version` of `variant`: the refusal (a yank
    /// before a pause), or `None`.
    pub fn holds(&self, version: Version, variant: &Variant) -> Option<Refusal> {
        if let Some(e) = self.yanked.iter().find(|e| e.covers(version, variant)) {
            return Some(Refusal::Yanked {
                version,
                reason: e.reason.clone(),
                by: e.by.clone(),
                at: e.at,
            });
        }
        self.paused
            .iter()
            .find(|e| e.covers(version, variant))
            .map(|e| Refusal::Paused {
                version,
                reason: e.reason.clone(),
                by: e.by.clone(),
                at: e.at,
            })
    }

    pub fn paused(&self) -> &[BrakeEntry] {
        &self.paused
    }

    pub fn yanked(&self) -> &[BrakeEntry] {
        &self.yanked
    }

    /// The yank that covers `entry`'s version and variant, if any (a yank
    /// of every variant covers each; one of a variant covers only it).
    fn yank_over(&self, version: Version, variant: Option<&Variant>) -> Option<&BrakeEntry> {
        self.yanked.iter().find(|y| {
            y.version == version && (y.variant.is_none() || y.variant.as_ref() == variant)
        })
    }

    /// Pauses `entry.version` (replacing a pause of the same version and
    /// variant). Refused for a yanked release.
    pub fn pause(&mut self, entry: BrakeEntry) -> Result<(), BrakeError> {
        if let Some(y) = self.yank_over(entry.version, entry.variant.as_ref()) {
            return Err(BrakeError::Yanked {
                version: entry.version,
                reason: y.reason.clone(),
            });
        }
        self.paused
            .retain(|p| !(p.version == entry.version && p.variant == entry.variant));
        self.push(BrakeKind::Pause, entry)
    }

    /// Lifts the pauses of `version` for `variant` (`None`: every pause of
    /// the version). Refused for a yanked release and when none matched.
    pub fn resume(
        &mut self,
        version: Version,
        variant: Option<&Variant>,
    ) -> Result<(), BrakeError> {
        if let Some(y) = self.yank_over(version, variant) {
            return Err(BrakeError::Yanked {
                version,
                reason: y.reason.clone(),
            });
        }
        let before = self.paused.len();
        self.paused.retain(|p| {
            !(p.version == version && (variant.is_none() || p.variant.as_ref() == variant))
        });
        if self.paused.len() == before {
            return Err(BrakeError::NotPaused {
                version,
                variant: variant.map(|v| format!(" ({v})")).unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Yanks `entry.version` for good; its pauses go (the yank covers
    /// them). Refused when a yank already covers it.
    pub fn yank(&mut self, entry: BrakeEntry) -> Result<(), BrakeError> {
        if let Some(y) = self.yank_over(entry.version, entry.variant.as_ref()) {
            return Err(BrakeError::Yanked {
                version: entry.version,
                reason: y.reason.clone(),
            });
        }
        self.paused.retain(|p| {
            !(p.version == entry.version && (entry.variant.is_none() || p.variant == entry.variant))
        });
        self.push(BrakeKind::Yank, entry)
    }

    fn push(&mut self, kind: BrakeKind, mut entry: BrakeEntry) -> Result<(), BrakeError> {
        entry.reason = cut_reason(&entry.reason);
        entry.by = cut_to(&entry.by, MAX_BY_LEN);
        let list = match kind {
            BrakeKind::Pause => &mut self.paused,
            BrakeKind::Yank => &mut self.yanked,
        };
        if list.len() >= MAX_ENTRIES {
            return Err(BrakeError::TooMany { max: MAX_ENTRIES });
        }
        list.push(entry);
        Ok(())
    }
}

fn cut_to(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What the driver could learn of the brake right before a written slot is
/// armed ([`crate::Command::CheckBrake`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrakeCheck {
    /// The metadata verified just now; the brake it lists (empty when the
    /// repository publishes none).
    Fresh(Brake),
    /// Fresh metadata could not be had (`error`: offline, a mirror that
    /// withholds it); the brake from the last metadata that verified, and
    /// when that metadata expires.
    Stale {
        brake: Brake,
        expires: UnixSecs,
        error: String,
    },
    /// Neither fresh metadata nor a record of the last.
    Unknown { error: String },
}

impl BrakeCheck {
    /// Whether `version` of `variant` may be applied at `now`: the fresh
    /// brake decides; offline, the last verified brake decides only while
    /// its metadata is unexpired (and a brake it already lists holds the
    /// release anyway); otherwise the brake is unknown and nothing is
    /// applied ([`Refusal::BrakeUnknown`]).
    pub fn verdict(
        &self,
        version: Version,
        variant: &Variant,
        now: UnixSecs,
    ) -> Result<(), Refusal> {
        match self {
            BrakeCheck::Fresh(brake) => brake.holds(version, variant).map_or(Ok(()), Err),
            BrakeCheck::Stale {
                brake,
                expires,
                error,
            } => {
                if let Some(r) = brake.holds(version, variant) {
                    return Err(r);
                }
                if now < *expires {
                    return Ok(());
                }
                Err(Refusal::BrakeUnknown {
                    version,
                    why: format!(
                        "{error}; the last verified metadata expired at unix time {expires}"
                    ),
                })
            }
            BrakeCheck::Unknown { error } => Err(Refusal::BrakeUnknown {
                version,
                why: error.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
