//! Single flight through the whole cache; these look at the flights inside.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nusa_tensor::{DataType, TensorData};
use tokio::sync::Notify;

use super::*;

/// A version's file digest (any fixed value).
const W: [u8; 32] = [7; 32];

fn answer(v: u8) -> Vec<Tensor> {
    vec![Tensor {
        name: "y".into(),
        datatype: DataType::Uint8,
        shape: vec![4],
        data: TensorData::from(vec![v; 4]),
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

fn key() -> CacheKey {
    CacheKey::compute("m", 1, &W, None, &[])
}

/// Polls until `cond` holds; the tasks it waits for are parked, not slow.
async fn until(cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_identical_misses_compute_once() {
    let cache = memory_only();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, runs, gate) = (cache.clone(), runs.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_compute("m", key(), &policy(), Mode::Normal, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok::<_, ()>(answer(1))
                })
                .await
                .unwrap()
        }));
    }
    until(|| cache.inner.flights.waiting(&key()) == 49).await;
    gate.notify_one();
    let mut served = Vec::new();
    for t in tasks {
        let (tensors, how) = t.await.unwrap();
        assert_eq!(*tensors, answer(1));
        served.push(how);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(served.iter().filter(|s| **s == Served::Computed).count(), 1);
    assert_eq!(
        served.iter().filter(|s| **s == Served::Coalesced).count(),
        49
    );
    assert_eq!(cache.metrics().coalesced("m"), 49);
    assert_eq!(cache.metrics().misses("m"), 1);
    assert_eq!(cache.inner.flights.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_leader_hands_over_to_a_waiter() {
    let cache = memory_only();
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("m", key(), &policy(), Mode::Normal, || async move {
                    gate.notified().await;
                    Err::<Vec<Tensor>, _>("engine failed")
                })
                .await
        })
    };
    until(|| cache.inner.flights.in_flight() == 1).await;
    let reruns = Arc::new(AtomicUsize::new(0));
    let rerun_gate = Arc::new(Notify::new());
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let (cache, reruns, rerun_gate) = (cache.clone(), reruns.clone(), rerun_gate.clone());
        waiters.push(tokio::spawn(async move {
            cache
                .get_or_compute("m", key(), &policy(), Mode::Normal, || async move {
                    reruns.fetch_add(1, Ordering::SeqCst);
                    rerun_gate.notified().await;
                    Ok::<_, &str>(answer(2))
                })
                .await
        }));
    }
    until(|| cache.inner.flights.waiting(&key()) == 3).await;
    gate.notify_one();
    // One waiter takes the lead and the other two wait on it in turn.
    until(|| reruns.load(Ordering::SeqCst) == 1 && cache.inner.flights.waiting(&key()) == 2).await;
    rerun_gate.notify_one();

    assert_eq!(leader.await.unwrap().unwrap_err(), "engine failed");
    let mut served = Vec::new();
    for w in waiters {
        let (tensors, how) = w.await.unwrap().unwrap();
        assert_eq!(*tensors, answer(2));
        served.push(how);
    }
    assert_eq!(reruns.load(Ordering::SeqCst), 1, "one waiter reran it");
    assert_eq!(served.iter().filter(|s| **s == Served::Computed).count(), 1);
    assert_eq!(
        served.iter().filter(|s| **s == Served::Coalesced).count(),
        2
    );
    let (tensors, how) = cache
        .get_or_compute("m", key(), &policy(), Mode::Normal, || async {
            Err::<Vec<Tensor>, _>("not called")
        })
        .await
        .unwrap();
    assert_eq!((*tensors).clone(), answer(2), "the error was never cached");
    assert_eq!(how, Served::Memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_leader_hands_over_to_a_waiter() {
    let cache = memory_only();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("m", key(), &policy(), Mode::Normal, || {
                    std::future::pending::<Result<Vec<Tensor>, ()>>()
                })
                .await
        })
    };
    until(|| cache.inner.flights.in_flight() == 1).await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("m", key(), &policy(), Mode::Normal, || async {
                    Ok::<_, ()>(answer(3))
                })
                .await
        })
    };
    until(|| cache.inner.flights.waiting(&key()) == 1).await;
    leader.abort();
    let (tensors, how) = waiter.await.unwrap().unwrap();
    assert_eq!(*tensors, answer(3));
    assert_eq!(how, Served::Computed);
    assert_eq!(cache.inner.flights.in_flight(), 0);
}

#[tokio::test]
async fn no_store_does_not_join_a_flight() {
    let cache = memory_only();
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("m", key(), &policy(), Mode::Normal, || async move {
                    gate.notified().await;
                    Ok::<_, ()>(answer(1))
                })
                .await
        })
    };
    until(|| cache.inner.flights.in_flight() == 1).await;
    for mode in [Mode::NoStore, Mode::NoCache] {
        let (tensors, how) = cache
            .get_or_compute("m", key(), &policy(), mode, || async {
                Ok::<_, ()>(answer(9))
            })
            .await
            .unwrap();
        assert_eq!((*tensors).clone(), answer(9), "{mode:?}");
        assert_eq!(how, Served::Computed);
    }
    gate.notify_one();
    leader.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_full_disk_queue_drops_the_write_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(
        CacheConfig {
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            disk_path: Some(dir.path().join("cache.redb")),
        },
        CacheMetrics::detached(),
        QueueLimits { ops: 8, bytes: 10 },
    );
    cache.flush().await;
    cache
        .get_or_compute("m", key(), &policy(), Mode::Normal, || async {
            Ok::<_, ()>(answer(1))
        })
        .await
        .unwrap();
    cache.flush().await;
    assert_eq!(cache.metrics().disk_writes_dropped(), 1);
}

#[test]
fn cache_and_its_future_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let cache = memory_only();
    send_sync(&cache);
    let policy = policy();
    let fut = cache.get_or_compute("m", key(), &policy, Mode::Normal, || async {
        Ok::<_, ()>(answer(1))
    });
    send(&fut);
}
