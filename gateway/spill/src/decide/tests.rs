use super::*;

fn spill(regions: &[(&str, Micros, RegionLimits)]) -> Spill {
    Spill::new(
        regions
            .iter()
            .map(|(name, latency, limits)| {
                let mut r = Region::new(*name, limits.clone());
                r.base_us = Some(*latency as f64);
                r.per_extra_us = Some(0.0);
                r.latency_at = 0;
                r
            })
            .collect(),
    )
}

fn facts(slo: Micros) -> RequestFacts {
    RequestFacts {
        bytes: 100,
        slo_us: Some(slo),
        allowed: RegionSet::ALL,
        ..RequestFacts::default()
    }
}

#[test]
fn local_when_local_meets_the_objective() {
    let mut s = spill(&[("a", 1_000, RegionLimits::default())]);
    assert_eq!(
        s.decide(&facts(10_000), Some(9_000), Some(500), &[], 0),
        Decision::Local
    );
    assert_eq!(
        s.decide(&facts(10_000), None, None, &[], 0),
        Decision::Local,
        "no estimate yet"
    );
}

#[test]
fn spills_to_the_fastest_region_that_meets_the_objective() {
    let mut s = spill(&[
        ("slow", 20_000, RegionLimits::default()),
        ("far", 8_000, RegionLimits::default()),
        ("near", 3_000, RegionLimits::default()),
    ]);
    assert_eq!(
        s.decide(&facts(10_000), Some(15_000), Some(500), &[], 0),
        Decision::Spill {
            region: 2,
            reason: Reason::Slo
        }
    );
    // On a retry the failed one is skipped.
    assert_eq!(
        s.decide(&facts(10_000), Some(15_000), Some(500), &[2], 0),
        Decision::Spill {
            region: 1,
            reason: Reason::Retry
        }
    );
    // No region in time: local, late but served.
    assert_eq!(
        s.decide(&facts(10_000), Some(15_000), Some(500), &[1, 2], 0),
        Decision::Local
    );
}

#[test]
fn residency_pins_to_local_under_any_load() {
    let mut s = spill(&[("a", 1, RegionLimits::default())]);
    let pinned = RequestFacts {
        allowed: RegionSet::NONE,
        ..facts(10_000)
    };
    assert_eq!(
        s.decide(&pinned, Some(5_000), None, &[], 0),
        Decision::Local
    );
    assert_eq!(
        s.decide(&pinned, Some(50_000), None, &[], 0),
        Decision::Reject {
            reason: Reason::Slo
        }
    );
    let full = RequestFacts {
        queue_full: true,
        ..pinned
    };
    assert_eq!(
        s.decide(&full, Some(50_000), None, &[], 0),
        Decision::Reject {
            reason: Reason::QueueFull
        }
    );
    assert_eq!(
        s.regions[0].spent(0),
        (0, 0),
        "nothing was counted against the region"
    );
}

#[test]
fn a_full_queue_spills_even_without_an_objective() {
    let mut s = spill(&[("a", 1_000, RegionLimits::default())]);
    let f = RequestFacts {
        queue_full: true,
        slo_us: None,
        bytes: 1,
        allowed: RegionSet::ALL,
        prefer_region: false,
    };
    assert_eq!(
        s.decide(&f, None, None, &[], 0),
        Decision::Spill {
            region: 0,
            reason: Reason::QueueFull
        }
    );
    assert_eq!(
        s.decide(&f, None, None, &[0], 0),
        Decision::Reject {
            reason: Reason::Retry
        }
    );
}

#[test]
fn the_spend_cap_stops_spilling() {
    let limits = RegionLimits {
        requests_per_hour: 2,
        ..RegionLimits::default()
    };
    let mut s = spill(&[("a", 1_000, limits)]);
    for _ in 0..2 {
        assert!(matches!(
            s.decide(&facts(5_000), Some(9_000), None, &[], 0),
            Decision::Spill { .. }
        ));
    }
    assert_eq!(
        s.decide(&facts(5_000), Some(9_000), None, &[], 0),
        Decision::Local
    );
}

#[test]
fn an_open_breaker_takes_a_region_out_until_it_recovers() {
    let limits = RegionLimits {
        breaker: BreakerConfig {
            min_requests: 2,
            open_us: 1_000,
            probes: 1,
            ..BreakerConfig::default()
        },
        ..RegionLimits::default()
    };
    let mut s = spill(&[("a", 1_000, limits.clone()), ("b", 2_000, limits)]);
    s.record(0, 10, None, true, 0);
    s.record(0, 11, None, true, 0);
    assert!(matches!(
        s.regions[0].breaker_state(12),
        BreakerState::Open { .. }
    ));
    assert_eq!(
        s.decide(&facts(5_000), Some(9_000), None, &[], 12),
        Decision::Spill {
            region: 1,
            reason: Reason::Slo
        }
    );
    // After the cool-down one probe goes to "a"; its success closes it.
    assert_eq!(
        s.decide(&facts(5_000), Some(9_000), None, &[], 1_011),
        Decision::Spill {
            region: 0,
            reason: Reason::Slo
        }
    );
    s.record(0, 1_050, Some(900), false, 10);
    assert_eq!(s.regions[0].breaker_state(1_051), BreakerState::Closed);
    // A 4xx that is the request's fault does not count against a region.
    s.record(1, 1_060, None, false, 0);
    s.record(1, 1_061, None, false, 0);
    assert_eq!(s.regions[1].breaker_state(1_062), BreakerState::Closed);
}

#[test]
fn unmeasured_regions_are_judged_by_probe_rtt_plus_local_compute() {
    let mut r = Region::new("x", RegionLimits::default());
    assert_eq!(r.expected_us(Some(300), 0), 300);
    r.observe_rtt(2_000);
    assert_eq!(r.expected_us(Some(300), 0), 2_300);
}

#[test]
fn requests_in_flight_raise_the_expectation_until_they_come_back() {
    let mut s = spill(&[("a", 2_000, RegionLimits::default())]);
    // Learn: alone 2 ms; with one other in flight, 5 ms.
    s.regions[0].per_extra_us = None;
    let f = facts(10_000);
    let sends = |s: &mut Spill| {
        let mut n = 0;
        while matches!(
            s.decide(&f, Some(20_000), Some(3_000), &[], 0),
            Decision::Spill { .. }
        ) {
            n += 1;
            assert!(n < 100);
        }
        n
    };
    // Unlearnt marginal cost: the local 3 ms per request. 2 + 3n <= 10.
    assert_eq!(sends(&mut s), 3);
    assert_eq!(s.regions[0].in_flight(), 3);
    // They come back: two shared the region at 8 ms, one at 2 ms alone.
    s.record(0, 10, Some(8_000), false, 0); // concurrency 3: (8-2)/2 = 3 ms each
    s.record(0, 11, Some(6_000), false, 0); // concurrency 2: 4 ms
    s.record(0, 12, Some(2_000), false, 0); // alone
    assert_eq!(s.regions[0].in_flight(), 0);
    assert_eq!(
        s.regions[0].expected_us(Some(3_000), 13),
        2_000,
        "drained: back to its unloaded time"
    );
    // per_extra is 3.2 ms now (EWMA of 3 and 4): with n in flight a new
    // one expects 2 + 3.2n ms, within 10 ms for n = 0, 1, 2.
    assert_eq!(s.regions[0].per_extra_us.map(|p| p as u64), Some(3_200));
    assert_eq!(sends(&mut s), 3);
    for _ in 0..3 {
        s.abandon(0);
    }
    assert_eq!(s.regions[0].in_flight(), 0);
    s.abandon(0);
    assert_eq!(s.regions[0].in_flight(), 0, "never below zero");
}

#[test]
fn a_slow_spell_is_forgotten_once_it_is_stale() {
    let mut s = spill(&[("a", 1_000, RegionLimits::default())]);
    s.regions[0].observe_rtt(1_000);
    // One slow answer: the region is out while the measurement is fresh.
    s.record(0, 100, Some(50_000), false, 0);
    assert_eq!(
        s.decide(&facts(10_000), Some(20_000), Some(500), &[], 200),
        Decision::Local
    );
    // Later the probes speak for it again.
    let later = 100 + LATENCY_STALE_US;
    assert!(matches!(
        s.decide(&facts(10_000), Some(20_000), Some(500), &[], later),
        Decision::Spill { region: 0, .. }
    ));
}

#[test]
fn a_model_placed_in_the_regions_goes_there_whatever_the_local_wait() {
    let mut s = spill(&[("a", 50_000, RegionLimits::default())]);
    let placed = RequestFacts {
        prefer_region: true,
        ..facts(10_000)
    };
    assert_eq!(
        s.decide(&placed, Some(100), Some(100), &[], 0),
        Decision::Spill {
            region: 0,
            reason: Reason::Placement
        },
        "even a slow region, even with an idle local queue"
    );
    assert_eq!(
        s.decide(&placed, Some(100), Some(100), &[0], 0),
        Decision::Local,
        "served here when none is left"
    );
    let pinned = RequestFacts {
        allowed: RegionSet::NONE,
        ..placed
    };
    assert_eq!(
        s.decide(&pinned, Some(100), Some(100), &[], 0),
        Decision::Local,
        "residency wins"
    );
}

#[test]
fn residency_keeps_requests_inside_the_allowed_regions_under_any_load() {
    // "sg" is the fastest, but the request may go to "id" only.
    let mut s = spill(&[
        ("sg", 1_000, RegionLimits::default()),
        ("id", 4_000, RegionLimits::default()),
        ("id-far", 30_000, RegionLimits::default()),
    ]);
    let only_id = RequestFacts {
        allowed: RegionSet::NONE.with(1).with(2),
        ..facts(10_000)
    };
    assert_eq!(
        s.decide(&only_id, Some(15_000), Some(500), &[], 0),
        Decision::Spill {
            region: 1,
            reason: Reason::Slo
        }
    );
    // "id" failed it; "id-far" would miss the objective: served here, late.
    assert_eq!(
        s.decide(&only_id, Some(15_000), Some(500), &[1], 0),
        Decision::Local
    );
    // A full queue: the allowed regions or 503, never "sg".
    let full = RequestFacts {
        queue_full: true,
        slo_us: None,
        ..only_id
    };
    assert_eq!(
        s.decide(&full, None, None, &[1], 0),
        Decision::Spill {
            region: 2,
            reason: Reason::Retry
        }
    );
    assert_eq!(
        s.decide(&full, None, None, &[1, 2], 0),
        Decision::Reject {
            reason: Reason::Retry
        }
    );
    // Placed in the regions: still only where it may go.
    let placed = RequestFacts {
        prefer_region: true,
        ..only_id
    };
    assert!(matches!(
        s.decide(&placed, Some(100), Some(100), &[], 0),
        Decision::Spill { region: 1, .. }
    ));
    assert_eq!(s.regions[0].spent(0), (0, 0), "nothing counted against sg");
    assert_eq!(s.regions[0].in_flight(), 0);
}

#[test]
fn a_request_allowed_no_configured_region_is_pinned() {
    let mut s = spill(&[
        ("a", 1_000, RegionLimits::default()),
        ("b", 1_000, RegionLimits::default()),
    ]);
    // Region 5 does not exist here: nowhere to go, so as if pinned.
    let elsewhere = RequestFacts {
        allowed: RegionSet::NONE.with(5),
        ..facts(10_000)
    };
    assert_eq!(
        s.decide(&elsewhere, Some(50_000), None, &[], 0),
        Decision::Reject {
            reason: Reason::Slo
        },
        "late and allowed nowhere: 503 rather than late"
    );
    assert_eq!(
        s.decide(&elsewhere, Some(5_000), None, &[], 0),
        Decision::Local
    );
    let placed = RequestFacts {
        prefer_region: true,
        ..elsewhere
    };
    assert_eq!(s.decide(&placed, Some(100), None, &[], 0), Decision::Local);
    assert_eq!(
        RequestFacts::default().allowed,
        RegionSet::NONE,
        "a request leaves only when the driver says where to"
    );
}
