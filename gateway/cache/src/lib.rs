//! The edge response cache: answers already computed come back in
//! microseconds.
//!
//! A lookup goes memory (moka), then, through a single flight per key, disk
//! (redb), then the computation; see `README.md` for the walk-through and
//! the choices behind it.
//!
//! Nothing here trusts the disk: every record carries a SHA-256 over its key
//! and contents, and a file that fails to open or to pass redb's integrity
//! check is moved aside and replaced. The worst a damaged disk tier can cost
//! is a recomputation, never a wrong answer or a crash.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nusa_tensor::Tensor;

mod codec;
mod disk;
mod flight;
mod key;
mod memory;
mod metrics;

#[cfg(test)]
mod tests;

pub use key::CacheKey;
pub use metrics::{CacheMetrics, Tier};

use disk::{DiskTier, Lookup, QueueLimits};
use flight::{Flights, Role};
use memory::MemoryTier;

/// Sizes and place of the two tiers.
#[derive(Clone, Debug, Default)]
pub struct CacheConfig {
    /// Budget of the memory tier: entry bytes plus a fixed overhead each.
    pub memory_bytes: u64,
    /// Budget of the stored records in the disk tier; the file is larger by
    /// redb's page overhead. 0 turns the disk tier off.
    pub disk_bytes: u64,
    /// The redb file (the gateway passes `<data_dir>/cache.redb`). `None`:
    /// memory only.
    pub disk_path: Option<PathBuf>,
}

/// How one answer may be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPolicy {
    /// From when it is stored. Zero: not stored.
    pub ttl: Duration,
    /// Answers whose stored form is larger are not stored.
    pub max_entry_bytes: u64,
}

/// What the client's `Cache-Control` allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// `no-cache`: compute a fresh answer, then store it for later callers.
    /// Not coalesced with a flight in progress, which may be serving a
    /// stored answer.
    NoCache,
    /// `no-store`: the cache is bypassed entirely, neither read, written nor
    /// coalesced (joining another caller's flight would be a read).
    NoStore,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Memory,
    Disk,
    Computed,
    /// Waited for an identical request's flight (which itself was served
    /// from disk or computed).
    Coalesced,
}

/// Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The two tiers and the single flight between them. Cheap to clone; clones
/// share everything.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    clock: Clock,
}

struct Inner {
    memory: MemoryTier,
    disk: Option<DiskTier>,
    flights: Flights<CacheKey, Arc<Vec<Tensor>>>,
    metrics: CacheMetrics,
}

impl Cache {
    /// Never fails. The disk tier is opened on its own thread: until it is
    /// ready lookups skip it (a miss) and writes queue; a damaged or
    /// unreadable file is logged, moved aside and replaced by an empty one,
    /// and if that fails too the cache runs memory-only.
    pub fn open(config: CacheConfig, metrics: CacheMetrics) -> Cache {
        Cache::open_with(config, metrics, QueueLimits::default())
    }

    fn open_with(config: CacheConfig, metrics: CacheMetrics, limits: QueueLimits) -> Cache {
        let disk = match config.disk_path {
            Some(path) if config.disk_bytes > 0 => Some(DiskTier::start(
                path,
                config.disk_bytes,
                limits,
                metrics.clone(),
            )),
            _ => None,
        };
        Cache {
            inner: Arc::new(Inner {
                memory: MemoryTier::new(config.memory_bytes, metrics.clone()),
                disk,
                flights: Flights::new(),
                metrics,
            }),
            clock: Arc::new(system_clock),
        }
    }

    /// Replaces the clock that stamps and checks expiry (unix milliseconds).
    pub fn with_clock(self, clock: Clock) -> Cache {
        Cache { clock, ..self }
    }

    /// The answer for `key`: stored, another caller's, or `compute`'s.
    ///
    /// `compute` runs at most once per call, and in `Normal` mode only when
    /// neither tier has a fresh answer and no identical call is computing
    /// one. Its error goes to this caller only; nothing is stored, and
    /// callers that were waiting on it run their own `compute` in turn, so
    /// `E` need not be `Clone`.
    pub async fn get_or_compute<E, F, Fut>(
        &self,
        model: &str,
        key: CacheKey,
        policy: &EntryPolicy,
        mode: Mode,
        compute: F,
    ) -> Result<(Arc<Vec<Tensor>>, Served), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<Tensor>, E>>,
    {
        match mode {
            Mode::NoStore => return Ok((Arc::new(compute().await?), Served::Computed)),
            Mode::NoCache => {
                let tensors = compute().await?;
                return Ok((self.store(key, policy, tensors), Served::Computed));
            }
            Mode::Normal => {}
        }
        let inner = &*self.inner;
        let lead = loop {
            if let Some(found) = inner.memory.get(&key, self.now()) {
                inner.metrics.hit(model, Tier::Memory);
                return Ok((found.tensors, Served::Memory));
            }
            match inner.flights.join(key) {
                Role::Leader(lead) => break lead,
                Role::Waiter(wait) => {
                    if let Some(tensors) = wait.wait().await {
                        inner.metrics.coalesce(model);
                        return Ok((tensors, Served::Coalesced));
                    }
                    // The leader failed or was dropped: go round, and
                    // perhaps lead.
                }
            }
        };
        // A flight that ended between our memory check and our join stored
        // its answer first; don't compute it twice.
        if let Some(found) = inner.memory.get(&key, self.now()) {
            inner.metrics.hit(model, Tier::Memory);
            lead.complete(found.tensors.clone());
            return Ok((found.tensors, Served::Memory));
        }
        if let Some(disk) = &inner.disk {
            let now = self.now();
            if let Lookup::Hit(found) = disk.get(key, now).await {
                inner.metrics.hit(model, Tier::Disk);
                inner.memory.insert(key, found.clone(), now);
                lead.complete(found.tensors.clone());
                return Ok((found.tensors, Served::Disk));
            }
        }
        inner.metrics.miss(model);
        // On error `lead` drops here, which releases the waiters.
        let tensors = compute().await?;
        let tensors = self.store(key, policy, tensors);
        lead.complete(tensors.clone());
        Ok((tensors, Served::Computed))
    }

    /// Waits until the disk writes queued so far are committed, and after
    /// `open`, until the disk tier is ready or given up on. For shutdown and
    /// tests.
    pub async fn flush(&self) {
        if let Some(disk) = &self.inner.disk {
            disk.flush().await;
        }
    }

    /// Removes every stored answer from both tiers (an operator's purge):
    /// requests from then on are computed again. A flight in progress
    /// still completes and stores its answer.
    pub async fn purge(&self) {
        self.inner.memory.clear();
        if let Some(disk) = &self.inner.disk {
            disk.purge().await;
        }
    }

    /// Runs the memory tier's pending admissions and evictions now; they
    /// otherwise run a little at a time as the cache is used.
    pub fn run_pending_tasks(&self) {
        self.inner.memory.run_pending_tasks();
    }

    /// The memory tier's weighted size (entry bytes plus overhead), as of its
    /// last maintenance.
    pub fn memory_bytes(&self) -> u64 {
        self.inner.memory.weighted_size()
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Keeps the answer if the policy allows and returns what the callers
    /// share. A stored answer is copied once into a record of its own: the
    /// computed tensors may be slices of a whole batch's output buffer,
    /// which the cache must not keep alive behind one request's entry.
    fn store(&self, key: CacheKey, policy: &EntryPolicy, tensors: Vec<Tensor>) -> Arc<Vec<Tensor>> {
        if policy.ttl.is_zero() || codec::encoded_len(&tensors) > policy.max_entry_bytes {
            return Arc::new(tensors);
        }
        let now = self.now();
        let ttl = u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX);
        let Some(record) = codec::encode(now.saturating_add(ttl), &tensors) else {
            return Arc::new(tensors);
        };
        self.inner.memory.insert(key, record.clone(), now);
        if let Some(disk) = &self.inner.disk {
            disk.put(key, record.bytes.clone());
        }
        record.tensors
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }
}

/// Unix milliseconds from the system clock; 0 before 1970.
pub fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stored-record codec as the disk tier reads a record (`codec::decode`,
/// checksum under `key` first), for the fuzz targets in `fuzz/`; not an API.
/// Decodes `bytes` as found, then again sealed under `key` so that the
/// parser behind the checksum is reached. Returns each decode's tensor
/// count or error.
#[doc(hidden)]
pub fn fuzz_decode_record(key: [u8; 32], bytes: &[u8]) -> [Result<usize, String>; 2] {
    let key = CacheKey::from_bytes(key);
    let count = |r: Result<codec::Record, codec::DecodeError>| {
        r.map(|r| r.tensors.len()).map_err(|e| e.to_string())
    };
    let raw = count(codec::decode(&key, bytes::Bytes::copy_from_slice(bytes)));
    let mut sealed = bytes.to_vec();
    codec::seal(&key, &mut sealed);
    [raw, count(codec::decode(&key, bytes::Bytes::from(sealed)))]
}
