//! What a tensor's values look like over a stretch of time, in bounded
//! memory: moments (Welford), min and max, and counts in fixed buckets.

/// Quantiles the learned edges sit at: deciles.
pub const QUANTILES: usize = 10;

/// At most this many inner edges: the warm-up's minimum, its nine inner
/// deciles and just above its maximum, so at most 12 value buckets (plus
/// the NaN bucket).
pub const MAX_EDGES: usize = QUANTILES + 1;

/// Count, mean and variance by Welford's update (stable where the naive
/// sum of squares cancels), min and max, over the finite values; NaN and
/// infinities are counted apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    nan: u64,
    infinite: u64,
}

impl Default for Moments {
    fn default() -> Moments {
        Moments {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan: 0,
            infinite: 0,
        }
    }
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        if x.is_nan() {
            self.nan = self.nan.saturating_add(1);
            return;
        }
        if x.is_infinite() {
            self.infinite = self.infinite.saturating_add(1);
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Finite values seen.
    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn nan(&self) -> u64 {
        self.nan
    }

    pub fn infinite(&self) -> u64 {
        self.infinite
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Population variance (divided by n).
    pub fn variance(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2 / self.n as f64).max(0.0))
    }

    pub fn std(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    pub fn min(&self) -> Option<f64> {
        (self.n > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.n > 0).then_some(self.max)
    }
}

/// Strictly increasing finite bucket edges: `k` edges make `k + 1`
/// buckets, bucket `i` holding `edges[i-1] <= x < edges[i]`; −∞ falls in
/// the first, +∞ in the last.
#[derive(Clone, Debug, PartialEq)]
pub struct Edges(Vec<f64>);

impl Edges {
    /// Edges from warm-up values (NaN and infinities ignored): the minimum,
    /// the inner deciles, and just above the maximum, duplicates merged.
    /// So the first and last buckets hold only what lies outside
    /// everything the warm-up saw, and constant data still gets a bucket
    /// below, at and above its value. No values: no edges (one bucket).
    pub fn learn(values: &[f64]) -> Edges {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Edges(Vec::new());
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mut edges = Vec::with_capacity(MAX_EDGES);
        edges.push(v[0]);
        for i in 1..QUANTILES {
            edges.push(v[i * n / QUANTILES]);
        }
        let top = v[n - 1];
        let above = top + (top.abs() * (2f64).powi(-40)).max(f64::MIN_POSITIVE);
        if above.is_finite() && above > top {
            edges.push(above);
        }
        edges.dedup();
        Edges(edges)
    }

    /// Published edges: finite, strictly increasing, at most 64.
    pub fn given(edges: Vec<f64>) -> Option<Edges> {
        let ok = edges.len() <= 64
            && edges.iter().all(|e| e.is_finite())
            && edges.windows(2).all(|w| w[0] < w[1]);
        ok.then_some(Edges(edges))
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// Value buckets (the NaN bucket not included).
    pub fn buckets(&self) -> usize {
        self.0.len() + 1
    }

    /// The bucket of a value that is not NaN.
    pub fn bucket(&self, x: f64) -> usize {
        self.0.partition_point(|&e| e <= x)
    }
}

/// One stretch of a tensor (the baseline, or a window): moments, bucket
/// counts and how many sampled requests carried it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub moments: Moments,
    /// Numeric tensors: one per value bucket, then NaN. Argmax: one per
    /// class kept, then "other". Empty until the edges are fixed.
    pub counts: Vec<u64>,
    /// Sampled requests that carried the tensor.
    pub samples: u64,
}

impl Summary {
    /// Counts a numeric value into its bucket (the moments are separate:
    /// during warm-up there are moments but no buckets yet).
    pub fn count_value(&mut self, edges: &Edges, x: f64) {
        let i = if x.is_nan() {
            edges.buckets()
        } else {
            edges.bucket(x)
        };
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
    }

    /// Counts a class; past the kept classes, "other" (the last count).
    pub fn count_class(&mut self, class: usize) {
        let last = self.counts.len().saturating_sub(1);
        if let Some(c) = self.counts.get_mut(class.min(last)) {
            *c = c.saturating_add(1);
        }
    }

    pub fn values(&self) -> u64 {
        self.counts.iter().fold(0u64, |t, &c| t.saturating_add(c))
    }

    /// Zeroes it for the next window, keeping the buckets.
    pub fn reset(&mut self) {
        self.moments = Moments::default();
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.samples = 0;
    }
}
