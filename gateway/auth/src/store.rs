//! The key store: one redb file, every record also held in memory so the
//! per-request path (`authenticate`, `by_subject`) does no disk I/O.
//!
//! Writes (create, revoke, rotate, update, delete) are serialised by one
//! lock, committed to redb first and applied to the in-memory index after:
//! a failed commit leaves both as they were.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use redb::{Database, TableDefinition};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use subtle::Choice;

use crate::error::{AuthError, StoreError};
use crate::record::KeyRecord;
use crate::secret::{self, Hashed, Secret};
use crate::spec::KeySpec;

mod open;

#[cfg(test)]
mod tests;

/// Key name -> JSON of `Stored`.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// `schema`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA: u64 = 1;
/// The most a record may take, written or read: a record is a few hundred
/// bytes, and this bounds what a damaged or hostile file makes us parse.
pub const MAX_RECORD: usize = 64 << 10;

/// The record as stored: the public record plus the salt and hash (hex).
#[derive(Serialize, Deserialize)]
struct Stored {
    record: KeyRecord,
    salt: String,
    hash: String,
}

/// A record and what verifies its key.
struct Entry {
    record: Arc<KeyRecord>,
    hashed: Hashed,
}

#[derive(Default)]
struct Index {
    by_prefix: HashMap<String, Arc<Entry>>,
    by_name: HashMap<String, Arc<Entry>>,
    by_subject: HashMap<String, Arc<Entry>>,
}

impl Index {
    /// Adds `entry`, replacing the entry of the same name (its old prefix
    /// and subject stop resolving at once).
    fn put(&mut self, entry: Arc<Entry>) {
        self.remove(&entry.record.name);
        let r = &entry.record;
        self.by_prefix.insert(r.id.clone(), entry.clone());
        if let Some(subject) = &r.cert_subject {
            self.by_subject.insert(subject.clone(), entry.clone());
        }
        self.by_name.insert(r.name.clone(), entry);
    }

    fn remove(&mut self, name: &str) -> Option<Arc<Entry>> {
        let old = self.by_name.remove(name)?;
        self.by_prefix.remove(&old.record.id);
        if let Some(subject) = &old.record.cert_subject {
            self.by_subject.remove(subject);
        }
        Some(old)
    }
}

pub struct KeyStore {
    path: PathBuf,
    db: Database,
    rng: SystemRandom,
    index: RwLock<Index>,
    /// Verified against when a prefix is unknown (see `authenticate`).
    dummy: Hashed,
    writes: Mutex<()>,
}

impl KeyStore {
    /// Opens or creates the store at `path` (mode 0600) and loads every
    /// record. A damaged file, a file of another schema, or one record that
    /// does not parse is an error naming the file (and the key): the store
    /// never opens with keys silently missing, and never panics.
    pub fn open(path: &Path) -> Result<KeyStore, StoreError> {
        let (db, index) = open::open(path)?;
        let rng = SystemRandom::new();
        let dummy = Hashed::dummy(&rng)?;
        Ok(KeyStore {
            path: path.to_owned(),
            db,
            rng,
            index: RwLock::new(index),
            dummy,
            writes: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a key from `spec` and returns its record and its secret,
    /// which is shown once and kept nowhere.
    pub fn create(&self, spec: KeySpec, now_s: u64) -> Result<(KeyRecord, Secret), StoreError> {
        let spec = validated(spec)?;
        if let Some(at) = spec.expires_at.filter(|at| *at <= now_s) {
            return Err(StoreError::Invalid {
                name: spec.name,
                reason: format!("expires_at {at} is not in the future (now {now_s})"),
            });
        }
        let _writing = self.writes.lock();
        self.check_free(&spec.name, spec.cert_subject.as_deref(), None)?;
        let prefix = self.fresh_prefix()?;
        let (secret, hashed) = secret::generate(&self.rng, &prefix)?;
        let entry = Entry {
            record: Arc::new(KeyRecord::new(prefix, spec, now_s)),
            hashed,
        };
        let record = self.commit(entry)?;
        Ok((record, secret))
    }

    /// Creates a key whose text is given (a provisioned key: an operator
    /// made it with `nusactl keys generate` and flashed it with the box).
    /// Stored as any key (salted SHA-256, never the text). Refused when
    /// the text is malformed or its prefix is taken.
    pub fn import(&self, spec: KeySpec, key: &str, now_s: u64) -> Result<KeyRecord, StoreError> {
        let spec = validated(spec)?;
        let invalid = |reason: &str| StoreError::Invalid {
            name: spec.name.clone(),
            reason: reason.to_owned(),
        };
        let (prefix, hashed) = match secret::adopt(&self.rng, key) {
            None => {
                return Err(invalid(
                    "the key is malformed (expected nusa_<8 hex digits>_<43 characters>)",
                ))
            }
            Some(r) => r.map_err(|_| StoreError::Random)?,
        };
        let _writing = self.writes.lock();
        self.check_free(&spec.name, spec.cert_subject.as_deref(), None)?;
        if self.index.read().by_prefix.contains_key(&prefix) {
            return Err(invalid("another key has the same prefix"));
        }
        let entry = Entry {
            record: Arc::new(KeyRecord::new(prefix, spec, now_s)),
            hashed,
        };
        self.commit(entry)
    }

    /// Every key, revoked ones included, by name.
    pub fn list(&self) -> Vec<KeyRecord> {
        let mut all: Vec<KeyRecord> = self
            .index
            .read()
            .by_name
            .values()
            .map(|e| KeyRecord::clone(&e.record))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn get(&self, name: &str) -> Option<KeyRecord> {
        let index = self.index.read();
        index.by_name.get(name).map(|e| KeyRecord::clone(&e.record))
    }

    /// Marks the key revoked; it fails with `AuthError::Revoked` from now
    /// on. Revoking a revoked key changes nothing.
    pub fn revoke(&self, name: &str, now_s: u64) -> Result<KeyRecord, StoreError> {
        let _writing = self.writes.lock();
        let old = self.entry(name)?;
        if old.record.is_revoked() {
            return Ok(KeyRecord::clone(&old.record));
        }
        let mut record = KeyRecord::clone(&old.record);
        record.revoked_at = Some(now_s);
        self.commit(Entry {
            record: Arc::new(record),
            hashed: old.hashed.clone(),
        })
    }

    /// A new secret and prefix for the key; the old key is unknown from the
    /// moment this returns. Name, role, models and limits stay. The limiter
    /// keys its state by prefix: call `Limiter::forget` with the old id.
    pub fn rotate(&self, name: &str, now_s: u64) -> Result<(KeyRecord, Secret), StoreError> {
        let _writing = self.writes.lock();
        let old = self.entry(name)?;
        if old.record.is_revoked() {
            return Err(StoreError::Revoked(name.to_owned()));
        }
        let prefix = self.fresh_prefix()?;
        let (secret, hashed) = secret::generate(&self.rng, &prefix)?;
        let mut record = KeyRecord::clone(&old.record);
        record.id = prefix;
        record.rotated_at = Some(now_s);
        let record = self.commit(Entry {
            record: Arc::new(record),
            hashed,
        })?;
        Ok((record, secret))
    }

    /// Replaces the key's role, models, expiry, limits, residency, spill and
    /// certificate subject with `spec`'s; the secret stays. `spec.name` must
    /// be `name` (keys are not renamed).
    pub fn update(&self, name: &str, spec: KeySpec) -> Result<KeyRecord, StoreError> {
        let spec = validated(spec)?;
        if spec.name != name {
            return Err(StoreError::Invalid {
                name: name.to_owned(),
                reason: format!("cannot rename a key (to {:?})", spec.name),
            });
        }
        let _writing = self.writes.lock();
        let old = self.entry(name)?;
        if old.record.is_revoked() {
            return Err(StoreError::Revoked(name.to_owned()));
        }
        self.check_free(name, spec.cert_subject.as_deref(), Some(name))?;
        let o = &old.record;
        let mut record = KeyRecord::new(o.id.clone(), spec, o.created_at);
        record.rotated_at = o.rotated_at;
        self.commit(Entry {
            record: Arc::new(record),
            hashed: old.hashed.clone(),
        })
    }

    /// Removes the key (revoked or not) from the store; its name becomes
    /// free.
    pub fn delete(&self, name: &str) -> Result<KeyRecord, StoreError> {
        let _writing = self.writes.lock();
        let old = self.entry(name)?;
        let txn = self.db.begin_write()?;
        txn.open_table(KEYS)?.remove(name)?;
        txn.commit()?;
        self.index.write().remove(name);
        Ok(KeyRecord::clone(&old.record))
    }

    /// The per-request check of a presented key.
    ///
    /// The same work is done whether the prefix is known or not: the
    /// presented key is hashed with a salt and compared in constant time
    /// against a hash, the record's or a dummy's, and only the combined
    /// answer is branched on. So timing tells an unknown prefix from a wrong
    /// secret no better than the (public) prefix itself does. Revocation and
    /// expiry are reported only to a caller that holds the right secret.
    pub fn authenticate(&self, presented: &str, now_s: u64) -> Result<Arc<KeyRecord>, AuthError> {
        let prefix = secret::parse(presented).ok_or(AuthError::Malformed)?;
        let index = self.index.read();
        let (hashed, known, record) = match index.by_prefix.get(prefix) {
            Some(e) => (&e.hashed, Choice::from(1), Some(&e.record)),
            None => (&self.dummy, Choice::from(0), None),
        };
        let valid = hashed.verify(presented) & known;
        let record = match record {
            Some(r) if bool::from(valid) => r,
            _ => return Err(AuthError::Unknown),
        };
        usable(record, now_s)?;
        Ok(record.clone())
    }

    /// The key of an mTLS client certificate's subject (as the TLS layer
    /// verified and rendered it).
    pub fn by_subject(&self, subject: &str, now_s: u64) -> Result<Arc<KeyRecord>, AuthError> {
        let index = self.index.read();
        let entry = index.by_subject.get(subject).ok_or(AuthError::Unknown)?;
        usable(&entry.record, now_s)?;
        Ok(entry.record.clone())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, StoreError> {
        let index = self.index.read();
        let entry = index.by_name.get(name).cloned();
        entry.ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }

    /// `name` is free (or is `except`), and `subject` belongs to no other
    /// key.
    fn check_free(
        &self,
        name: &str,
        subject: Option<&str>,
        except: Option<&str>,
    ) -> Result<(), StoreError> {
        let index = self.index.read();
        if except != Some(name) && index.by_name.contains_key(name) {
            return Err(StoreError::NameTaken(name.to_owned()));
        }
        if let Some(subject) = subject {
            if let Some(holder) = index.by_subject.get(subject) {
                if except != Some(holder.record.name.as_str()) {
                    return Err(StoreError::SubjectTaken {
                        subject: subject.to_owned(),
                        holder: holder.record.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// A prefix no key has. Collisions are rare (32 bits), and retried.
    fn fresh_prefix(&self) -> Result<String, StoreError> {
        for _ in 0..16 {
            let prefix = secret::random_prefix(&self.rng)?;
            if !self.index.read().by_prefix.contains_key(&prefix) {
                return Ok(prefix);
            }
        }
        Err(StoreError::Random)
    }

    /// Writes `entry` under its name, then shows it in memory. Called with
    /// `writes` held.
    fn commit(&self, entry: Entry) -> Result<KeyRecord, StoreError> {
        let bytes = encode(&entry)?;
        let txn = self.db.begin_write()?;
        txn.open_table(KEYS)?
            .insert(entry.record.name.as_str(), bytes.as_slice())?;
        txn.commit()?;
        let record = KeyRecord::clone(&entry.record);
        self.index.write().put(Arc::new(entry));
        Ok(record)
    }
}

fn validated(spec: KeySpec) -> Result<KeySpec, StoreError> {
    let name = spec.name.clone();
    spec.validated()
        .map_err(|reason| StoreError::Invalid { name, reason })
}

fn usable(record: &KeyRecord, now_s: u64) -> Result<(), AuthError> {
    if record.is_revoked() {
        Err(AuthError::Revoked)
    } else if record.is_expired(now_s) {
        Err(AuthError::Expired)
    } else {
        Ok(())
    }
}

fn encode(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        name: entry.record.name.clone(),
        reason,
    };
    let stored = Stored {
        record: KeyRecord::clone(&entry.record),
        salt: hex::encode(entry.hashed.salt),
        hash: hex::encode(entry.hashed.hash),
    };
    let bytes = serde_json::to_vec(&stored).map_err(|e| invalid(e.to_string()))?;
    if bytes.len() > MAX_RECORD {
        return Err(invalid(format!(
            "its record takes {} bytes, more than the {MAX_RECORD} a record may",
            bytes.len()
        )));
    }
    Ok(bytes)
}
