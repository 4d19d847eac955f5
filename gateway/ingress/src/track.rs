//! Counting open connections (for draining) and a connection's activity
//! (for closing it when idle).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub(crate) struct Tracker {
    inner: Arc<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    open: AtomicUsize,
    notify: Notify,
}

pub(crate) struct Guard {
    inner: Arc<TrackerInner>,
}

impl Tracker {
    pub fn guard(&self) -> Guard {
        self.inner.open.fetch_add(1, Ordering::SeqCst);
        Guard {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Resolves once no guard is alive.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.inner.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.notify.notify_waiters();
        }
    }
}

/// Requests in flight on a connection and when the last one ended.
#[derive(Clone)]
pub(crate) struct Activity {
    inner: Arc<ActivityInner>,
}

struct ActivityInner {
    origin: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// Requests whose head has arrived, ever.
    started: AtomicU64,
}

pub(crate) struct Busy {
    inner: Arc<ActivityInner>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            inner: Arc::new(ActivityInner {
                origin: Instant::now(),
                in_flight: AtomicUsize::new(0),
                last_ms: AtomicU64::new(0),
                started: AtomicU64::new(0),
            }),
        }
    }

    pub fn busy(&self) -> Busy {
        self.inner.started.fetch_add(1, Ordering::SeqCst);
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Whether any request's head has arrived on the connection.
    pub fn any_request(&self) -> bool {
        self.inner.started.load(Ordering::SeqCst) > 0
    }

    /// Zero while a request is in flight.
    pub fn idle_for(&self) -> Duration {
        if self.inner.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.inner.last_ms.load(Ordering::SeqCst));
        self.inner.origin.elapsed().saturating_sub(last)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.inner.origin.elapsed().as_millis() as u64;
        self.inner.last_ms.store(now, Ordering::SeqCst);
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Rate-limits one repeated warning, such as a failing `accept` (out of file
/// descriptors fails every accept, many times a second): the first is
/// logged, then at most one per [`LogLimit::EVERY`] with the count of those
/// left out meanwhile.
pub(crate) struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub const EVERY: Duration = Duration::from_secs(5);

    pub fn new() -> LogLimit {
        LogLimit {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last one)` when this occurrence is to be
    /// logged, `None` when it is only counted.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// After a failed `accept` (out of descriptors, mostly): logs it through
/// `limit`, then backs off 50 ms so that the listener does not spin.
pub(crate) async fn accept_failed(limit: &mut LogLimit, listener: &str, error: &std::io::Error) {
    if let Some(suppressed) = limit.hit(Instant::now()) {
        tracing::warn!(
            listener,
            %error,
            suppressed,
            "accepting a connection failed (repeats are logged at most every 5 s; suppressed counts those left out)"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_logs_once_per_period_with_the_count_left_out() {
        let mut limit = LogLimit::new();
        let t0 = Instant::now();
        assert_eq!(limit.hit(t0), Some(0));
        for i in 1..20 {
            assert_eq!(limit.hit(t0 + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(limit.hit(t0 + LogLimit::EVERY), Some(19));
        assert_eq!(
            limit.hit(t0 + LogLimit::EVERY + Duration::from_secs(1)),
            None
        );
        assert_eq!(limit.hit(t0 + LogLimit::EVERY * 3), Some(1));
    }
}
