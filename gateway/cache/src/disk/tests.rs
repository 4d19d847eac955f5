use std::path::Path;

use nusa_tensor::{DataType, Tensor, TensorData};
use redb::ReadableTable;

use super::*;
use crate::metrics::Tier;

const FAR: u64 = u64::MAX;

fn key(i: u32) -> CacheKey {
    let mut k = [0; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    CacheKey::from_bytes(k)
}

fn record(fill: u8, expires_at: u64) -> Bytes {
    let t = Tensor {
        name: "y".into(),
        datatype: DataType::Uint8,
        shape: vec![1000],
        data: TensorData::from(vec![fill; 1000]),
    };
    codec::encode(expires_at, &[t]).unwrap().bytes
}

fn len() -> u64 {
    record(0, FAR).len() as u64
}

fn start(path: &Path, budget: u64) -> (DiskTier, CacheMetrics) {
    start_with(path, budget, QueueLimits::default())
}

fn start_with(path: &Path, budget: u64, limits: QueueLimits) -> (DiskTier, CacheMetrics) {
    let metrics = CacheMetrics::detached();
    let tier = DiskTier::start(path.to_path_buf(), budget, limits, metrics.clone());
    (tier, metrics)
}

fn db(tier: &DiskTier) -> Arc<Database> {
    tier.shared.db.get().unwrap().clone()
}

fn stored(tier: &DiskTier, k: &CacheKey) -> bool {
    let db = db(tier);
    let txn = db.begin_read().unwrap();
    let records = txn.open_table(RECORDS).unwrap();
    let found = records.get(k.as_bytes()).unwrap().is_some();
    found
}

fn state(tier: &DiskTier) -> u8 {
    tier.shared.state.load(Ordering::Acquire)
}

async fn fill(tier: &DiskTier, k: &CacheKey, now: u64) -> Option<u8> {
    match tier.get(*k, now).await {
        Lookup::Hit(r) => Some(r.tensors[0].data.contiguous()[0]),
        Lookup::Miss => None,
    }
}

#[tokio::test]
async fn stored_records_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/cache.redb");
    let (tier, _) = start(&path, 1 << 20);
    tier.put(key(1), record(7, FAR));
    tier.flush().await;
    assert_eq!(fill(&tier, &key(1), 0).await, Some(7));
    assert_eq!(fill(&tier, &key(2), 0).await, None);
    drop(tier);

    let (tier, metrics) = start(&path, 1 << 20);
    tier.flush().await;
    assert_eq!(state(&tier), READY);
    assert_eq!(fill(&tier, &key(1), 0).await, Some(7));
    assert_eq!(metrics.bytes(Tier::Disk), len() as i64);
}

#[tokio::test]
async fn an_expired_record_is_a_miss_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (tier, _) = start(&dir.path().join("cache.redb"), 1 << 20);
    tier.put(key(1), record(1, 100));
    tier.flush().await;
    assert_eq!(fill(&tier, &key(1), 99).await, Some(1));
    assert_eq!(fill(&tier, &key(1), 100).await, None);
    tier.flush().await;
    assert!(!stored(&tier, &key(1)));
}

#[tokio::test]
async fn a_record_failing_its_checksum_is_a_miss_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (tier, metrics) = start(&dir.path().join("cache.redb"), 1 << 20);
    tier.put(key(1), record(1, FAR));
    tier.put(key(2), record(2, FAR));
    tier.flush().await;
    {
        // Damage the value behind redb's back: redb's own checksums stay
        // valid, only the record's can tell.
        let db = db(&tier);
        let txn = db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            let mut bytes = records
                .get(key(1).as_bytes())
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            records.insert(key(1).as_bytes(), &bytes[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    assert_eq!(fill(&tier, &key(1), 0).await, None);
    tier.flush().await;
    assert!(!stored(&tier, &key(1)));
    assert_eq!(fill(&tier, &key(2), 0).await, Some(2));
    tier.flush().await;
    assert_eq!(metrics.bytes(Tier::Disk), len() as i64);
}

#[tokio::test]
async fn the_byte_budget_holds_and_the_oldest_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let (tier, metrics) = start(&dir.path().join("cache.redb"), 10 * len());
    for i in 0..50 {
        tier.put(key(i), record(i as u8, FAR));
        if i % 7 == 0 {
            tier.flush().await;
        }
    }
    tier.flush().await;
    assert!(metrics.bytes(Tier::Disk) as u64 <= 10 * len());
    assert_eq!(metrics.evictions(Tier::Disk), 40);
    for i in 0..40 {
        assert!(!stored(&tier, &key(i)), "{i} should be gone");
    }
    for i in 40..50 {
        assert_eq!(fill(&tier, &key(i), 0).await, Some(i as u8));
    }
}

#[tokio::test]
async fn a_hit_counts_as_a_use() {
    let dir = tempfile::tempdir().unwrap();
    let (tier, _) = start(&dir.path().join("cache.redb"), 3 * len());
    for i in 0..3 {
        tier.put(key(i), record(i as u8, FAR));
    }
    tier.flush().await;
    assert_eq!(fill(&tier, &key(0), 0).await, Some(0));
    tier.flush().await;
    tier.put(key(3), record(3, FAR));
    tier.flush().await;
    assert!(stored(&tier, &key(0)), "hit, so kept");
    assert!(!stored(&tier, &key(1)), "least recently stored or used");
    assert!(stored(&tier, &key(2)));
    assert!(stored(&tier, &key(3)));
}

#[tokio::test]
async fn replacing_a_record_counts_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (tier, metrics) = start(&dir.path().join("cache.redb"), 1 << 20);
    tier.put(key(1), record(1, FAR));
    tier.put(key(1), record(2, FAR));
    tier.flush().await;
    tier.put(key(1), record(3, FAR));
    tier.flush().await;
    assert_eq!(metrics.bytes(Tier::Disk), len() as i64);
    assert_eq!(fill(&tier, &key(1), 0).await, Some(3));
}

#[tokio::test]
async fn a_smaller_budget_applies_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let (tier, _) = start(&path, 1 << 20);
    for i in 0..5 {
        tier.put(key(i), record(i as u8, FAR));
    }
    tier.flush().await;
    drop(tier);
    let (tier, metrics) = start(&path, 2 * len());
    tier.flush().await;
    assert_eq!(metrics.bytes(Tier::Disk), 2 * len() as i64);
    assert!(!stored(&tier, &key(2)));
    assert!(stored(&tier, &key(3)));
    assert!(stored(&tier, &key(4)));
}

#[tokio::test]
async fn a_full_queue_drops_the_write_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let limits = QueueLimits {
        ops: 4,
        bytes: len() - 1,
    };
    let (tier, metrics) = start_with(&dir.path().join("cache.redb"), 1 << 20, limits);
    tier.flush().await;
    tier.put(key(1), record(1, FAR));
    tier.flush().await;
    assert_eq!(metrics.disk_writes_dropped(), 1);
    assert!(!stored(&tier, &key(1)));
    assert_eq!(tier.shared.queued_bytes.load(Ordering::Acquire), 0);
}

#[tokio::test]
async fn a_file_in_use_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let (first, _) = start(&path, 1 << 20);
    first.put(key(1), record(1, FAR));
    first.flush().await;
    let (second, _) = start(&path, 1 << 20);
    second.flush().await;
    assert_eq!(state(&second), DISABLED);
    assert_eq!(fill(&second, &key(1), 0).await, None);
    second.put(key(2), record(2, FAR));
    second.flush().await;
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing moved aside"
    );
    assert_eq!(fill(&first, &key(1), 0).await, Some(1));
}

#[tokio::test]
async fn an_unreadable_file_is_moved_aside() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&path).is_ok() {
        // Root reads anything; there is no permission to deny.
        return;
    }
    let (tier, _) = start(&path, 1 << 20);
    tier.flush().await;
    assert_eq!(state(&tier), READY);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn an_uncreatable_directory_runs_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let (tier, _) = start(&blocker.join("cache.redb"), 1 << 20);
    tier.flush().await;
    assert_eq!(state(&tier), DISABLED);
    tier.put(key(1), record(1, FAR));
    tier.flush().await;
    assert_eq!(fill(&tier, &key(1), 0).await, None);
}

#[tokio::test]
async fn the_file_is_private_new_or_old() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let (tier, _) = start(&path, 1 << 20);
    tier.flush().await;
    assert_eq!(state(&tier), READY);
    assert_eq!(mode(&path), 0o600);
    drop(tier);

    // A file an older nusad left readable by all is narrowed at open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (tier, _) = start(&path, 1 << 20);
    tier.flush().await;
    assert_eq!(state(&tier), READY);
    assert_eq!(mode(&path), 0o600);
}
