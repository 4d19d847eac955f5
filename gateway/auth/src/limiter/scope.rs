//! The state of one scope (a key, or a key's calls to one model): its GCRA
//! cell, requests in flight, and today's counters.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::spec::Limits;

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub(super) struct Scope<C: Clock> {
    /// Rebuilt (and so refilled) when the scope's rate or burst changes.
    rate: RwLock<Option<Rate<C>>>,
    /// Shared with the permits that hold a slot, so a permit outliving a
    /// `forget` decrements its own counter, not the new state's.
    pub in_flight: Arc<AtomicU32>,
    daily: Mutex<Daily>,
}

struct Rate<C: Clock> {
    rps: f64,
    burst: u32,
    gcra: Gcra<C>,
}

/// Counters of one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Daily {
    pub day: u64,
    pub requests: u64,
    pub spill_bytes: u64,
}

impl Daily {
    /// The counters of `day`: a later day starts from zero. An earlier day
    /// (a caller whose clock stepped back) counts against the current one,
    /// so a quota cannot be refilled by going back in time.
    pub fn on(&mut self, day: u64) -> &mut Daily {
        if day > self.day {
            *self = Daily {
                day,
                ..Daily::default()
            };
        }
        self
    }
}

impl<C: Clock + Clone> Scope<C> {
    pub fn new() -> Scope<C> {
        Scope {
            rate: RwLock::new(None),
            in_flight: Arc::new(AtomicU32::new(0)),
            daily: Mutex::new(Daily::default()),
        }
    }

    /// Takes a concurrency slot unless `max` are taken. Counted even
    /// without a limit, for status.
    pub fn enter(&self, max: Option<u32>) -> bool {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|max| before >= max) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Counts one request against `day` unless `max` are counted; returns
    /// the day it was counted on (for `uncount`).
    pub fn count(&self, max: Option<u64>, day: u64) -> Option<u64> {
        let mut daily = self.daily.lock();
        let today = daily.on(day);
        if max.is_some_and(|max| today.requests >= max) {
            return None;
        }
        today.requests += 1;
        Some(today.day)
    }

    /// Takes back a request counted on `day` (it was then denied by a later
    /// check), unless the day has rolled over since.
    pub fn uncount(&self, day: u64) {
        let mut daily = self.daily.lock();
        if daily.day == day {
            daily.requests = daily.requests.saturating_sub(1);
        }
    }

    /// One GCRA cell, or how long until one conforms.
    pub fn rate(&self, limits: &Limits, clock: &C) -> Result<(), Duration> {
        let (Some(rps), Some(burst)) = (limits.rps, limits.effective_burst()) else {
            return Ok(());
        };
        {
            let rate = self.rate.read();
            if let Some(r) = rate.as_ref().filter(|r| r.rps == rps && r.burst == burst) {
                return r.gcra.check().map_err(|n| n.wait_time_from(clock.now()));
            }
        }
        let mut rate = self.rate.write();
        let r = match rate.as_mut() {
            // Another thread rebuilt it meanwhile.
            Some(r) if r.rps == rps && r.burst == burst => r,
            _ => rate.insert(Rate {
                rps,
                burst,
                gcra: RateLimiter::direct_with_clock(quota(rps, burst), clock.clone()),
            }),
        };
        r.gcra.check().map_err(|n| n.wait_time_from(clock.now()))
    }

    pub fn daily(&self) -> MutexGuard<'_, Daily> {
        self.daily.lock()
    }

    /// Today's counters, if any request or spill was counted on `day`.
    pub fn usage(&self, day: u64) -> Option<Daily> {
        let daily = *self.daily.lock();
        (daily.day == day && (daily.requests > 0 || daily.spill_bytes > 0)).then_some(daily)
    }

    /// Sets the counters of `day` from a snapshot: replaces an older day's,
    /// keeps the larger of each counter on the same day, ignores an older
    /// snapshot.
    pub fn restore(&self, day: u64, requests: u64, spill_bytes: u64) {
        let mut daily = self.daily.lock();
        if day < daily.day {
            return;
        }
        let today = daily.on(day);
        today.requests = today.requests.max(requests);
        today.spill_bytes = today.spill_bytes.max(spill_bytes);
    }
}

/// `rps` requests per second with a burst of `burst`. The interval is
/// rounded up to whole nanoseconds, so the limiter never admits more than
/// the configured rate (rounded down it would, by a hair, and the property
/// test of `burst + rps * elapsed` catches that).
///
/// governor's GCRA adds and multiplies nanoseconds unchecked (`interval *
/// (burst - 1)`, `tat + interval`): the interval is capped so that the
/// burst's span stays below 2^62 ns (146 years) even for a record that
/// bypassed validation (which allows at most a year).
fn quota(rps: f64, burst: u32) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let cap = (1u64 << 62) / u64::from(burst.get());
    let interval = if rps.is_finite() && rps > 0.0 {
        // `as` saturates.
        ((1e9 / rps).ceil() as u64).clamp(1, cap)
    } else {
        cap
    };
    match Quota::with_period(Duration::from_nanos(interval)) {
        Some(q) => q.allow_burst(burst),
        // Unreachable: the interval is at least 1 ns.
        None => Quota::per_second(burst),
    }
}
