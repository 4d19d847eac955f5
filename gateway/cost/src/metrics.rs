//! The `nusa_cost_*` families. Their series are the ledger's: one per live
//! ledger series (so bounded by `cost.max_series` plus the `(other)`
//! ones), removed when the ledger drops it, and seeded with the ledger's
//! lifetime figures on restore, so a counter equals what the ledger counted
//! in that series since it began, across restarts. Budget series are one
//! per configured budget.

use std::sync::atomic::AtomicU64;

use nusa_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::core::{Crossing, Figures, Scope, Series, OTHER};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    model: String,
    version: String,
    key: String,
    place: String,
    jurisdiction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    #[prometheus(flatten)]
    series: SeriesLabels,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MoneyLabels {
    #[prometheus(flatten)]
    series: SeriesLabels,
    currency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    scope: &'static str,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrossingLabels {
    scope: &'static str,
    name: String,
    threshold: &'static str,
}

type FloatCounter = Counter<f64, AtomicU64>;
pub(crate) type Ratio = Gauge<f64, AtomicU64>;

/// One series' counters, kept by the driver so a record touches atomics
/// only.
#[derive(Clone, Debug)]
pub(crate) struct SeriesHandles {
    requests: Counter,
    compute: FloatCounter,
    bytes_in: Counter,
    bytes_out: Counter,
    money: FloatCounter,
}

impl SeriesHandles {
    pub(crate) fn add(&self, f: &Figures) {
        self.requests.inc_by(f.requests);
        self.compute.inc_by(f.compute_s);
        self.bytes_in.inc_by(f.bytes_in);
        self.bytes_out.inc_by(f.bytes_out);
        self.money.inc_by(f.cost);
    }
}

#[derive(Clone)]
pub(crate) struct CostMetrics {
    requests: Family<SeriesLabels, Counter>,
    compute: Family<SeriesLabels, FloatCounter>,
    bytes: Family<BytesLabels, Counter>,
    money: Family<MoneyLabels, FloatCounter>,
    budget_ratio: Family<BudgetLabels, Ratio>,
    crossings: Family<CrossingLabels, Counter>,
    folded: Counter,
}

impl CostMetrics {
    pub(crate) fn new(metrics: &Metrics) -> CostMetrics {
        let m = CostMetrics {
            requests: Family::default(),
            compute: Family::default(),
            bytes: Family::default(),
            money: Family::default(),
            budget_ratio: Family::default(),
            crossings: Family::default(),
            folded: Counter::default(),
        };
        metrics.register_with(|r| {
            r.register(
                "cost_requests",
                "Answered requests by model, version, API key name (- without a key), place (cache, local, cloud:<region>) and jurisdiction (local, a region's country, unknown); (other) holds what the series bound folded",
                m.requests.clone(),
            );
            r.register(
                "cost_compute_seconds",
                "Seconds of the local engine's compute, each request's share of its batch (batch seconds times its rows over the batch's rows)",
                m.compute.clone(),
            );
            r.register(
                "cost_bytes",
                "Body bytes received from clients (direction in) and sent to them (direction out); for cloud:<region> places the same bytes went to and came from the region",
                m.bytes.clone(),
            );
            r.register(
                "cost_money",
                "Money at the configured [pricing] at the time of each request: local compute, region requests and bytes, egress",
                m.money.clone(),
            );
            r.register(
                "cost_budget_used_ratio",
                "Today's spend over the daily budget, per key name or region with a budget",
                m.budget_ratio.clone(),
            );
            r.register(
                "cost_budget_crossings",
                "Budgets that reached 80% or 100% of their daily amount (once per budget, threshold and day)",
                m.crossings.clone(),
            );
            r.register(
                "cost_folded_records",
                "Requests counted in an (other) series because cost.max_series series existed already",
                m.folded.clone(),
            );
        });
        m
    }

    /// The counters of a series, created (or found) by its labels.
    pub(crate) fn series(&self, s: &Series, currency: &str) -> SeriesHandles {
        let labels = labels(s);
        let bytes = |direction| BytesLabels {
            series: labels.clone(),
            direction,
        };
        // One statement per handle: get_or_create returns a read guard on
        // the family, and two of them alive in one expression deadlock when
        // the second must insert (it waits for the first to go).
        let requests = self.requests.get_or_create(&labels).clone();
        let compute = self.compute.get_or_create(&labels).clone();
        let bytes_in = self.bytes.get_or_create(&bytes("in")).clone();
        let bytes_out = self.bytes.get_or_create(&bytes("out")).clone();
        let money = MoneyLabels {
            series: labels.clone(),
            currency: currency.to_string(),
        };
        let money = self.money.get_or_create(&money).clone();
        SeriesHandles {
            requests,
            compute,
            bytes_in,
            bytes_out,
            money,
        }
    }

    /// Removes a dropped series' counters.
    pub(crate) fn forget(&self, s: &Series, currency: &str) {
        let labels = labels(s);
        self.requests.remove(&labels);
        self.compute.remove(&labels);
        for direction in ["in", "out"] {
            self.bytes.remove(&BytesLabels {
                series: labels.clone(),
                direction,
            });
        }
        self.money.remove(&MoneyLabels {
            series: labels,
            currency: currency.to_string(),
        });
    }

    pub(crate) fn budget_ratio(&self, scope: &Scope) -> Ratio {
        self.budget_ratio
            .get_or_create(&BudgetLabels {
                scope: scope.kind(),
                name: scope.name().to_string(),
            })
            .clone()
    }

    /// A budget no longer configured: its gauge leaves the exposition.
    pub(crate) fn forget_budget(&self, scope: &Scope) {
        self.budget_ratio.remove(&BudgetLabels {
            scope: scope.kind(),
            name: scope.name().to_string(),
        });
    }

    pub(crate) fn crossing(&self, c: &Crossing) {
        self.crossings
            .get_or_create(&CrossingLabels {
                scope: c.scope.kind(),
                name: c.scope.name().to_string(),
                threshold: if c.threshold >= 100 { "100" } else { "80" },
            })
            .inc();
    }

    pub(crate) fn folded(&self, n: u64) {
        self.folded.inc_by(n);
    }
}

fn labels(s: &Series) -> SeriesLabels {
    SeriesLabels {
        model: s.model.clone(),
        version: s
            .version
            .map_or_else(|| OTHER.to_string(), |v| v.to_string()),
        key: s.key.clone(),
        place: s.place.clone(),
        jurisdiction: s.jurisdiction.clone(),
    }
}
