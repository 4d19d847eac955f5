//! The limiter on a fake clock and simulated days.

use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::spec::{KeySpec, Role};

const DAY: u64 = 20_000;

fn limiter() -> (FakeRelativeClock, Limiter<FakeRelativeClock>) {
    let clock = FakeRelativeClock::default();
    (clock.clone(), Limiter::new(clock))
}

fn key(limits: Limits) -> KeyRecord {
    let mut spec = KeySpec::new("mobile-app", Role::Infer);
    spec.limits = limits;
    KeyRecord::new("ab12cd34", spec, 0)
}

fn rps(rps: f64, burst: Option<u32>) -> Limits {
    Limits {
        rps: Some(rps),
        burst,
        ..Limits::default()
    }
}

/// Checks `n` requests, dropping each permit; returns how many passed.
fn admitted(l: &Limiter<FakeRelativeClock>, k: &KeyRecord, model: &str, n: usize) -> usize {
    (0..n).filter(|_| l.check(k, model, DAY).is_ok()).count()
}

#[test]
fn burst_then_denied_with_retry_after() {
    let (_clock, l) = limiter();
    let k = key(rps(5.0, Some(10)));
    assert_eq!(admitted(&l, &k, "resnet", 10), 10);
    let d = l.check(&k, "resnet", DAY).unwrap_err();
    assert_eq!(d.limit, "rps");
    assert_eq!(d.scope, "key");
    assert_eq!(d.retry_after_s, 1);
    assert!(!d.until_next_day);
    assert_eq!(
        d.message,
        "key 'mobile-app' is over its limit of 5 requests per second (burst 10)"
    );
}

#[test]
fn refills_as_time_passes() {
    let (clock, l) = limiter();
    let k = key(rps(5.0, Some(10)));
    assert_eq!(admitted(&l, &k, "m", 20), 10);
    clock.advance(Duration::from_millis(200));
    assert_eq!(admitted(&l, &k, "m", 5), 1, "one cell per 200 ms");
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        admitted(&l, &k, "m", 20),
        10,
        "a full burst after a quiet spell"
    );
}

#[test]
fn retry_after_comes_from_the_gcra() {
    let (clock, l) = limiter();
    let k = key(rps(0.1, None));
    assert!(l.check(&k, "m", DAY).is_ok());
    assert_eq!(l.check(&k, "m", DAY).unwrap_err().retry_after_s, 10);
    clock.advance(Duration::from_millis(8_500));
    assert_eq!(
        l.check(&k, "m", DAY).unwrap_err().retry_after_s,
        2,
        "1.5 s rounds up"
    );
    clock.advance(Duration::from_millis(1_500));
    assert!(l.check(&k, "m", DAY).is_ok());
}

#[test]
fn default_burst_is_the_rate() {
    let (_clock, l) = limiter();
    assert_eq!(admitted(&l, &key(rps(3.0, None)), "m", 10), 3);
}

#[test]
fn model_limits_are_separate_from_key_limits() {
    let (clock, l) = limiter();
    let mut k = key(rps(100.0, None));
    k.model_limits.insert("resnet".into(), rps(2.0, None));
    assert_eq!(admitted(&l, &k, "resnet", 2), 2);
    let d = l.check(&k, "resnet", DAY).unwrap_err();
    assert_eq!((d.limit, d.scope.as_str()), ("rps", "model resnet"));
    assert_eq!(
        d.message,
        "key 'mobile-app' is over its limit of 2 requests per second (burst 2) for model 'resnet'"
    );
    assert_eq!(
        admitted(&l, &k, "bert", 50),
        50,
        "other models use the key's limit"
    );

    // The key's limit applies to calls of a model with its own limits too.
    clock.advance(Duration::from_secs(10));
    let mut k = key(rps(3.0, None));
    k.id = "00000001".into();
    k.model_limits.insert("resnet".into(), rps(100.0, None));
    assert_eq!(admitted(&l, &k, "resnet", 3), 3);
    let d = l.check(&k, "resnet", DAY).unwrap_err();
    assert_eq!(d.scope, "key");
}

#[test]
fn concurrency_permit_is_released_on_drop() {
    let (_clock, l) = limiter();
    let k = key(Limits {
        max_concurrent: Some(2),
        ..Limits::default()
    });
    let a = l.check(&k, "m", DAY).unwrap();
    let b = l.check(&k, "m", DAY).unwrap();
    assert_eq!(b.key_in_flight(), 2);
    let d = l.check(&k, "m", DAY).unwrap_err();
    assert_eq!((d.limit, d.retry_after_s), ("concurrency", 1));
    assert_eq!(
        d.message,
        "key 'mobile-app' is over its limit of 2 concurrent requests"
    );
    drop(a);
    assert_eq!(l.in_flight(&k.id), 1);
    let c = l.check(&k, "m", DAY).unwrap();
    drop((b, c));
    assert_eq!(l.in_flight(&k.id), 0);
}

#[test]
fn model_concurrency_releases_the_key_slot_when_denied() {
    let (_clock, l) = limiter();
    let mut k = key(Limits {
        max_concurrent: Some(5),
        ..Limits::default()
    });
    k.model_limits.insert(
        "llm".into(),
        Limits {
            max_concurrent: Some(1),
            ..Limits::default()
        },
    );
    let _held = l.check(&k, "llm", DAY).unwrap();
    let d = l.check(&k, "llm", DAY).unwrap_err();
    assert_eq!((d.limit, d.scope.as_str()), ("concurrency", "model llm"));
    assert_eq!(
        l.in_flight(&k.id),
        1,
        "the denied request gave its key slot back"
    );
    let _other = l.check(&k, "bert", DAY).unwrap();
}

#[test]
fn daily_quota_then_next_day() {
    let (_clock, l) = limiter();
    let k = key(Limits {
        daily_requests: Some(3),
        ..Limits::default()
    });
    assert_eq!(admitted(&l, &k, "m", 5), 3);
    let d = l.check(&k, "m", DAY).unwrap_err();
    assert_eq!(d.limit, "daily_requests");
    assert!(d.until_next_day);
    assert_eq!(d.retry_after(DAY * SECONDS_PER_DAY + 86_000), 400);
    assert_eq!(
        d.message,
        "key 'mobile-app' is over its limit of 3 requests per day (UTC)"
    );
    assert!(
        l.check(&k, "m", DAY - 1).is_err(),
        "an earlier day does not refill"
    );
    assert!(
        l.check(&k, "m", DAY + 1).is_ok(),
        "a new day starts from zero"
    );
}

#[test]
fn denied_requests_do_not_count_against_the_quota() {
    let (_clock, l) = limiter();
    let k = key(Limits {
        rps: Some(1.0),
        max_concurrent: Some(10),
        daily_requests: Some(100),
        ..Limits::default()
    });
    assert_eq!(admitted(&l, &k, "m", 10), 1);
    assert_eq!(l.usage(DAY)[&k.id].requests, 1);
    assert_eq!(l.in_flight(&k.id), 0);
}

#[test]
fn model_daily_quota() {
    let (_clock, l) = limiter();
    let mut k = key(Limits::default());
    k.model_limits.insert(
        "llm".into(),
        Limits {
            daily_requests: Some(2),
            ..Limits::default()
        },
    );
    assert_eq!(admitted(&l, &k, "llm", 5), 2);
    assert_eq!(l.check(&k, "llm", DAY).unwrap_err().scope, "model llm");
    assert_eq!(admitted(&l, &k, "bert", 5), 5);
    let usage = &l.usage(DAY)[&k.id];
    assert_eq!(usage.requests, 7, "the key counts only admitted requests");
    assert_eq!(usage.models["llm"].requests, 2);
}

#[test]
fn spill_bytes_quota() {
    let (_clock, l) = limiter();
    let mut k = key(Limits {
        daily_spill_bytes: Some(1000),
        ..Limits::default()
    });
    assert!(l.may_spill(&k, "m", 1000, DAY));
    assert!(!l.may_spill(&k, "m", 1001, DAY));
    l.spilled(&k, "m", 600, DAY);
    assert!(!l.may_spill(&k, "m", 500, DAY));
    assert!(l.may_spill(&k, "m", 400, DAY));
    let d = l.try_spill(&k, "m", 500, DAY).unwrap_err();
    assert_eq!((d.limit, d.until_next_day), ("daily_spill_bytes", true));
    assert_eq!(
        d.message,
        "key 'mobile-app' is over its limit of 1000 bytes spilled to regions per day (UTC)"
    );
    assert!(l.try_spill(&k, "m", 400, DAY).is_ok());
    assert!(!l.may_spill(&k, "m", 1, DAY), "try_spill counted");
    assert!(l.may_spill(&k, "m", 1000, DAY + 1));
    k.spill = false;
    assert!(
        !l.may_spill(&k, "m", 1, DAY + 1),
        "a key without spill may not"
    );
}

#[test]
fn model_spill_quota() {
    let (_clock, l) = limiter();
    let mut k = key(Limits::default());
    k.model_limits.insert(
        "llm".into(),
        Limits {
            daily_spill_bytes: Some(100),
            ..Limits::default()
        },
    );
    l.spilled(&k, "llm", 80, DAY);
    assert!(!l.may_spill(&k, "llm", 30, DAY));
    assert_eq!(
        l.try_spill(&k, "llm", 30, DAY).unwrap_err().scope,
        "model llm"
    );
    assert!(l.may_spill(&k, "bert", 1 << 30, DAY));
    assert_eq!(l.usage(DAY)[&k.id].spill_bytes, 80);
}

#[test]
fn usage_snapshot_and_restore() {
    let (_clock, l) = limiter();
    let mut k = key(Limits {
        daily_requests: Some(5),
        daily_spill_bytes: Some(1000),
        ..Limits::default()
    });
    k.model_limits.insert(
        "llm".into(),
        Limits {
            daily_requests: Some(2),
            ..Limits::default()
        },
    );
    assert_eq!(admitted(&l, &k, "llm", 1), 1);
    assert_eq!(admitted(&l, &k, "bert", 2), 2);
    l.spilled(&k, "bert", 700, DAY);
    let usage = l.usage(DAY);
    let expected = Usage {
        requests: 3,
        spill_bytes: 700,
        models: [(
            "llm".to_owned(),
            ModelUsage {
                requests: 1,
                spill_bytes: 0,
            },
        )]
        .into(),
    };
    assert_eq!(usage, [(k.id.clone(), expected)].into());
    assert!(l.usage(DAY + 1).is_empty());

    // A restart: the new limiter carries on from the snapshot.
    let json = serde_json::to_string(&usage).unwrap();
    let (_clock, l2) = limiter();
    l2.restore(DAY, serde_json::from_str(&json).unwrap());
    assert_eq!(l2.usage(DAY), usage);
    assert_eq!(admitted(&l2, &k, "llm", 5), 1, "llm had 1 of 2");
    assert_eq!(admitted(&l2, &k, "bert", 5), 1, "the key had 4 of 5 by now");
    assert!(!l2.may_spill(&k, "bert", 301, DAY));

    // An older snapshot does not refill today's counters.
    l2.restore(DAY - 1, BTreeMap::from([(k.id.clone(), Usage::default())]));
    assert_eq!(l2.usage(DAY)[&k.id].requests, 5);
}

#[test]
fn changed_limits_take_effect_at_once() {
    let (_clock, l) = limiter();
    let mut k = key(rps(1.0, None));
    assert_eq!(admitted(&l, &k, "m", 3), 1);
    k.limits = rps(100.0, None);
    assert_eq!(admitted(&l, &k, "m", 3), 3);
    k.limits = Limits::default();
    assert_eq!(admitted(&l, &k, "m", 300), 300);
}

#[test]
fn forget_starts_over() {
    let (_clock, l) = limiter();
    let k = key(Limits {
        daily_requests: Some(1),
        max_concurrent: Some(1),
        ..Limits::default()
    });
    let held = l.check(&k, "m", DAY).unwrap();
    l.forget(&k.id);
    assert!(l.usage(DAY).is_empty());
    let again = l.check(&k, "m", DAY).unwrap();
    drop(held); // decrements the forgotten state's counter, not the new one
    assert_eq!(l.in_flight(&k.id), 1);
    drop(again);
}

#[test]
fn no_limits_admit_everything() {
    let (_clock, l) = limiter();
    let k = key(Limits::default());
    assert_eq!(admitted(&l, &k, "m", 1000), 1000);
    assert_eq!(l.usage(DAY)[&k.id].requests, 1000);
}

#[test]
fn day_helpers() {
    assert_eq!(utc_day(0), 0);
    assert_eq!(utc_day(86_399), 0);
    assert_eq!(utc_day(86_400), 1);
    assert_eq!(seconds_until_next_utc_day(86_399), 1);
    assert_eq!(seconds_until_next_utc_day(86_400), 86_400);
}

#[test]
fn denied_serialises_for_the_429_body() {
    let (_clock, l) = limiter();
    let k = key(rps(1.0, None));
    let _ = l.check(&k, "m", DAY);
    let d = l.check(&k, "m", DAY).unwrap_err();
    let body = serde_json::to_value(&d).unwrap();
    assert_eq!(body["limit"], "rps");
    assert_eq!(body["scope"], "key");
    assert_eq!(body["retry_after_s"], 1);
    assert!(body["error"].as_str().unwrap().contains("mobile-app"));
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Limiter>();
    send_sync::<Limiter<FakeRelativeClock>>();
    send_sync::<Permit>();
    send_sync::<crate::KeyStore>();
    send_sync::<crate::Secret>();
}
