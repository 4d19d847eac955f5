//! Property tests of the batching policy under simulated time: random
//! policies and random streams of arrivals, clock advances and finished
//! batches, checked against what Triton's dynamic batcher promises.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Arrive {
        rows: usize,
        shape: u64,
        priority: u64,
        timeout_us: u64,
    },
    Advance(u64),
    /// The oldest running batch finishes.
    Finish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..5, 0u64..2, 0u64..4, prop_oneof![Just(0u64), 1u64..3000])
            .prop_map(|(rows, shape, priority, timeout_us)| Op::Arrive { rows, shape, priority, timeout_us }),
        2 => (0u64..800).prop_map(Op::Advance),
        2 => Just(Op::Finish),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        0usize..8,
        prop_oneof![Just(0u64), 1u64..600],
        0usize..12,
        prop_oneof![Just(0u64), 1u64..2500],
        any::<bool>(),
        0u32..4,
        0u32..4,
        1usize..4,
    )
        .prop_map(
            |(
                max_batch_size,
                max_queue_delay_us,
                max_queue_size,
                default_timeout_us,
                allow_timeout_override,
                priority_levels,
                default_priority_level,
                instances,
            )| Policy {
                max_batch_size,
                max_queue_delay_us,
                max_queue_size,
                default_timeout_us,
                allow_timeout_override,
                priority_levels,
                default_priority_level,
                instances,
            },
        )
}

/// What the test knows of a queued request (the oracle's own record).
#[derive(Clone, Copy, Debug)]
struct Req {
    level: usize,
    shape: u64,
    enqueued: Micros,
    deadline: Option<Micros>,
}

fn level_of(p: &Policy, priority: u64) -> usize {
    let n = u64::from(p.priority_levels.max(1));
    let q = if priority == 0 {
        u64::from(p.default_priority_level)
    } else {
        priority
    };
    (q.clamp(1, n) - 1) as usize
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_request_is_answered_once_within_bounds_and_by_priority(
        p in policy(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut b: Batcher<u32> = Batcher::new(p.clone());
        let mut now: Micros = 0;
        let mut next_id = 0u32;
        let mut queued: BTreeMap<u32, Req> = BTreeMap::new();
        let mut answered: BTreeMap<u32, &'static str> = BTreeMap::new();
        let mut running: Vec<usize> = Vec::new();
        let check_poll = |b: &mut Batcher<u32>, now: Micros, queued: &mut BTreeMap<u32, Req>, running: &mut Vec<usize>, answered: &mut BTreeMap<u32, &'static str>| -> Result<(), TestCaseError> {
            let poll = b.poll(now);
            for e in &poll.expired {
                let r = queued.remove(&e.item).expect("expired twice or never queued");
                prop_assert!(r.deadline.is_some_and(|d| d <= now), "expired before its deadline");
                prop_assert!(answered.insert(e.item, "expired").is_none());
            }
            for batch in poll.batches {
                prop_assert!(!running.contains(&batch.instance), "instance {} given two batches", batch.instance);
                prop_assert!(batch.instance < p.instances.max(1));
                prop_assert!(!batch.items.is_empty());
                if p.max_batch_size == 0 {
                    prop_assert_eq!(batch.items.len(), 1);
                } else {
                    prop_assert!(batch.rows() <= p.max_batch_size, "{} rows over {}", batch.rows(), p.max_batch_size);
                }
                // The lead is the oldest request of the highest level queued.
                let lead = queued[&batch.items[0].item];
                let best = queued.values().map(|r| (r.level, r.enqueued)).min().unwrap();
                prop_assert_eq!((lead.level, lead.enqueued), best, "a higher-priority or older request was passed over");
                for q in &batch.items {
                    let r = queued.remove(&q.item).expect("dispatched twice or never queued");
                    prop_assert_eq!(r.shape, lead.shape, "shapes mixed in one batch");
                    prop_assert!(r.deadline.is_none_or(|d| d > now), "dispatched after its deadline");
                    prop_assert!(answered.insert(q.item, "batched").is_none());
                }
                running.push(batch.instance);
            }
            // Nothing waits past its window while an instance is idle.
            if b.idle_instances() > 0 && !queued.is_empty() {
                let wake = poll.wake_at;
                prop_assert!(wake.is_some(), "requests queued, an instance idle, and no wake-up");
            }
            prop_assert_eq!(b.queued(), queued.len());
            Ok(())
        };
        for op in ops {
            match op {
                Op::Arrive { rows, shape, priority, timeout_us } => {
                    let id = next_id;
                    next_id += 1;
                    let info = RequestInfo { rows, shape_key: shape, priority, timeout_us };
                    match b.enqueue(id, info, now) {
                        Ok(()) => {
                            prop_assert!(p.max_queue_size == 0 || queued.len() < p.max_queue_size);
                            prop_assert!(p.max_batch_size == 0 || rows <= p.max_batch_size);
                            let t = if timeout_us > 0 && p.allow_timeout_override { timeout_us } else { p.default_timeout_us };
                            queued.insert(id, Req {
                                level: level_of(&p, priority),
                                shape,
                                enqueued: now,
                                deadline: (t > 0).then(|| now + t),
                            });
                        }
                        Err((back, why)) => {
                            prop_assert_eq!(back, id);
                            match why {
                                Rejection::QueueFull { capacity } => prop_assert!(capacity == p.max_queue_size && queued.len() >= capacity),
                                Rejection::TooManyRows { rows: r, max } => prop_assert!(r > max && max == p.max_batch_size),
                            }
                            answered.insert(id, "rejected");
                        }
                    }
                }
                Op::Advance(dt) => now += dt,
                Op::Finish => {
                    if !running.is_empty() {
                        b.release(running.remove(0));
                    }
                }
            }
            check_poll(&mut b, now, &mut queued, &mut running, &mut answered)?;
        }
        // Drain: time passes, batches finish, until nothing is left.
        for _ in 0..1000 {
            if queued.is_empty() {
                break;
            }
            now += 700;
            for i in std::mem::take(&mut running) {
                b.release(i);
            }
            check_poll(&mut b, now, &mut queued, &mut running, &mut answered)?;
        }
        prop_assert!(queued.is_empty(), "{} requests never answered", queued.len());
        prop_assert_eq!(answered.len() as u32, next_id, "every request answered exactly once");
    }
}
