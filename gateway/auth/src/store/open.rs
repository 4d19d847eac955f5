//! Opening the file and loading every record into memory.
//!
//! Unlike the cache, a damaged key store is never moved aside and replaced:
//! it is the only copy of the keys, and starting empty would lock every
//! client out (or, worse, hide a revocation). The error says what is wrong
//! and the operator decides.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableTable};

use super::{Entry, Index, Stored, KEYS, MAX_RECORD, META, SCHEMA};
use crate::error::StoreError;
use crate::secret::{self, Hashed, HASH_LEN, SALT_LEN};

/// redb's page cache: the records live in memory anyway.
const REDB_CACHE_BYTES: usize = 1 << 20;

pub(super) fn open(path: &Path) -> Result<(Database, Index), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| StoreError::Create {
            path: path.to_owned(),
            source,
        })?;
    }
    restrict(path)?;
    // redb asserts on some shapes of damage; a panic is one more way of
    // saying the file cannot be trusted.
    catch_unwind(AssertUnwindSafe(|| open_checked(path))).unwrap_or_else(|_| {
        Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: "redb panicked while reading it".into(),
        })
    })
}

/// Makes the file nusad's alone (0600) before redb opens it: it holds key
/// hashes. A new file is created so (redb would take the umask's 0644); an
/// older, wider one is narrowed.
fn restrict(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let create = |source| StoreError::Create {
        path: path.to_owned(),
        source,
    };
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(create)
}

fn open_checked(path: &Path) -> Result<(Database, Index), StoreError> {
    let damaged = |reason: String| StoreError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let mut db = match Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(path)
    {
        Ok(db) => db,
        Err(DatabaseError::DatabaseAlreadyOpen) => {
            return Err(StoreError::InUse {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(damaged(e.to_string())),
    };
    // redb verifies page checksums only when repairing after a crash; the
    // file is small, so reading it once at start is cheap.
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => return Err(damaged("it fails redb's integrity check".into())),
        Err(e) => return Err(damaged(e.to_string())),
    }
    prepare(&db, path).map_err(|e| match e {
        StoreError::Write(e) => damaged(e.to_string()),
        other => other,
    })?;
    let index = load(&db, path)?;
    Ok((db, index))
}

/// Creates the tables of a new file; refuses another schema.
fn prepare(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta.get("schema")?.map(|v| v.value());
        match found {
            None => {
                meta.insert("schema", SCHEMA)?;
            }
            Some(SCHEMA) => {}
            Some(found) => {
                return Err(StoreError::Schema {
                    path: path.to_owned(),
                    found,
                    expected: SCHEMA,
                })
            }
        }
        txn.open_table(KEYS)?;
    }
    txn.commit()?;
    Ok(())
}

fn load(db: &Database, path: &Path) -> Result<Index, StoreError> {
    let damaged = |e: &dyn std::fmt::Display| StoreError::Damaged {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let txn = db.begin_read().map_err(|e| damaged(&e))?;
    let keys = txn.open_table(KEYS).map_err(|e| damaged(&e))?;
    let mut index = Index::default();
    for row in keys.iter().map_err(|e| damaged(&e))? {
        let (name, value) = row.map_err(|e| damaged(&e))?;
        let name = name.value();
        let bad = |reason: String| StoreError::Record {
            path: path.to_owned(),
            name: name.to_owned(),
            reason,
        };
        let entry = decode(name, value.value()).map_err(bad)?;
        let r = &entry.record;
        if let Some(other) = index.by_prefix.get(&r.id) {
            return Err(bad(format!(
                "its id {} is also key {:?}'s",
                r.id, other.record.name
            )));
        }
        if let Some(other) = r
            .cert_subject
            .as_ref()
            .and_then(|s| index.by_subject.get(s))
        {
            return Err(bad(format!(
                "its certificate subject is also key {:?}'s",
                other.record.name
            )));
        }
        index.put(Arc::new(entry));
    }
    Ok(index)
}

/// One record, bounded before it is parsed.
fn decode(name: &str, bytes: &[u8]) -> Result<Entry, String> {
    if bytes.len() > MAX_RECORD {
        return Err(format!(
            "it takes {} bytes, more than the {MAX_RECORD} a record may",
            bytes.len()
        ));
    }
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let record = stored.record;
    if record.name != name {
        return Err(format!(
            "it is filed under {name:?} but names {:?}",
            record.name
        ));
    }
    if !secret::is_prefix(&record.id) {
        return Err(format!(
            "its id {:?} is not 8 lowercase hex digits",
            record.id
        ));
    }
    let salt = fixed::<SALT_LEN>("salt", &stored.salt)?;
    let hash = fixed::<HASH_LEN>("hash", &stored.hash)?;
    Ok(Entry {
        record: Arc::new(record),
        hashed: Hashed { salt, hash },
    })
}

/// Decodes hex of exactly N bytes. The message quotes nothing of the value.
fn fixed<const N: usize>(what: &str, hex_text: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| format!("its {what} is not {N} bytes of hex"))?;
    Ok(out)
}
