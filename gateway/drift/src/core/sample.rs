//! Which requests are sampled.

use std::sync::atomic::{AtomicU64, Ordering};

/// Deterministic 1-in-N: request 0, N, 2N, ... of those offered (over all
/// models together). One relaxed atomic add per request.
#[derive(Debug)]
pub struct Sampler {
    every: u64,
    seen: AtomicU64,
}

impl Sampler {
    /// `every` 0 is taken as 1 (every request).
    pub fn new(every: u64) -> Sampler {
        Sampler {
            every: every.max(1),
            seen: AtomicU64::new(0),
        }
    }

    pub fn sample(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed) % self.every == 0
    }
}
