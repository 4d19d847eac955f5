//! The persistent tier: one redb file, bounded in bytes, least recently
//! stored-or-hit entries evicted first.
//!
//! One thread owns every write (and the open, which checks the whole file):
//! puts are queued on a bounded channel and return at once, lookups run on
//! tokio's blocking pool against the shared `Database`, so neither ever runs
//! file I/O on an async worker thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, Record};
use crate::metrics::CacheMetrics;
use crate::CacheKey;

mod open;
mod writer;

#[cfg(test)]
mod tests;

/// Key -> record (see `codec`).
const RECORDS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("records");
/// Key -> (recency sequence, record length, put id): what eviction and the
/// byte total need without reading the record. The put id is the sequence
/// the record was stored with; unlike the recency sequence it does not move
/// on a hit, so it names one stored record.
const INDEX: TableDefinition<[u8; 32], (u64, u64, u64)> = TableDefinition::new("index");
/// Recency sequence -> key, oldest first: the eviction order.
const BY_SEQ: TableDefinition<u64, [u8; 32]> = TableDefinition::new("by_seq");
/// `schema`, `total_bytes` and `next_seq`, kept in the same transactions as
/// the tables.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA: u64 = 1;

/// redb stores values up to 3 GiB.
const MAX_RECORD: usize = 3 << 30;

/// Queue limits for write-behind. Past either one a put is dropped (and
/// counted): the disk tier is an optimisation, and a slow disk must not grow
/// the gateway's memory without bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueLimits {
    pub ops: usize,
    pub bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            ops: 1024,
            bytes: 64 << 20,
        }
    }
}

/// What the writer thread is doing; lookups and puts skip the tier unless
/// it is `READY`.
const OPENING: u8 = 0;
const READY: u8 = 1;
const DISABLED: u8 = 2;

pub(crate) struct DiskTier {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
}

/// What the handle and the writer thread both see.
struct Shared {
    path: PathBuf,
    budget: u64,
    state: AtomicU8,
    db: OnceLock<Arc<Database>>,
    queued_bytes: AtomicU64,
    limits: QueueLimits,
    metrics: CacheMetrics,
}

enum Op {
    Put {
        key: CacheKey,
        record: Bytes,
    },
    /// Marks a hit: the entry becomes the most recent, if it is still the
    /// record that was read (its put id).
    Touch {
        key: CacheKey,
        put: u64,
    },
    /// Removes a damaged or expired entry, if it is still the record that
    /// was read (`None` for a record without an index row).
    Delete {
        key: CacheKey,
        put: Option<u64>,
    },
    Flush(oneshot::Sender<()>),
    /// Removes every entry (an operator's purge).
    Purge,
}

pub(crate) enum Lookup {
    Hit(Record),
    Miss,
}

impl DiskTier {
    /// Starts the writer thread, which opens (or replaces) the file. Until it
    /// has, lookups miss and puts queue.
    pub fn start(
        path: PathBuf,
        budget: u64,
        limits: QueueLimits,
        metrics: CacheMetrics,
    ) -> DiskTier {
        let (tx, rx) = mpsc::channel(limits.ops.max(1));
        let shared = Arc::new(Shared {
            path,
            budget,
            state: AtomicU8::new(OPENING),
            db: OnceLock::new(),
            queued_bytes: AtomicU64::new(0),
            limits,
            metrics,
        });
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("nusa-cache-disk".into())
            .spawn(move || writer::run(thread_shared, rx));
        let (tx, writer) = match writer {
            Ok(handle) => (Some(tx), Some(handle)),
            Err(error) => {
                tracing::warn!(%error, "cannot start the cache's disk thread; running memory-only");
                shared.state.store(DISABLED, Ordering::Release);
                (None, None)
            }
        };
        DiskTier { shared, tx, writer }
    }

    /// Looks `key` up on the blocking pool, where the checksum is verified
    /// too (hashing a large record is CPU work). A damaged record is logged,
    /// queued for deletion and reported as a miss; so is an expired one
    /// (without the log).
    pub async fn get(&self, key: CacheKey, now: u64) -> Lookup {
        let Some(db) = self.ready_db() else {
            return Lookup::Miss;
        };
        let read = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&db, &key)))
        })
        .await;
        let found = match read {
            Ok(Ok(Ok(found))) => found,
            Ok(Ok(Err(error))) => {
                tracing::warn!(%key, %error, "cache disk read failed; treating it as a miss");
                return Lookup::Miss;
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(%key, "cache disk read panicked; treating it as a miss");
                return Lookup::Miss;
            }
        };
        match found {
            Found::Absent => Lookup::Miss,
            Found::Record { record, put } if record.expires_at > now => {
                self.send(Op::Touch { key, put });
                Lookup::Hit(record)
            }
            Found::Record { put, .. } => {
                self.send(Op::Delete {
                    key,
                    put: Some(put),
                });
                Lookup::Miss
            }
            Found::Damaged { put, error } => {
                tracing::warn!(%key, %error, "damaged cache record; deleting it");
                self.send(Op::Delete { key, put });
                Lookup::Miss
            }
        }
    }

    /// Queues the record for writing; drops it (and counts it) when the
    /// queue is full.
    pub fn put(&self, key: CacheKey, record: Bytes) {
        let state = self.shared.state.load(Ordering::Acquire);
        if state == DISABLED
            || record.len() as u64 > self.shared.budget
            || record.len() > MAX_RECORD
        {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let len = record.len() as u64;
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if queued + len > self.shared.limits.bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared.metrics.disk_write_dropped();
            return;
        }
        if tx.try_send(Op::Put { key, record }).is_err() {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared.metrics.disk_write_dropped();
        }
    }

    /// Removes every entry, then waits until that is committed. Puts
    /// queued before it are purged too.
    pub async fn purge(&self) {
        let Some(tx) = &self.tx else { return };
        if tx.send(Op::Purge).await.is_ok() {
            self.flush().await;
        }
    }

    /// Waits until everything queued before this call is committed (and,
    /// after a start, until the file has been opened or given up on).
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Op::Flush(done)).await.is_ok() {
            // An error means the writer is gone; nothing is pending then.
            let _ = wait.await;
        }
    }

    fn ready_db(&self) -> Option<Arc<Database>> {
        if self.shared.state.load(Ordering::Acquire) != READY {
            return None;
        }
        self.shared.db.get().cloned()
    }

    /// Best effort: touches and deletes are hints, and a full queue loses
    /// nothing that matters.
    fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(op);
        }
    }
}

impl Drop for DiskTier {
    /// Closing the channel lets the writer drain what is queued and exit;
    /// joining it means the file is closed (and its lock released) when the
    /// last `Cache` handle is gone, so a restart in the same process can
    /// open it again.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// redb's errors, boxed (they are large and rare), and ours.
#[derive(Debug)]
enum DiskError {
    Redb(Box<redb::Error>),
    Schema(u64),
}

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskError::Redb(e) => write!(f, "{e}"),
            DiskError::Schema(v) => write!(f, "cache schema {v}, this build reads {SCHEMA}"),
        }
    }
}

impl<E: Into<redb::Error>> From<E> for DiskError {
    fn from(e: E) -> DiskError {
        DiskError::Redb(Box::new(e.into()))
    }
}

enum Found {
    Absent,
    Record { record: Record, put: u64 },
    Damaged { put: Option<u64>, error: String },
}

fn read(db: &Database, key: &CacheKey) -> Result<Found, DiskError> {
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORDS)?;
    let Some(value) = records.get(key.as_bytes())? else {
        return Ok(Found::Absent);
    };
    // One copy out of redb's page; the tensors are slices of it from here on.
    let bytes = Bytes::copy_from_slice(value.value());
    let index = txn.open_table(INDEX)?;
    let put = index.get(key.as_bytes())?.map(|v| v.value().2);
    Ok(match (codec::decode(key, bytes), put) {
        (Ok(record), Some(put)) => Found::Record { record, put },
        (Ok(_), None) => Found::Damaged {
            put,
            error: "record has no index row".into(),
        },
        (Err(e), put) => Found::Damaged {
            put,
            error: e.to_string(),
        },
    })
}
