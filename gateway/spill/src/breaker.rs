//! A circuit breaker per region: closed, open after too many failures in a
//! window, half-open probes after a cool-down.

use std::collections::VecDeque;

use crate::Micros;

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes older than this do not count.
    pub window_us: Micros,
    /// No opening on fewer outcomes than this in the window.
    pub min_requests: usize,
    /// Open when failures / outcomes in the window reach this (0..=1).
    pub failure_ratio: f64,
    /// How long to stay open before probing; doubles on each failed probe
    /// round, up to `max_open_us`.
    pub open_us: Micros,
    pub max_open_us: Micros,
    /// Requests let through while half-open; all must succeed to close.
    pub probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            window_us: 10_000_000,
            min_requests: 5,
            failure_ratio: 0.5,
            open_us: 2_000_000,
            max_open_us: 60_000_000,
            probes: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Refusing until the time given.
    Open {
        until: Micros,
    },
    /// Letting `probes` requests through.
    HalfOpen,
}

impl BreakerState {
    /// For the metrics gauge: 0 closed, 1 half-open, 2 open.
    pub fn code(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open { .. } => 2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    /// (time, failed) in the window, and how many of them failed (kept
    /// as a running count: a region answering thousands of requests a
    /// second has as many outcomes in its window).
    outcomes: VecDeque<(Micros, bool)>,
    failures: usize,
    probes_sent: usize,
    probes_ok: usize,
    open_for: Micros,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        let open_for = config.open_us;
        Breaker {
            config,
            state: BreakerState::Closed,
            outcomes: VecDeque::new(),
            failures: 0,
            probes_sent: 0,
            probes_ok: 0,
            open_for,
        }
    }

    pub fn state(&mut self, now: Micros) -> BreakerState {
        if let BreakerState::Open { until } = self.state {
            if now >= until {
                self.state = BreakerState::HalfOpen;
                self.probes_sent = 0;
                self.probes_ok = 0;
            }
        }
        self.state
    }

    /// Whether a request may go now (counting it as a probe when half-open).
    pub fn allow(&mut self, now: Micros) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen if self.probes_sent < self.config.probes => {
                self.probes_sent += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// Whether a request could go now, without taking a probe slot.
    pub fn would_allow(&mut self, now: Micros) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => self.probes_sent < self.config.probes,
        }
    }

    pub fn record(&mut self, now: Micros, failed: bool) {
        match self.state(now) {
            BreakerState::HalfOpen => {
                if failed {
                    self.open_for = (self.open_for * 2).min(self.config.max_open_us);
                    self.trip(now);
                } else {
                    self.probes_ok += 1;
                    if self.probes_ok >= self.config.probes {
                        self.state = BreakerState::Closed;
                        self.outcomes.clear();
                        self.failures = 0;
                        self.open_for = self.config.open_us;
                    }
                }
            }
            // A late answer to a request sent before opening changes nothing.
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.outcomes.push_back((now, failed));
                self.failures += failed as usize;
                let horizon = now.saturating_sub(self.config.window_us);
                while let Some(&(t, f)) = self.outcomes.front() {
                    if t >= horizon {
                        break;
                    }
                    self.outcomes.pop_front();
                    self.failures -= f as usize;
                }
                let n = self.outcomes.len();
                if n >= self.config.min_requests
                    && self.failures as f64 >= self.config.failure_ratio * n as f64
                {
                    self.trip(now);
                }
            }
        }
    }

    fn trip(&mut self, now: Micros) {
        self.state = BreakerState::Open {
            until: now + self.open_for,
        };
        self.outcomes.clear();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            window_us: 1_000,
            min_requests: 4,
            failure_ratio: 0.5,
            open_us: 100,
            max_open_us: 400,
            probes: 2,
        })
    }

    #[test]
    fn opens_on_the_failure_ratio_and_not_before_min_requests() {
        let mut b = breaker();
        b.record(0, true);
        b.record(1, true);
        b.record(2, true);
        assert_eq!(
            b.state(3),
            BreakerState::Closed,
            "3 outcomes < min_requests"
        );
        b.record(3, false);
        assert_eq!(b.state(3), BreakerState::Open { until: 103 });
        assert!(!b.allow(50));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut b = breaker();
        for t in 0..3 {
            b.record(t, true);
        }
        for t in 2_000..2_004 {
            b.record(t, false);
        }
        assert_eq!(b.state(2_004), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_or_reopen_with_backoff() {
        let mut b = breaker();
        for t in 0..4 {
            b.record(t, true);
        }
        assert!(!b.allow(100));
        assert!(b.allow(103), "half-open: first probe");
        assert!(b.allow(104), "second probe");
        assert!(!b.allow(105), "no more probes until they answer");
        b.record(110, true);
        assert_eq!(
            b.state(110),
            BreakerState::Open { until: 310 },
            "open time doubled"
        );
        assert!(b.allow(310));
        assert!(b.allow(310));
        b.record(320, false);
        assert_eq!(b.state(320), BreakerState::HalfOpen);
        b.record(321, false);
        assert_eq!(b.state(321), BreakerState::Closed);
        assert!(b.would_allow(322));
    }
}
