//! Cost accounting for the gateway: per model, version, API key and place
//! of service (cache, local engine, each region), requests, compute
//! seconds, bytes and money from `[pricing]`; hourly figures for
//! `nusactl cost`; daily budgets per key and per region with their 80% and
//! 100% alerts and the `stop-spill` action.
//!
//! - `core`: the [`Ledger`], [`Pricing`], [`Budgets`], [`Bounds`], the
//!   [`Report`] and the [`Snapshot`], with no I/O and no clock (time is
//!   always an argument, an [`At`]).
//! - [`Costs`]: the driver the gateway holds: the ledger behind one mutex,
//!   the `nusa_cost_*` metrics, the clock it is given, the crossings' log
//!   lines, the state file.
//!
//! ```
//! use nusa_cost::{At, By, Config, Costs, Place, Pricing, Usage};
//!
//! let config = Config {
//!     pricing: Pricing { local_per_compute_second: 0.002, ..Pricing::default() },
//!     ..Config::default()
//! };
//! let metrics = nusa_telemetry::Metrics::new();
//! let costs = Costs::open(config, &metrics, None, Box::new(|| At::utc(1_750_000_000))).unwrap();
//! costs.record(&Usage {
//!     model: "resnet",
//!     version: 3,
//!     key: Some("shop-frontend"),
//!     place: Place::Local,
//!     compute_s: nusa_cost::share(0.040, 1, 4),
//!     bytes_in: 602_112,
//!     bytes_out: 4_000,
//! });
//! let report = costs.report(24, By::Key);
//! assert_eq!(report.rows[0].group, "shop-frontend");
//! assert!((report.totals.cost - 0.00002).abs() < 1e-12);
//! ```

mod core;
mod driver;
mod metrics;

pub use crate::core::{
    parse_since, share, window_start, Action, At, Bounds, Budget, BudgetStatus, Budgets, By,
    Config, ConfigError, Crossing, Ledger, Place, Pricing, Recorded, RegionPrice, Report,
    RestoreError, Row, Scope, Series, SeriesId, Snapshot, Totals, Usage, BYTES_PER_GB,
    LOCAL_JURISDICTION, NO_KEY, OTHER, SNAPSHOT_FORMAT, UNKNOWN_JURISDICTION,
};
pub use driver::{utc_clock, Clock, Costs, OpenError, StateError, MAX_STATE_BYTES};
