//! Which arm serves a request, and which stable-served requests are copied
//! to the candidate in shadow mode.
//!
//! The hash is written out here (FNV-1a 64, then the splitmix64 finalizer)
//! rather than taken from std, whose `DefaultHasher` may change between
//! Rust versions: a client must keep its arm across restarts and upgrades.

use serde::{Deserialize, Serialize};

/// The two versions a rollout serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arm {
    Stable,
    Candidate,
}

/// Buckets of the split: a percent is 100 of them.
pub const BUCKETS: u64 = 10_000;

/// The arm of `key` when the candidate has `percent` of traffic:
/// `Candidate` iff `hash(salt, key) % 10_000 < percent * 100`.
///
/// Deterministic across processes, platforms and Rust versions, and
/// monotone in `percent`: a key on the candidate at `p` stays there at any
/// `q > p`. Percents above 100 count as 100.
pub fn arm_for(key: &[u8], percent: u32, salt: u64) -> Arm {
    if bucket(key, salt) < u64::from(percent.min(100)) * 100 {
        Arm::Candidate
    } else {
        Arm::Stable
    }
}

/// `hash(salt, key) % 10_000`.
pub fn bucket(key: &[u8], salt: u64) -> u64 {
    hash(salt, key) % BUCKETS
}

/// FNV-1a 64 over the salt's little-endian bytes then the key, finished
/// with the splitmix64 finalizer (FNV alone mixes its last bytes poorly
/// into the low bits that `% 10_000` reads).
pub fn hash(salt: u64, key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in salt.to_le_bytes().iter().chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    mix(h)
}

/// The splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw mapped to `[0, 1)`: one splitmix64 step, so that counters
/// (0, 1, 2, ...) spread as evenly as random draws.
pub(crate) fn unit(draw: u64) -> f64 {
    let z = mix(draw.wrapping_add(0x9e37_79b9_7f4a_7c15));
    // The top 53 bits are exact in an f64.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Computed once by an independent implementation (Python) of FNV-1a
    /// 64 + splitmix64; a change here re-shuffles every client's arm.
    #[test]
    fn hash_is_pinned() {
        for (salt, key, want) in PINNED {
            assert_eq!(
                hash(*salt, key.as_bytes()),
                *want,
                "salt {salt} key {key:?}"
            );
        }
    }

    const PINNED: &[(u64, &str, u64)] = &[
        (0, "", 0x813f_0174_a236_7c13),
        (0, "a", 0x0d38_d3c8_a628_cc82),
        (7, "client-1", 0xd1fa_0c63_408b_ece7),
        (42, "sk-live-0123456789", 0x68c9_b497_8861_f130),
        (u64::MAX, "10.0.0.7", 0xa4d6_85a2_b168_3692),
        (3, "ключ", 0x3deb_24b7_63a9_3bef),
    ];

    #[test]
    fn buckets_are_pinned() {
        assert_eq!(bucket(b"client-1", 7), 215);
        assert_eq!(arm_for(b"client-1", 3, 7), Arm::Candidate);
        assert_eq!(arm_for(b"client-1", 2, 7), Arm::Stable);
        assert_eq!(bucket(b"10.0.0.7", u64::MAX), 4994);
        assert_eq!(arm_for(b"10.0.0.7", 50, u64::MAX), Arm::Candidate);
        assert_eq!(arm_for(b"10.0.0.7", 49, u64::MAX), Arm::Stable);
    }

    #[test]
    fn edges() {
        assert_eq!(arm_for(b"anyone", 0, 7), Arm::Stable);
        assert_eq!(arm_for(b"anyone", 100, 7), Arm::Candidate);
        assert_eq!(arm_for(b"anyone", 1000, 7), Arm::Candidate);
        assert_eq!(arm_for(b"", 100, 0), Arm::Candidate);
        // Every bucket is on the candidate at 100%, none at 0%.
        for i in 0..20_000u32 {
            let key = i.to_le_bytes();
            assert_eq!(arm_for(&key, 100, 9), Arm::Candidate);
            assert_eq!(arm_for(&key, 0, 9), Arm::Stable);
        }
    }

    #[test]
    fn unit_is_in_range_and_spread() {
        let n = 100_000u64;
        let below: u64 = (0..n).map(|d| u64::from(unit(d) < 0.1)).sum();
        assert!((9_500..=10_500).contains(&below), "{below}");
        assert!((0..n).map(unit).all(|u| (0.0..1.0).contains(&u)));
        assert!(unit(u64::MAX) < 1.0);
    }

    proptest! {
        #[test]
        fn monotone_in_percent(key in proptest::collection::vec(any::<u8>(), 0..40),
                               salt in any::<u64>(), p in 0u32..=100, q in 0u32..=100) {
            let (lo, hi) = (p.min(q), p.max(q));
            if arm_for(&key, lo, salt) == Arm::Candidate {
                prop_assert_eq!(arm_for(&key, hi, salt), Arm::Candidate);
            }
            if arm_for(&key, hi, salt) == Arm::Stable {
                prop_assert_eq!(arm_for(&key, lo, salt), Arm::Stable);
            }
        }

        #[test]
        fn share_matches_percent(salt in any::<u64>(), percent in 0u32..=100, seed in any::<u64>()) {
            let on = (0..10_000u64)
                .filter(|i| {
                    let key = format!("client-{seed:x}-{i}");
                    arm_for(key.as_bytes(), percent, salt) == Arm::Candidate
                })
                .count();
            let share = on as f64 / 100.0;
            prop_assert!((share - f64::from(percent)).abs() <= 2.0,
                "{}% of keys on the candidate at {}%", share, percent);
        }
    }
}
