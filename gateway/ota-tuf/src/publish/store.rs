//! Reading the repository as it stands, and writing new metadata into it in
//! an order no client can trip over.
//!
//! tough writes metadata with `File::create` + `write_all`, so a client
//! reading at the same moment could see half a `timestamp.json`. We let
//! tough write into a staging folder inside the repository and then rename
//! each file into `metadata/` (atomic on one filesystem): root first, then
//! targets, then snapshot, and `timestamp.json` last, because every file is
//! reachable only through the one above it and the timestamp is the entry
//! point. Targets are copied before any of this.

use std::path::{Path, PathBuf};

use tough::{ExpirationEnforcement, FilesystemTransport, Repository, RepositoryLoader};

use super::PublishError;
use crate::error::Stage;
use crate::{TufError, METADATA_DIR, TARGETS_DIR};

/// Bound on a root file read from the repository, as on the device.
const MAX_ROOT_FILE: u64 = 1024 * 1024;

/// The two folders of a repository.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub(crate) repo: PathBuf,
    pub(crate) metadata: PathBuf,
    pub(crate) targets: PathBuf,
}

impl Dirs {
    pub(crate) fn new(repo: &Path) -> Self {
        Self {
            repo: repo.to_owned(),
            metadata: repo.join(METADATA_DIR),
            targets: repo.join(TARGETS_DIR),
        }
    }

    /// The file of one root version.
    pub(crate) fn root_file(&self, version: u64) -> PathBuf {
        self.metadata.join(format!("{version}.root.json"))
    }
}

/// Loads the repository through tough's client, so every signature and
/// version in it is verified before we build on it, starting from
/// `1.root.json` and following any root rotations.
pub(crate) async fn load(dirs: &Dirs) -> Result<Repository, PublishError> {
    let root = read_bounded(&dirs.root_file(1), MAX_ROOT_FILE)?;
    let (metadata_url, targets_url) = crate::local_urls(&dirs.repo).map_err(PublishError::Load)?;
    RepositoryLoader::new(&root, metadata_url, targets_url)
        .transport(FilesystemTransport)
        // Publisher side only: refreshing metadata that has already expired
        // is exactly what `set_expiry` is for. The device's `Client` always
        // enforces expiry.
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(|e| PublishError::Load(TufError::from_tough(e, Stage::Metadata)))
}

/// A staging folder inside the repository (same filesystem, so renames out
/// of it are atomic); removed when dropped.
pub(crate) fn staging(dirs: &Dirs) -> Result<tempfile::TempDir, PublishError> {
    tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&dirs.repo)
        .map_err(|source| PublishError::Io {
            path: dirs.repo.clone(),
            source,
        })
}

/// Moves the metadata files tough wrote into `staging` into `metadata/`,
/// timestamp last. A root file that already exists must be identical (tough
/// rewrites the current root with every repository it writes); a new root
/// also becomes `root.json`, the copy shipped in device images.
pub(crate) fn commit(staging: &Path, dirs: &Dirs) -> Result<(), PublishError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PublishError::Io { path, source }
    };
    let mut files: Vec<(u8, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(staging).map_err(io(staging))? {
        let path = entry.map_err(io(staging))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let rank = if name.ends_with(".root.json") {
            0
        } else if name.ends_with(".targets.json") {
            1
        } else if name.ends_with(".snapshot.json") {
            2
        } else if name == "timestamp.json" {
            3
        } else {
            continue;
        };
        files.push((rank, path));
    }
    files.sort();
    for (rank, from) in files {
        let Some(name) = from.file_name() else {
            continue;
        };
        let to = dirs.metadata.join(name);
        if rank == 0 && to.exists() {
            let old = std::fs::read(&to).map_err(io(&to))?;
            let new = std::fs::read(&from).map_err(io(&from))?;
            if old != new {
                return Err(PublishError::Conflict {
                    detail: format!("{} exists with other content", to.display()),
                });
            }
            continue;
        }
        sync_file(&from)?;
        if rank == 0 {
            // root.json is a convenience copy: replace it through a temp
            // file in staging so it is never seen half-written either.
            let copy = staging.join("root.json.next");
            std::fs::copy(&from, &copy).map_err(io(&copy))?;
            sync_file(&copy)?;
            std::fs::rename(&from, &to).map_err(io(&to))?;
            let latest = dirs.metadata.join("root.json");
            std::fs::rename(&copy, &latest).map_err(io(&latest))?;
        } else {
            std::fs::rename(&from, &to).map_err(io(&to))?;
        }
    }
    sync_file(&dirs.metadata)
}

/// Flushes a file (or a folder's entries) to disk, so a crash after the
/// rename cannot leave a named but empty file.
fn sync_file(path: &Path) -> Result<(), PublishError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| PublishError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Reads at most `max` bytes of a file; a larger file is an error, not a
/// silently truncated read.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, PublishError> {
    nusa_fsutil::read_bounded(path, max).map_err(|e| match e {
        nusa_fsutil::ReadError::Io { path, source } => PublishError::Io { path, source },
        nusa_fsutil::ReadError::TooLarge { .. } => PublishError::Conflict {
            detail: format!("{} is over {max} bytes", path.display()),
        },
    })
}
