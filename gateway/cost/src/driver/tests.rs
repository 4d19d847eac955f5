// The tests write damaged ledger files on purpose.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::core::{Bounds, Budget, Budgets, Pricing, RegionPrice};

/// A day's first second, far from the epoch.
const T0: u64 = 20_000 * 86_400;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

#[derive(Clone)]
struct SimClock(Arc<AtomicU64>);

impl SimClock {
    fn new() -> SimClock {
        SimClock(Arc::new(AtomicU64::new(T0)))
    }

    fn clock(&self) -> Clock {
        let now = self.0.clone();
        Box::new(move || At::utc(now.load(Ordering::Relaxed)))
    }

    fn pass(&self, s: u64) {
        self.0.fetch_add(s, Ordering::Relaxed);
    }
}

fn config() -> Config {
    let mut regions = BTreeMap::new();
    regions.insert(
        "sg-1".to_string(),
        RegionPrice {
            per_request: 0.25,
            per_gb: 0.5,
        },
    );
    let mut budgets = Budgets::default();
    budgets.keys.insert(
        "alice".into(),
        Budget {
            daily: 1.0,
            action: Action::StopSpill,
        },
    );
    budgets.regions.insert(
        "sg-1".into(),
        Budget {
            daily: 100.0,
            action: Action::Alert,
        },
    );
    Config {
        pricing: Pricing {
            currency: "USD".into(),
            local_per_compute_second: 0.5,
            egress_per_gb: 0.125,
            regions,
        },
        budgets,
        bounds: Bounds::default(),
    }
}

fn open(config: Config, path: Option<PathBuf>, clock: &SimClock) -> (Costs, Arc<Metrics>) {
    let metrics = Metrics::new();
    let costs = Costs::open(config, &metrics, path, clock.clock()).unwrap();
    (costs, metrics)
}

fn sg() -> Place<'static> {
    Place::Region {
        name: "sg-1",
        country: Some("SG"),
    }
}

fn usage<'a>(model: &'a str, key: Option<&'a str>, place: Place<'a>, n: u64) -> Usage<'a> {
    Usage {
        model,
        version: 1 + n % 2,
        key,
        place,
        compute_s: if place == Place::Local {
            0.001 * (n % 7) as f64
        } else {
            0.0
        },
        bytes_in: 1000 + n,
        bytes_out: 50_000 + 3 * n,
    }
}

/// A mixed load over a few hours.
fn load(costs: &Costs, clock: &SimClock, n: u64) {
    for i in 0..n {
        let key = [Some("alice"), Some("bob"), None][i as usize % 3];
        let place = [Place::Local, Place::Cache, sg(), Place::Local][i as usize % 4];
        let model = ["resnet", "bert"][i as usize % 2];
        costs.record(&usage(model, key, place, i));
        if i % 50 == 49 {
            clock.pass(HOUR / 2);
        }
    }
}

/// One sample: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: HashMap<String, String>,
    value: f64,
}

/// The samples of one metric in the exposition text.
fn samples(text: &str, name: &str) -> Vec<Sample> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect(line);
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            Some(Sample {
                labels,
                value: value.parse().expect(line),
            })
        })
        .collect()
}

fn sum(samples: &[Sample], filter: impl Fn(&Sample) -> bool) -> f64 {
    samples.iter().filter(|s| filter(s)).map(|s| s.value).sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

/// Every figure of `report` (its totals and each row) equals what the
/// metrics families hold for the same series.
fn assert_report_matches_metrics(report: &Report, text: &str) {
    let requests = samples(text, "nusa_cost_requests_total");
    let compute = samples(text, "nusa_cost_compute_seconds_total");
    let bytes = samples(text, "nusa_cost_bytes_total");
    let money = samples(text, "nusa_cost_money_total");
    assert!(!requests.is_empty(), "{text}");
    let t = &report.totals;
    assert_eq!(sum(&requests, |_| true), t.requests as f64);
    assert!(close(sum(&compute, |_| true), t.compute_s));
    let dir = |d: &'static str| move |s: &Sample| s.labels["direction"] == d;
    assert_eq!(sum(&bytes, dir("in")), t.bytes_in as f64);
    assert_eq!(sum(&bytes, dir("out")), t.bytes_out as f64);
    assert!(
        close(sum(&money, |_| true), t.cost),
        "{} {}",
        sum(&money, |_| true),
        t.cost
    );
    assert!(money
        .iter()
        .all(|s| s.labels["currency"] == report.currency));
    let cloud = |s: &Sample| s.labels["place"].starts_with("cloud:");
    assert_eq!(sum(&requests, cloud), t.region_requests as f64);
    assert_eq!(sum(&bytes, cloud), t.region_bytes as f64);
    for (j, n) in &t.jurisdictions {
        assert_eq!(
            sum(&requests, |s| &s.labels["jurisdiction"] == j),
            *n as f64
        );
    }
    let label = match report.by {
        By::Key => "key",
        By::Model => "model",
        By::Place => "place",
        _ => return,
    };
    for row in &report.rows {
        let mine = |s: &Sample| s.labels[label] == row.group;
        assert_eq!(
            sum(&requests, mine),
            row.totals.requests as f64,
            "{}",
            row.group
        );
        assert!(close(sum(&money, mine), row.totals.cost), "{}", row.group);
    }
}

#[test]
fn report_totals_match_the_metrics() {
    let clock = SimClock::new();
    let (costs, metrics) = open(config(), None, &clock);
    load(&costs, &clock, 600);
    let text = metrics.encode();
    for by in [By::Key, By::Model, By::Version, By::Region, By::Place] {
        let r = costs.report(24, by);
        assert_eq!(r.totals.requests, 600, "{by}");
        assert_report_matches_metrics(&r, &text);
    }
    // Key labels are names, `-` without a key; never a secret.
    let keys: std::collections::BTreeSet<String> = samples(&text, "nusa_cost_requests_total")
        .into_iter()
        .map(|s| s.labels["key"].clone())
        .collect();
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["-", "alice", "bob"]);
    // A shorter window counts fewer.
    assert!(costs.report(1, By::Key).totals.requests < 600);
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn crossings_are_logged_counted_and_stop_spilling_for_the_day() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let clock = SimClock::new();
    let (costs, metrics) = open(config(), None, &clock);
    // Half of alice's budget of 1.0 per request (1 s of compute at 0.5).
    let half = Usage {
        compute_s: 1.0,
        bytes_out: 0,
        ..usage("resnet", Some("alice"), Place::Local, 0)
    };
    tracing::subscriber::with_default(subscriber, || {
        assert!(costs.record(&half).is_empty());
        let c = costs.record(&Usage {
            compute_s: 0.6,
            ..half
        });
        assert_eq!(c.iter().map(|c| c.threshold).collect::<Vec<_>>(), [80]);
        assert!(costs.may_spill(Some("alice"), "sg-1"));
        let c = costs.record(&half);
        assert_eq!(c.iter().map(|c| c.threshold).collect::<Vec<_>>(), [100]);
        assert!(costs.record(&half).is_empty(), "once a day");
    });
    let text = String::from_utf8(logs.0.lock().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("WARN") && lines[0].contains("80% of a daily budget spent"));
    assert!(
        lines[0].contains("name=\"alice\"") || lines[0].contains("name=alice"),
        "{text}"
    );
    assert!(
        lines[1].contains("ERROR") && lines[1].contains("no more spilling"),
        "{text}"
    );

    let m = metrics.encode();
    let crossings = samples(&m, "nusa_cost_budget_crossings_total");
    assert_eq!(crossings.len(), 2, "{m}");
    assert!(crossings
        .iter()
        .all(|s| s.value == 1.0 && s.labels["name"] == "alice"));
    let ratio = |m: &str, name: &str| {
        samples(m, "nusa_cost_budget_used_ratio")
            .into_iter()
            .find(|s| s.labels["name"] == name)
            .map(|s| s.value)
    };
    assert_eq!(ratio(&m, "alice"), Some(1.8));
    assert_eq!(ratio(&m, "sg-1"), Some(0.0));

    // alice spills nowhere today; bob and the unauthenticated still do.
    assert!(!costs.may_spill(Some("alice"), "sg-1"));
    assert!(costs.may_spill(Some("bob"), "sg-1"));
    assert!(costs.may_spill(None, "sg-1"));
    assert!(costs.budgets()[0].spill_stopped);

    // Tomorrow: open again, and the timer puts the gauge back to 0.
    clock.pass(DAY);
    assert!(costs.may_spill(Some("alice"), "sg-1"));
    costs.tick().unwrap();
    assert_eq!(ratio(&metrics.encode(), "alice"), Some(0.0));
}

#[test]
fn persisted_ledger_reopens_with_its_figures_budgets_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cost").join("ledger.json");
    let clock = SimClock::new();
    let (costs, metrics) = open(config(), Some(path.clone()), &clock);
    load(&costs, &clock, 300);
    costs.record(&Usage {
        compute_s: 5.0,
        ..usage("resnet", Some("alice"), Place::Local, 0)
    });
    assert!(!costs.may_spill(Some("alice"), "sg-1"));
    costs.tick().unwrap();
    assert!(path.exists());
    assert!(!dir.path().join("cost").join(".ledger.json.tmp").exists());
    let before = costs.report(48, By::Place);
    let before_text = metrics.encode();
    drop(costs);

    let (again, metrics) = open(config(), Some(path.clone()), &clock);
    let after = again.report(48, By::Place);
    assert_eq!(after, before);
    assert!(!again.may_spill(Some("alice"), "sg-1"));
    // The counters start from the ledger's lifetime figures: no reset seen
    // by Prometheus, and still equal to the report.
    let text = metrics.encode();
    assert_report_matches_metrics(&after, &text);
    for name in ["nusa_cost_requests_total", "nusa_cost_money_total"] {
        assert!(close(
            sum(&samples(&text, name), |_| true),
            sum(&samples(&before_text, name), |_| true)
        ));
    }
    // Unchanged since: nothing to write.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    again.persist().unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn a_damaged_or_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    let clock = SimClock::new();
    let try_open = |config: Config| {
        let metrics = Metrics::new();
        match Costs::open(config, &metrics, Some(path.clone()), clock.clock()) {
            Ok(_) => panic!("opened"),
            Err(e) => e.to_string(),
        }
    };

    std::fs::write(&path, "{\"format\": 1, \"currency\": \"USD\", \"ser").unwrap();
    let e = try_open(config());
    assert!(
        e.starts_with(&format!("cost ledger {} is damaged (", path.display())),
        "{e}"
    );
    assert!(e.ends_with("move it away to start a new ledger"), "{e}");

    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(try_open(config()).contains("is damaged"));

    // A good ledger, read under another currency.
    std::fs::remove_file(&path).unwrap();
    let (costs, _) = open(config(), Some(path.clone()), &clock);
    load(&costs, &clock, 10);
    costs.persist().unwrap();
    let mut eur = config();
    eur.pricing.currency = "EUR".into();
    let e = try_open(eur);
    assert!(
        e.contains("the ledger counts money in USD, but pricing.currency is EUR"),
        "{e}"
    );

    // A file far too large to be a ledger is not read whole.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_STATE_BYTES + 1).unwrap();
    assert!(try_open(config()).contains("is larger than"));

    // A bad configuration is refused before the file is read.
    let mut bad = config();
    bad.pricing.egress_per_gb = f64::NAN;
    assert!(try_open(bad).starts_with("pricing.egress_per_gb"));
}

#[test]
fn series_that_age_out_leave_the_metrics() {
    let clock = SimClock::new();
    let mut c = config();
    c.bounds = Bounds {
        max_series: 1,
        days: 2,
        hourly_hours: 24,
    };
    let (costs, metrics) = open(c, None, &clock);
    costs.record(&usage("resnet", Some("bob"), Place::Local, 1));
    costs.record(&usage("bert", Some("bob"), Place::Local, 1));
    let text = metrics.encode();
    assert_eq!(samples(&text, "nusa_cost_requests_total").len(), 2);
    assert!(text.contains("nusa_cost_folded_records_total 1"), "{text}");

    clock.pass(2 * DAY);
    costs.tick().unwrap();
    let text = metrics.encode();
    assert!(
        samples(&text, "nusa_cost_requests_total").is_empty(),
        "{text}"
    );
    assert!(samples(&text, "nusa_cost_money_total").is_empty(), "{text}");
    assert_eq!(costs.report(24 * 400, By::Key).totals.requests, 0);

    // The freed place takes a new series, and its counters start anew.
    costs.record(&usage("bert", Some("bob"), Place::Local, 1));
    let text = metrics.encode();
    let r = samples(&text, "nusa_cost_requests_total");
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].labels["model"].as_str(), r[0].value), ("bert", 1.0));
}

#[test]
fn records_from_threads_while_scraping_and_ticking_add_up() {
    let clock = SimClock::new();
    let (costs, metrics) = open(config(), None, &clock);
    let costs = Arc::new(costs);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let costs = costs.clone();
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    // New series keep appearing while others scrape.
                    let model = format!("m{}", (i + t) % 40);
                    costs.record(&usage(&model, Some("bob"), Place::Local, i));
                }
            })
        })
        .collect();
    for _ in 0..50 {
        let _ = metrics.encode();
        costs.tick().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    let r = costs.report(24, By::Model);
    assert_eq!(r.totals.requests, 2000);
    assert_report_matches_metrics(&r, &metrics.encode());
}
