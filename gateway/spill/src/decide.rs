//! Local, a region, or 503.

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::spend::SpendCap;
use crate::{Micros, RegionSet};

#[derive(Clone, Debug, Default)]
pub struct RegionLimits {
    /// 0: no cap.
    pub requests_per_hour: u64,
    /// 0: no cap.
    pub bytes_per_hour: u64,
    pub breaker: BreakerConfig,
}

/// What is known about one regional endpoint.
#[derive(Clone, Debug)]
pub struct Region {
    pub name: String,
    /// Where the region runs (ISO 3166-1 alpha-2), for residency; `None`:
    /// undeclared, so only requests that may go anywhere are sent to it.
    /// The core does not read it: the driver turns it into each request's
    /// [`RequestFacts::allowed`].
    pub country: Option<String>,
    breaker: Breaker,
    spend: SpendCap,
    /// Requests sent and not yet answered.
    in_flight: usize,
    /// EWMA of the end-to-end time of answers to requests that had the
    /// region to themselves, and when the last such answer came.
    base_us: Option<f64>,
    latency_at: Micros,
    /// EWMA of what each further concurrent request added to an answer's
    /// time: the region's marginal cost under the load we send it.
    per_extra_us: Option<f64>,
    /// EWMA of health-probe round trips.
    rtt_us: Option<f64>,
}

const ALPHA: f64 = 0.2;

/// A region's measured latency older than this gives way to its probes.
pub const LATENCY_STALE_US: Micros = 10_000_000;

fn ewma(old: Option<f64>, new: f64) -> Option<f64> {
    Some(match old {
        None => new,
        Some(o) => o + ALPHA * (new - o),
    })
}

impl Region {
    pub fn new(name: impl Into<String>, limits: RegionLimits) -> Region {
        Region {
            name: name.into(),
            country: None,
            breaker: Breaker::new(limits.breaker),
            spend: SpendCap::new(limits.requests_per_hour, limits.bytes_per_hour),
            in_flight: 0,
            base_us: None,
            latency_at: 0,
            per_extra_us: None,
            rtt_us: None,
        }
    }

    /// The jurisdiction the region runs in.
    pub fn in_country(mut self, country: Option<String>) -> Region {
        self.country = country;
        self
    }

    pub fn observe_rtt(&mut self, rtt: Micros) {
        self.rtt_us = ewma(self.rtt_us, rtt as f64);
    }

    /// Expected answer time for one more request: the region's unloaded
    /// time (measured when there is a recent measurement, else the probe
    /// round trip plus what the work takes here) plus the marginal cost of
    /// each request already in flight to it (learnt; until then assumed to
    /// be the local cost, i.e. a region no faster than this box).
    ///
    /// Counting what is in flight keeps a burst from all going to a region
    /// that cannot absorb it, and lets the expectation fall back as soon as
    /// the region drains, so one slow spell does not keep it out.
    pub fn expected_us(&self, local_service: Option<Micros>, now: Micros) -> Micros {
        let local = local_service.unwrap_or(0) as f64;
        let base = match self.base_us {
            Some(b) if now.saturating_sub(self.latency_at) < LATENCY_STALE_US => b,
            _ => self.rtt_us.unwrap_or(0.0) + local,
        };
        let per = self.per_extra_us.unwrap_or(local.max(base / 2.0));
        (base + self.in_flight as f64 * per) as Micros
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn breaker_state(&mut self, now: Micros) -> BreakerState {
        self.breaker.state(now)
    }

    pub fn spent(&self, now: Micros) -> (u64, u64) {
        self.spend.used(now)
    }
}

/// What the decision needs to know about one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts {
    /// Request bytes as sent to a region (tensor bytes).
    pub bytes: u64,
    /// The regions this request may be sent to: the intersection of the
    /// model's and the caller's residency, less everything when the
    /// request is pinned to this box (residency "local", by request, model,
    /// key or client) or its caller may not spill. A set with none of
    /// [`Spill::regions`] in it pins the request here. The default is
    /// empty: a request may leave only when the driver says where to.
    pub allowed: RegionSet,
    /// The model's latency objective; `None`: spill only when the queue is full.
    pub slo_us: Option<Micros>,
    /// The local queue has no room.
    pub queue_full: bool,
    /// The model is placed in the regions (model config `placement =
    /// "region"`): every request goes to a region while one can take it.
    pub prefer_region: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Predicted to miss the latency objective locally.
    Slo,
    /// The local queue is full.
    QueueFull,
    /// A region failed and this is the next try.
    Retry,
    /// The model is placed in the regions.
    Placement,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Slo => "slo",
            Reason::QueueFull => "queue_full",
            Reason::Retry => "retry",
            Reason::Placement => "placement",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Local,
    Spill {
        region: usize,
        reason: Reason,
    },
    /// 503 with Retry-After.
    Reject {
        reason: Reason,
    },
}

/// The regions and the decision over them.
#[derive(Clone, Debug, Default)]
pub struct Spill {
    pub regions: Vec<Region>,
}

impl Spill {
    pub fn new(regions: Vec<Region>) -> Spill {
        Spill { regions }
    }

    /// Decides for one request. `predicted` is the local wait from
    /// [`crate::predict_wait`] (`None`: unknown yet, so local);
    /// `local_service` the estimated compute for its rows; `tried` the
    /// regions that already failed this request. A region chosen here has
    /// the request counted against its spend cap and, if half-open, its
    /// probe slot taken.
    ///
    /// **Invariant:** the region of a `Spill` is in `facts.allowed`, under
    /// any load; a request allowed no region gets only `Local` or
    /// `Reject`.
    pub fn decide(
        &mut self,
        facts: &RequestFacts,
        predicted: Option<Micros>,
        local_service: Option<Micros>,
        tried: &[usize],
        now: Micros,
    ) -> Decision {
        let misses = match (facts.slo_us, predicted) {
            (Some(slo), Some(p)) => p > slo,
            _ => false,
        };
        let retry = !tried.is_empty();
        let allowed = facts.allowed & RegionSet::first(self.regions.len());
        let pinned = allowed.is_empty();
        let placed = facts.prefer_region && !pinned;
        if !facts.queue_full && !misses && !retry && !placed {
            return Decision::Local;
        }
        let reason = if retry {
            Reason::Retry
        } else if placed {
            Reason::Placement
        } else if facts.queue_full {
            Reason::QueueFull
        } else {
            Reason::Slo
        };
        let local_fallback = if facts.queue_full {
            Decision::Reject { reason }
        } else if pinned && misses {
            // Pinned and late: the client is told to come back rather than
            // kept waiting past its objective.
            Decision::Reject {
                reason: Reason::Slo,
            }
        } else {
            Decision::Local
        };
        if pinned {
            return local_fallback;
        }
        // A model placed in the regions goes to any region that can take it.
        let budget = if placed { None } else { facts.slo_us };
        let best = self
            .regions
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| allowed.contains(*i) && !tried.contains(i))
            .filter_map(|(i, r)| {
                let expected = r.expected_us(local_service, now);
                let in_time = budget.is_none_or(|slo| expected <= slo);
                (in_time && r.breaker.would_allow(now) && r.spend.allows(now, facts.bytes))
                    .then_some((i, expected))
            })
            .min_by_key(|&(_, expected)| expected);
        match best {
            Some((i, _)) => {
                let r = &mut self.regions[i];
                r.breaker.allow(now);
                r.spend.spend(now, facts.bytes);
                r.in_flight += 1;
                Decision::Spill { region: i, reason }
            }
            None => local_fallback,
        }
    }

    /// The outcome of a request sent to `region`: its end-to-end time when
    /// it answered, whether a failure counts against the region, and the
    /// bytes that came back.
    pub fn record(
        &mut self,
        region: usize,
        now: Micros,
        answered_in: Option<Micros>,
        counts_against: bool,
        bytes_back: u64,
    ) {
        let Some(r) = self.regions.get_mut(region) else {
            return;
        };
        // How many shared the region with this one, itself included
        // (approximated by what is in flight as it comes back).
        let concurrency = r.in_flight.max(1);
        r.in_flight = r.in_flight.saturating_sub(1);
        r.spend.add_bytes(now, bytes_back);
        match answered_in {
            Some(t) => {
                let t = t as f64;
                let fresh = now.saturating_sub(r.latency_at) < LATENCY_STALE_US;
                match (concurrency, r.base_us.filter(|_| fresh)) {
                    (1, base) | (_, base @ None) => {
                        r.base_us = ewma(base, t);
                        r.latency_at = now;
                    }
                    (c, Some(base)) => {
                        let per = ((t - base) / (c - 1) as f64).max(0.0);
                        r.per_extra_us = ewma(r.per_extra_us, per);
                    }
                }
                r.breaker.record(now, false);
            }
            None if counts_against => r.breaker.record(now, true),
            None => {}
        }
    }

    /// A request sent to `region` whose outcome will never be known (its
    /// caller went away): it is no longer in flight, and nothing is learnt.
    pub fn abandon(&mut self, region: usize) {
        if let Some(r) = self.regions.get_mut(region) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
