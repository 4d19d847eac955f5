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
            }),
        }
    }

    pub fn busy(&self) -> Busy {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy {
            inner: Arc::clone(&self.inner),
        }
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
