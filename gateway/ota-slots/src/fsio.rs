//! Crash-safe file operations shared by the file and systemd-boot backends.
//!
//! A power cut at any point leaves either the old or the new file, never a
//! torn one: data goes to a temp file that is fsynced, renamed over the
//! target, and the directory is fsynced so the rename itself is durable.
//! Temp files are named `.<name>.tmp`: they never end in `.conf` or `.json`,
//! so neither systemd-boot nor our readers mistake a leftover for state.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::SlotError;

/// Files we read are small; a larger one is damaged or not ours.
pub(crate) const MAX_READ: u64 = 64 * 1024;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SlotError {
    let path = path.to_path_buf();
    move |source| SlotError::Io { op, path, source }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SlotError> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(f);
    rename_durable(&tmp, path)
}

/// Renames within one directory and makes the rename durable.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<(), SlotError> {
    fs::rename(from, to).map_err(io_err("renaming to", to))?;
    sync_dir(parent(to))
}

/// Removes a file durably; a file that is already gone is fine.
pub(crate) fn remove_durable(path: &Path) -> Result<(), SlotError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// fsync of the directory: without it a rename can be lost on power cut
/// even though the renamed file's data was synced.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SlotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// Reads a whole small file, refusing one over [`MAX_READ`] bytes.
/// `Ok(None)` when it does not exist.
pub(crate) fn read_bounded(path: &Path) -> Result<Option<String>, SlotError> {
    match nusa_fsutil::read_to_string_bounded(path, MAX_READ) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(nusa_fsutil::ReadError::Io { source, .. }) => Err(io_err("reading", path)(source)),
        Err(e @ nusa_fsutil::ReadError::TooLarge { .. }) => Err(SlotError::Corrupt {
            path: path.to_path_buf(),
            reason: e.detail().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(read_bounded(&path).unwrap().as_deref(), Some("two"));
        assert!(!temp_path(&path).exists());
        assert_eq!(temp_path(&path).file_name().unwrap(), ".state.json.tmp");
    }

    #[test]
    fn read_bounded_refuses_large_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'x'; MAX_READ as usize + 1]).unwrap();
        assert!(matches!(
            read_bounded(&path),
            Err(SlotError::Corrupt { .. })
        ));
        assert!(read_bounded(&dir.path().join("missing")).unwrap().is_none());
    }

    #[test]
    fn remove_durable_tolerates_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry.conf");
        fs::write(&path, "x").unwrap();
        remove_durable(&path).unwrap();
        assert!(!path.exists());
        remove_durable(&path).unwrap();
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("state.json");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("no-such-dir"), "{err}");
    }
}
