use super::*;

fn info(rows: usize) -> RequestInfo {
    RequestInfo {
        rows,
        shape_key: 0,
        priority: 0,
        timeout_us: 0,
    }
}

fn batching(max_batch_size: usize, delay: u64) -> Policy {
    Policy {
        max_batch_size,
        max_queue_delay_us: delay,
        ..Policy::default()
    }
}

fn ids(b: &Batch<u32>) -> Vec<u32> {
    b.items.iter().map(|q| q.item).collect()
}

#[test]
fn zero_delay_takes_what_is_queued_at_once() {
    let mut b = Batcher::new(batching(8, 0));
    for i in 0..3 {
        b.enqueue(i, info(1), 0).unwrap();
    }
    let p = b.poll(0);
    assert_eq!(p.batches.len(), 1);
    assert_eq!(ids(&p.batches[0]), vec![0, 1, 2]);
    assert_eq!(p.wake_at, None);
}

#[test]
fn queue_delay_waits_for_the_window_then_dispatches() {
    let mut b = Batcher::new(batching(8, 500));
    b.enqueue(1, info(1), 100).unwrap();
    let p = b.poll(100);
    assert!(p.batches.is_empty());
    assert_eq!(
        p.wake_at,
        Some(600),
        "window closes 500us after the oldest request"
    );
    b.enqueue(2, info(2), 300).unwrap();
    assert!(b.poll(599).batches.is_empty());
    let p = b.poll(600);
    assert_eq!(ids(&p.batches[0]), vec![1, 2]);
    assert_eq!(p.batches[0].rows(), 3);
}

#[test]
fn a_full_batch_goes_without_waiting() {
    let mut b = Batcher::new(batching(4, 1_000_000));
    b.enqueue(1, info(2), 0).unwrap();
    assert!(b.poll(0).batches.is_empty());
    b.enqueue(2, info(2), 10).unwrap();
    let p = b.poll(10);
    assert_eq!(ids(&p.batches[0]), vec![1, 2]);
}

#[test]
fn max_batch_size_splits_and_the_next_request_that_does_not_fit_closes_the_batch() {
    let mut b = Batcher::new(Policy {
        instances: 2,
        ..batching(4, 1_000)
    });
    for (i, rows) in [(1, 3), (2, 2), (3, 1)] {
        b.enqueue(i, info(rows), 0).unwrap();
    }
    let p = b.poll(0);
    // [3 rows] cannot take the 2-row request: it is full as it can be.
    assert_eq!(p.batches.len(), 1);
    assert_eq!(ids(&p.batches[0]), vec![1]);
    // The rest waits for its window.
    assert_eq!(p.wake_at, Some(1_000));
    let p = b.poll(1_000);
    assert_eq!(ids(&p.batches[0]), vec![2, 3]);
    assert_eq!(p.batches[0].instance, 1);
}

#[test]
fn a_request_larger_than_a_batch_is_refused() {
    let mut b = Batcher::new(batching(4, 0));
    let (item, why) = b.enqueue(7, info(5), 0).unwrap_err();
    assert_eq!(item, 7);
    assert_eq!(why, Rejection::TooManyRows { rows: 5, max: 4 });
}

#[test]
fn queue_full_is_refused_and_frees_up_on_dispatch() {
    let mut b = Batcher::new(Policy {
        max_queue_size: 2,
        ..batching(1, 0)
    });
    b.enqueue(1, info(1), 0).unwrap();
    b.enqueue(2, info(1), 0).unwrap();
    assert_eq!(
        b.enqueue(3, info(1), 0).unwrap_err().1,
        Rejection::QueueFull { capacity: 2 }
    );
    let p = b.poll(0);
    assert_eq!(p.batches.len(), 1, "one instance, one batch of one row");
    assert_eq!(b.queued(), 1);
    b.enqueue(3, info(1), 0).unwrap();
    assert_eq!(b.queued(), 2);
}

#[test]
fn busy_instances_hold_the_queue_until_released() {
    let mut b = Batcher::new(batching(2, 0));
    for i in 0..5 {
        b.enqueue(i, info(1), 0).unwrap();
    }
    let p = b.poll(0);
    assert_eq!(p.batches.len(), 1);
    assert_eq!(b.idle_instances(), 0);
    assert!(b.poll(5).batches.is_empty());
    b.release(p.batches[0].instance);
    let p = b.poll(6);
    assert_eq!(ids(&p.batches[0]), vec![2, 3]);
}

#[test]
fn timeouts_expire_queued_requests_only() {
    let mut b = Batcher::new(Policy {
        default_timeout_us: 1_000,
        ..batching(1, 0)
    });
    b.enqueue(1, info(1), 0).unwrap();
    b.enqueue(2, info(1), 0).unwrap();
    b.enqueue(
        3,
        RequestInfo {
            timeout_us: 5_000,
            ..info(1)
        },
        0,
    )
    .unwrap();
    let p = b.poll(0);
    assert_eq!(
        ids(&p.batches[0]),
        vec![1],
        "dispatched before its deadline"
    );
    assert_eq!(p.wake_at, Some(1_000));
    let p = b.poll(1_000);
    assert_eq!(
        p.expired.iter().map(|q| q.item).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(p.wake_at, Some(5_000));
    b.release(0);
    let p = b.poll(1_001);
    assert_eq!(ids(&p.batches[0]), vec![3]);
}

#[test]
fn timeout_override_can_be_disallowed() {
    let mut b = Batcher::new(Policy {
        default_timeout_us: 100,
        allow_timeout_override: false,
        instances: 1,
        ..batching(1, 0)
    });
    b.enqueue(0, info(1), 0).unwrap();
    b.enqueue(
        1,
        RequestInfo {
            timeout_us: 10_000,
            ..info(1)
        },
        0,
    )
    .unwrap();
    let p = b.poll(0);
    assert_eq!(p.wake_at, Some(100));
    assert_eq!(b.poll(100).expired.len(), 1);
}

#[test]
fn higher_priority_goes_first_and_default_level_applies_to_zero() {
    let mut b = Batcher::new(Policy {
        priority_levels: 3,
        default_priority_level: 2,
        ..batching(2, 0)
    });
    let pri = |p| RequestInfo {
        priority: p,
        ..info(1)
    };
    b.enqueue(10, pri(3), 0).unwrap();
    b.enqueue(20, pri(0), 1).unwrap();
    b.enqueue(30, pri(1), 2).unwrap();
    b.enqueue(40, pri(9), 3).unwrap(); // clamped to the lowest level
    let p = b.poll(3);
    assert_eq!(ids(&p.batches[0]), vec![30, 20]);
    b.release(0);
    assert_eq!(ids(&b.poll(4).batches[0]), vec![10, 40]);
}

#[test]
fn only_requests_of_the_same_shape_share_a_batch() {
    let mut b = Batcher::new(batching(8, 0));
    let keyed = |k| RequestInfo {
        shape_key: k,
        ..info(1)
    };
    b.enqueue(1, keyed(7), 0).unwrap();
    b.enqueue(2, keyed(9), 0).unwrap();
    b.enqueue(3, keyed(7), 0).unwrap();
    let p = b.poll(0);
    assert_eq!(ids(&p.batches[0]), vec![1, 3]);
    b.release(0);
    assert_eq!(ids(&b.poll(1).batches[0]), vec![2]);
}

#[test]
fn no_batching_runs_each_request_alone_on_every_instance() {
    let mut b = Batcher::new(Policy {
        instances: 2,
        ..Policy::default()
    });
    for i in 0..3 {
        b.enqueue(i, info(5), 0).unwrap();
    }
    let p = b.poll(0);
    assert_eq!(p.batches.len(), 2);
    assert_eq!((ids(&p.batches[0]), ids(&p.batches[1])), (vec![0], vec![1]));
    assert_eq!((p.batches[0].instance, p.batches[1].instance), (0, 1));
}

/// A simulated run: requests arrive every 300us, each batch takes 1ms on
/// one instance (capacity 4 per ms against 3.3 offered); batches grow while
/// the instance is busy, none exceeds the maximum, and every request runs.
#[test]
fn simulated_load_forms_bounded_batches() {
    let mut b = Batcher::new(batching(4, 300));
    let mut now = 0;
    let mut running: Option<(Micros, usize)> = None;
    let mut sizes = Vec::new();
    let mut next_id = 0u32;
    while now <= 40_000 {
        if now % 300 == 0 && now < 30_000 {
            b.enqueue(next_id, info(1), now).unwrap();
            next_id += 1;
        }
        if let Some((end, inst)) = running {
            if now >= end {
                b.release(inst);
                running = None;
            }
        }
        let p = b.poll(now);
        for batch in p.batches {
            sizes.push(batch.rows());
            running = Some((now + 1_000, batch.instance));
        }
        now += 10;
    }
    assert_eq!(
        sizes.iter().sum::<usize>(),
        next_id as usize,
        "every request ran once"
    );
    assert!(sizes.iter().all(|&s| (1..=4).contains(&s)));
    assert!(
        next_id as usize > sizes.len() * 2,
        "batches average over 2 rows: {sizes:?}"
    );
}
