//! `Costs`: the ledger behind one mutex, its metrics, the clock it is
//! given, the log of budget crossings and the state file.
//!
//! A request costs one short lock: find the series (a hash lookup, no
//! allocation once the series exists), add to its hour's bucket and to its
//! budgets, bump its counters. The file is written only by [`Costs::tick`]
//! and [`Costs::persist`], which the integrator calls off the request path
//! (a timer, shutdown).

use std::collections::HashMap;
use std::path::PathBuf;

use nusa_telemetry::Metrics;
use parking_lot::Mutex;

use crate::core::{
    window_start, Action, At, BudgetStatus, By, Config, ConfigError, Crossing, Figures, Ledger,
    Place, Report, Scope, SeriesId, Usage,
};
use crate::metrics::{CostMetrics, Ratio, SeriesHandles};

mod clock;
mod store;

pub use clock::utc_clock;
pub use store::{StateError, MAX_STATE_BYTES};

/// The time now, as the ledger counts it. Tests pass a simulated one.
pub type Clock = Box<dyn Fn() -> At + Send + Sync>;

/// The cost ledger of a running gateway.
pub struct Costs {
    inner: Mutex<Inner>,
    metrics: CostMetrics,
    now: Clock,
    path: Option<PathBuf>,
    currency: String,
    /// One writer of the state file at a time (timer and shutdown).
    writing: Mutex<()>,
}

struct Inner {
    ledger: Ledger,
    /// By series number: the counters of each live ledger series.
    handles: Vec<Option<SeriesHandles>>,
    key_gauges: HashMap<String, Ratio>,
    region_gauges: HashMap<String, Ratio>,
    /// The budget day the gauges show.
    gauge_day: Option<u64>,
    /// Changed since the file was last written.
    dirty: bool,
    /// The hour the series bound was last logged, to log it once an hour.
    folded_logged: Option<u64>,
}

/// Why the ledger could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Costs {
    /// Checks the configuration, restores the ledger from `path` when the
    /// file is there (a damaged or foreign one is an error, never replaced
    /// silently) and registers the `nusa_cost_*` families in `metrics`.
    /// Without a path the ledger lives in memory only.
    pub fn open(
        config: Config,
        metrics: &Metrics,
        path: Option<PathBuf>,
        now: Clock,
    ) -> Result<Costs, OpenError> {
        config.check()?;
        let saved = match &path {
            Some(p) => store::read(p)?,
            None => None,
        };
        let ledger = match (saved, &path) {
            (Some(snapshot), Some(p)) => {
                Ledger::restore(snapshot, config).map_err(|source| StateError::Restore {
                    path: p.clone(),
                    source,
                })?
            }
            _ => Ledger::new(config)?,
        };
        let currency = ledger.config().pricing.currency.clone();
        let metrics = CostMetrics::new(metrics);
        let mut handles = Vec::new();
        for (id, series) in ledger.all_series() {
            let h = metrics.series(series, &currency);
            if let Some(f) = ledger.lifetime_figures(id) {
                h.add(&f);
            }
            set_handle(&mut handles, id, Some(h));
        }
        metrics.folded(ledger.folded_records());
        let mut key_gauges = HashMap::new();
        let mut region_gauges = HashMap::new();
        let budgets = &ledger.config().budgets;
        for name in budgets.keys.keys() {
            let scope = Scope::Key(name.clone());
            key_gauges.insert(name.clone(), metrics.budget_ratio(&scope));
        }
        for name in budgets.regions.keys() {
            let scope = Scope::Region(name.clone());
            region_gauges.insert(name.clone(), metrics.budget_ratio(&scope));
        }
        let costs = Costs {
            inner: Mutex::new(Inner {
                ledger,
                handles,
                key_gauges,
                region_gauges,
                gauge_day: None,
                dirty: false,
                folded_logged: None,
            }),
            metrics,
            now,
            path,
            currency,
            writing: Mutex::new(()),
        };
        let day = (costs.now)().day;
        costs.inner.lock().refresh_gauges(day);
        Ok(costs)
    }

    /// New prices and budgets, from a configuration reload: later
    /// requests are priced anew, and today's spend is held against the new
    /// budgets (see `Ledger::reconfigure`; a new currency is refused).
    pub fn reconfigure(
        &self,
        pricing: crate::Pricing,
        budgets: crate::Budgets,
    ) -> Result<(), ConfigError> {
        let mut inner = self.inner.lock();
        inner.ledger.reconfigure(pricing, budgets)?;
        let inner = &mut *inner;
        let budgets = &inner.ledger.config().budgets;
        let metrics = &self.metrics;
        inner.key_gauges.retain(|name, _| {
            let keep = budgets.keys.contains_key(name);
            if !keep {
                metrics.forget_budget(&Scope::Key(name.clone()));
            }
            keep
        });
        inner.region_gauges.retain(|name, _| {
            let keep = budgets.regions.contains_key(name);
            if !keep {
                metrics.forget_budget(&Scope::Region(name.clone()));
            }
            keep
        });
        for name in budgets.keys.keys() {
            if !inner.key_gauges.contains_key(name) {
                let g = self.metrics.budget_ratio(&Scope::Key(name.clone()));
                inner.key_gauges.insert(name.clone(), g);
            }
        }
        for name in budgets.regions.keys() {
            if !inner.region_gauges.contains_key(name) {
                let g = self.metrics.budget_ratio(&Scope::Region(name.clone()));
                inner.region_gauges.insert(name.clone(), g);
            }
        }
        inner.dirty = true;
        let day = (self.now)().day;
        inner.refresh_gauges(day);
        Ok(())
    }

    /// Counts one answered request now: the integrator's call per request,
    /// after the answer's size is known. Crossings are logged (warn at 80%,
    /// error at 100%) and counted; they come back for callers that want
    /// them (an audit record).
    pub fn record(&self, usage: &Usage<'_>) -> Vec<Crossing> {
        let at = (self.now)();
        let mut inner = self.inner.lock();
        let r = inner.ledger.record(usage, at);
        inner.dirty = true;
        inner.forget_dropped(&self.metrics, &self.currency);
        if r.created {
            if let Some(series) = inner.ledger.series(r.series) {
                let h = self.metrics.series(series, &self.currency);
                set_handle(&mut inner.handles, r.series, Some(h));
            }
        }
        if let Some(Some(h)) = inner.handles.get(r.series.index()) {
            h.add(&Figures {
                requests: 1,
                compute_s: usage.compute_s(),
                bytes_in: usage.bytes_in,
                bytes_out: usage.bytes_out,
                cost: r.money,
            });
        }
        if inner.gauge_day != Some(at.day) {
            inner.refresh_gauges(at.day);
        } else {
            if let (Some(ratio), Some(g)) = (r.key_ratio, inner.key_gauges.get(usage.key_name())) {
                g.set(ratio);
            }
            if let (Some(ratio), Place::Region { name, .. }) = (r.region_ratio, usage.place) {
                if let Some(g) = inner.region_gauges.get(name) {
                    g.set(ratio);
                }
            }
        }
        let log_fold = r.folded && inner.folded_logged != Some(at.hour);
        if log_fold {
            inner.folded_logged = Some(at.hour);
        }
        let max_series = inner.ledger.config().bounds.max_series;
        drop(inner);
        if r.folded {
            self.metrics.folded(1);
        }
        if log_fold {
            tracing::warn!(
                max_series,
                model = usage.model,
                key = usage.key_name(),
                "cost series bound reached: new series are counted as (other) until old ones age out"
            );
        }
        for c in &r.crossings {
            self.metrics.crossing(c);
            log_crossing(c, &self.currency);
        }
        r.crossings
    }

    /// Whether a request of `key` may go to `region` now: false once a
    /// `stop-spill` budget of the key or of the region reached 100% today.
    pub fn may_spill(&self, key: Option<&str>, region: &str) -> bool {
        let day = (self.now)().day;
        self.inner.lock().ledger.may_spill(key, region, day)
    }

    /// The last `hours` clock hours (the current one included), grouped
    /// `by`: the admin API's answer to `nusactl cost`.
    pub fn report(&self, hours: u64, by: By) -> Report {
        let at = (self.now)();
        let since = window_start(at.hour, hours);
        self.inner.lock().ledger.report(since, at, by)
    }

    /// Every configured budget today.
    pub fn budgets(&self) -> Vec<BudgetStatus> {
        let day = (self.now)().day;
        self.inner.lock().ledger.budget_state(day)
    }

    /// The timer's call (every minute or so, off the request path: it may
    /// write the file): moves the ledger's time on (old hours become days,
    /// old days and their series go), sets the budget gauges for today,
    /// and writes the file if anything changed.
    pub fn tick(&self) -> Result<(), StateError> {
        let at = (self.now)();
        {
            let mut inner = self.inner.lock();
            if inner.ledger.advance(at.hour) {
                inner.dirty = true;
            }
            inner.forget_dropped(&self.metrics, &self.currency);
            inner.refresh_gauges(at.day);
        }
        self.persist()
    }

    /// Writes the ledger to its file (atomically: the old file or the new
    /// one survives a power cut) if it changed since the last write. The
    /// snapshot is taken under the lock, serialized and written outside it.
    pub fn persist(&self) -> Result<(), StateError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _writing = self.writing.lock();
        let snapshot = {
            let mut inner = self.inner.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            inner.ledger.snapshot()
        };
        let written = store::write(path, &snapshot);
        if written.is_err() {
            self.inner.lock().dirty = true;
        }
        written
    }
}

impl Inner {
    fn forget_dropped(&mut self, metrics: &CostMetrics, currency: &str) {
        for (id, series) in self.ledger.take_dropped() {
            metrics.forget(&series, currency);
            set_handle(&mut self.handles, id, None);
        }
    }

    fn refresh_gauges(&mut self, day: u64) {
        for status in self.ledger.budget_state(day) {
            let gauges = match &status.scope {
                Scope::Key(_) => &self.key_gauges,
                Scope::Region(_) => &self.region_gauges,
            };
            if let Some(g) = gauges.get(status.scope.name()) {
                g.set(status.ratio);
            }
        }
        self.gauge_day = Some(day);
    }
}

fn set_handle(handles: &mut Vec<Option<SeriesHandles>>, id: SeriesId, h: Option<SeriesHandles>) {
    let i = id.index();
    if handles.len() <= i {
        handles.resize_with(i + 1, || None);
    }
    handles[i] = h;
}

fn log_crossing(c: &Crossing, currency: &str) {
    let (scope, name) = (c.scope.kind(), c.scope.name());
    let (spent, budget, day, action) = (c.spent, c.budget, c.day, c.action.as_str());
    if c.threshold < 100 {
        tracing::warn!(
            scope,
            name,
            spent,
            budget,
            currency,
            day,
            action,
            "80% of a daily budget spent"
        );
    } else if c.action == Action::StopSpill {
        tracing::error!(
            scope,
            name,
            spent,
            budget,
            currency,
            day,
            action,
            "daily budget spent: no more spilling for it until tomorrow"
        );
    } else {
        tracing::error!(
            scope,
            name,
            spent,
            budget,
            currency,
            day,
            action,
            "daily budget spent"
        );
    }
}

#[cfg(test)]
mod tests;
