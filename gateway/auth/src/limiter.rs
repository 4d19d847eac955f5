//! The rate-limit and quota core: no I/O, and no clock of its own.
//!
//! Per key, and per (key, model) where the key has `model_limits` for the
//! model, a scope holds a GCRA cell (governor), a count of requests in
//! flight and today's counters. `check` asks every scope that applies, in
//! an order that wastes the least when one says no:
//!
//! 1. concurrency (key, then model): undone by dropping the slots taken;
//! 2. the daily request quota (key, then model): undone by uncounting;
//! 3. the rate (model, then key): a GCRA cell cannot be given back, so it
//!    comes last, and a request the key's rate refuses has spent only the
//!    model's cell.
//!
//! # Time
//!
//! Days come from the caller (`day`, UTC days since the epoch), so quotas
//! are tested on simulated days. The GCRA needs a monotonic clock at
//! nanosecond resolution, and governor reads it through its `Clock` trait,
//! so the limiter is generic over that trait instead of taking `now` per
//! call: production uses governor's `DefaultClock` (`QuantaClock`, a TSC
//! read of ~10 ns, monotonic), and tests pass a `FakeRelativeClock` that
//! they advance by hand, so refill and `Retry-After` are checked exactly
//! and without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::record::KeyRecord;
use crate::spec::Limits;

mod scope;

#[cfg(test)]
mod tests;

use scope::Scope;

pub const SECONDS_PER_DAY: u64 = 86_400;

/// The UTC day of a unix time, as `check` and the quotas count days.
pub fn utc_day(unix_s: u64) -> u64 {
    unix_s / SECONDS_PER_DAY
}

/// Seconds from `unix_s` to the next UTC midnight (at least 1).
pub fn seconds_until_next_utc_day(unix_s: u64) -> u64 {
    SECONDS_PER_DAY - unix_s % SECONDS_PER_DAY
}

pub struct Limiter<C: Clock = DefaultClock> {
    clock: C,
    /// By key id (the prefix). Only authenticated keys reach the limiter,
    /// so this is bounded by the store.
    keys: RwLock<HashMap<String, Arc<KeyState<C>>>>,
}

struct KeyState<C: Clock> {
    key: Scope<C>,
    /// Only models the key has `model_limits` for (or that a restored
    /// snapshot named).
    models: RwLock<HashMap<String, Arc<Scope<C>>>>,
}

/// A request admitted by `check`: holds its concurrency slots until
/// dropped. Its count against the day's quota stays.
#[must_use = "the request's concurrency slot is released when the permit is dropped"]
#[derive(Debug, Default)]
pub struct Permit {
    slots: [Option<Arc<AtomicU32>>; 2],
}

/// Why `check` (or `try_spill`) refused: for a 429 with `Retry-After` and a
/// JSON body naming the limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// `rps`, `concurrency`, `daily_requests` or `daily_spill_bytes`.
    pub limit: &'static str,
    /// `key`, or `model <name>` for a key's per-model limits.
    pub scope: String,
    /// Seconds to wait, at least 1: from the GCRA for `rps`, 1 for
    /// `concurrency`. Also 1 for the daily quotas, where `until_next_day`
    /// says the real wait is until UTC midnight (see `retry_after`).
    pub retry_after_s: u64,
    pub until_next_day: bool,
    /// Names the key, the limit and its value; never a secret.
    #[serde(rename = "error")]
    pub message: String,
}

impl Denied {
    /// The `Retry-After` seconds at `now_unix_s`.
    pub fn retry_after(&self, now_unix_s: u64) -> u64 {
        if self.until_next_day {
            seconds_until_next_utc_day(now_unix_s)
        } else {
            self.retry_after_s
        }
    }
}

/// Today's counters of one key (and of its models with their own limits),
/// for status and for persisting across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub requests: u64,
    pub spill_bytes: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelUsage>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub requests: u64,
    pub spill_bytes: u64,
}

/// One scope that applies to a request: its state, limits, and which model
/// (`None`: the key's own).
struct Target<'a, C: Clock> {
    scope: &'a Scope<C>,
    limits: &'a Limits,
    model: Option<&'a str>,
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter reading GCRA time from `clock`: `DefaultClock::default()`
    /// in production, a `FakeRelativeClock` in tests.
    pub fn new(clock: C) -> Limiter<C> {
        Limiter {
            clock,
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// Checks rate, concurrency and the daily request quota of `key` for
    /// `model` (the key's limits, and its `model_limits` for `model` if
    /// any). On success the returned permit holds the concurrency slots
    /// until dropped, and the request counts against `day`'s quota.
    ///
    /// Authorization (`KeyRecord::may_call`) is the caller's, before this.
    pub fn check(&self, key: &KeyRecord, model: &str, day: u64) -> Result<Permit, Denied> {
        let state = self.state(&key.id);
        let model_limits = key.model_limits.get(model);
        let model_scope = model_limits.map(|_| state.model(model));
        let targets = [
            Some(Target {
                scope: &state.key,
                limits: &key.limits,
                model: None,
            }),
            model_scope
                .as_deref()
                .zip(model_limits)
                .map(|(scope, limits)| Target {
                    scope,
                    limits,
                    model: Some(model),
                }),
        ];
        let targets = || targets.iter().flatten();

        let mut permit = Permit::default();
        for (slot, t) in permit.slots.iter_mut().zip(targets()) {
            if !t.scope.enter(t.limits.max_concurrent) {
                let max = t.limits.max_concurrent.unwrap_or(0);
                return Err(denied(
                    key,
                    t.model,
                    "concurrency",
                    1,
                    false,
                    &format!("{max} concurrent requests"),
                ));
            }
            *slot = Some(t.scope.in_flight.clone());
        }

        let mut counted: [Option<(&Scope<C>, u64)>; 2] = [None, None];
        let uncount = |counted: &[Option<(&Scope<C>, u64)>; 2]| {
            for (scope, day) in counted.iter().flatten() {
                scope.uncount(*day);
            }
        };
        for (mark, t) in counted.iter_mut().zip(targets()) {
            match t.scope.count(t.limits.daily_requests, day) {
                Some(on) => *mark = Some((t.scope, on)),
                None => {
                    uncount(&counted);
                    let max = t.limits.daily_requests.unwrap_or(0);
                    return Err(denied(
                        key,
                        t.model,
                        "daily_requests",
                        1,
                        true,
                        &format!("{max} requests per day (UTC)"),
                    ));
                }
            }
        }

        for t in targets().rev() {
            if let Err(wait) = t.scope.rate(t.limits, &self.clock) {
                uncount(&counted);
                let rps = t.limits.rps.unwrap_or(0.0);
                let burst = t.limits.effective_burst().unwrap_or(0);
                return Err(denied(
                    key,
                    t.model,
                    "rps",
                    whole_seconds(wait),
                    false,
                    &format!("{rps} requests per second (burst {burst})"),
                ));
            }
        }
        Ok(permit)
    }

    /// Whether `bytes` more may be spilled to a region for `key` and `model`
    /// today: the key allows spilling and neither its daily spill quota nor
    /// the model's would be exceeded. Counts nothing (see `spilled`, or
    /// `try_spill` to check and count at once). Residency is the caller's
    /// (`KeyRecord::may_spill_to`).
    pub fn may_spill(&self, key: &KeyRecord, model: &str, bytes: u64, day: u64) -> bool {
        key.spill && self.check_spill(key, model, bytes, day).is_ok()
    }

    /// `may_spill`'s quota half, with the denial naming the quota that is
    /// spent (for a 429 when the request cannot be served here either).
    /// Counts nothing; does not look at `key.spill`.
    pub fn check_spill(
        &self,
        key: &KeyRecord,
        model: &str,
        bytes: u64,
        day: u64,
    ) -> Result<(), Denied> {
        self.spill(key, model, bytes, day, false)
    }

    /// Counts `bytes` spilled for `key` and `model` on `day`.
    pub fn spilled(&self, key: &KeyRecord, model: &str, bytes: u64, day: u64) {
        let state = self.state(&key.id);
        let add = |scope: &Scope<C>| {
            let mut daily = scope.daily();
            let today = daily.on(day);
            today.spill_bytes = today.spill_bytes.saturating_add(bytes);
        };
        add(&state.key);
        if key.model_limits.contains_key(model) {
            add(&state.model(model));
        }
    }

    /// `may_spill` and `spilled` at once, so concurrent spills cannot both
    /// pass the last of a quota. The denial names the quota (a key with
    /// `spill = false` is not asked here: check `may_spill_to` first).
    pub fn try_spill(
        &self,
        key: &KeyRecord,
        model: &str,
        bytes: u64,
        day: u64,
    ) -> Result<(), Denied> {
        self.spill(key, model, bytes, day, true)
    }

    /// Today's counters by key id (keys with nothing counted on `day` are
    /// left out).
    pub fn usage(&self, day: u64) -> BTreeMap<String, Usage> {
        let keys = self.keys.read();
        let mut out = BTreeMap::new();
        for (id, state) in keys.iter() {
            let mut usage = Usage::default();
            if let Some(d) = state.key.usage(day) {
                usage.requests = d.requests;
                usage.spill_bytes = d.spill_bytes;
            }
            for (model, scope) in state.models.read().iter() {
                if let Some(d) = scope.usage(day) {
                    let m = ModelUsage {
                        requests: d.requests,
                        spill_bytes: d.spill_bytes,
                    };
                    usage.models.insert(model.clone(), m);
                }
            }
            if usage != Usage::default() {
                out.insert(id.clone(), usage);
            }
        }
        out
    }

    /// Loads a snapshot of `day` (after a restart). Counters already higher
    /// stay; a snapshot of an earlier day than a scope's is ignored, so an
    /// old file restored late cannot refill today's quota.
    pub fn restore(&self, day: u64, usage: BTreeMap<String, Usage>) {
        for (id, u) in usage {
            let state = self.state(&id);
            state.key.restore(day, u.requests, u.spill_bytes);
            for (model, m) in u.models {
                state.model(&model).restore(day, m.requests, m.spill_bytes);
            }
        }
    }

    /// Drops a key's state: for a revoked or rotated key (whose id is gone),
    /// or to start a key's limits over. Changed limits need no `forget`: a
    /// scope whose rate or burst changed gets a new GCRA cell at its next
    /// check, and the other limits are read from the record each time.
    pub fn forget(&self, key_id: &str) {
        self.keys.write().remove(key_id);
    }

    /// Requests of `key_id` in flight now (for status).
    pub fn in_flight(&self, key_id: &str) -> u32 {
        let keys = self.keys.read();
        keys.get(key_id)
            .map_or(0, |s| s.key.in_flight.load(Ordering::Acquire))
    }

    fn state(&self, key_id: &str) -> Arc<KeyState<C>> {
        if let Some(state) = self.keys.read().get(key_id) {
            return state.clone();
        }
        let mut keys = self.keys.write();
        let state = keys.entry(key_id.to_owned()).or_insert_with(|| {
            Arc::new(KeyState {
                key: Scope::new(),
                models: RwLock::new(HashMap::new()),
            })
        });
        state.clone()
    }

    /// Checks (and with `count`, adds) `bytes` against the key's and the
    /// model's spill quotas, holding both scopes' counters meanwhile (key's
    /// lock first, always).
    fn spill(
        &self,
        key: &KeyRecord,
        model: &str,
        bytes: u64,
        day: u64,
        count: bool,
    ) -> Result<(), Denied> {
        let state = self.state(&key.id);
        let model_limits = key.model_limits.get(model);
        let model_scope = model_limits.map(|_| state.model(model));
        let mut key_daily = state.key.daily();
        let mut model_daily = model_scope.as_ref().map(|s| s.daily());
        let over =
            |used: u64, max: Option<u64>| max.is_some_and(|max| used.saturating_add(bytes) > max);
        let key_today = key_daily.on(day);
        if over(key_today.spill_bytes, key.limits.daily_spill_bytes) {
            return Err(spill_denied(key, None, key.limits.daily_spill_bytes));
        }
        let model_today = model_daily.as_deref_mut().map(|d| d.on(day));
        if let (Some(today), Some(limits)) = (model_today.as_deref(), model_limits) {
            if over(today.spill_bytes, limits.daily_spill_bytes) {
                return Err(spill_denied(key, Some(model), limits.daily_spill_bytes));
            }
        }
        if count {
            key_today.spill_bytes = key_today.spill_bytes.saturating_add(bytes);
            if let Some(today) = model_today {
                today.spill_bytes = today.spill_bytes.saturating_add(bytes);
            }
        }
        Ok(())
    }
}

impl Default for Limiter<DefaultClock> {
    fn default() -> Limiter<DefaultClock> {
        Limiter::new(DefaultClock::default())
    }
}

impl<C: Clock + Clone> KeyState<C> {
    fn model(&self, model: &str) -> Arc<Scope<C>> {
        if let Some(scope) = self.models.read().get(model) {
            return scope.clone();
        }
        let mut models = self.models.write();
        models
            .entry(model.to_owned())
            .or_insert_with(|| Arc::new(Scope::new()))
            .clone()
    }
}

impl Permit {
    /// Requests in flight in the permit's key scope, this one included.
    pub fn key_in_flight(&self) -> u32 {
        self.slots[0]
            .as_ref()
            .map_or(0, |s| s.load(Ordering::Acquire))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        for slot in self.slots.iter().flatten() {
            slot.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Rounds up, at least 1: `Retry-After` counts whole seconds, and a client
/// told 0 would retry at once.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

fn denied(
    key: &KeyRecord,
    model: Option<&str>,
    limit: &'static str,
    retry_after_s: u64,
    until_next_day: bool,
    what: &str,
) -> Denied {
    let (scope, for_model) = match model {
        Some(m) => (format!("model {m}"), format!(" for model '{m}'")),
        None => ("key".to_owned(), String::new()),
    };
    Denied {
        limit,
        scope,
        retry_after_s,
        until_next_day,
        message: format!("key '{}' is over its limit of {what}{for_model}", key.name),
    }
}

fn spill_denied(key: &KeyRecord, model: Option<&str>, max: Option<u64>) -> Denied {
    let max = max.unwrap_or(0);
    denied(
        key,
        model,
        "daily_spill_bytes",
        1,
        true,
        &format!("{max} bytes spilled to regions per day (UTC)"),
    )
}
