//! What `Costs::record` costs on the request path: nanoseconds per record
//! on one thread, and per record across threads sharing the one ledger,
//! with the real clock, budgets on some keys and a region, 180 series.
//!
//! `cargo run --release -p nusa-cost --example cost_record`

// A benchmark reads the clock; the crate's clippy.toml bans it elsewhere.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use nusa_cost::{
    utc_clock, Action, At, Budget, Budgets, Config, Costs, Place, Pricing, RegionPrice, Usage,
};

const KEYS: [&str; 20] = [
    "k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09", "k10", "k11", "k12",
    "k13", "k14", "k15", "k16", "k17", "k18", "k19",
];
const MODELS: [&str; 3] = ["resnet", "bert", "yolo"];

fn usage(i: usize) -> Usage<'static> {
    let place = match i % 3 {
        0 => Place::Local,
        1 => Place::Cache,
        _ => Place::Region {
            name: "sg-1",
            country: Some("SG"),
        },
    };
    Usage {
        model: MODELS[i / 3 % 3],
        version: 1,
        key: Some(KEYS[i / 9 % 20]),
        place,
        compute_s: 0.000_8,
        bytes_in: 600_000,
        bytes_out: 4_000,
    }
}

fn main() {
    let mut regions = BTreeMap::new();
    regions.insert(
        "sg-1".to_string(),
        RegionPrice {
            per_request: 0.000_02,
            per_gb: 0.02,
        },
    );
    let mut budgets = Budgets::default();
    for k in &KEYS[..5] {
        budgets.keys.insert(
            k.to_string(),
            Budget {
                daily: 1e9,
                action: Action::StopSpill,
            },
        );
    }
    budgets.regions.insert(
        "sg-1".into(),
        Budget {
            daily: 1e9,
            action: Action::Alert,
        },
    );
    let config = Config {
        pricing: Pricing {
            local_per_compute_second: 0.000_4,
            egress_per_gb: 0.09,
            regions,
            ..Pricing::default()
        },
        budgets,
        ..Config::default()
    };
    let metrics = nusa_telemetry::Metrics::new();
    let fixed = Costs::open(
        config.clone(),
        &nusa_telemetry::Metrics::new(),
        None,
        Box::new(|| At::utc(1_750_000_000)),
    )
    .expect("valid config");
    let costs = Arc::new(Costs::open(config, &metrics, None, utc_clock()).expect("valid config"));
    // Every series exists before timing: the steady state of a server.
    for i in 0..180 {
        costs.record(&usage(i));
        fixed.record(&usage(i));
    }

    let n = 2_000_000;
    let start = Instant::now();
    for i in 0..n {
        costs.record(&usage(i));
    }
    let one = start.elapsed().as_nanos() as f64 / n as f64;

    let start = Instant::now();
    for i in 0..n {
        fixed.record(&usage(i));
    }
    let no_clock = start.elapsed().as_nanos() as f64 / n as f64;

    let threads = 4;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let costs = costs.clone();
            std::thread::spawn(move || {
                for i in 0..n / threads {
                    costs.record(&usage(i * threads + t));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("recording thread");
    }
    let many = start.elapsed().as_nanos() as f64 / n as f64;
    let start = Instant::now();
    let mut check = 0;
    for i in 0..n {
        check += usize::from(costs.may_spill(usage(i).key, "sg-1"));
    }
    assert_eq!(check, n);
    let spill = start.elapsed().as_nanos() as f64 / n as f64;

    println!("cost_record: {one:.0} ns per record (1 thread, 180 series, real clock)");
    println!("cost_record: {no_clock:.0} ns per record with a clock that reads nothing");
    println!(
        "cost_record: {many:.0} ns per record of wall time with {threads} threads recording at once"
    );
    println!("cost_record: {spill:.0} ns per may_spill check");
}
