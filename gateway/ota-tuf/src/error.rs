//! The refusals a device can meet, and the mapping from tough's errors.
//!
//! tough reports most attacks through a handful of its own variants, but
//! two of them (a hash mismatch and an over-long file) arrive wrapped in a
//! transport error, because they are detected while the bytes stream in.
//! `from_tough` unwraps those so the caller sees the attack, not "transport
//! error", and uses the stage (metadata or target) to tell a metadata file
//! that does not match what the role above it signed (mix-and-match) from a
//! target whose bytes were changed.
//!
//! The publisher's errors ([`PublishError`]) and the name checks' (shared
//! by both sides) are here too, below the modules that raise them.

use std::path::PathBuf;

use tough::error::Error as ToughError;
use tough::schema::Error as SchemaError;

use crate::Role;

/// Why the client refused the repository or a target. Every variant means
/// nothing unverified was returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TufError {
    /// Signed metadata is past its expiry: a freeze attack, or the
    /// repository's timestamp was not refreshed in time.
    #[error("{role} metadata has expired (freeze attack or a repository not refreshed in time)")]
    Expired { role: String },

    /// Fewer valid signatures than the role's threshold: signed by a key the
    /// trusted root does not list, by too few keys, or altered after signing.
    #[error(
        "{role} metadata is not signed by enough trusted keys: {valid} valid signature(s), \
         threshold {threshold}"
    )]
    BadSignatures {
        role: String,
        threshold: u64,
        valid: u64,
    },

    /// Signed metadata is malformed (bad key IDs, duplicate signatures,
    /// unparsable JSON).
    #[error("{role} metadata is invalid: {detail}")]
    InvalidMetadata { role: String, detail: String },

    /// Metadata older than what this device already trusts (persisted in the
    /// datastore): a replay.
    #[error(
        "rollback refused: {role} version {offered} is older than version {trusted} already \
         trusted (replayed metadata)"
    )]
    Rollback {
        role: String,
        trusted: u64,
        offered: u64,
    },

    /// A metadata file that is not the one the role above it lists (another
    /// version, other bytes): a mix-and-match attack.
    #[error("mix-and-match refused: {detail}")]
    MixAndMatch { detail: String },

    /// A metadata file larger than its limit or its signed length.
    #[error("metadata too large: {detail}")]
    MetadataTooLarge { detail: String },

    /// A target that kept sending bytes past its signed length (endless
    /// data); reading stopped at the signed length.
    #[error("target {name} is longer than the {length} bytes its signed metadata lists")]
    TargetTooLong { name: String, length: u64 },

    /// A target whose bytes do not hash to the signed sha256.
    #[error("target {name} does not match its signed sha256: expected {expected}, got {actual}")]
    HashMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    /// A signed target name that could be read as a path outside the
    /// targets directory (`../`, absolute, empty segments).
    #[error("unsafe target name {name:?}: path traversal refused")]
    PathTraversal { name: String },

    /// No release of this variant is listed in the signed targets.
    #[error("no release of variant {variant:?} is listed in the signed targets")]
    UnknownVariant { variant: String },

    /// The target is not listed in the signed targets.
    #[error("target {name:?} is not listed in the signed targets")]
    UnknownTarget { name: String },

    /// `read_target` holds a target in memory; bigger ones are downloaded
    /// by range against `target_info`.
    #[error("target {name} is {length} bytes, over the {max} bytes read_target may hold")]
    TargetTooLarge { name: String, length: u64, max: u64 },

    /// A variant, version or file name that cannot be part of a target name.
    #[error(transparent)]
    InvalidName(#[from] NameError),

    /// The system clock is earlier than the last time this device checked;
    /// expiry cannot be judged.
    #[error("system clock went backward since the last update check: {detail}")]
    ClockWentBackward { detail: String },

    /// The trusted root shipped in the image cannot be used.
    #[error("trusted root {path}: {detail}", path = path.display())]
    TrustedRoot { path: PathBuf, detail: String },

    /// Reading or preparing a local file or folder.
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The transport could not fetch a file (missing, unreachable).
    #[error("fetching {url}: {detail}")]
    Fetch { url: String, detail: String },

    /// Any other error tough reported; its message names what failed.
    #[error("TUF: {0}")]
    Other(Box<ToughError>),
}

/// Where an error happened: while loading metadata (`Client::open`) or
/// while reading one target.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage<'a> {
    Metadata,
    Target { name: &'a str, length: u64 },
}

/// A release name component (variant, version, file name) that cannot be
/// used in a target name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: it {why}")]
pub struct NameError {
    /// Which component: "variant", "version" or "file name".
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it was refused.
    pub why: &'static str,
}

/// Why a publishing operation failed. Nothing was committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing keys: {detail}")]
    Keys { detail: String },
    #[error("{role} threshold {threshold} is more than its {keys} key(s)")]
    Threshold {
        role: Role,
        threshold: u64,
        keys: usize,
    },
    #[error("signing failed (are the keys of every role being signed given?): {detail}")]
    Sign { detail: String },
    #[error("new root is not signed by the threshold of root version {by_version}: {detail}")]
    RootNotSigned { by_version: u64, detail: String },
    #[error("the repository as it stands does not verify: {0}")]
    Load(#[source] TufError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{path} already holds a repository", path = path.display())]
    RepoExists { path: PathBuf },
    #[error("release {variant}/{version} is already published; releases are immutable")]
    ReleaseExists { variant: String, version: String },
    /// `add_targets`: targets under this prefix are already signed.
    #[error("targets under {prefix} are already published; they are immutable")]
    GroupExists { prefix: String },
    #[error("{detail}")]
    Conflict { detail: String },
    #[error("expiry {detail}")]
    Expiry { detail: String },
    #[error("{what}: {source}")]
    Tough {
        what: &'static str,
        /// Boxed: tough's error carries backtraces and is large.
        source: Box<tough::error::Error>,
    },
}

impl TufError {
    /// Maps a tough error into the refusal it stands for.
    pub(crate) fn from_tough(err: ToughError, stage: Stage<'_>) -> Self {
        match err {
            ToughError::ExpiredMetadata { role, .. } => TufError::Expired {
                role: role.to_string(),
            },
            ToughError::VerifyMetadata { role, source, .. } => {
                from_schema(role.to_string(), source)
            }
            ToughError::VerifyRoleMetadata { role, source, .. } => from_schema(role, source),
            ToughError::OlderMetadata {
                role,
                current_version,
                new_version,
                ..
            } => TufError::Rollback {
                role: role.to_string(),
                trusted: current_version,
                offered: new_version,
            },
            ToughError::OlderSnapshotInTimestamp {
                snapshot_new,
                snapshot_old,
                ..
            } => TufError::Rollback {
                role: "snapshot (as listed in timestamp)".to_owned(),
                trusted: snapshot_old,
                offered: snapshot_new,
            },
            ToughError::SnapshotRoleRollback {
                role,
                old_role_version,
                new_role_version,
                ..
            } => TufError::Rollback {
                role: format!("{role} (as listed in snapshot)"),
                trusted: old_role_version,
                offered: new_role_version,
            },
            ToughError::VersionMismatch {
                role,
                fetched,
                expected,
                ..
            } => TufError::MixAndMatch {
                detail: format!(
                    "{role} version {fetched} served where version {expected} is listed"
                ),
            },
            ToughError::SnapshotRoleMissing { .. }
            | ToughError::SnapshotTargetsMetaMissing { .. } => TufError::MixAndMatch {
                detail: err.to_string(),
            },
            ToughError::SystemTimeSteppedBackward { .. } => TufError::ClockWentBackward {
                // The file is client::LATEST_KNOWN_TIME (not imported:
                // client imports this module).
                detail: format!(
                    "{err}; once the clock is right (synchronized), remove \
                     latest_known_time.json in the datastore"
                ),
            },
            ToughError::ParseMetadata { role, source, .. } => TufError::InvalidMetadata {
                role: role.to_string(),
                detail: source.to_string(),
            },
            ToughError::VerifyTrustedMetadata { source, .. } => TufError::InvalidMetadata {
                role: "trusted root".to_owned(),
                detail: source.to_string(),
            },
            ToughError::Transport { url, source, .. } => {
                from_transport(url.as_str(), &source, stage)
            }
            other => TufError::Other(Box::new(other)),
        }
    }
}

fn from_schema(role: String, source: SchemaError) -> TufError {
    match source {
        SchemaError::SignatureThreshold {
            threshold, valid, ..
        } => TufError::BadSignatures {
            role,
            threshold,
            valid,
        },
        other => TufError::InvalidMetadata {
            role,
            detail: other.to_string(),
        },
    }
}

/// Looks inside a transport error for the verification failure tough's
/// stream adapters wrap in it.
fn from_transport(url: &str, source: &tough::TransportError, stage: Stage<'_>) -> TufError {
    let cause = std::error::Error::source(source).and_then(|e| e.downcast_ref::<ToughError>());
    match (cause, stage) {
        (
            Some(ToughError::HashMismatch {
                calculated,
                expected,
                ..
            }),
            Stage::Target { name, .. },
        ) => TufError::HashMismatch {
            name: name.to_owned(),
            expected: expected.clone(),
            actual: calculated.clone(),
        },
        (Some(ToughError::HashMismatch { .. }), Stage::Metadata) => TufError::MixAndMatch {
            detail: format!("{url} does not hash to what the role above it signed"),
        },
        (Some(ToughError::MaxSizeExceeded { .. }), Stage::Target { name, length }) => {
            TufError::TargetTooLong {
                name: name.to_owned(),
                length,
            }
        }
        (
            Some(ToughError::MaxSizeExceeded {
                max_size,
                specifier,
                ..
            }),
            Stage::Metadata,
        ) => TufError::MetadataTooLarge {
            detail: format!("{url} is over {max_size} bytes (limit from {specifier})"),
        },
        _ => TufError::Fetch {
            url: url.to_owned(),
            detail: source.to_string(),
        },
    }
}
