//! The cache through its public API, on real redb files in temporary
//! directories.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use nusa_cache::{
    Cache, CacheConfig, CacheKey, CacheMetrics, Clock, EntryPolicy, Mode, Served, Tier,
};
use nusa_tensor::{DataType, Tensor, TensorData};
use parking_lot::Mutex;
use redb::ReadableTable;

/// A version's file digest (any fixed value).
const W: [u8; 32] = [7; 32];

fn input(v: u8) -> Tensor {
    Tensor {
        name: "x".into(),
        datatype: DataType::Uint8,
        shape: vec![4],
        data: TensorData::from(vec![v; 4]),
    }
}

fn key(v: u8) -> CacheKey {
    CacheKey::compute("m", 1, &W, None, &[input(v)])
}

fn answer(v: u8) -> Vec<Tensor> {
    sized_answer(v, 16)
}

fn sized_answer(v: u8, n: usize) -> Vec<Tensor> {
    vec![Tensor {
        name: "y".into(),
        datatype: DataType::Uint8,
        shape: vec![n as i64],
        data: TensorData::from(vec![v; n]),
    }]
}

fn policy() -> EntryPolicy {
    EntryPolicy {
        ttl: Duration::from_secs(60),
        max_entry_bytes: 1 << 20,
    }
}

fn memory_only() -> Cache {
    Cache::open(
        CacheConfig {
            memory_bytes: 1 << 20,
            ..CacheConfig::default()
        },
        CacheMetrics::detached(),
    )
}

fn with_disk(path: &Path) -> Cache {
    Cache::open(
        CacheConfig {
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            disk_path: Some(path.to_path_buf()),
        },
        CacheMetrics::detached(),
    )
}

/// Opens and waits until the disk tier is ready.
async fn reopen(path: &Path) -> Cache {
    let cache = with_disk(path);
    cache.flush().await;
    cache
}

async fn get(cache: &Cache, key: CacheKey, mode: Mode, v: u8) -> (Vec<Tensor>, Served) {
    get_with(cache, key, &policy(), mode, answer(v)).await
}

async fn get_with(
    cache: &Cache,
    key: CacheKey,
    policy: &EntryPolicy,
    mode: Mode,
    computed: Vec<Tensor>,
) -> (Vec<Tensor>, Served) {
    let (tensors, served) = cache
        .get_or_compute("m", key, policy, mode, || async { Ok::<_, ()>(computed) })
        .await
        .unwrap();
    ((*tensors).clone(), served)
}

#[derive(Clone)]
struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    fn at(ms: u64) -> FakeClock {
        FakeClock(Arc::new(AtomicU64::new(ms)))
    }

    fn clock(&self) -> Clock {
        let now = self.0.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    }

    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

/// Everything logged by this test binary (the disk tier logs from its own
/// thread, so a per-test subscriber would not see it).
fn logs() -> String {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock()).into_owned()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cache.redb.corrupt-")
        })
        .collect()
}

#[tokio::test]
async fn a_miss_then_a_memory_hit() {
    let cache = memory_only();
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 1).await,
        (answer(1), Served::Computed)
    );
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 2).await,
        (answer(1), Served::Memory)
    );
    assert_eq!(cache.metrics().misses("m"), 1);
    assert_eq!(cache.metrics().hits("m", Tier::Memory), 1);
}

#[tokio::test]
async fn a_purge_empties_both_tiers_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    for v in 1..=3 {
        get(&cache, key(v), Mode::Normal, v).await;
    }
    cache.flush().await;
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 9).await,
        (answer(1), Served::Memory)
    );
    cache.purge().await;
    // Computed again (the new answer 9 proves it), in memory and on disk.
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 9).await,
        (answer(9), Served::Computed)
    );
    cache.flush().await;
    drop(cache);
    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(2), Mode::Normal, 8).await,
        (answer(8), Served::Computed)
    );
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 7).await,
        (answer(9), Served::Disk)
    );
}

#[tokio::test]
async fn a_restart_serves_from_disk_then_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 1).await.1,
        Served::Computed
    );
    cache.flush().await;
    drop(cache);

    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 9).await,
        (answer(1), Served::Disk)
    );
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 9).await,
        (answer(1), Served::Memory)
    );
    assert_eq!(cache.metrics().hits("m", Tier::Disk), 1);
    assert_eq!(cache.metrics().hits("m", Tier::Memory), 1);
    assert_eq!(cache.metrics().misses("m"), 0);
}

#[tokio::test]
async fn ttl_expires_in_memory_on_the_fake_clock() {
    let clock = FakeClock::at(1_000_000);
    let cache = memory_only().with_clock(clock.clock());
    get(&cache, key(1), Mode::Normal, 1).await;
    clock.set(1_000_000 + 59_999);
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 2).await,
        (answer(1), Served::Memory)
    );
    clock.set(1_000_000 + 60_000);
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 2).await,
        (answer(2), Served::Computed)
    );
}

#[tokio::test]
async fn ttl_expiry_is_stored_with_the_entry_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let clock = FakeClock::at(1_000_000);
    let cache = reopen(&path).await.with_clock(clock.clock());
    let short = EntryPolicy {
        ttl: Duration::from_secs(10),
        ..policy()
    };
    get_with(&cache, key(1), &short, Mode::Normal, answer(1)).await;
    get(&cache, key(2), Mode::Normal, 2).await;
    cache.flush().await;
    drop(cache);

    let cache = reopen(&path).await.with_clock(clock.clock());
    clock.set(1_000_000 + 10_000);
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 7).await,
        (answer(7), Served::Computed)
    );
    assert_eq!(
        get(&cache, key(2), Mode::Normal, 7).await,
        (answer(2), Served::Disk)
    );
    clock.set(1_000_000 + 60_000);
    assert_eq!(
        get(&cache, key(2), Mode::Normal, 8).await,
        (answer(8), Served::Computed)
    );
}

#[tokio::test]
async fn a_different_request_is_a_different_entry() {
    let cache = memory_only();
    let inputs = [input(1)];
    let base = CacheKey::compute("m", 1, &W, None, &inputs);
    get(&cache, base, Mode::Normal, 1).await;
    let others = [
        CacheKey::compute("m", 2, &W, None, &inputs),
        CacheKey::compute("m", 1, &W, Some(&["y"]), &inputs),
        CacheKey::compute("m", 1, &W, None, &[input(2)]),
    ];
    for k in others {
        assert_eq!(get(&cache, k, Mode::Normal, 5).await.1, Served::Computed);
    }
    // The same bytes arriving as two body frames: the same entry.
    let split = Tensor {
        data: TensorData::new(vec![
            Bytes::from_static(&[1, 1]),
            Bytes::from_static(&[1, 1]),
        ]),
        ..input(1)
    };
    let same = CacheKey::compute("m", 1, &W, None, &[split]);
    assert_eq!(same, base);
    assert_eq!(
        get(&cache, same, Mode::Normal, 5).await,
        (answer(1), Served::Memory)
    );
}

#[tokio::test]
async fn an_answer_over_max_entry_bytes_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    let small = EntryPolicy {
        max_entry_bytes: 100,
        ..policy()
    };
    let big = sized_answer(1, 200);
    for _ in 0..2 {
        let (tensors, served) = get_with(&cache, key(1), &small, Mode::Normal, big.clone()).await;
        assert_eq!((tensors, served), (big.clone(), Served::Computed));
    }
    cache.flush().await;
    drop(cache);
    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 2).await.1,
        Served::Computed
    );
}

#[tokio::test]
async fn no_cache_recomputes_then_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    get(&cache, key(1), Mode::Normal, 1).await;
    assert_eq!(
        get(&cache, key(1), Mode::NoCache, 2).await,
        (answer(2), Served::Computed)
    );
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 3).await,
        (answer(2), Served::Memory)
    );
    cache.flush().await;
    drop(cache);
    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 3).await,
        (answer(2), Served::Disk)
    );
}

#[tokio::test]
async fn no_store_neither_reads_nor_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    get(&cache, key(1), Mode::Normal, 1).await;
    assert_eq!(
        get(&cache, key(1), Mode::NoStore, 2).await,
        (answer(2), Served::Computed)
    );
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 3).await,
        (answer(1), Served::Memory)
    );
    assert_eq!(
        get(&cache, key(2), Mode::NoStore, 4).await,
        (answer(4), Served::Computed)
    );
    assert_eq!(
        get(&cache, key(2), Mode::Normal, 5).await,
        (answer(5), Served::Computed)
    );
    cache.flush().await;
    drop(cache);
    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(1), Mode::Normal, 6).await,
        (answer(1), Served::Disk)
    );
    assert_eq!(cache.metrics().misses("m"), 0);
}

#[tokio::test]
async fn the_memory_tier_holds_to_its_byte_budget() {
    let capacity = 32 * 1024;
    let cache = Cache::open(
        CacheConfig {
            memory_bytes: capacity,
            ..CacheConfig::default()
        },
        CacheMetrics::detached(),
    );
    for i in 0..=255u8 {
        get_with(
            &cache,
            key(i),
            &policy(),
            Mode::Normal,
            sized_answer(i, 1000),
        )
        .await;
    }
    cache.run_pending_tasks();
    assert!(cache.memory_bytes() <= capacity, "{}", cache.memory_bytes());
    assert!(cache.metrics().evictions(Tier::Memory) > 0);
}

#[tokio::test]
async fn the_disk_tier_holds_to_its_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let budget = 20 * 1024;
    let open = || {
        Cache::open(
            CacheConfig {
                memory_bytes: 1 << 20,
                disk_bytes: budget,
                disk_path: Some(path.clone()),
            },
            CacheMetrics::detached(),
        )
    };
    let cache = open();
    cache.flush().await;
    for i in 0..100u8 {
        get_with(
            &cache,
            key(i),
            &policy(),
            Mode::Normal,
            sized_answer(i, 1000),
        )
        .await;
    }
    cache.flush().await;
    assert!(cache.metrics().bytes(Tier::Disk) as u64 <= budget);
    assert!(cache.metrics().evictions(Tier::Disk) >= 80);
    drop(cache);
    let cache = open();
    cache.flush().await;
    assert_eq!(
        get(&cache, key(0), Mode::Normal, 1).await.1,
        Served::Computed,
        "the oldest is gone"
    );
    let (tensors, served) = get_with(&cache, key(99), &policy(), Mode::Normal, answer(0)).await;
    assert_eq!((tensors, served), (sized_answer(99, 1000), Served::Disk));
}

/// Damages a valid cache file with `damage`, then checks that the next open
/// moves it aside with a warning, starts empty and works.
async fn survives(name: &str, damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    for i in 0..4 {
        get_with(
            &cache,
            key(i),
            &policy(),
            Mode::Normal,
            sized_answer(0xAB, 64 * 1024),
        )
        .await;
    }
    cache.flush().await;
    drop(cache);
    damage(&path);

    let cache = reopen(&path).await;
    assert_eq!(moved_aside(dir.path()).len(), 1, "{name}: moved aside");
    let logs = logs();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("moving it aside")
            && l.contains(&*path.to_string_lossy())),
        "{name}: warned\n{logs}"
    );
    // Empty, and answers are the computed ones.
    assert_eq!(
        get(&cache, key(0), Mode::Normal, 5).await,
        (answer(5), Served::Computed),
        "{name}"
    );
    cache.flush().await;
    drop(cache);
    // The fresh file works.
    let cache = reopen(&path).await;
    assert_eq!(
        get(&cache, key(0), Mode::Normal, 6).await,
        (answer(5), Served::Disk),
        "{name}"
    );
    assert_eq!(
        moved_aside(dir.path()).len(),
        1,
        "{name}: the fresh file is kept"
    );
}

#[tokio::test]
async fn a_garbage_file_is_replaced() {
    logs();
    survives("garbage", |path| {
        let mut x: u32 = 12345;
        let junk: Vec<u8> = (0..100_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(path, junk).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_truncated_file_is_replaced() {
    logs();
    survives("truncated", |path| {
        let len = std::fs::metadata(path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len / 2).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_file_with_flipped_bytes_is_replaced() {
    logs();
    survives("flipped", |path| {
        let mut bytes = std::fs::read(path).unwrap();
        // Flip bytes inside a stored answer, where redb's page checksums
        // (checked at open) and not only the record's must notice.
        let run = vec![0xABu8; 4096];
        let at = bytes
            .windows(run.len())
            .position(|w| w == &run[..])
            .unwrap();
        for b in &mut bytes[at + 1000..at + 1016] {
            *b ^= 0xFF;
        }
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_file_from_another_redb_version_is_replaced() {
    logs();
    survives("version", |path| {
        let mut bytes = std::fs::read(path).unwrap();
        // The file-format version byte of both commit slots.
        bytes[64] = 9;
        bytes[192] = 9;
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_damaged_record_is_a_miss_and_is_deleted() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let cache = reopen(&path).await;
    get(&cache, key(1), Mode::Normal, 1).await;
    cache.flush().await;
    drop(cache);
    let records: redb::TableDefinition<[u8; 32], &[u8]> = redb::TableDefinition::new("records");
    {
        // Through redb, so that its own checksums stay valid: only the
        // record's checksum can tell.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(records).unwrap();
            let mut v = t.get(key(1).as_bytes()).unwrap().unwrap().value().to_vec();
            let last = v.len() - 1;
            v[last] ^= 0x01;
            t.insert(key(1).as_bytes(), &v[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let cache = reopen(&path).await;
    let failed = cache
        .get_or_compute("m", key(1), &policy(), Mode::Normal, || async {
            Err::<Vec<Tensor>, _>("no answer")
        })
        .await;
    assert_eq!(
        failed.unwrap_err(),
        "no answer",
        "a miss, not the damaged answer"
    );
    cache.flush().await;
    drop(cache);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(records).unwrap();
    assert!(t.get(key(1).as_bytes()).unwrap().is_none(), "deleted");
    let logs = logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("damaged cache record") && l.contains(&key(1).to_string())),
        "{logs}"
    );
}

#[tokio::test]
async fn the_families_appear_in_the_metrics_text() {
    let telemetry = nusa_telemetry::Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(
        CacheConfig {
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            disk_path: Some(dir.path().join("cache.redb")),
        },
        CacheMetrics::new(&telemetry),
    );
    cache.flush().await;
    get(&cache, key(1), Mode::Normal, 1).await;
    get(&cache, key(1), Mode::Normal, 1).await;
    cache.flush().await;
    cache.run_pending_tasks();
    let text = telemetry.encode();
    for want in [
        r#"nusa_cache_hits_total{model="m",tier="memory"} 1"#,
        r#"nusa_cache_misses_total{model="m"} 1"#,
        r#"nusa_cache_evictions_total{tier="memory"} 0"#,
        r#"nusa_cache_evictions_total{tier="disk"} 0"#,
        r#"nusa_cache_bytes{tier="disk"} "#,
        r#"nusa_cache_bytes{tier="memory"} "#,
        "nusa_cache_disk_writes_dropped_total 0",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}
