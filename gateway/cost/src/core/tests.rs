use std::collections::BTreeMap;

use super::*;

/// A day's first hour, far from the epoch.
const B: u64 = 24 * 20_000;

fn at(hour: u64) -> At {
    At {
        hour,
        day: hour / 24,
    }
}

fn usage<'a>(model: &'a str, key: Option<&'a str>, place: Place<'a>) -> Usage<'a> {
    Usage {
        model,
        version: 1,
        key,
        place,
        compute_s: 0.0,
        bytes_in: 0,
        bytes_out: 0,
    }
}

fn sg() -> Place<'static> {
    Place::Region {
        name: "sg-1",
        country: Some("SG"),
    }
}

fn eu() -> Place<'static> {
    Place::Region {
        name: "eu-1",
        country: Some("de"),
    }
}

const GB: u64 = 1 << 30;

fn priced() -> Pricing {
    let mut regions = BTreeMap::new();
    regions.insert(
        "sg-1".to_string(),
        RegionPrice {
            per_request: 0.25,
            per_gb: 3.0,
        },
    );
    Pricing {
        currency: "SGD".into(),
        local_per_compute_second: 0.5,
        egress_per_gb: 2.0,
        regions,
    }
}

fn ledger(pricing: Pricing, budgets: Budgets, bounds: Bounds) -> Ledger {
    Ledger::new(Config {
        pricing,
        budgets,
        bounds,
    })
    .unwrap()
}

fn row<'r>(r: &'r Report, group: &str) -> &'r Row {
    r.rows
        .iter()
        .find(|row| row.group == group)
        .unwrap_or_else(|| panic!("no row {group} in {:#?}", r.rows))
}

fn groups(r: &Report) -> Vec<&str> {
    let mut g: Vec<&str> = r.rows.iter().map(|r| r.group.as_str()).collect();
    g.sort_unstable();
    g
}

/// The totals are the sum of the rows, field by field.
fn assert_totals_are_the_rows(r: &Report) {
    let mut sum = Totals::default();
    for row in &r.rows {
        let t = &row.totals;
        sum.requests += t.requests;
        sum.compute_s += t.compute_s;
        sum.bytes_in += t.bytes_in;
        sum.bytes_out += t.bytes_out;
        sum.region_requests += t.region_requests;
        sum.region_bytes += t.region_bytes;
        sum.cost += t.cost;
        for (j, n) in &t.jurisdictions {
            *sum.jurisdictions.entry(j.clone()).or_default() += n;
        }
    }
    assert_eq!(sum, r.totals, "{r:#?}");
}

#[test]
fn money_per_place_from_the_pricing() {
    let mut l = ledger(priced(), Budgets::default(), Bounds::default());
    let local = Usage {
        compute_s: 2.0,
        bytes_in: 7,
        bytes_out: GB / 2,
        ..usage("m", Some("k"), Place::Local)
    };
    // 2 s * 0.5 + 0.5 GB egress * 2.
    assert_eq!(l.record(&local, at(B)).money, 2.0);
    let cache = Usage {
        bytes_in: 7,
        bytes_out: GB,
        ..usage("m", Some("k"), Place::Cache)
    };
    // No compute; 1 GB egress * 2.
    assert_eq!(l.record(&cache, at(B)).money, 2.0);
    let region = Usage {
        bytes_in: GB / 2,
        bytes_out: GB / 2,
        ..usage("m", Some("k"), sg())
    };
    // 0.25 per request + 1 GB through the region * 3 + 1 GB egress * 2
    // (the forwarded request and the answer both leave the box).
    assert_eq!(l.record(&region, at(B)).money, 5.25);
    let unpriced = Usage {
        bytes_in: GB / 4,
        bytes_out: GB / 4,
        ..usage("m", Some("k"), eu())
    };
    // A region without a price: egress only.
    assert_eq!(l.record(&unpriced, at(B)).money, 1.0);

    let r = l.report(B, at(B), By::Place);
    assert_eq!(r.currency, "SGD");
    assert_eq!(row(&r, "local").totals.cost, 2.0);
    assert_eq!(row(&r, "cache").totals.cost, 2.0);
    assert_eq!(row(&r, "cloud:sg-1").totals.cost, 5.25);
    assert_eq!(row(&r, "cloud:eu-1").totals.cost, 1.0);
    assert_eq!(r.totals.cost, 10.25);
    assert_eq!(r.totals.region_requests, 2);
    assert_eq!(r.totals.region_bytes, GB + GB / 2);
    assert_eq!(r.rows[0].group, "cloud:sg-1", "highest cost first");
    let j: Vec<(&str, u64)> = r
        .totals
        .jurisdictions
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(j, [("DE", 1), ("SG", 1), ("local", 2)]);
    assert_totals_are_the_rows(&r);
}

#[test]
fn compute_shares_of_a_batch_add_up_to_the_batch() {
    let mut l = ledger(priced(), Budgets::default(), Bounds::default());
    let batch_s = 0.03;
    let rows = [1, 2, 5];
    let total: usize = rows.iter().sum();
    for (i, n) in rows.iter().enumerate() {
        let key = format!("k{i}");
        let u = Usage {
            compute_s: share(batch_s, *n, total),
            ..usage("m", Some(&key), Place::Local)
        };
        l.record(&u, at(B));
    }
    let r = l.report(B, at(B), By::Key);
    assert!((r.totals.compute_s - batch_s).abs() < 1e-15, "{r:#?}");
    assert!((r.totals.cost - batch_s * 0.5).abs() < 1e-15);
    // 5 of the 8 rows.
    assert!((row(&r, "k2").totals.compute_s - 0.03 * 5.0 / 8.0).abs() < 1e-15);
    assert_eq!(share(1.0, 1, 0), 0.0);
    // A negative or NaN timing counts as none.
    let u = Usage {
        compute_s: f64::NAN,
        ..usage("m", Some("k9"), Place::Local)
    };
    assert_eq!(l.record(&u, at(B)).money, 0.0);
}

#[test]
fn hourly_buckets_and_windows_by_each_grouping() {
    let mut l = ledger(priced(), Budgets::default(), Bounds::default());
    let a = Usage {
        compute_s: 1.0,
        bytes_in: 10,
        bytes_out: 20,
        ..usage("resnet", Some("alice"), Place::Local)
    };
    let b = Usage {
        version: 2,
        bytes_in: 100,
        bytes_out: 200,
        ..usage("bert", Some("bob"), sg())
    };
    let c = Usage {
        bytes_in: 1,
        bytes_out: 2,
        ..usage("resnet", None, Place::Cache)
    };
    l.record(&a, at(B + 1));
    l.record(&b, at(B + 5));
    l.record(&c, at(B + 10));
    l.record(&a, at(B + 10));

    let now = at(B + 10);
    let all = l.report(B, now, By::Key);
    assert_eq!(groups(&all), ["-", "alice", "bob"]);
    assert_eq!(all.totals.requests, 4);
    assert_eq!(all.since_hour, B);
    assert_eq!(all.now_hour, B + 10);

    // From hour B+5: alice's first request is out.
    let r = l.report(B + 5, now, By::Key);
    assert_eq!(row(&r, "alice").totals.requests, 1);
    assert_eq!(r.totals.requests, 3);
    // From B+6: bob's is out too.
    let r = l.report(B + 6, now, By::Key);
    assert_eq!(groups(&r), ["-", "alice"]);
    // A window that ended before the records.
    let r = l.report(B, at(B), By::Key);
    assert_eq!(r.totals.requests, 0);
    assert!(r.rows.is_empty());
    // A window starting after now is empty, not a panic.
    assert!(l.report(B + 11, now, By::Key).rows.is_empty());

    let r = l.report(B, now, By::Model);
    assert_eq!(groups(&r), ["bert", "resnet"]);
    assert_eq!(row(&r, "resnet").totals.requests, 3);
    assert_eq!(row(&r, "resnet").totals.compute_s, 2.0);

    let r = l.report(B, now, By::Version);
    assert_eq!(groups(&r), ["bert/2", "resnet/1"]);

    let r = l.report(B, now, By::Region);
    assert_eq!(groups(&r), ["cloud:sg-1", "local"]);
    let local = &row(&r, "local").totals;
    assert_eq!((local.requests, local.region_requests), (3, 0));
    let cloud = &row(&r, "cloud:sg-1").totals;
    assert_eq!((cloud.region_requests, cloud.region_bytes), (1, 300));
    assert_eq!(cloud.jurisdictions.get("SG"), Some(&1));

    let r = l.report(B, now, By::Place);
    assert_eq!(groups(&r), ["cache", "cloud:sg-1", "local"]);
    assert_eq!(row(&r, "cache").totals.jurisdictions.get("local"), Some(&1));

    let r = l.report(B, now, By::Jurisdiction);
    assert_eq!(groups(&r), ["SG", "local"]);
    assert_eq!(row(&r, "local").totals.requests, 3, "the cache is local");
    assert_eq!(row(&r, "SG").totals.region_requests, 1);

    for by in [
        By::Key,
        By::Model,
        By::Version,
        By::Region,
        By::Place,
        By::Jurisdiction,
    ] {
        let r = l.report(B, now, by);
        assert_totals_are_the_rows(&r);
        assert_eq!(r.totals.requests, 4);
        assert_eq!(r.totals.bytes_in, 10 + 100 + 1 + 10);
        assert_eq!(r.totals.bytes_out, 20 + 200 + 2 + 20);
    }
}

#[test]
fn old_hours_become_days_and_old_days_go_with_their_series() {
    let bounds = Bounds {
        max_series: 10,
        days: 3,
        hourly_hours: 24,
    };
    let mut l = ledger(priced(), Budgets::default(), bounds);
    l.record(&usage("m", Some("old"), Place::Local), at(B + 3));
    l.record(&usage("m", Some("new"), Place::Local), at(B + 53));
    // B+53 - 24 h is in day B+1: day B is kept as one bucket.
    assert_eq!(l.hourly_floor, B + 24);
    assert_eq!(l.daily.len(), 1);

    // A window from an hour of day B starts at the day's start.
    let r = l.report(B + 10, at(B + 53), By::Key);
    assert_eq!(r.since_hour, B);
    assert_eq!(groups(&r), ["new", "old"]);
    // From an hour still kept by the hour: exact.
    let r = l.report(B + 30, at(B + 53), By::Key);
    assert_eq!(r.since_hour, B + 30);
    assert_eq!(groups(&r), ["new"]);
    assert!(l.take_dropped().is_empty());

    // Day B+3 begins: three days kept (B+1 ..= B+3), day B and "old" go.
    assert!(l.advance(B + 72));
    assert!(!l.advance(B + 72), "the same hour again moves nothing");
    let dropped = l.take_dropped();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].1.key, "old");
    assert_eq!(l.series_count(), 1);
    assert!(l.daily.is_empty());
    let r = l.report(B, at(B + 72), By::Key);
    assert_eq!(r.since_hour, B + 24, "before the days kept");
    assert_eq!(groups(&r), ["new"]);
}

#[test]
fn a_clock_that_goes_back_counts_in_the_latest_hour_and_day() {
    let mut budgets = Budgets::default();
    budgets.keys.insert(
        "k".into(),
        Budget {
            daily: 1.0,
            action: Action::Alert,
        },
    );
    let mut l = ledger(priced(), budgets, Bounds::default());
    let u = Usage {
        compute_s: 1.6,
        ..usage("m", Some("k"), Place::Local)
    };
    assert_eq!(l.record(&u, at(B + 30)).crossings.len(), 1);
    // Back to the day before: no new day, no second 80% crossing.
    let r = l.record(&u, at(B + 2));
    assert_eq!(r.crossings.len(), 1);
    assert_eq!(r.crossings[0].threshold, 100);
    assert_eq!(r.crossings[0].day, (B + 30) / 24);
    assert_eq!(l.hourly.keys().copied().collect::<Vec<_>>(), [B + 30]);
}

#[test]
fn country_codes_of_any_case_are_one_series() {
    let mut l = ledger(priced(), Budgets::default(), Bounds::default());
    let lower = Place::Region {
        name: "sg-1",
        country: Some("sg"),
    };
    let first = l.record(&usage("m", None, lower), at(B));
    let second = l.record(&usage("m", None, sg()), at(B));
    assert_eq!(first.series, second.series);
    assert!(!second.created);
    let s = l.series(first.series).unwrap();
    assert_eq!(s.jurisdiction, "SG");
    let unknown = Place::Region {
        name: "sg-1",
        country: None,
    };
    let third = l.record(&usage("m", None, unknown), at(B));
    assert_ne!(third.series, first.series);
    assert_eq!(l.series(third.series).unwrap().jurisdiction, "unknown");
}

fn budgets_of(keys: &[(&str, f64, Action)], regions: &[(&str, f64, Action)]) -> Budgets {
    let map = |list: &[(&str, f64, Action)]| {
        list.iter()
            .map(|(n, daily, action)| {
                (
                    n.to_string(),
                    Budget {
                        daily: *daily,
                        action: *action,
                    },
                )
            })
            .collect()
    };
    Budgets {
        keys: map(keys),
        regions: map(regions),
    }
}

#[test]
fn budget_crossings_at_80_and_100_once_a_day_and_again_the_next() {
    let budgets = budgets_of(&[("alice", 10.0, Action::Alert)], &[]);
    let pricing = Pricing {
        local_per_compute_second: 1.0,
        ..Pricing::default()
    };
    let mut l = ledger(pricing, budgets, Bounds::default());
    let u = Usage {
        compute_s: 3.0,
        ..usage("m", Some("alice"), Place::Local)
    };
    let thresholds = |r: Recorded| -> Vec<u8> { r.crossings.iter().map(|c| c.threshold).collect() };
    let day = B / 24;
    assert_eq!(thresholds(l.record(&u, at(B))), [] as [u8; 0]); // 3
    assert_eq!(thresholds(l.record(&u, at(B + 1))), [] as [u8; 0]); // 6
    let r = l.record(&u, at(B + 2)); // 9
    assert_eq!(r.key_ratio, Some(0.9));
    let c = &r.crossings[0];
    assert_eq!(
        (c.scope.clone(), c.threshold, c.spent, c.budget, c.day),
        (Scope::Key("alice".into()), 80, 9.0, 10.0, day)
    );
    assert_eq!(thresholds(l.record(&u, at(B + 3))), [100]); // 12
    assert_eq!(thresholds(l.record(&u, at(B + 4))), [] as [u8; 0]); // 15
    let status = &l.budget_state(day)[0];
    assert_eq!(
        (status.reached, status.spent, status.ratio),
        (100, 15.0, 1.5)
    );
    assert!(!status.spill_stopped, "alert only");
    // Another key, no budget: never a crossing.
    let bob = Usage {
        compute_s: 100.0,
        ..usage("m", Some("bob"), Place::Local)
    };
    assert!(l.record(&bob, at(B + 4)).crossings.is_empty());

    // The next day starts from nothing.
    assert_eq!(l.budget_state(day + 1)[0].spent, 0.0);
    assert_eq!(thresholds(l.record(&u, at(B + 24))), [] as [u8; 0]);
    assert_eq!(thresholds(l.record(&u, at(B + 25))), [] as [u8; 0]);
    assert_eq!(thresholds(l.record(&u, at(B + 26))), [80]);
    // One request past both thresholds reports both, in order.
    let big = Usage {
        compute_s: 50.0,
        ..u
    };
    assert_eq!(thresholds(l.record(&big, at(B + 48))), [80, 100]);
}

#[test]
fn stop_spill_stops_that_key_or_region_only_and_for_that_day() {
    let budgets = budgets_of(
        &[
            ("alice", 1.0, Action::StopSpill),
            ("bob", 1.0, Action::Alert),
        ],
        &[
            ("sg-1", 1.0, Action::StopSpill),
            ("eu-1", 1.0, Action::Alert),
        ],
    );
    let mut pricing = priced();
    pricing.egress_per_gb = 0.0;
    pricing.regions.insert(
        "eu-1".into(),
        RegionPrice {
            per_request: 0.75,
            per_gb: 0.0,
        },
    );
    pricing.regions.get_mut("sg-1").unwrap().per_request = 0.75;
    let mut l = ledger(pricing, budgets, Bounds::default());
    let day = B / 24;
    let all_open = |l: &Ledger, day| {
        ["alice", "bob", "carol"].iter().all(|k| {
            ["sg-1", "eu-1"]
                .iter()
                .all(|r| l.may_spill(Some(k), r, day) && l.may_spill(None, r, day))
        })
    };
    assert!(all_open(&l, day));

    // alice spends her budget on eu-1 (an alert-only region): alice stops
    // spilling anywhere; others still spill to eu-1.
    l.record(&usage("m", Some("alice"), eu()), at(B));
    assert!(l.may_spill(Some("alice"), "eu-1", day));
    l.record(&usage("m", Some("alice"), eu()), at(B));
    assert!(!l.may_spill(Some("alice"), "eu-1", day));
    assert!(!l.may_spill(Some("alice"), "sg-1", day));
    assert!(l.may_spill(Some("bob"), "eu-1", day));
    assert!(l.may_spill(None, "eu-1", day));
    // eu-1 reached its alert-only budget: still open.
    let eu_budget = l
        .budget_state(day)
        .into_iter()
        .find(|s| s.scope == Scope::Region("eu-1".into()))
        .unwrap();
    assert_eq!(eu_budget.reached, 100);
    assert!(l.may_spill(Some("carol"), "eu-1", day));

    // bob's budget is alert-only.
    l.record(&usage("m", Some("bob"), eu()), at(B));
    l.record(&usage("m", Some("bob"), eu()), at(B));
    assert!(l.may_spill(Some("bob"), "eu-1", day));

    // sg-1 spends its budget: nobody spills to sg-1, eu-1 stays open.
    l.record(&usage("m", Some("carol"), sg()), at(B + 1));
    l.record(&usage("m", Some("carol"), sg()), at(B + 1));
    assert!(!l.may_spill(Some("carol"), "sg-1", day));
    assert!(!l.may_spill(None, "sg-1", day));
    assert!(l.may_spill(Some("carol"), "eu-1", day));
    let sg = l
        .budget_state(day)
        .into_iter()
        .find(|s| s.scope == Scope::Region("sg-1".into()))
        .unwrap();
    assert!(sg.spill_stopped);

    // Local requests never stop, and the next day everything is open.
    assert!(all_open(&l, day + 1));
}

#[test]
fn a_reload_prices_later_requests_anew_and_rebases_the_budgets() {
    let budgets = budgets_of(
        &[
            ("alice", 1.0, Action::StopSpill),
            ("bob", 1.0, Action::StopSpill),
        ],
        &[],
    );
    let mut pricing = priced();
    pricing.egress_per_gb = 0.0;
    pricing.regions.get_mut("sg-1").unwrap().per_request = 0.75;
    pricing.regions.get_mut("sg-1").unwrap().per_gb = 0.0;
    let mut l = ledger(pricing.clone(), budgets, Bounds::default());
    let day = B / 24;
    for key in ["alice", "bob"] {
        l.record(&usage("m", Some(key), sg()), at(B));
        l.record(&usage("m", Some(key), sg()), at(B));
        assert!(
            !l.may_spill(Some(key), "sg-1", day),
            "{key} spent 1.5 of 1.0"
        );
    }

    // alice's budget raised past her spend, bob's gone, carol's new; and
    // a dearer region from now on.
    let mut dearer = pricing.clone();
    dearer.regions.get_mut("sg-1").unwrap().per_request = 2.0;
    let budgets = budgets_of(
        &[
            ("alice", 3.0, Action::StopSpill),
            ("carol", 1.0, Action::StopSpill),
        ],
        &[],
    );
    l.reconfigure(dearer, budgets).unwrap();
    assert!(
        l.may_spill(Some("alice"), "sg-1", day),
        "a raised budget lets spilling resume"
    );
    assert!(
        l.may_spill(Some("bob"), "sg-1", day),
        "bob has no budget any more"
    );
    let state = l.budget_state(day);
    let alice = state
        .iter()
        .find(|s| s.scope == Scope::Key("alice".into()))
        .unwrap();
    assert_eq!(
        (alice.spent, alice.reached),
        (1.5, 0),
        "today's spend is kept: {alice:?}"
    );
    assert!(!state.iter().any(|s| s.scope == Scope::Key("bob".into())));
    let carol = state
        .iter()
        .find(|s| s.scope == Scope::Key("carol".into()))
        .unwrap();
    assert_eq!(carol.spent, 0.0, "a new budget counts from the reload");

    // The next request at the new price takes alice to 3.5: stopped again.
    let r = l.record(&usage("m", Some("alice"), sg()), at(B + 1));
    assert_eq!(r.money, 2.0);
    assert!(!l.may_spill(Some("alice"), "sg-1", day));
    assert!(
        r.crossings.iter().any(|c| c.threshold == 100),
        "{:?}",
        r.crossings
    );

    // A lowered budget below today's spend stops at once; a new currency
    // and a bad amount are refused and change nothing.
    l.reconfigure(
        pricing.clone(),
        budgets_of(
            &[
                ("alice", 2.0, Action::StopSpill),
                ("bob", 0.5, Action::StopSpill),
            ],
            &[],
        ),
    )
    .unwrap();
    assert!(
        !l.may_spill(Some("alice"), "sg-1", day),
        "lowered below today's 3.5"
    );
    l.record(&usage("m", Some("bob"), sg()), at(B + 1));
    assert!(!l.may_spill(Some("bob"), "sg-1", day));
    let mut euros = pricing.clone();
    euros.currency = "EUR".into();
    let e = l.reconfigure(euros, Budgets::default()).unwrap_err();
    assert_eq!(e.key, "pricing.currency", "{e:?}");
    assert!(e.message.contains("restart"), "{e:?}");
    let mut negative = pricing.clone();
    negative.local_per_compute_second = -1.0;
    assert!(l.reconfigure(negative, Budgets::default()).is_err());
    assert_eq!(l.config().pricing, pricing);
    assert_eq!(l.config().budgets.keys.len(), 2);
}

#[test]
fn the_series_bound_folds_new_series_into_other_per_place() {
    let bounds = Bounds {
        max_series: 2,
        days: 3,
        hourly_hours: 24,
    };
    let mut l = ledger(priced(), Budgets::default(), bounds);
    let r1 = l.record(&usage("m1", Some("k1"), Place::Local), at(B));
    let r2 = l.record(&usage("m1", Some("k2"), Place::Local), at(B));
    assert!(!r1.folded && !r2.folded);
    let r3 = l.record(&usage("m1", Some("k3"), Place::Local), at(B));
    assert!(r3.folded && r3.created);
    let r4 = l.record(&usage("m2", Some("k4"), Place::Local), at(B));
    assert!(r4.folded && !r4.created);
    assert_eq!(r3.series, r4.series);
    // Folded per place and jurisdiction.
    let r5 = l.record(&usage("m2", Some("k4"), sg()), at(B));
    assert!(r5.folded && r5.created);
    let other = l.series(r5.series).unwrap();
    assert_eq!(
        (other.model.as_str(), other.key.as_str(), other.version),
        (OTHER, OTHER, None)
    );
    assert_eq!(
        (other.place.as_str(), other.jurisdiction.as_str()),
        ("cloud:sg-1", "SG")
    );
    // A series that exists keeps counting in itself.
    assert!(
        !l.record(&usage("m1", Some("k1"), Place::Local), at(B))
            .folded
    );
    assert_eq!(l.folded_records(), 3);
    assert_eq!(l.series_count(), 4);

    let r = l.report(B, at(B), By::Key);
    assert_eq!(groups(&r), [OTHER, "k1", "k2"]);
    assert_eq!(row(&r, OTHER).totals.requests, 3);
    assert_eq!(r.folded_records, 3);
    // The place stays exact.
    let r = l.report(B, at(B), By::Region);
    assert_eq!(row(&r, "local").totals.requests, 5);
    assert_eq!(row(&r, "cloud:sg-1").totals.requests, 1);
    assert_totals_are_the_rows(&r);

    // Once k2's series ages out, a new series gets its place.
    l.record(&usage("m1", Some("k1"), Place::Local), at(B + 48));
    l.advance(B + 72);
    assert_eq!(l.take_dropped().len(), 3, "k2 and both (other) series");
    assert!(
        !l.record(&usage("m3", Some("k5"), Place::Local), at(B + 72))
            .folded
    );
}

fn busy_ledger() -> Ledger {
    let budgets = budgets_of(
        &[("alice", 0.1, Action::StopSpill)],
        &[("sg-1", 100.0, Action::Alert)],
    );
    let bounds = Bounds {
        max_series: 3,
        days: 5,
        hourly_hours: 24,
    };
    let mut l = ledger(priced(), budgets, bounds);
    for h in 0..80 {
        let key = ["alice", "bob", "carol", "dave"][h as usize % 4];
        let place = [Place::Local, Place::Cache, sg()][h as usize % 3];
        let u = Usage {
            compute_s: 0.125 * (h % 5) as f64,
            bytes_in: 1000 + h,
            bytes_out: 3000 * h,
            ..usage(["a", "b"][h as usize % 2], Some(key), place)
        };
        l.record(&u, at(B + h));
    }
    l
}

#[test]
fn snapshot_round_trips_through_json() {
    let l = busy_ledger();
    assert!(!l.daily.is_empty() && !l.hourly.is_empty() && l.folded_records() > 0);
    let json = serde_json::to_string(&l.snapshot()).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    let mut r = Ledger::restore(back, l.config().clone()).unwrap();
    assert_eq!(r.snapshot(), l.snapshot());
    let now = at(B + 79);
    for by in [By::Key, By::Model, By::Version, By::Region, By::Place] {
        for since in [B, B + 30, B + 70] {
            assert_eq!(r.report(since, now, by), l.report(since, now, by));
        }
    }
    let day = now.day;
    assert!(!l.may_spill(Some("alice"), "sg-1", day));
    assert!(!r.may_spill(Some("alice"), "sg-1", day));
    assert_eq!(r.budget_state(day), l.budget_state(day));
    // The restored ledger finds its series again rather than adding one.
    let before = r.series_count();
    let again = r.record(&usage("a", Some("alice"), Place::Local), now);
    assert!(!again.created);
    assert_eq!(r.series_count(), before);
    // Budgets no longer configured are left out.
    let mut config = l.config().clone();
    config.budgets.keys.clear();
    let r = Ledger::restore(l.snapshot(), config).unwrap();
    assert!(r.may_spill(Some("alice"), "sg-1", day));
}

#[test]
fn restore_refuses_foreign_and_inconsistent_snapshots() {
    let l = busy_ledger();
    let config = l.config().clone();
    let json = serde_json::to_value(l.snapshot()).unwrap();
    let restore = |v: &serde_json::Value, config: Config| {
        let s: Snapshot = serde_json::from_value(v.clone()).unwrap();
        Ledger::restore(s, config)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };

    let mut eur = config.clone();
    eur.pricing.currency = "EUR".into();
    assert_eq!(
        restore(&json, eur),
        "the ledger counts money in SGD, but pricing.currency is EUR"
    );

    let mut v = json.clone();
    v["format"] = 2.into();
    assert!(restore(&v, config.clone()).contains("format 2"));

    let mut v = json.clone();
    v["hourly"][0][1] = 999.into();
    let e = restore(&v, config.clone());
    assert!(e.contains("names series 999, which is not saved"), "{e}");

    let mut v = json.clone();
    let first = v["series"][0].clone();
    v["series"].as_array_mut().unwrap().push(first);
    assert!(restore(&v, config.clone()).contains("appears twice"));

    let mut v = json.clone();
    v["series"][0]["place"] = "moon".into();
    assert!(restore(&v, config.clone()).contains("\"moon\""));

    let mut v = json.clone();
    v["daily"][0][6] = "-1".into();
    assert!(restore(&v, config).contains("must be finite and >= 0"));
}

#[test]
fn configuration_errors_name_their_key() {
    let mut p = priced();
    p.regions.get_mut("sg-1").unwrap().per_gb = -1.0;
    assert_eq!(
        p.check().unwrap_err().to_string(),
        "pricing.regions.sg-1.per_gb: must be a finite number >= 0 (got -1)"
    );
    assert_eq!(
        priced().check_regions(["eu-1"]).unwrap_err().to_string(),
        "pricing.regions.sg-1: no region of that name (regions: eu-1)"
    );
    assert!(priced().check_regions(["eu-1", "sg-1"]).is_ok());
    let b = budgets_of(&[("alice", 0.0, Action::Alert)], &[]);
    assert_eq!(
        b.check().unwrap_err().key,
        "budgets.keys.alice.daily".to_string()
    );
    let bad = Bounds {
        days: 2,
        hourly_hours: 48,
        ..Bounds::default()
    };
    assert_eq!(bad.check().unwrap_err().key, "cost.hourly_hours");
    let config = Config {
        bounds: bad,
        ..Config::default()
    };
    assert!(Ledger::new(config).is_err());

    // The TOML the integrator's config reads.
    let text = r#"
        currency = "EUR"
        local_per_compute_second = 0.0004
        egress_per_gb = 0.09
        [regions.sg-1]
        per_request = 0.00002
        per_gb = 0.02
    "#;
    let p: Pricing = toml::from_str(text).unwrap();
    assert_eq!(p.regions["sg-1"].per_gb, 0.02);
    let e = toml::from_str::<Pricing>("local_per_compute_secnd = 1").unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
    let b: Budgets = toml::from_str(
        r#"
        keys.alice = { daily = 5.0, action = "stop-spill" }
        regions.sg-1 = { daily = 20.0 }
    "#,
    )
    .unwrap();
    assert_eq!(b.keys["alice"].action, Action::StopSpill);
    assert_eq!(b.regions["sg-1"].action, Action::Alert);
    assert!(toml::from_str::<Budgets>(r#"keys.a = { daily = 1.0, action = "stop" }"#).is_err());
}

#[test]
fn since_parses_hours_and_days() {
    assert_eq!(parse_since("24h"), Ok(24));
    assert_eq!(parse_since("7d"), Ok(168));
    assert!(parse_since("0h").is_err());
    assert!(parse_since("24").is_err());
    assert!(parse_since("401d").is_err());
    assert!(parse_since("9é").is_err());
    assert_eq!(window_start(B + 23, 24), B);
    assert_eq!(window_start(3, 24), 0);
    assert_eq!("version".parse::<By>(), Ok(By::Version));
    assert!("country".parse::<By>().is_err());
}

#[test]
fn report_round_trips_as_the_admin_answer() {
    let l = busy_ledger();
    let r = l.report(B, at(B + 79), By::Key);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#""by":"key""#), "{json}");
    assert!(json.contains(r#""scope":"key","name":"alice""#), "{json}");
    assert!(json.contains(r#""action":"stop-spill""#), "{json}");
    let back: Report = serde_json::from_str(&json).unwrap();
    // serde_json may read a float back one unit in the last place off.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0);
    assert_eq!(back.rows.len(), r.rows.len());
    for (a, b) in back.rows.iter().zip(&r.rows) {
        assert_eq!(a.group, b.group);
        assert_eq!(a.totals.requests, b.totals.requests);
        assert_eq!(a.totals.jurisdictions, b.totals.jurisdictions);
        assert!(close(a.totals.cost, b.totals.cost));
    }
    assert_eq!(back.budgets.len(), r.budgets.len());
    assert_eq!(back.budgets[0].scope, r.budgets[0].scope);
    assert!(close(back.totals.cost, r.totals.cost));
}
