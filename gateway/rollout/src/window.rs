//! What one step has seen: per arm, requests, errors and a histogram of
//! local compute time; and the shadow comparisons.
//!
//! Recording allocates nothing: the histogram is a fixed array of
//! log-spaced buckets, allocated with the window and zeroed at each step.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::shadow::ShadowResult;

/// Exact buckets below `2^SUB_BITS` µs, then `2^SUB_BITS` buckets per power
/// of two: a bucket is at most 1/32 (3.1%) of its lower bound wide.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Enough for every `u64`: the exact ones, then `SUB` per octave 5..=63.
const HIST_BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// Counts of microsecond values in log-spaced buckets.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
}

impl Histogram {
    pub(crate) fn new() -> Histogram {
        Histogram {
            counts: vec![0; HIST_BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }

    pub(crate) fn record(&mut self, us: u64) {
        if let Some(c) = self.counts.get_mut(index(us)) {
            *c = c.saturating_add(1);
            self.total = self.total.saturating_add(1);
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The upper bound of the bucket holding the value of nearest rank
    /// `ceil(q * total)`; `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(upper(i));
            }
        }
        None
    }

    /// The bucket holding the `rank`-th smallest value (1-based, clamped
    /// to the count); `None` when empty.
    fn bucket_at_rank(&self, rank: u64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let rank = rank.clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(i);
            }
        }
        None
    }

    /// One-sided 95% bounds of the p99 from the sample itself (the
    /// order statistics whose ranks bound it, by the normal approximation
    /// of the binomial): `(at least, at most)`. With few samples they are
    /// far apart, so that one slow outlier among sixty requests says
    /// little; with many they close on the p99.
    pub(crate) fn p99_bounds(&self) -> Option<(u64, u64)> {
        let n = self.total as f64;
        let (mean, sd) = (n * 0.99, (n * 0.99 * 0.01).sqrt());
        let low = (mean - Z95 * sd).floor().max(1.0) as u64;
        let high = (mean + Z95 * sd).ceil() as u64 + 1;
        // Conservative both ways: the lower edge of the low bucket, the
        // upper edge of the high one.
        let low = self.bucket_at_rank(low)?;
        let high = self.bucket_at_rank(high)?;
        Some((lower(low), upper(high)))
    }

    pub(crate) fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros();
    let shift = octave - SUB_BITS;
    // `v >> shift` is in SUB..2*SUB.
    (SUB + u64::from(shift) * SUB + ((v >> shift) - SUB)) as usize
}

/// The largest value in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let lower = (SUB + (i - SUB) % SUB) << shift;
    lower + ((1u64 << shift) - 1)
}

/// The smallest value in bucket `i`.
fn lower(i: usize) -> u64 {
    if i == 0 {
        0
    } else {
        upper(i - 1) + 1
    }
}

/// One arm's requests in the current step.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) compute: Histogram,
}

impl Window {
    pub(crate) fn new() -> Window {
        Window {
            requests: 0,
            errors: 0,
            compute: Histogram::new(),
        }
    }

    pub(crate) fn record(&mut self, outcome: Outcome) {
        self.requests = self.requests.saturating_add(1);
        if outcome.error {
            self.errors = self.errors.saturating_add(1);
        }
        if let Some(us) = outcome.compute_us {
            self.compute.record(us);
        }
    }

    pub(crate) fn figures(&self) -> Figures {
        let bounds = self.compute.p99_bounds();
        Figures {
            requests: self.requests,
            errors: self.errors,
            timed: self.compute.total(),
            p99_us: self.compute.quantile(0.99),
            p99_low_us: bounds.map(|b| b.0),
            p99_high_us: bounds.map(|b| b.1),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.compute.clear();
    }
}

/// z of a one-sided 95% bound.
const Z95: f64 = 1.645;

/// What one request served locally (or failed) tells the judgement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A 5xx or an engine failure; not a client's 4xx.
    pub error: bool,
    /// Local compute time, when the request was computed here.
    pub compute_us: Option<u64>,
}

impl Outcome {
    pub fn ok(compute_us: u64) -> Outcome {
        Outcome {
            error: false,
            compute_us: Some(compute_us),
        }
    }

    pub fn failed() -> Outcome {
        Outcome {
            error: true,
            compute_us: None,
        }
    }
}

/// An arm's figures at a check; the baseline is the stable arm's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    /// Requests with a compute time.
    pub timed: u64,
    /// p99 of compute time: the upper bound of its histogram bucket.
    pub p99_us: Option<u64>,
    /// One-sided 95% bounds of that p99 from the sample: it is at least
    /// `p99_low_us` and at most `p99_high_us`. The latency check fails only
    /// when the candidate's is slower beyond doubt.
    #[serde(default)]
    pub p99_low_us: Option<u64>,
    #[serde(default)]
    pub p99_high_us: Option<u64>,
}

impl Figures {
    /// Errors per request; 0 with no requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The shadow comparisons of the current step.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShadowWindow {
    pub(crate) compared: u64,
    pub(crate) agreeing: u64,
    pub(crate) max_abs: f64,
    pub(crate) max_rel: f64,
    /// The step's first disagreement, for the operator.
    pub(crate) first_disagreement: Option<String>,
}

impl ShadowWindow {
    pub(crate) fn record(&mut self, r: &ShadowResult) {
        self.compared = self.compared.saturating_add(1);
        if r.agree {
            self.agreeing = self.agreeing.saturating_add(1);
        } else if self.first_disagreement.is_none() {
            self.first_disagreement = Some(
                r.detail
                    .clone()
                    .unwrap_or_else(|| "outputs differ".to_owned()),
            );
        }
        // NaN (never produced by `compare`) must not poison the maxima.
        self.max_abs = max(self.max_abs, r.max_abs);
        self.max_rel = max(self.max_rel, r.max_rel);
    }

    pub(crate) fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreeing as f64 / self.compared as f64)
    }
}

fn max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_u64_and_are_narrow() {
        for v in (0..5000u64).chain([u64::MAX, u64::MAX - 1, 1 << 40, (1 << 40) - 1]) {
            let i = index(v);
            assert!(i < HIST_BUCKETS, "{v}");
            let hi = upper(i);
            assert!(hi >= v, "{v} above its bucket's upper bound {hi}");
            let lo = if i == 0 { 0 } else { upper(i - 1) + 1 };
            assert!(lo <= v, "{v} below its bucket's lower bound {lo}");
            assert!((hi - lo) as f64 <= lo as f64 * 0.05, "bucket {lo}..={hi}");
        }
        assert_eq!(upper(HIST_BUCKETS - 1), u64::MAX);
        // Buckets are contiguous.
        for i in 1..HIST_BUCKETS {
            assert_eq!(index(upper(i - 1) + 1), i);
        }
    }

    #[test]
    fn p99_is_within_five_percent() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.99), None);
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        // Nearest rank 990 of 100..=100_000 step 100 is 99_000.
        let p99 = h.quantile(0.99).unwrap_or(0);
        assert!((99_000..=99_000 + 99_000 / 20).contains(&p99), "{p99}");
        h.clear();
        h.record(7);
        assert_eq!(h.quantile(0.99), Some(7));
    }

    #[test]
    fn p99_bounds_widen_with_few_samples_and_close_with_many() {
        let mut h = Histogram::new();
        // 60 samples of 1 ms and one of 20 ms: the "p99" is the outlier,
        // but the sample does not show it is above 1 ms beyond doubt.
        for _ in 0..60 {
            h.record(1_000);
        }
        h.record(20_000);
        assert!(h.quantile(0.99).unwrap_or(0) >= 20_000);
        let (low, high) = h.p99_bounds().unwrap_or_default();
        assert!(low <= 1_050, "{low}");
        assert!(high >= 20_000, "{high}");
        // 100 000 samples 1..=100 000 us: the bounds hug the p99.
        let mut h = Histogram::new();
        for v in 1..=100_000 {
            h.record(v);
        }
        let (low, high) = h.p99_bounds().unwrap_or_default();
        assert!((97_000..=99_000).contains(&low), "{low}");
        assert!((99_000..=102_000).contains(&high), "{high}");
        assert_eq!(Histogram::new().p99_bounds(), None);
    }

    #[test]
    fn shadow_window_counts() {
        let mut w = ShadowWindow::default();
        let ok = ShadowResult {
            agree: true,
            max_abs: 0.1,
            max_rel: 0.0,
            argmax_agree: None,
            detail: None,
        };
        w.record(&ok);
        w.record(&ShadowResult::candidate_failed("engine error"));
        w.record(&ShadowResult {
            max_abs: f64::NAN,
            ..ok.clone()
        });
        assert_eq!((w.compared, w.agreeing), (3, 2));
        assert_eq!(w.max_abs, 0.1);
        assert_eq!(
            w.first_disagreement.as_deref(),
            Some("the candidate failed: engine error")
        );
    }
}
