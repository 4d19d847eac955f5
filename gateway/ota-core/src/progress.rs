//! Bytes done and total, rate and time left, from samples the driver passes
//! in with their timestamps (a `Duration` since an origin of its choosing,
//! from a monotonic clock); for `nusactl` and the metrics.
//!
//! The rate is an exponentially weighted moving average over time, not over
//! samples: a sample after `dt` seconds weighs `1 - exp(-dt / tau)`, so
//! irregular samples (a chunk every 5 ms, then a 30 s stall) weigh by the
//! time they cover. Silence since the last sample counts as no progress
//! when the rate is read, so a stalled download shows a falling rate and a
//! growing ETA instead of the last good estimate forever.

use std::time::Duration;

/// Progress of one transfer (download or slot write).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    total: u64,
    done: u64,
    tau: f64,
    last: Option<(Duration, u64)>,
    rate: Option<f64>,
}

impl Progress {
    /// `done` may be non-zero when a transfer resumes. `time_constant` is
    /// how quickly the rate follows a change (about 63 % after one).
    pub fn new(total: u64, done: u64, time_constant: Duration) -> Self {
        Self {
            total,
            done,
            // A zero constant would divide by zero; a microsecond already
            // means "follow the latest sample".
            tau: time_constant.as_secs_f64().max(1e-6),
            last: None,
            rate: None,
        }
    }

    /// `done` bytes at time `at`. A sample older than the last one is
    /// ignored (returns false); one at the same time updates the count and
    /// its bytes enter the rate with the next later sample. A count that
    /// went down (a transfer restarted) restarts the rate's baseline.
    pub fn sample(&mut self, at: Duration, done: u64) -> bool {
        let Some((last_at, last_done)) = self.last else {
            self.last = Some((at, done));
            self.done = done;
            return true;
        };
        if at < last_at {
            return false;
        }
        self.done = done;
        if done < last_done {
            self.last = Some((at, done));
            return true;
        }
        if at == last_at {
            return true;
        }
        let dt = (at - last_at).as_secs_f64();
        let instant = (done - last_done) as f64 / dt;
        self.rate = Some(match self.rate {
            None => instant,
            Some(r) => r + (1.0 - (-dt / self.tau).exp()) * (instant - r),
        });
        self.last = Some((at, done));
        true
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// `0.0..=1.0`; an empty transfer is complete.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        (self.done as f64 / self.total as f64).min(1.0)
    }

    /// Bytes per second at `now`, `None` before two samples.
    pub fn rate(&self, now: Duration) -> Option<f64> {
        let rate = self.rate?;
        let silent = self
            .last
            .map_or(0.0, |(at, _)| now.saturating_sub(at).as_secs_f64());
        Some(rate * (-silent / self.tau).exp())
    }

    /// Time left at the current rate; `None` without a rate or when it has
    /// fallen to nothing.
    pub fn eta(&self, now: Duration) -> Option<Duration> {
        let left = self.total.saturating_sub(self.done);
        if left == 0 {
            return Some(Duration::ZERO);
        }
        let rate = self.rate(now)?;
        let secs = left as f64 / rate;
        // Below 1 byte per day it is a stall, not an estimate.
        (rate > 1.0 / 86_400.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn steady_rate_is_exact_and_eta_follows() {
        let mut p = Progress::new(1_000_000, 0, s(5.0));
        assert_eq!(p.rate(s(0.0)), None);
        assert_eq!(p.eta(s(0.0)), None);
        for i in 0..=10 {
            assert!(p.sample(s(i as f64 * 0.5), i * 50_000));
        }
        let rate = p.rate(s(5.0)).unwrap();
        assert!((rate - 100_000.0).abs() < 1e-6, "{rate}");
        assert_eq!(p.eta(s(5.0)), Some(s(5.0)));
        assert!((p.fraction() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn rate_moves_toward_a_new_speed_by_the_time_constant() {
        let mut p = Progress::new(u64::MAX, 0, s(2.0));
        p.sample(s(0.0), 0);
        p.sample(s(1.0), 1000);
        // Speed drops to 0 B/s for one time constant: 1/e of the old rate.
        p.sample(s(3.0), 1000);
        let r = p.rate(s(3.0)).unwrap();
        assert!((r - 1000.0 * (-1.0f64).exp()).abs() < 1e-6, "{r}");
        // Irregular sampling of the same speed gives the same rate.
        let mut a = Progress::new(u64::MAX, 0, s(2.0));
        let mut b = a.clone();
        for t in [0.0, 0.1, 0.2, 3.0, 3.1, 7.0] {
            a.sample(s(t), (t * 400.0) as u64);
        }
        for t in [0.0, 7.0] {
            b.sample(s(t), (t * 400.0) as u64);
        }
        assert!((a.rate(s(7.0)).unwrap() - b.rate(s(7.0)).unwrap()).abs() < 1.0);
    }

    #[test]
    fn silence_decays_the_rate_and_stretches_the_eta() {
        let mut p = Progress::new(10_000, 0, s(1.0));
        p.sample(s(0.0), 0);
        p.sample(s(1.0), 1000);
        let fresh = p.eta(s(1.0)).unwrap();
        let stale = p.eta(s(4.0)).unwrap();
        assert_eq!(fresh, s(9.0));
        assert!(stale > fresh * 19, "{stale:?}");
        assert_eq!(p.eta(s(1e6)), None);
    }

    #[test]
    fn out_of_order_same_time_and_restarted_samples() {
        let mut p = Progress::new(10_000, 2_000, s(1.0));
        assert_eq!(p.done(), 2_000);
        p.sample(s(10.0), 2_000);
        assert!(!p.sample(s(9.0), 9_000));
        assert_eq!(p.done(), 2_000);
        assert!(p.sample(s(10.0), 2_500));
        p.sample(s(11.0), 3_000);
        // The 500 bytes reported at t=10 count toward the first rate.
        assert_eq!(p.rate(s(11.0)), Some(1_000.0));
        // A restart from zero sets a new baseline and keeps the rate.
        p.sample(s(12.0), 0);
        p.sample(s(13.0), 1_000);
        assert!((p.rate(s(13.0)).unwrap() - 1_000.0).abs() < 1e-9);
        p.sample(s(14.0), 10_000);
        assert_eq!(p.eta(s(20.0)), Some(Duration::ZERO));
        assert_eq!(Progress::new(0, 0, s(1.0)).fraction(), 1.0);
    }
}
