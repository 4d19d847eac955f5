//! What checking a key and its limits costs per request:
//! `cargo run --release -p nusa-auth --example auth_cost [iterations]`.
//!
//! Measures `KeyStore::authenticate` + `KeyRecord::may_call` +
//! `Limiter::check` (rate, concurrency, daily quota, on a key with limits
//! and per-model limits, on governor's real clock), plus each part alone,
//! and prints nanoseconds per request. The limits are set high enough that
//! every request is admitted: the admitted path is the one every request
//! pays.

use std::hint::black_box;
use std::time::Instant;

use nusa_auth::{utc_day, KeySpec, KeyStore, Limiter, Limits, Role};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let dir = tempfile::tempdir()?;
    let store = KeyStore::open(&dir.path().join("keys.redb"))?;
    // A store of realistic size: the key under test among 1,000.
    for i in 0..999 {
        store.create(KeySpec::new(format!("filler-{i}"), Role::Infer), 0)?;
    }
    let mut spec = KeySpec::new("mobile-app", Role::Infer);
    spec.models = vec!["yolo-*".into(), "resnet-50".into()];
    let roomy = Limits {
        rps: Some(1e8),
        burst: Some(1_000_000),
        max_concurrent: Some(64),
        daily_requests: Some(u64::MAX),
        daily_spill_bytes: Some(1 << 40),
    };
    spec.limits = roomy;
    spec.model_limits.insert("resnet-50".into(), roomy);
    let (_, secret) = store.create(spec, 0)?;
    let key = secret.expose().to_owned();

    let limiter = Limiter::default();
    let now = 1_750_000_000;
    let day = utc_day(now);
    let model = "resnet-50";

    // Warm up (quanta calibrates its clock on first use).
    for _ in 0..10_000 {
        let record = store.authenticate(&key, now)?;
        drop(limiter.check(&record, model, day)?);
    }

    let auth = measure(iterations, || {
        black_box(store.authenticate(black_box(&key), now).is_ok());
    });
    let record = store.authenticate(&key, now)?;
    let check = measure(iterations, || {
        black_box(limiter.check(black_box(&record), model, day).is_ok());
    });
    let both = measure(iterations, || {
        let Ok(record) = store.authenticate(black_box(&key), now) else {
            panic!("the key stopped authenticating");
        };
        assert!(record.may_call(model));
        let permit = limiter.check(&record, model, day);
        black_box(permit.is_ok());
    });
    println!("authenticate:                     {auth:7.0} ns/request");
    println!("limiter check (key + model):      {check:7.0} ns/request");
    println!("authenticate + may_call + check:  {both:7.0} ns/request ({iterations} iterations)");
    Ok(())
}

fn measure(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}
