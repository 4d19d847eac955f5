//! A cap on what a region may be sent per hour: requests and bytes, over a
//! sliding hour of one-minute buckets.

use crate::Micros;

const BUCKET_US: Micros = 60_000_000;
const BUCKETS: usize = 60;

#[derive(Clone, Debug)]
pub struct SpendCap {
    /// 0: no cap.
    max_requests: u64,
    max_bytes: u64,
    /// (minute index, requests, bytes), one slot per minute of the hour.
    buckets: [(u64, u64, u64); BUCKETS],
}

impl SpendCap {
    pub fn new(max_requests_per_hour: u64, max_bytes_per_hour: u64) -> SpendCap {
        SpendCap {
            max_requests: max_requests_per_hour,
            max_bytes: max_bytes_per_hour,
            buckets: [(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn totals(&self, now: Micros) -> (u64, u64) {
        let minute = now / BUCKET_US;
        self.buckets
            .iter()
            .filter(|(m, _, _)| *m != u64::MAX && minute.saturating_sub(*m) < BUCKETS as u64)
            .fold((0, 0), |(r, b), (_, rr, bb)| (r + rr, b + bb))
    }

    /// Whether one more request of `bytes` fits in the last hour's budget.
    pub fn allows(&self, now: Micros, bytes: u64) -> bool {
        let (r, b) = self.totals(now);
        (self.max_requests == 0 || r < self.max_requests)
            && (self.max_bytes == 0 || b + bytes <= self.max_bytes)
    }

    /// Counts a request sent (bytes sent plus bytes received).
    pub fn spend(&mut self, now: Micros, bytes: u64) {
        let minute = now / BUCKET_US;
        let slot = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.1 += 1;
        slot.2 += bytes;
    }

    /// Counts bytes that came back for a request already counted.
    pub fn add_bytes(&mut self, now: Micros, bytes: u64) {
        let minute = now / BUCKET_US;
        let slot = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.2 += bytes;
    }

    /// Requests and bytes in the last hour.
    pub fn used(&self, now: Micros) -> (u64, u64) {
        self.totals(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_requests_and_bytes_over_a_sliding_hour() {
        let mut c = SpendCap::new(3, 1_000);
        for _ in 0..3 {
            assert!(c.allows(0, 10));
            c.spend(0, 10);
        }
        assert!(!c.allows(BUCKET_US, 10), "request cap");
        assert!(
            c.allows(60 * BUCKET_US, 10),
            "an hour later the minute has left the window"
        );
        let mut c = SpendCap::new(0, 100);
        c.spend(0, 90);
        assert!(c.allows(1, 10));
        assert!(!c.allows(1, 11), "byte cap");
        assert_eq!(c.used(1), (1, 90));
    }
}
