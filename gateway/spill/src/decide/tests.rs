use super::*;

fn spill(regions: &[(&str, Micros, RegionLimits)]) -> Spill {
    Spill::new(
        regions
            .iter()
            .map(|(name, latency, limits)| {
                let mut r = Region::new(*name, limits.clone());
                r.latency_us = Some(*latency as f64);
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
        local_only: true,
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
        local_only: false,
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
