//! The device side: verify the repository, then answer "what is the latest
//! release of my variant" and hand out verified targets or their hashes.
//!
//! Trust starts from the root shipped in the image and moves only forward:
//! tough walks root rotations (`N+1.root.json`), and keeps the last
//! timestamp, snapshot and targets it accepted in the datastore on the data
//! partition, so metadata older than those is refused even after a reboot
//! or a reinstall of the same image. Expiry is always enforced.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use tough::schema::{Root, Signed, Target, Targets};
use tough::{ExpirationEnforcement, IntoVec, Repository, RepositoryLoader, TargetName, Transport};
use url::Url;

use crate::error::Stage;
use crate::names::{check_component, check_signed_name, split_release_name};
use crate::TufError;

/// Bounds on everything the client downloads. Metadata limits apply before
/// a file's signed length is known (timestamp, root); after that tough
/// bounds each file by the length the role above it signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_root_size: u64,
    pub max_targets_size: u64,
    pub max_snapshot_size: u64,
    pub max_timestamp_size: u64,
    /// Root versions walked in one update; bounds a chain of rotations.
    pub max_root_updates: u64,
    /// Largest target `read_target` holds in memory (the chunk index); the
    /// image itself is fetched by range against `target_info`.
    pub max_read_target: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_root_size: 1024 * 1024,
            max_targets_size: 10 * 1024 * 1024,
            max_snapshot_size: 1024 * 1024,
            max_timestamp_size: 64 * 1024,
            max_root_updates: 64,
            max_read_target: 16 * 1024 * 1024,
        }
    }
}

/// A verified target's identity: what a downloader needs to fetch it (by
/// range, resumably) and check it chunk by chunk and in whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// The target name as signed, `<variant>/<version>/<file>`.
    pub name: String,
    pub length: u64,
    pub sha256: [u8; 32],
    /// Where it is served: `<targets_url><sha256 hex>.<name>` (consistent
    /// snapshots: a file's URL changes whenever its bytes do).
    pub url: Url,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseFile {
    /// The file name within the release (the last part of the target name).
    pub file: String,
    pub info: TargetInfo,
    /// The custom metadata signed with this target.
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// The highest version of one variant, with its files sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseTarget {
    pub variant: String,
    pub version: semver::Version,
    pub files: Vec<ReleaseFile>,
}

/// Versions of the metadata the client verified, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataVersions {
    pub root: u64,
    pub targets: u64,
    pub snapshot: u64,
    pub timestamp: u64,
}

/// A verified view of the repository. Built only by `open`, which fails
/// unless the whole chain from the trusted root verified.
pub struct Client {
    repo: Repository,
    targets_url: Url,
    limits: Limits,
}

impl std::fmt::Debug for Client {
    // tough's Repository prints every key and signature; the versions say
    // which metadata this client verified.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("versions", &self.versions())
            .field("targets_url", &self.targets_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Loads and verifies the repository's metadata through `transport`.
    ///
    /// `trusted_root` is the root.json shipped in the image; `datastore` a
    /// folder on the data partition (created 0700 if missing) where the last
    /// accepted metadata persists across runs.
    pub async fn open(
        trusted_root: &Path,
        datastore: &Path,
        metadata_url: Url,
        targets_url: Url,
        transport: impl Transport + 'static,
        limits: Limits,
    ) -> Result<Self, TufError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(datastore)
            .map_err(|source| TufError::Io {
                path: datastore.to_owned(),
                source,
            })?;
        let root = start_root(trusted_root, datastore, limits.max_root_size)?;
        let repo = RepositoryLoader::new(&root, metadata_url, targets_url.clone())
            .transport(transport)
            .limits(tough::Limits {
                max_root_size: limits.max_root_size,
                max_targets_size: limits.max_targets_size,
                max_timestamp_size: limits.max_timestamp_size,
                max_snapshot_size: limits.max_snapshot_size,
                max_root_updates: limits.max_root_updates,
            })
            .datastore(datastore)
            // Set explicitly so no default can ever weaken it: without expiry
            // a replayed, validly signed old timestamp would be accepted.
            .expiration_enforcement(ExpirationEnforcement::Safe)
            .load()
            .await
            .map_err(|e| TufError::from_tough(e, Stage::Metadata))?;

        check_targets(&repo.targets().signed)?;
        Ok(Self {
            repo,
            targets_url,
            limits,
        })
    }

    /// The versions of the verified metadata.
    pub fn versions(&self) -> MetadataVersions {
        MetadataVersions {
            root: self.repo.root().signed.version.get(),
            targets: self.repo.targets().signed.version.get(),
            snapshot: self.repo.snapshot().signed.version.get(),
            timestamp: self.repo.timestamp().signed.version.get(),
        }
    }

    /// The highest version of `variant` the signed targets list.
    pub fn latest_release(&self, variant: &str) -> Result<ReleaseTarget, TufError> {
        check_component("variant", variant)?;
        self.check_fresh()?;
        let mut releases: BTreeMap<semver::Version, Vec<ReleaseFile>> = BTreeMap::new();
        for (name, target) in self.repo.targets().signed.targets_iter() {
            let Some((v, version, file)) = split_release_name(name.raw()) else {
                continue;
            };
            // Our publisher signs only semantic versions; anything else is
            // not a release this client can order, so it is not offered.
            let Ok(version) = semver::Version::parse(version) else {
                continue;
            };
            if v != variant {
                continue;
            }
            releases.entry(version).or_default().push(ReleaseFile {
                file: file.to_owned(),
                info: self.info(name.raw(), target)?,
                custom: target.custom.clone().into_iter().collect(),
            });
        }
        let (version, mut files) = releases
            .pop_last()
            .ok_or_else(|| TufError::UnknownVariant {
                variant: variant.to_owned(),
            })?;
        files.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(ReleaseTarget {
            variant: variant.to_owned(),
            version,
            files,
        })
    }

    /// Every signed target, sorted by name, for repositories whose names
    /// are not releases (the model repository groups its own way).
    pub fn targets(&self) -> Result<Vec<TargetInfo>, TufError> {
        self.check_fresh()?;
        let mut all = self
            .repo
            .targets()
            .signed
            .targets_iter()
            .map(|(name, target)| self.info(name.raw(), target))
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Length, sha256 and URL of a signed target, for a ranged download.
    pub fn target_info(&self, name: &str) -> Result<TargetInfo, TufError> {
        self.check_fresh()?;
        let (_, target) = self.find(name)?;
        self.info(name, target)
    }

    /// Downloads a small target and returns its bytes once they verified
    /// against the signed length and sha256. Reading stops at the signed
    /// length: a server sending more is refused, not read to the end.
    pub async fn read_target(&self, name: &str) -> Result<Vec<u8>, TufError> {
        self.check_fresh()?;
        let (target_name, target) = self.find(name)?;
        if target.length > self.limits.max_read_target {
            return Err(TufError::TargetTooLarge {
                name: name.to_owned(),
                length: target.length,
                max: self.limits.max_read_target,
            });
        }
        let stage = Stage::Target {
            name,
            length: target.length,
        };
        let stream = self
            .repo
            .read_target(&target_name)
            .await
            .map_err(|e| TufError::from_tough(e, stage))?
            .ok_or_else(|| TufError::UnknownTarget {
                name: name.to_owned(),
            })?;
        // tough's stream checks the length as bytes arrive and the sha256 at
        // the end, and yields an error instead of the last chunk on failure,
        // so a complete Ok(Vec) is verified.
        stream
            .into_vec()
            .await
            .map_err(|e| TufError::from_tough(e, stage))
    }

    fn find(&self, name: &str) -> Result<(TargetName, &Target), TufError> {
        check_signed_name(name)?;
        let unknown = || TufError::UnknownTarget {
            name: name.to_owned(),
        };
        let target_name = TargetName::new(name).map_err(|_| unknown())?;
        let target = self
            .repo
            .targets()
            .signed
            .targets_map()
            .get(&target_name)
            .copied()
            .ok_or_else(unknown)?;
        Ok((target_name, target))
    }

    fn info(&self, name: &str, target: &Target) -> Result<TargetInfo, TufError> {
        let sha256: [u8; 32] =
            target
                .hashes
                .sha256
                .as_ref()
                .try_into()
                .map_err(|_| TufError::InvalidMetadata {
                    role: "targets".to_owned(),
                    detail: format!("sha256 of {name} is not 32 bytes"),
                })?;
        let url = self
            .targets_url
            .join(&format!("{}.{name}", hex::encode(sha256)))
            .map_err(|e| TufError::InvalidMetadata {
                role: "targets".to_owned(),
                detail: format!("URL of {name}: {e}"),
            })?;
        Ok(TargetInfo {
            name: name.to_owned(),
            length: target.length,
            sha256,
            url,
        })
    }

    /// Refuses to answer from metadata that expired since `open` (a client
    /// kept alive across a freeze must not keep trusting it).
    fn check_fresh(&self) -> Result<(), TufError> {
        let now = jiff::Timestamp::now();
        let roles = [
            ("root", self.repo.root().signed.expires),
            ("targets", self.repo.targets().signed.expires),
            ("snapshot", self.repo.snapshot().signed.expires),
            ("timestamp", self.repo.timestamp().signed.expires),
        ];
        match roles.iter().find(|(_, expires)| *expires <= now) {
            Some((role, _)) => Err(TufError::Expired {
                role: (*role).to_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// The root to start from: the newer of the shipped root and the one tough
/// persisted in the datastore after the last successful check.
///
/// tough starts from exactly the root it is given. Starting from the
/// shipped root every time would let an attacker who hides
/// `N+1.root.json` roll a device back to the keys a rotation revoked, so a
/// newer persisted root (valid and self-signed) wins. A damaged persisted
/// root is ignored: the shipped one is still a safe start.
fn start_root(shipped: &Path, datastore: &Path, max: u64) -> Result<Vec<u8>, TufError> {
    let trusted_root_error = |detail: String| TufError::TrustedRoot {
        path: shipped.to_owned(),
        detail,
    };
    let shipped_bytes = read_bounded(shipped, max)?
        .ok_or_else(|| trusted_root_error(format!("over {max} bytes")))?;
    let shipped_version = self_signed_version(&shipped_bytes).map_err(trusted_root_error)?;
    let persisted = datastore.join("root.json");
    if !persisted.exists() {
        return Ok(shipped_bytes);
    }
    match read_bounded(&persisted, max) {
        Ok(Some(bytes)) if self_signed_version(&bytes).is_ok_and(|v| v > shipped_version) => {
            Ok(bytes)
        }
        _ => Ok(shipped_bytes),
    }
}

/// What the client refuses in verified targets metadata: any delegation,
/// and any unsafe target name.
pub(crate) fn check_targets(targets: &Targets) -> Result<(), TufError> {
    // A delegation would let keys root does not list sign targets; our
    // publisher never delegates, so one means a foreign or forged repo.
    if targets
        .delegations
        .as_ref()
        .is_some_and(|d| !d.roles.is_empty())
    {
        return Err(TufError::InvalidMetadata {
            role: "targets".to_owned(),
            detail: "delegates to other roles; Nusa repositories do not".to_owned(),
        });
    }
    // One unsafe name means the targets signer is broken or compromised:
    // nothing it signed is used.
    for (name, _) in targets.targets_iter() {
        check_signed_name(name.raw())?;
    }
    Ok(())
}

/// The version of a root that parses and carries its own threshold of
/// signatures.
pub(crate) fn self_signed_version(bytes: &[u8]) -> Result<u64, String> {
    let root: Signed<Root> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    root.signed.verify_role(&root).map_err(|e| e.to_string())?;
    Ok(root.signed.version.get())
}

/// Reads a file of at most `max` bytes; `None` when it is larger.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, TufError> {
    let io = |source| TufError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}
