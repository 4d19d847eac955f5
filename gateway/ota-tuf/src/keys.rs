//! Signing keys: ed25519 PKCS#8 files, one per key, named `<role>-<n>.pk8`.
//!
//! Key bytes are only ever read by tough's `LocalKeySource` and by
//! `public_key` here; they are never formatted, logged or put in an error
//! (errors name the file path only).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::key::Key;
use tough::sign::{parse_keypair, Sign};

use crate::error::PublishError;
use crate::Role;

/// A PKCS#8 ed25519 key is 83-85 bytes; anything near this bound is not one
/// of our key files and is refused before tough reads it unbounded.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// How many keys `create_keys` makes per role. Several root keys let the
/// root threshold be above 1 (keys held by different people).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub root: usize,
    pub targets: usize,
    pub snapshot: usize,
    pub timestamp: usize,
}

impl Default for KeyCounts {
    fn default() -> Self {
        Self {
            root: 1,
            targets: 1,
            snapshot: 1,
            timestamp: 1,
        }
    }
}

/// Paths of the private key files available for one signing run, by role.
/// A run needs only the keys of the roles it signs (a timestamp refresh
/// needs only timestamp keys); the others may stay offline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigningKeys {
    pub root: Vec<PathBuf>,
    pub targets: Vec<PathBuf>,
    pub snapshot: Vec<PathBuf>,
    pub timestamp: Vec<PathBuf>,
}

impl SigningKeys {
    /// Finds the `<role>-<n>.pk8` files in `dir` (as `create_keys` names them).
    pub fn load(dir: &Path) -> Result<Self, PublishError> {
        let io = |source| PublishError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut keys = SigningKeys::default();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pk8"))
            else {
                continue;
            };
            let Some((role, _n)) = stem.rsplit_once('-') else {
                continue;
            };
            match role {
                "root" => keys.root.push(path),
                "targets" => keys.targets.push(path),
                "snapshot" => keys.snapshot.push(path),
                "timestamp" => keys.timestamp.push(path),
                _ => {}
            }
        }
        // Sorted so that key order (and so root.json) does not depend on
        // directory order.
        for list in [
            &mut keys.root,
            &mut keys.targets,
            &mut keys.snapshot,
            &mut keys.timestamp,
        ] {
            list.sort();
        }
        Ok(keys)
    }

    /// The key files of one role.
    pub fn role(&self, role: Role) -> &[PathBuf] {
        match role {
            Role::Root => &self.root,
            Role::Targets => &self.targets,
            Role::Snapshot => &self.snapshot,
            Role::Timestamp => &self.timestamp,
        }
    }

    /// Every key file as a tough key source; tough picks, per role, the
    /// ones root lists for it.
    pub(crate) fn sources(&self) -> Result<Vec<Box<dyn KeySource>>, PublishError> {
        let mut paths: Vec<&PathBuf> = Role::ALL.iter().flat_map(|r| self.role(*r)).collect();
        paths.sort();
        paths.dedup();
        paths
            .into_iter()
            .map(|path| {
                check_key_file(path)?;
                Ok(Box::new(LocalKeySource { path: path.clone() }) as Box<dyn KeySource>)
            })
            .collect()
    }

    /// The public keys of one role, for listing in root.json.
    pub(crate) fn public_keys(&self, role: Role) -> Result<Vec<Key>, PublishError> {
        self.role(role).iter().map(|p| public_key(p)).collect()
    }
}

/// Generates the keys for a new repository in `dir` (created 0700 if
/// missing): `root-1.pk8`, ..., `timestamp-1.pk8`, each 0600. Refuses to
/// overwrite an existing key file.
pub fn create_keys(dir: &Path, counts: KeyCounts) -> Result<SigningKeys, PublishError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PublishError::Io {
            path: dir.to_owned(),
            source,
        })?;
    let rng = SystemRandom::new();
    let mut keys = SigningKeys::default();
    for (role, count) in [
        (Role::Root, counts.root),
        (Role::Targets, counts.targets),
        (Role::Snapshot, counts.snapshot),
        (Role::Timestamp, counts.timestamp),
    ] {
        if count == 0 {
            return Err(PublishError::Keys {
                detail: format!("{role} needs at least one key"),
            });
        }
        for n in 1..=count {
            let path = dir.join(format!("{role}-{n}.pk8"));
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| PublishError::Keys {
                detail: "the system random generator failed".to_owned(),
            })?;
            write_private(&path, pkcs8.as_ref())?;
            match role {
                Role::Root => keys.root.push(path),
                Role::Targets => keys.targets.push(path),
                Role::Snapshot => keys.snapshot.push(path),
                Role::Timestamp => keys.timestamp.push(path),
            }
        }
    }
    Ok(keys)
}

/// Writes key bytes to a new file that only the owner can read; the mode is
/// set at creation so the key is never readable by others, even briefly.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let io = |source| PublishError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn check_key_file(path: &Path) -> Result<(), PublishError> {
    let meta = std::fs::metadata(path).map_err(|source| PublishError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_KEY_FILE {
        return Err(PublishError::Keys {
            detail: format!(
                "{} is over {MAX_KEY_FILE} bytes: not a key file",
                path.display()
            ),
        });
    }
    Ok(())
}

fn public_key(path: &Path) -> Result<Key, PublishError> {
    check_key_file(path)?;
    let bytes = std::fs::read(path).map_err(|source| PublishError::Io {
        path: path.to_owned(),
        source,
    })?;
    // The parse error is not shown: it could echo key material.
    let pair = parse_keypair(&bytes).map_err(|_| PublishError::Keys {
        detail: format!(
            "{} is not an ed25519, ECDSA or RSA private key",
            path.display()
        ),
    })?;
    Ok(pair.tuf_key())
}
