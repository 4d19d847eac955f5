//! The ledger's file: one JSON snapshot, written atomically (temporary
//! file, fsync, rename, fsync of the folder), read bounded.
//!
//! `nusa_registry::write_json_file` does the same for the registry's state
//! folder, but depending on the registry for thirty lines would pull the
//! model repository (engines, ONNX Runtime bindings, the scheduler) into
//! every user of this crate, `nusactl` included, and tie cost accounting to
//! another concern's folder and limits.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::core::{RestoreError, Snapshot};

/// A saved ledger is a few MB at most at the default bounds (see
/// `Bounds`); a file past this is not one.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Reading or writing the ledger's file. Every message names the file;
/// those about a file that is there but unusable say how to start over.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading the cost ledger {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cost ledger {} is larger than {max} bytes, so not one this gateway wrote; move it away to start a new ledger", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("cost ledger {} is damaged ({source}); move it away to start a new ledger", path.display())]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cost ledger {} cannot be used: {source}; move it away to start a new ledger", path.display())]
    Restore { path: PathBuf, source: RestoreError },
    #[error("writing the cost ledger {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The saved snapshot, or none when there is no file yet.
pub(super) fn read(path: &Path) -> Result<Option<Snapshot>, StateError> {
    let bytes = match nusa_fsutil::read_bounded(path, MAX_STATE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(nusa_fsutil::ReadError::Io { path, source }) => {
            return Err(StateError::Read { path, source })
        }
        Err(nusa_fsutil::ReadError::TooLarge { path, max }) => {
            return Err(StateError::TooLarge { path, max })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Damaged {
            path: path.to_path_buf(),
            source,
        })
}

pub(super) fn write(path: &Path, snapshot: &Snapshot) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Compact: the buckets are arrays of numbers, and the file is
    // rewritten every few minutes on flash.
    let body = serde_json::to_vec(snapshot).map_err(|e| write_err(e.into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(
        || "ledger.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(write_err)
}
