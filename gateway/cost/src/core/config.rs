//! What money means (`[pricing]`), the daily budgets (`[budgets]`) and the
//! ledger's bounds. Every check's error names the key it is about.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::usage::{Place, Usage};

/// Bytes in the "GB" that prices are quoted per: 2^30, as the large clouds
/// bill data transfer.
pub const BYTES_PER_GB: f64 = 1_073_741_824.0;

/// `[pricing]`: what a compute-second here, a request and a gigabyte sent to
/// a region, and a gigabyte leaving the box cost. Amounts are plain numbers
/// in `currency`, which is only a label (no conversion anywhere).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Per second of the local engine's compute (a request's share of its
    /// batch).
    #[serde(default)]
    pub local_per_compute_second: f64,
    /// Per GB the box sends: answers to clients from every place, and
    /// requests forwarded to a region.
    #[serde(default)]
    pub egress_per_gb: f64,
    /// By region name, as in `[[spill.regions]]`. A region without an
    /// entry costs nothing but egress.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionPrice>,
}

/// `[pricing.regions.<name>]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrice {
    /// Per request the region answered.
    #[serde(default)]
    pub per_request: f64,
    /// Per GB sent to and received from the region.
    #[serde(default)]
    pub per_gb: f64,
}

fn default_currency() -> String {
    "USD".to_string()
}

impl Default for Pricing {
    fn default() -> Pricing {
        Pricing {
            currency: default_currency(),
            local_per_compute_second: 0.0,
            egress_per_gb: 0.0,
            regions: BTreeMap::new(),
        }
    }
}

impl Pricing {
    /// Every amount a finite number >= 0, a currency label of 1..=16
    /// printable ASCII characters.
    pub fn check(&self) -> Result<(), ConfigError> {
        let c = &self.currency;
        if c.is_empty() || c.len() > 16 || !c.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "pricing.currency",
                format!("must be 1 to 16 printable ASCII characters (got {c:?})"),
            ));
        }
        amount(
            "pricing.local_per_compute_second",
            self.local_per_compute_second,
        )?;
        amount("pricing.egress_per_gb", self.egress_per_gb)?;
        for (name, p) in &self.regions {
            amount(
                &format!("pricing.regions.{name}.per_request"),
                p.per_request,
            )?;
            amount(&format!("pricing.regions.{name}.per_gb"), p.per_gb)?;
        }
        Ok(())
    }

    /// A price for a region that is not configured is a typo that would
    /// make that region's traffic look free: refused.
    pub fn check_regions<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), ConfigError> {
        unknown_names("pricing.regions", self.regions.keys(), known)
    }

    /// The money one request costs, at these prices.
    pub fn money(&self, usage: &Usage<'_>) -> f64 {
        let compute = usage.compute_s() * self.local_per_compute_second;
        let (region, egress_bytes) = match usage.place {
            Place::Cache | Place::Local => (0.0, usage.bytes_out),
            Place::Region { name, .. } => {
                let through = usage.bytes_in.saturating_add(usage.bytes_out);
                let region = self.regions.get(name).map_or(0.0, |p| {
                    p.per_request + through as f64 / BYTES_PER_GB * p.per_gb
                });
                (region, through)
            }
        };
        let money = compute + region + egress_bytes as f64 / BYTES_PER_GB * self.egress_per_gb;
        // Finite inputs cannot make this infinite short of 1e308; the check
        // keeps a NaN out of the sums and the saved file whatever happens.
        if money.is_finite() {
            money
        } else {
            0.0
        }
    }
}

/// `[budgets]`: daily spend limits per API key name and per region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// By key name (`-` is the requests without a key).
    #[serde(default)]
    pub keys: BTreeMap<String, Budget>,
    /// By region name: the money of the requests that region answered.
    #[serde(default)]
    pub regions: BTreeMap<String, Budget>,
}

/// One daily budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Money per day, in the pricing's currency.
    pub daily: f64,
    #[serde(default)]
    pub action: Action,
}

/// What happens when a budget is spent (100%); 80% only alerts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Log and export the crossing only.
    #[default]
    Alert,
    /// Also stop spilling requests of that key, or to that region, for the
    /// rest of the day: they are served here or refused as without regions.
    StopSpill,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::StopSpill => "stop-spill",
        }
    }
}

impl Budgets {
    /// Every daily amount a finite number > 0.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (scope, map) in [("keys", &self.keys), ("regions", &self.regions)] {
            for (name, b) in map {
                if !(b.daily.is_finite() && b.daily > 0.0) {
                    return Err(ConfigError::new(
                        format!("budgets.{scope}.{name}.daily"),
                        format!("must be a finite number > 0 (got {})", b.daily),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A budget for a region that is not configured would never apply.
    pub fn check_regions<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), ConfigError> {
        unknown_names("budgets.regions", self.regions.keys(), known)
    }
}

/// How much the ledger keeps. Memory and the saved file grow with
/// `max_series * (hourly_hours + 24 + days)` buckets at most, 40 bytes of
/// figures each (about 4 MB in memory and 3 MB saved at the defaults,
/// with every series busy every hour).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Distinct (model, version, key, place) series kept; a new one past
    /// this is counted in its place's `(other)` series.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Days of figures kept (today included).
    #[serde(default = "default_days")]
    pub days: u32,
    /// Hours kept hour by hour; older whole days are kept as one bucket
    /// per day.
    #[serde(default = "default_hourly_hours")]
    pub hourly_hours: u32,
}

fn default_max_series() -> usize {
    500
}

fn default_days() -> u32 {
    35
}

fn default_hourly_hours() -> u32 {
    48
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            max_series: default_max_series(),
            days: default_days(),
            hourly_hours: default_hourly_hours(),
        }
    }
}

impl Bounds {
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.max_series) {
            return Err(ConfigError::new(
                "cost.max_series",
                format!("must be 1 to 100000 (got {})", self.max_series),
            ));
        }
        if !(2..=400).contains(&self.days) {
            return Err(ConfigError::new(
                "cost.days",
                format!("must be 2 to 400 (got {})", self.days),
            ));
        }
        if self.hourly_hours < 1 || self.hourly_hours > (self.days - 1) * 24 {
            return Err(ConfigError::new(
                "cost.hourly_hours",
                format!(
                    "must be 1 to {} (cost.days - 1 days; got {})",
                    (self.days - 1) * 24,
                    self.hourly_hours
                ),
            ));
        }
        Ok(())
    }
}

/// Everything a [`Ledger`](super::Ledger) is built from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub pricing: Pricing,
    pub budgets: Budgets,
    pub bounds: Bounds,
}

impl Config {
    pub fn check(&self) -> Result<(), ConfigError> {
        self.pricing.check()?;
        self.budgets.check()?;
        self.bounds.check()
    }
}

/// A configuration value that cannot be used, with its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

fn amount(key: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("must be a finite number >= 0 (got {value})"),
        ))
    }
}

fn unknown_names<'a, 'b>(
    key: &str,
    names: impl Iterator<Item = &'b String>,
    known: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), ConfigError> {
    for name in names {
        if !known.clone().into_iter().any(|k| k == name) {
            let list: Vec<&str> = known.clone().into_iter().collect();
            return Err(ConfigError::new(
                format!("{key}.{name}"),
                format!("no region of that name (regions: {})", list.join(", ")),
            ));
        }
    }
    Ok(())
}
