//! `nusactl cost --since 24h --by key`: the ledger's figures over a window,
//! grouped, with totals. The types are the admin API's answer.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::budget::BudgetStatus;
use super::ledger::{floor_day, retention_floor, Figures, Ledger, Series, SeriesId, OTHER};
use super::usage::At;

/// What the rows of a report are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Per key name (`-`: without a key).
    Key,
    /// Per model.
    Model,
    /// Per model version, `<model>/<version>`.
    Version,
    /// Per place of service with the cache counted as `local`: `local`,
    /// `cloud:<region>`.
    Region,
    /// Per place of service: `cache`, `local`, `cloud:<region>`.
    Place,
    /// Per jurisdiction the answer was made in: `local` (this box, the
    /// cache included), a region's country code, or `unknown` (a region
    /// that declares none).
    Jurisdiction,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Key => "key",
            By::Model => "model",
            By::Version => "version",
            By::Region => "region",
            By::Place => "place",
            By::Jurisdiction => "jurisdiction",
        }
    }

    fn group(self, s: &Series) -> String {
        match self {
            By::Key => s.key.clone(),
            By::Model => s.model.clone(),
            By::Version => match s.version {
                Some(v) => format!("{}/{v}", s.model),
                None => OTHER.to_string(),
            },
            By::Region => match s.place.as_str() {
                "cache" => "local".to_string(),
                p => p.to_string(),
            },
            By::Place => s.place.clone(),
            By::Jurisdiction => s.jurisdiction.clone(),
        }
    }
}

impl fmt::Display for By {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for By {
    type Err = String;

    fn from_str(s: &str) -> Result<By, String> {
        Ok(match s {
            "key" => By::Key,
            "model" => By::Model,
            "version" => By::Version,
            "region" => By::Region,
            "place" => By::Place,
            "jurisdiction" => By::Jurisdiction,
            _ => {
                return Err(format!(
                    "--by {s:?}: expected key, model, version, region, place or jurisdiction"
                ))
            }
        })
    }
}

/// The figures of a row, or of all rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    /// Seconds of the local engine's compute.
    pub compute_s: f64,
    /// Request bytes from clients.
    pub bytes_in: u64,
    /// Answer bytes to clients.
    pub bytes_out: u64,
    /// Requests answered by regions.
    pub region_requests: u64,
    /// Bytes sent to and received from regions.
    pub region_bytes: u64,
    /// Money, in the report's currency, at the prices of the time each
    /// request was recorded.
    pub cost: f64,
    /// Requests by the jurisdiction that answered them: `local` (the box
    /// and its cache), a region's country, or `unknown`.
    pub jurisdictions: BTreeMap<String, u64>,
}

impl Totals {
    fn add_figures(&mut self, f: &Figures, s: &Series) {
        self.requests += f.requests;
        self.compute_s += f.compute_s;
        self.bytes_in += f.bytes_in;
        self.bytes_out += f.bytes_out;
        if s.region().is_some() {
            self.region_requests += f.requests;
            self.region_bytes += f.bytes_in + f.bytes_out;
        }
        self.cost += f.cost;
        *self
            .jurisdictions
            .entry(s.jurisdiction.clone())
            .or_default() += f.requests;
    }

    fn add(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.compute_s += o.compute_s;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.region_requests += o.region_requests;
        self.region_bytes += o.region_bytes;
        self.cost += o.cost;
        for (j, n) in &o.jurisdictions {
            *self.jurisdictions.entry(j.clone()).or_default() += n;
        }
    }
}

/// One group's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The key name, model, `<model>/<version>`, or place; `(other)` for
    /// what the series bound folded.
    pub group: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// The answer of `GET /v2/nusa/cost` and what `nusactl cost` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub by: By,
    pub currency: String,
    /// The first hour counted (Unix hours, UTC): the hour asked for, or
    /// earlier (the start of its day) when it lies before the hours kept
    /// hour by hour, or later when it lies before the days kept.
    pub since_hour: u64,
    /// The last hour counted (the current one, so far).
    pub now_hour: u64,
    /// By cost, highest first, then by group.
    pub rows: Vec<Row>,
    /// The sum of the rows.
    pub totals: Totals,
    /// Every configured budget today.
    pub budgets: Vec<BudgetStatus>,
    /// Records counted in `(other)` series since the ledger began, because
    /// `cost.max_series` series existed already.
    pub folded_records: u64,
}

impl Ledger {
    /// The figures of the hours `since_hour ..= now.hour`, grouped `by`,
    /// with today's budgets.
    pub fn report(&self, since_hour: u64, now: At, by: By) -> Report {
        let floor = retention_floor(now.hour, self.config.bounds.days);
        let mut since = since_hour.max(floor);
        if since < self.hourly_floor {
            since = floor_day(since);
        }
        let mut rows: Vec<Row> = Vec::new();
        let mut by_group: HashMap<String, usize> = HashMap::new();
        let mut row_of: HashMap<SeriesId, usize> = HashMap::new();
        let mut add = |id: SeriesId, f: &Figures| {
            let Some(series) = self.series(id) else {
                return;
            };
            let row = *row_of.entry(id).or_insert_with(|| {
                let group = by.group(series);
                *by_group.entry(group.clone()).or_insert_with(|| {
                    rows.push(Row {
                        group,
                        totals: Totals::default(),
                    });
                    rows.len() - 1
                })
            });
            rows[row].totals.add_figures(f, series);
        };
        if since <= now.hour {
            for buckets in self.hourly.range(since..=now.hour).map(|(_, b)| b) {
                for (id, f) in buckets {
                    add(*id, f);
                }
            }
            // Day buckets are whole days before hourly_floor, and `since`
            // is a day's start whenever it reaches into them.
            for buckets in self.daily.range(since / 24..=now.hour / 24).map(|(_, b)| b) {
                for (id, f) in buckets {
                    add(*id, f);
                }
            }
        }
        rows.sort_by(|a, b| {
            b.totals
                .cost
                .total_cmp(&a.totals.cost)
                .then_with(|| a.group.cmp(&b.group))
        });
        let mut totals = Totals::default();
        for r in &rows {
            totals.add(&r.totals);
        }
        Report {
            by,
            currency: self.config.pricing.currency.clone(),
            since_hour: since,
            now_hour: now.hour,
            rows,
            totals,
            budgets: self.budget_state(now.day),
            folded_records: self.folded_records,
        }
    }
}

/// `24h`, `7d`: a report's window in hours (1 hour to 400 days). The
/// window is that many clock hours, the current one included.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let err = || format!("--since {text:?}: expected hours or days, like 24h or 7d");
    let hours = if let Some(n) = text.strip_suffix('h') {
        n.parse::<u64>().map_err(|_| err())?
    } else if let Some(n) = text.strip_suffix('d') {
        let n = n.parse::<u64>().map_err(|_| err())?;
        n.checked_mul(24).ok_or_else(err)?
    } else {
        return Err(err());
    };
    if !(1..=400 * 24).contains(&hours) {
        return Err(format!("--since {text:?}: must be 1h to 400d"));
    }
    Ok(hours)
}

/// The first hour of a window of `hours` hours ending with `now_hour`.
pub fn window_start(now_hour: u64, hours: u64) -> u64 {
    (now_hour + 1).saturating_sub(hours)
}
