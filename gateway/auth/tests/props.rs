//! Properties: the GCRA never admits more than `burst + rate * elapsed` in
//! any window, and model globs match exactly as `glob::Pattern` does.

use std::time::Duration;

use nusa_auth::clock::FakeRelativeClock;
use nusa_auth::{KeyRecord, KeySpec, Limiter, Limits, Role};
use proptest::prelude::*;

const NANOS: u128 = 1_000_000_000;

/// Attempt times (ns): random ones, and the instants where a cell falls due
/// at exactly the configured rate (`k / rps` seconds, rounded down to a
/// nanosecond). Those are where a limiter that rounds its interval the
/// wrong way admits one request early.
fn attempts(num: u32, den: u32) -> impl Strategy<Value = Vec<u64>> {
    let due = (0u64..60)
        .prop_map(move |k| (u128::from(k) * NANOS * u128::from(den) / u128::from(num)) as u64);
    let random = 0u64..20_000_000_000;
    prop::collection::vec(prop_oneof![due, random], 1..150).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

fn gcra_case() -> impl Strategy<Value = (u32, u32, u32, Vec<u64>, u32)> {
    (1u32..=200, 1u32..=4, 1u32..=20).prop_flat_map(|(num, den, burst)| {
        (
            Just(num),
            Just(den),
            Just(burst),
            attempts(num, den),
            1u32..=3,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn gcra_never_exceeds_burst_plus_rate((num, den, burst, times, tries) in gcra_case()) {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::new(clock.clone());
        let mut spec = KeySpec::new("p", Role::Infer);
        spec.limits = Limits {
            rps: Some(f64::from(num) / f64::from(den)),
            burst: Some(burst),
            ..Limits::default()
        };
        let key = KeyRecord::new("0000abcd", spec, 0);

        let mut now = 0;
        let mut admitted: Vec<u64> = Vec::new();
        for t in times {
            clock.advance(Duration::from_nanos(t - now));
            now = t;
            for _ in 0..tries {
                if limiter.check(&key, "m", 0).is_ok() {
                    admitted.push(t);
                }
            }
        }
        // For every window [admitted[i], admitted[j]]: the count of
        // admissions in it, minus the burst, times 1e9 * den must not pass
        // num * elapsed. Integers, so no rounding hides a one-off excess.
        for i in 0..admitted.len() {
            for j in i..admitted.len() {
                let count = (j - i + 1) as u128;
                let elapsed = u128::from(admitted[j] - admitted[i]);
                let over = count.saturating_sub(u128::from(burst));
                prop_assert!(
                    over * NANOS * u128::from(den) <= u128::from(num) * elapsed,
                    "{count} admitted in {elapsed} ns at {num}/{den} rps, burst {burst}"
                );
            }
        }
        // And it does admit: a full burst at the first attempt.
        prop_assert!(!admitted.is_empty());
    }

    #[test]
    fn model_globs_match_as_glob_does(
        pattern in "[ab*?\\[\\]!-]{0,6}",
        name in "[ab!-]{0,6}",
    ) {
        let mut spec = KeySpec::new("g", Role::Infer);
        spec.models = vec![pattern.clone()];
        let key = KeyRecord::new("0000abcd", spec, 0);
        let expected = glob::Pattern::new(&pattern).is_ok_and(|p| p.matches(&name));
        prop_assert_eq!(key.may_call(&name), expected, "{:?} vs {:?}", pattern, name);
    }
}
