//! The TUF side of the OTA updater, over [tough] (the TUF implementation
//! Bottlerocket uses).
//!
//! Two halves share one repository layout (see README.md):
//!
//! - **Publishing** (`create_keys`, `init_repo`, `add_release`, `set_expiry`,
//!   `rotate_root`): what `nusactl` calls on a release engineer's machine.
//!   Metadata is built and signed by tough's `RepositoryEditor` and `sign`
//!   module, never written by hand.
//! - **Client** (`Client`): what the device runs. It trusts only the root
//!   shipped in its image, persists the last metadata it accepted on the
//!   data partition (so older metadata is refused), enforces expiry, and
//!   returns target lengths and hashes only after the whole chain verified.
//!
//! Transport is the caller's: tough's `Transport` trait, with tough's
//! `FilesystemTransport` for offline (USB, local folder) updates and tests;
//! an HTTP transport with Range resume plugs in the same way.

#![forbid(unsafe_code)]

mod client;
mod error;
mod keys;
mod names;
mod publish;

use std::fmt;
use std::path::Path;

pub use client::{
    Client, Limits, MetadataVersions, ReleaseFile, ReleaseTarget, TargetInfo, TimeSync,
    LATEST_KNOWN_TIME, ROOTS_DIR, SYSTEMD_TIMESYNC_MARKER,
};
pub use error::{NameError, PublishError, TufError};
pub use keys::{create_keys, KeyCounts, SigningKeys};
pub use names::{check_component, target_name};
pub use publish::{
    add_release, add_targets, init_repo, rotate_root, set_expiry, Expiries, NewTarget, Thresholds,
};
pub use semver::Version;
pub use tough::{
    FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream,
};
pub use url::Url;

/// Folder of a repository holding the signed metadata.
pub const METADATA_DIR: &str = "metadata";
/// Folder of a repository holding the targets, each as `<sha256>.<name>`.
pub const TARGETS_DIR: &str = "targets";

/// A top-level TUF role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl Role {
    /// All four roles, in the order root lists them.
    pub const ALL: [Role; 4] = [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp];

    fn role_type(self) -> tough::schema::RoleType {
        use tough::schema::RoleType;
        match self {
            Role::Root => RoleType::Root,
            Role::Targets => RoleType::Targets,
            Role::Snapshot => RoleType::Snapshot,
            Role::Timestamp => RoleType::Timestamp,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        })
    }
}

/// The metadata and targets URLs of a repository in a local folder (a USB
/// stick, an unpacked bundle), for `Client::open` with `FilesystemTransport`.
pub fn local_urls(repo_dir: &Path) -> Result<(Url, Url), TufError> {
    let repo_dir = std::fs::canonicalize(repo_dir).map_err(|source| TufError::Io {
        path: repo_dir.to_owned(),
        source,
    })?;
    let url = |sub: &str| {
        let dir = repo_dir.join(sub);
        // Only fails for a relative path, and `canonicalize` made it absolute.
        Url::from_directory_path(&dir).map_err(|()| TufError::Io {
            path: dir,
            source: std::io::Error::other("not an absolute path"),
        })
    };
    Ok((url(METADATA_DIR)?, url(TARGETS_DIR)?))
}

/// The target name checks, for the fuzz targets in `fuzz/`; not an API:
/// `name` as a component, a release version, a signed name, and split as
/// a release name.
#[doc(hidden)]
pub fn fuzz_name(name: &str) -> [bool; 4] {
    [
        names::check_component("file name", name).is_ok(),
        names::parse_version(name).is_ok(),
        names::check_signed_name(name).is_ok(),
        names::split_release_name(name).is_some(),
    ]
}

/// Metadata at our boundary with tough, for the fuzz targets in `fuzz/`;
/// not an API: `bytes` as a persisted trusted root (parsed, its own
/// signatures checked, its version) and as targets metadata checked as the
/// client checks verified targets (no delegation, safe names).
#[doc(hidden)]
pub fn fuzz_metadata(bytes: &[u8]) -> (Result<u64, String>, Result<(), String>) {
    let root = client::self_signed_version(bytes);
    let targets = serde_json::from_slice::<tough::schema::Signed<tough::schema::Targets>>(bytes)
        .map_err(|e| e.to_string())
        .and_then(|t| client::check_targets(&t.signed).map_err(|e| e.to_string()));
    (root, targets)
}
