//! What a release is (the custom part of its TUF target metadata), whether
//! this appliance may install it, and when the staged rollout reaches it.
//!
//! The TUF client (`nusa-ota-tuf`) has already checked signatures, expiry
//! and that the metadata is not older than what was seen before; what is
//! checked here is the appliance's own policy:
//! - the variant must be this appliance's (never overridden);
//! - `min_version` must not be above the running version (never
//!   overridden: the release cannot migrate from older systems);
//! - a release recorded bad is not retried automatically;
//! - the version floor: only a newer release is taken automatically;
//! - the staged rollout (waves) must have reached this appliance;
//! - the fleet brake ([`crate::brake`]) must not hold it (checked by the
//!   state machine at check time and again before the slot is armed).
//!
//! `admit`'s `force` would lift the last three; no `nusactl` command sends a
//! forced install.

use serde::{Deserialize, Serialize};

use crate::bad::BadReleases;
use crate::chunk::MAX_IMAGE_LEN;
use crate::digest::Sha256Digest;
use crate::version::Version;
use crate::UnixSecs;

pub use self::waves::{eligible, seed_from_machine_id, Eligibility, Wave, Waves, WavesError};

mod waves;

/// The image's file name inside a release: its TUF target is
/// `<variant>/<version>/root.img` (`nusa_ota_tuf::target_name`).
pub const IMAGE_FILE: &str = "root.img";
/// The chunk index's file name inside a release.
pub const INDEX_FILE: &str = "root.img.cix";

/// One release for one variant, as published in the TUF targets metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRelease")]
pub struct ReleaseInfo {
    pub version: Version,
    pub variant: Variant,
    /// The oldest running version this release can be installed over.
    pub min_version: Option<Version>,
    /// TUF target name of the root filesystem image.
    pub image_target: String,
    pub image_len: u64,
    /// The signed hash the written slot must match before it is booted.
    pub image_sha256: Sha256Digest,
    /// TUF target name of the image's chunk index (see [`crate::chunk`]).
    pub chunk_index_target: String,
    #[serde(default)]
    pub waves: Waves,
}

/// The metadata as written, before its checks. Unknown fields are ignored
/// so a newer publisher can add some; anything an older appliance must not
/// ignore belongs in a release with a `min_version` instead.
#[derive(Deserialize)]
struct RawRelease {
    version: Version,
    variant: Variant,
    #[serde(default)]
    min_version: Option<Version>,
    image_target: String,
    image_len: u64,
    image_sha256: Sha256Digest,
    chunk_index_target: String,
    #[serde(default)]
    waves: Waves,
}

impl TryFrom<RawRelease> for ReleaseInfo {
    type Error = ReleaseError;

    fn try_from(raw: RawRelease) -> Result<Self, ReleaseError> {
        check_target_name("image_target", &raw.image_target)?;
        check_target_name("chunk_index_target", &raw.chunk_index_target)?;
        if raw.image_len == 0 || raw.image_len > MAX_IMAGE_LEN {
            return Err(ReleaseError::ImageLen {
                len: raw.image_len,
                max: MAX_IMAGE_LEN,
            });
        }
        if let Some(min) = raw.min_version {
            if min > raw.version {
                return Err(ReleaseError::MinAboveVersion {
                    min,
                    version: raw.version,
                });
            }
        }
        Ok(Self {
            version: raw.version,
            variant: raw.variant,
            min_version: raw.min_version,
            image_target: raw.image_target,
            image_len: raw.image_len,
            image_sha256: raw.image_sha256,
            chunk_index_target: raw.chunk_index_target,
            waves: raw.waves,
        })
    }
}

/// Target names go to the TUF client and the download cache; keep them to
/// a plain relative path (tough checks traversal too; this refuses early).
fn check_target_name(field: &'static str, name: &str) -> Result<(), ReleaseError> {
    let bad = |why| ReleaseError::TargetName {
        field,
        name: name.chars().take(64).collect(),
        why,
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("it must be 1 to 255 bytes"));
    }
    if name.starts_with('/') || name.split('/').any(|seg| seg.is_empty() || seg == "..") {
        return Err(bad(
            "it must be a relative path without empty or '..' parts",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/+".contains(&b))
    {
        return Err(bad("only ASCII letters, digits and ._-/+ are allowed"));
    }
    Ok(())
}

/// Release metadata that is well-formed JSON but not a usable release.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReleaseError {
    #[error("release {field} {name:?} is refused: {why}")]
    TargetName {
        field: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("release image_len {len} is outside 1..={max} bytes")]
    ImageLen { len: u64, max: u64 },
    #[error("release min_version {min} is above its own version {version}")]
    MinAboveVersion { min: Version, version: Version },
}

/// The hardware/OS flavour an image is built for, such as `x86_64-rtx` or
/// `aarch64-jetson`. A string, not an enum, so an appliance can still read
/// (and refuse) metadata for a variant invented after it was built.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Variant(String);

impl Variant {
    pub const X86_64_RTX: &'static str = "x86_64-rtx";
    pub const AARCH64_JETSON: &'static str = "aarch64-jetson";

    pub fn new(name: &str) -> Result<Self, VariantError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(VariantError(name.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Variant {
    type Error = VariantError;

    fn try_from(s: String) -> Result<Self, VariantError> {
        Self::new(&s)
    }
}

impl From<Variant> for String {
    fn from(v: Variant) -> String {
        v.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variant {0:?} is not 1 to 64 characters of a-z, 0-9, '-' and '_'")]
pub struct VariantError(String);

/// What the running system is, as far as admission is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub version: Version,
    pub variant: Variant,
}

/// Why this appliance does not install a release. The messages are shown
/// to operators as they are.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("release {version} is built for variant {release}, this appliance is {running}")]
    WrongVariant {
        version: Version,
        release: Variant,
        running: Variant,
    },
    #[error("release {version} installs only over {min} or later, this appliance runs {running}; install an intermediate release first")]
    BelowMinVersion {
        version: Version,
        min: Version,
        running: Version,
    },
    #[error("release {version} is not newer than the running {running} (version floor): only a newer release is installed")]
    NotNewer { version: Version, running: Version },
    #[error("release {version} was recorded bad ({reason}) and is not tried again; publish a newer release")]
    RecordedBad { version: Version, reason: String },
    #[error(
        "release {version}: the staged rollout reaches this appliance at unix time {not_before}"
    )]
    NotYet {
        version: Version,
        not_before: UnixSecs,
    },
    #[error("release {version}: the staged rollout's last wave does not reach this appliance")]
    OutsideRollout { version: Version },
    #[error("release {version} is paused by the fleet brake: {reason} (by {by} at unix time {at}); it is taken again once resumed")]
    Paused {
        version: Version,
        reason: String,
        by: String,
        at: UnixSecs,
    },
    #[error("release {version} is yanked by the fleet brake: {reason} (by {by} at unix time {at}); it is never installed")]
    Yanked {
        version: Version,
        reason: String,
        by: String,
        at: UnixSecs,
    },
    #[error("release {version} is written but not applied: the fleet brake could not be checked ({why}); the next run checks again")]
    BrakeUnknown { version: Version, why: String },
}

/// Whether `release` may be installed over `running`, waves aside (they
/// depend on time; see [`eligible`]). `force` is an operator's install: it
/// lifts the version floor and the bad-release record (`bad`, the
/// history's [`crate::History::bad_set`]), never the variant or
/// `min_version`.
pub fn admit(
    release: &ReleaseInfo,
    running: &Running,
    bad: &BadReleases,
    force: bool,
) -> Result<(), Refusal> {
    let version = release.version;
    if release.variant != running.variant {
        return Err(Refusal::WrongVariant {
            version,
            release: release.variant.clone(),
            running: running.variant.clone(),
        });
    }
    if let Some(min) = release.min_version {
        if running.version < min {
            return Err(Refusal::BelowMinVersion {
                version,
                min,
                running: running.version,
            });
        }
    }
    if force {
        return Ok(());
    }
    if let Some(record) = bad.get(version) {
        return Err(Refusal::RecordedBad {
            version,
            reason: record.reason.clone(),
        });
    }
    if version <= running.version {
        return Err(Refusal::NotNewer {
            version,
            running: running.version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
