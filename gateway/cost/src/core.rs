//! The cost ledger as a core: no I/O and no clock.
//!
//! **Invariant:** nothing under `core` reads a file, a socket or a clock
//! (the crate's `clippy.toml` bans them; only `driver/clock.rs` and
//! `driver/store.rs` allow the lints, by name). Every call that depends on
//! time takes it as an [`At`] (Unix hour, budget day) or an hour.
//!
//! In the order a request meets it:
//! - [`Pricing::money`]: what the request cost, at record time.
//! - [`Ledger::record`]: counts it in its series' bucket of the hour and
//!   charges its key's and region's budgets ([`Crossing`]s come back).
//! - [`Ledger::may_spill`]: asked before a request goes to a region.
//! - [`Ledger::report`]: a window of hours, grouped [`By`] key, model,
//!   version, region or place.
//! - [`Ledger::snapshot`] / [`Ledger::restore`]: JSON for the driver.

mod budget;
mod config;
mod ledger;
mod report;
mod snapshot;
mod usage;

pub use budget::{BudgetStatus, Crossing, Scope};
pub use config::{
    Action, Bounds, Budget, Budgets, Config, ConfigError, Pricing, RegionPrice, BYTES_PER_GB,
};
pub use ledger::{Ledger, Recorded, Series, SeriesId, OTHER};
pub use report::{parse_since, window_start, By, Report, Row, Totals};
pub use snapshot::{RestoreError, Snapshot, SNAPSHOT_FORMAT};
pub use usage::{share, At, Place, Usage, LOCAL_JURISDICTION, NO_KEY, UNKNOWN_JURISDICTION};

pub(crate) use ledger::Figures;

#[cfg(test)]
mod tests;
