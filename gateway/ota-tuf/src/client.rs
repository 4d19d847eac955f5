//! The device side: verify the repository, then answer "what is the latest
//! release of my variant" and hand out verified targets or their hashes.
//!
//! Trust starts from the root shipped in the image and moves only forward.
//! tough starts from exactly the root it is given and never reads a root
//! back from its datastore (it only writes its latest one there), so this
//! client gives it the shipped root, walked forward through the root
//! versions it verified in earlier runs (`roots/N.root.json` in the
//! datastore), each of which must be signed by a threshold of the version
//! before it and of its own keys, and be exactly one version newer. That
//! walk is done again on every start: a root planted in the datastore that
//! does not chain from the shipped root is ignored. tough then walks the
//! repository's `N+1.root.json` files, and keeps the last timestamp,
//! snapshot and targets it accepted in the datastore on the data partition,
//! so metadata older than those is refused even after a reboot or a
//! reinstall of the same image. Expiry is always enforced.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tough::schema::{Root, Signed, Target, Targets};
use tough::{
    Bytes, ExpirationEnforcement, IntoVec, Repository, RepositoryLoader, TargetName, Transport,
    TransportError, TransportStream,
};
use url::Url;

use crate::error::Stage;
use crate::names::{check_component, check_signed_name, split_release_name};
use crate::TufError;

/// The folder of the datastore holding every root version walked past the
/// shipped one, as `<version>.root.json`.
pub const ROOTS_DIR: &str = "roots";
/// tough's record, in the datastore, of the latest system time it read.
pub const LATEST_KNOWN_TIME: &str = "latest_known_time.json";
/// systemd-timesyncd creates this file (on tmpfs, so once per boot) when it
/// synchronized the clock.
pub const SYSTEMD_TIMESYNC_MARKER: &str = "/run/systemd/timesync/synchronized";
/// Most persisted root versions walked at start.
const MAX_PERSISTED_ROOTS: u64 = 4096;
/// Largest `latest_known_time.json` read (an RFC 3339 string).
const MAX_TIME_FILE: u64 = 4096;

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
    /// Chosen for Nusa's repositories (ed25519 keys, no delegations), with
    /// wide headroom; see README.md ("Limits") for the reasoning.
    fn default() -> Self {
        Self {
            // A root lists every role's keys and carries the root
            // signatures: a few KiB with ed25519 (under 20 KiB even with
            // dozens of RSA keys). Unsigned length: fetched against this.
            max_root_size: 128 * 1024,
            // Used only when snapshot.json does not sign the targets
            // length (ours always does); about 300 bytes per target.
            max_targets_size: 16 * 1024 * 1024,
            // Used only when timestamp.json does not sign the snapshot
            // length (ours always does); one entry per targets role.
            max_snapshot_size: 1024 * 1024,
            // One entry (snapshot.json) and its signatures: about 1 KiB.
            // Unsigned length: always fetched against this.
            max_timestamp_size: 16 * 1024,
            max_root_updates: 64,
            max_read_target: 16 * 1024 * 1024,
        }
    }
}

/// How the client tells that the system clock was synchronized (NTP) in
/// this boot, which is what lets it recover from a clock that had jumped
/// ahead (see [`Client::open_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSync {
    /// The clock counts as synchronized while this file exists.
    Marker(PathBuf),
    /// Never assumed: recovering from a clock that jumped ahead is always
    /// the manual action.
    Never,
}

impl Default for TimeSync {
    /// systemd-timesyncd's marker, [`SYSTEMD_TIMESYNC_MARKER`].
    fn default() -> Self {
        TimeSync::Marker(PathBuf::from(SYSTEMD_TIMESYNC_MARKER))
    }
}

impl TimeSync {
    fn synchronized(&self) -> bool {
        match self {
            TimeSync::Marker(path) => path.exists(),
            TimeSync::Never => false,
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
    /// Loads and verifies the repository's metadata through `transport`,
    /// with the default [`TimeSync`] (systemd-timesyncd's marker).
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
        Self::open_with(
            trusted_root,
            datastore,
            metadata_url,
            targets_url,
            transport,
            limits,
            &TimeSync::default(),
        )
        .await
    }

    /// [`Client::open`] with the way to tell a synchronized clock.
    ///
    /// tough records the latest system time it read in the datastore
    /// ([`LATEST_KNOWN_TIME`]) and refuses to run while the clock is
    /// earlier. A clock that once jumped ahead (a bad RTC before NTP) would
    /// then wedge every later check. So when the clock is behind that
    /// record: if `time_sync` says the clock is synchronized, the record is
    /// dropped and the check goes on with the synchronized time (expiry is
    /// judged against it as always); otherwise the check fails with
    /// [`TufError::ClockWentBackward`], naming the file to remove once the
    /// clock is known to be right.
    pub async fn open_with(
        trusted_root: &Path,
        datastore: &Path,
        metadata_url: Url,
        targets_url: Url,
        transport: impl Transport + 'static,
        limits: Limits,
        time_sync: &TimeSync,
    ) -> Result<Self, TufError> {
        make_private_dir(datastore)?;
        check_clock(datastore, time_sync)?;
        let (root_bytes, start) = start_root(trusted_root, datastore, limits.max_root_size)?;
        let recorded = Arc::new(Mutex::new(BTreeMap::new()));
        let transport = RootRecorder {
            inner: Box::new(transport),
            max: limits.max_root_size,
            roots: Arc::clone(&recorded),
        };
        let loaded = RepositoryLoader::new(&root_bytes, metadata_url, targets_url.clone())
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
            .await;
        // The roots tough walked are kept even when a later step failed
        // (as TUF persists each new root at once): they chain from `start`,
        // which is all that trusting them takes.
        let recorded = std::mem::take(&mut *recorded.lock());
        let persisted = persist_chain(datastore, start, recorded);
        let repo = loaded.map_err(|e| TufError::from_tough(e, Stage::Metadata))?;
        persisted?;

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

/// The root to start from: the shipped root, walked forward through the
/// root versions persisted in the datastore as far as each chains from the
/// one before. Returns its bytes and the parsed root.
///
/// tough starts from exactly the root it is given. Starting from the
/// shipped root alone would let an attacker who hides `N+1.root.json` roll
/// a device back to the keys a rotation revoked; starting from whatever
/// root the datastore holds would let anyone who can write the data
/// partition plant a self-signed root of their own. So a persisted root is
/// used only if version N+1 is signed by a threshold of version N's root
/// keys and of its own, from the shipped version up, checked on every
/// start. The candidates for version N+1 are `roots/N+1.root.json` and
/// tough's own `root.json` (the only copy an older client kept); anything
/// that does not chain is ignored, and the walk stops there.
fn start_root(
    shipped: &Path,
    datastore: &Path,
    max: u64,
) -> Result<(Vec<u8>, Signed<Root>), TufError> {
    let trusted_root_error = |detail: String| TufError::TrustedRoot {
        path: shipped.to_owned(),
        detail,
    };
    let mut bytes = read_bounded(shipped, max)?
        .ok_or_else(|| trusted_root_error(format!("over {max} bytes")))?;
    let mut root = self_signed(&bytes).map_err(trusted_root_error)?;
    let roots = datastore.join(ROOTS_DIR);
    let latest = datastore.join("root.json");
    for _ in 0..MAX_PERSISTED_ROOTS {
        let Some(next) = root.signed.version.get().checked_add(1) else {
            break;
        };
        let chained = [roots.join(format!("{next}.root.json")), latest.clone()]
            .into_iter()
            .find_map(|path| {
                let candidate = read_bounded(&path, max).ok()??;
                let new = chain_next(&root, &candidate).ok()?;
                Some((candidate, new))
            });
        let Some((next_bytes, next_root)) = chained else {
            break;
        };
        bytes = next_bytes;
        root = next_root;
    }
    Ok((bytes, root))
}

/// Checks `bytes` as the root version after `trusted` (TUF 5.3.4-5.3.5, as
/// tough does for a downloaded one): signed by a threshold of `trusted`'s
/// root keys and of its own, and exactly one version newer.
fn chain_next(trusted: &Signed<Root>, bytes: &[u8]) -> Result<Signed<Root>, String> {
    let new: Signed<Root> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    trusted
        .signed
        .verify_role(&new)
        .map_err(|e| format!("not signed by the previous root: {e}"))?;
    new.signed.verify_role(&new).map_err(|e| e.to_string())?;
    if trusted.signed.version.get().checked_add(1) != Some(new.signed.version.get()) {
        return Err(format!(
            "version {} does not follow version {}",
            new.signed.version, trusted.signed.version
        ));
    }
    Ok(new)
}

/// Persists the roots tough walked past `start` as `roots/N.root.json`,
/// as far as they chain from `start` (checked again here, on the bytes
/// tough was given).
fn persist_chain(
    datastore: &Path,
    start: Signed<Root>,
    mut recorded: BTreeMap<u64, Vec<u8>>,
) -> Result<(), TufError> {
    let dir = datastore.join(ROOTS_DIR);
    let mut root = start;
    while let Some(bytes) = root
        .signed
        .version
        .get()
        .checked_add(1)
        .and_then(|next| recorded.remove(&next))
    {
        let Ok(next) = chain_next(&root, &bytes) else {
            break;
        };
        make_private_dir(&dir)?;
        write_atomic(
            &dir.join(format!("{}.root.json", next.signed.version)),
            &bytes,
        )?;
        root = next;
    }
    Ok(())
}

/// Refuses a system clock behind the time tough recorded, unless the clock
/// is synchronized now, in which case the record (left by a clock that had
/// jumped ahead) is dropped. See [`Client::open_with`].
fn check_clock(datastore: &Path, time_sync: &TimeSync) -> Result<(), TufError> {
    let path = datastore.join(LATEST_KNOWN_TIME);
    if !path.exists() {
        return Ok(());
    }
    // tough overwrites a record it cannot read; so does this.
    let Some(Ok(recorded)) = read_bounded(&path, MAX_TIME_FILE)?
        .map(|bytes| serde_json::from_slice::<jiff::Timestamp>(&bytes))
    else {
        return Ok(());
    };
    let now = jiff::Timestamp::now();
    if now >= recorded {
        return Ok(());
    }
    if time_sync.synchronized() {
        std::fs::remove_file(&path).map_err(|source| TufError::Io {
            path: path.clone(),
            source,
        })?;
        tracing::warn!(
            recorded = %recorded,
            now = %now,
            file = %path.display(),
            "the system clock is behind the time recorded at an earlier update check, and is \
             synchronized now: the record (from a clock that had jumped ahead) is dropped"
        );
        return Ok(());
    }
    let how = match time_sync {
        TimeSync::Marker(marker) => format!(
            "the next check recovers by itself once the clock is synchronized ({} exists); \
             if the clock is known to be right without that, remove {}",
            marker.display(),
            path.display()
        ),
        TimeSync::Never => format!(
            "once the clock is known to be right, remove {}",
            path.display()
        ),
    };
    Err(TufError::ClockWentBackward {
        detail: format!(
            "the system time {now} is before {recorded}, the latest time an earlier check \
             recorded ({}); expiry cannot be judged until the clock is right: {how}",
            path.display()
        ),
    })
}

fn make_private_dir(dir: &Path) -> Result<(), TufError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TufError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `path` whole or not at all: a temporary file in the same folder,
/// synced, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    let io = |source| TufError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The transport tough is given: `inner`, recording the bytes of every
/// versioned root (`N.root.json`) it serves, so the roots tough verified
/// can be persisted. A root is collected (at most `max` bytes and one
/// chunk more, so tough's own `max_root_size` check still refuses a longer
/// one) and handed on whole; other files pass straight through.
#[derive(Debug, Clone)]
struct RootRecorder {
    inner: Box<dyn Transport>,
    max: u64,
    roots: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
}

#[tough::async_trait]
impl Transport for RootRecorder {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let Some(version) = root_file_version(&url) else {
            return self.inner.fetch(url).await;
        };
        let mut stream = self.inner.fetch(url).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > self.max {
                        return Ok(one(Ok(Bytes::from(bytes))));
                    }
                }
                Err(e) => return Ok(one(Err(e))),
            }
        }
        self.roots.lock().insert(version, bytes.clone());
        Ok(one(Ok(Bytes::from(bytes))))
    }
}

fn one(item: Result<Bytes, TransportError>) -> TransportStream {
    Box::pin(futures_util::stream::iter([item]))
}

/// `N` of a URL whose last segment is `N.root.json`.
fn root_file_version(url: &Url) -> Option<u64> {
    let name = url.path_segments()?.next_back()?;
    let digits = name.strip_suffix(".root.json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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
    Ok(self_signed(bytes)?.signed.version.get())
}

fn self_signed(bytes: &[u8]) -> Result<Signed<Root>, String> {
    let root: Signed<Root> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    root.signed.verify_role(&root).map_err(|e| e.to_string())?;
    Ok(root)
}

/// Reads a file of at most `max` bytes; `None` when it is larger.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, TufError> {
    match nusa_fsutil::read_bounded(path, max) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(nusa_fsutil::ReadError::TooLarge { .. }) => Ok(None),
        Err(nusa_fsutil::ReadError::Io { path, source }) => Err(TufError::Io { path, source }),
    }
}
