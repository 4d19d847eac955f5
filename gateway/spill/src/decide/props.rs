//! Property test of the spill decision: whatever the regions have learnt
//! (latencies, failures, spend, probes) and whatever the request says, a
//! request never goes to a region outside its allowed set (so a pinned
//! request, allowed none, never leaves the box), and a retry never goes
//! back to a region that already failed it.

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Decide {
        bytes: u64,
        allowed: RegionSet,
        slo_us: Option<Micros>,
        queue_full: bool,
        prefer_region: bool,
        predicted: Option<Micros>,
        local_service: Option<Micros>,
        tried: Vec<usize>,
    },
    Record {
        region: usize,
        answered_in: Option<Micros>,
        counts_against: bool,
    },
    Rtt(usize, Micros),
    Abandon(usize),
    Advance(Micros),
}

/// Any subset of the (at most 4) regions, often none or all, and sometimes
/// bits of regions that do not exist.
fn allowed() -> impl Strategy<Value = RegionSet> {
    prop_oneof![
        2 => Just(RegionSet::NONE),
        2 => Just(RegionSet::ALL),
        4 => (0u64..16).prop_map(RegionSet::from_bits),
        1 => any::<u64>().prop_map(RegionSet::from_bits),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let us = || 0u64..200_000;
    prop_oneof![
        5 => (0u64..5_000, allowed(), proptest::option::of(us()), any::<bool>(), any::<bool>(),
              proptest::option::of(us()), proptest::option::of(us()), proptest::collection::vec(0usize..3, 0..3))
            .prop_map(|(bytes, allowed, slo_us, queue_full, prefer_region, predicted, local_service, tried)|
                Op::Decide { bytes, allowed, slo_us, queue_full, prefer_region, predicted, local_service, tried }),
        2 => (0usize..3, proptest::option::of(us()), any::<bool>())
            .prop_map(|(region, answered_in, counts_against)| Op::Record { region, answered_in, counts_against }),
        1 => (0usize..3, us()).prop_map(|(r, t)| Op::Rtt(r, t)),
        1 => (0usize..3).prop_map(Op::Abandon),
        1 => (0u64..5_000_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_a_region_outside_the_allowed_set_and_retries_never_return(
        n in 0usize..4,
        caps in (0u64..5, 0u64..20_000),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let limits = RegionLimits { requests_per_hour: caps.0, bytes_per_hour: caps.1, ..RegionLimits::default() };
        let mut s = Spill::new((0..n).map(|i| Region::new(format!("r{i}"), limits.clone())).collect());
        let mut now: Micros = 0;
        for op in ops {
            match op {
                Op::Decide { bytes, allowed, slo_us, queue_full, prefer_region, predicted, local_service, tried } => {
                    let facts = RequestFacts { bytes, allowed, slo_us, queue_full, prefer_region };
                    let spent_before: Vec<_> = s.regions.iter().map(|r| r.spent(now)).collect();
                    match s.decide(&facts, predicted, local_service, &tried, now) {
                        Decision::Spill { region, .. } => {
                            prop_assert!(allowed.contains(region), "sent to region {region}, outside {allowed:?}");
                            prop_assert!(region < n);
                            prop_assert!(!tried.contains(&region), "retried on region {region}, which failed it");
                        }
                        Decision::Local | Decision::Reject { .. } => {}
                    }
                    // Nor is a refused region charged for it.
                    for (i, r) in s.regions.iter().enumerate().filter(|(i, _)| !allowed.contains(*i)) {
                        prop_assert_eq!(r.spent(now), spent_before[i], "region {} was charged", i);
                    }
                }
                Op::Record { region, answered_in, counts_against } => s.record(region, now, answered_in, counts_against, 10),
                Op::Rtt(r, t) => if let Some(r) = s.regions.get_mut(r) { r.observe_rtt(t) },
                Op::Abandon(r) => s.abandon(r),
                Op::Advance(dt) => now += dt,
            }
        }
    }
}
