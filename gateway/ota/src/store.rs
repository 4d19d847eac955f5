//! The updater's files on the data partition. Every write is atomic (temp
//! file, fsync, rename, fsync of the folder), so a power cut leaves the old
//! or the new file, never a torn one; every read is bounded.
//!
//! `state.json` (the core's `State`), `history.json`, `plan.json` (which
//! chunks the active slot supplies), `download.img` (fetched chunks at their
//! image offsets, sparse), `wake_at` (when the timer should run us next),
//! and `tuf/` (the TUF client's datastore). Progress for the gateway's
//! metrics port goes to `metrics_file` (in /run).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nusa_ota_core::{History, State, UnixSecs};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// JSON files here are small; anything larger is not ours.
const MAX_JSON_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid updater state ({message}); move it aside to start over")]
    Corrupt { path: PathBuf, message: String },
}

/// The chunks to copy from the active slot, kept from planning to writing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCopies {
    pub chunk_size: u32,
    /// (chunk, offset in the active slot).
    pub chunks: Vec<(u32, u64)>,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn download_path(&self) -> PathBuf {
        self.dir.join("download.img")
    }

    pub fn tuf_dir(&self) -> PathBuf {
        self.dir.join("tuf")
    }

    pub fn state(&self) -> Result<Option<State>, StoreError> {
        self.read_json("state.json")
    }

    pub fn save_state(&self, state: &State) -> Result<(), StoreError> {
        self.write_json("state.json", state)
    }

    pub fn history(&self) -> Result<History, StoreError> {
        Ok(self.read_json("history.json")?.unwrap_or_default())
    }

    pub fn save_history(&self, history: &History) -> Result<(), StoreError> {
        self.write_json("history.json", history)
    }

    pub fn copies(&self) -> Result<Option<LocalCopies>, StoreError> {
        self.read_json("plan.json")
    }

    pub fn save_copies(&self, copies: &LocalCopies) -> Result<(), StoreError> {
        self.write_json("plan.json", copies)
    }

    pub fn wake_at(&self) -> Result<Option<UnixSecs>, StoreError> {
        self.read_json("wake_at")
    }

    pub fn save_wake_at(&self, at: Option<UnixSecs>) -> Result<(), StoreError> {
        match at {
            Some(at) => self.write_json("wake_at", &at),
            None => self.remove("wake_at"),
        }
    }

    /// The download file and the plan go together.
    pub fn discard_download(&self) -> Result<(), StoreError> {
        self.remove("download.img")?;
        self.remove("plan.json")
    }

    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.dir.join(name), bytes)
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        let path = self.dir.join(name);
        let bytes = match nusa_fsutil::read_bounded(&path, MAX_JSON_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(nusa_fsutil::ReadError::Io { path, source }) => {
                return Err(StoreError::Io { path, source })
            }
            Err(e @ nusa_fsutil::ReadError::TooLarge { .. }) => {
                return Err(StoreError::Corrupt {
                    path,
                    message: e.detail().to_string(),
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                message: e.to_string(),
            })
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_with(path, bytes, None)
}

/// [`write_atomic`], the file given `mode` whatever the umask (the unit's
/// `UMask=0077` would make it the updater's alone).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    write_atomic_with(path, bytes, Some(mode))
}

fn write_atomic_with(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io)?;
    if let Some(mode) = mode {
        // fchmod is not masked by the umask, as the create's mode is.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
