//! The population stability index.
//!
//! `PSI = Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ)` over the buckets, with `e` the
//! baseline's proportions and `a` the window's. Every term is ≥ 0 (both
//! factors have the same sign), so the index is ≥ 0 and 0 exactly when the
//! proportions agree. The usual reading:
//!
//! | PSI          | shift                                   |
//! |--------------|-----------------------------------------|
//! | < 0.1        | none worth acting on                    |
//! | 0.1 – 0.25   | moderate: watch it                      |
//! | > 0.25       | significant: the default `threshold`    |

/// A bucket's proportion is taken as at least this, so that a bucket empty
/// on one side adds a large but finite term instead of infinity.
pub const PSI_EPSILON: f64 = 1e-4;

/// Below this the distributions are taken as unchanged.
pub const PSI_NO_SHIFT: f64 = 0.1;

/// Above this the shift is significant (the default threshold).
pub const PSI_SIGNIFICANT: f64 = 0.25;

/// The index of `actual` against `expected`, both proportions per bucket
/// (each summing to 1). A bucket missing from the shorter slice counts as
/// empty; a negative or non-finite proportion counts as empty too.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    let n = expected.len().max(actual.len());
    let at = |v: &[f64], i: usize| {
        let p = v.get(i).copied().unwrap_or(0.0);
        if p.is_finite() && p > PSI_EPSILON {
            p
        } else {
            PSI_EPSILON
        }
    };
    (0..n)
        .map(|i| {
            let (e, a) = (at(expected, i), at(actual, i));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Counts as proportions of their total; `None` when all are zero.
pub fn proportions(counts: &[u64]) -> Option<Vec<f64>> {
    let total: u64 = counts.iter().fold(0u64, |t, &c| t.saturating_add(c));
    if total == 0 {
        return None;
    }
    let total = total as f64;
    Some(counts.iter().map(|&c| c as f64 / total).collect())
}
