//! Opening the file, and replacing it when it cannot be trusted.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, DatabaseError, ReadableTable};

use super::{DiskError, BY_SEQ, INDEX, META, RECORDS, SCHEMA};

/// redb's page cache; the memory tier is the real cache, so this only needs
/// to hold the B-tree's upper pages.
const REDB_CACHE_BYTES: usize = 16 << 20;

/// What the writer keeps in memory between transactions.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counters {
    pub total: u64,
    pub next_seq: u64,
}

enum OpenError {
    /// Another process (or another `Cache` in this one) holds the file's lock.
    InUse,
    Damaged(String),
}

/// Opens the file at `path`; when it is damaged, unreadable or not ours,
/// moves it aside as `<name>.corrupt-<unix seconds>` and starts a fresh one.
/// `None` (memory-only) when neither works or the file is in use.
pub(super) fn open_or_replace(path: &Path) -> Option<(Database, Counters)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(error) = fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the cache directory; running memory-only");
            return None;
        }
    }
    match try_open(path) {
        Ok(opened) => Some(opened),
        Err(OpenError::InUse) => {
            tracing::warn!(path = %path.display(), "cache file is in use by another process; running memory-only");
            None
        }
        Err(OpenError::Damaged(reason)) => {
            let aside = aside_path(path);
            tracing::warn!(
                path = %path.display(),
                aside = %aside.display(),
                %reason,
                "cache file is damaged or unreadable; moving it aside and starting empty"
            );
            if let Err(error) = fs::rename(path, &aside) {
                tracing::warn!(path = %path.display(), %error, "cannot move the cache file aside; running memory-only");
                return None;
            }
            match try_open(path) {
                Ok(opened) => Some(opened),
                Err(OpenError::InUse) => None,
                Err(OpenError::Damaged(reason)) => {
                    tracing::warn!(path = %path.display(), %reason, "cannot create a fresh cache file; running memory-only");
                    None
                }
            }
        }
    }
}

pub(super) fn aside_path(path: &Path) -> PathBuf {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{unix}"));
    path.with_file_name(name)
}

fn try_open(path: &Path) -> Result<(Database, Counters), OpenError> {
    // redb asserts on some shapes of damage; a panic here is one more way
    // of saying the file cannot be trusted.
    catch_unwind(AssertUnwindSafe(|| open_checked(path)))
        .unwrap_or_else(|_| Err(OpenError::Damaged("redb panicked while opening it".into())))
}

fn open_checked(path: &Path) -> Result<(Database, Counters), OpenError> {
    restrict(path)?;
    let mut db = match Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(path)
    {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => return Err(OpenError::InUse),
        Err(e) => return Err(OpenError::Damaged(e.to_string())),
    };
    // redb verifies page checksums only when repairing after a crash; a
    // byte flipped at rest would otherwise surface later as a wrong B-tree
    // walk. Reading the file once at start is the price of knowing.
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => return Err(OpenError::Damaged("failed redb's integrity check".into())),
        Err(e) => return Err(OpenError::Damaged(e.to_string())),
    }
    let counters = prepare(&db).map_err(|e| OpenError::Damaged(e.to_string()))?;
    Ok((db, counters))
}

/// Makes the file nusad's alone (0600) before redb opens it: it holds
/// answers to clients' requests. A new file is created so (redb would take
/// the umask's 0644); an older, wider one is narrowed.
fn restrict(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| OpenError::Damaged(format!("creating it: {e}")))?;
    if let Err(error) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), %error, "cannot make the cache file private (0600)");
    }
    Ok(())
}

/// Creates the tables on a new file and reads the counters of an old one.
fn prepare(db: &Database) -> Result<Counters, DiskError> {
    let txn = db.begin_write()?;
    let counters = {
        let mut meta = txn.open_table(META)?;
        let schema = meta.get("schema")?.map(|v| v.value());
        match schema {
            Some(SCHEMA) => {}
            None => {
                meta.insert("schema", SCHEMA)?;
            }
            Some(other) => return Err(DiskError::Schema(other)),
        }
        let total = meta.get("total_bytes")?.map_or(0, |v| v.value());
        txn.open_table(RECORDS)?;
        txn.open_table(INDEX)?;
        let by_seq = txn.open_table(BY_SEQ)?;
        // Put ids must never repeat, even once every entry is gone, or a
        // queued delete could hit a newer record; `meta` keeps the counter,
        // `by_seq` backs it up.
        let stored = meta.get("next_seq")?.map_or(0, |v| v.value());
        let next_seq = by_seq.last()?.map_or(0, |(k, _)| k.value() + 1).max(stored);
        Counters { total, next_seq }
    };
    txn.commit()?;
    Ok(counters)
}
