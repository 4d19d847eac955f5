//! The ledger as JSON, for the driver to keep across restarts: series with
//! their lifetime figures, buckets as compact arrays, budgets' days.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::budget::DaySpend;
use super::config::{Config, ConfigError};
use super::ledger::{Figures, Ledger, Series, SeriesId, Slot};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Series numbers above this are not ours (the bound allows 100 000 plus
/// the `(other)` ones).
const MAX_SERIES_ID: u32 = 1 << 20;

/// A ledger at one moment. Opaque: serialize it, deserialize it, restore
/// it with [`Ledger::restore`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    format: u32,
    currency: String,
    hour: Option<u64>,
    hourly_floor: u64,
    folded_records: u64,
    series: Vec<SavedSeries>,
    /// `[hour, series, requests, compute_s, bytes_in, bytes_out, cost]`.
    hourly: Vec<SavedBucket>,
    /// `[day, series, requests, compute_s, bytes_in, bytes_out, cost]`.
    daily: Vec<SavedBucket>,
    budgets: Vec<SavedBudget>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedSeries {
    id: u32,
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    key: String,
    place: String,
    jurisdiction: String,
    last_hour: u64,
    /// `[requests, compute_s, bytes_in, bytes_out, cost]` since it began.
    lifetime: SavedFigures,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct SavedFigures(u64, Exact, u64, u64, Exact);

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct SavedBucket(u64, u32, u64, Exact, u64, u64, Exact);

/// An f64 saved as its shortest decimal string: serde_json (without its
/// `float_roundtrip` feature, which would slow every JSON float the
/// gateway parses) may read a number back one unit in the last place off,
/// and a restored ledger must equal the saved one.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Exact(f64);

impl Serialize for Exact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Exact, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse()
            .map(Exact)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a number")))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedBudget {
    scope: String,
    name: String,
    day: u64,
    spent: Exact,
    warned: bool,
    reached: bool,
}

impl From<Figures> for SavedFigures {
    fn from(f: Figures) -> SavedFigures {
        SavedFigures(
            f.requests,
            Exact(f.compute_s),
            f.bytes_in,
            f.bytes_out,
            Exact(f.cost),
        )
    }
}

impl SavedFigures {
    fn figures(self) -> Result<Figures, String> {
        let SavedFigures(requests, Exact(compute_s), bytes_in, bytes_out, Exact(cost)) = self;
        if !(compute_s.is_finite() && compute_s >= 0.0 && cost.is_finite() && cost >= 0.0) {
            return Err(format!(
                "compute_s {compute_s} and cost {cost} must be finite and >= 0"
            ));
        }
        Ok(Figures {
            requests,
            compute_s,
            bytes_in,
            bytes_out,
            cost,
        })
    }
}

/// A snapshot this ledger cannot take back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("format {found} is not one this build reads ({SNAPSHOT_FORMAT})")]
    Format { found: u32 },
    #[error("the ledger counts money in {saved}, but pricing.currency is {configured}")]
    Currency { saved: String, configured: String },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("inconsistent ledger: {0}")]
    Inconsistent(String),
}

impl Ledger {
    pub fn snapshot(&self) -> Snapshot {
        let series = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                Some(SavedSeries {
                    id: i as u32,
                    model: s.series.model.clone(),
                    version: s.series.version,
                    key: s.series.key.clone(),
                    place: s.series.place.clone(),
                    jurisdiction: s.series.jurisdiction.clone(),
                    last_hour: s.last_hour,
                    lifetime: s.lifetime.into(),
                })
            })
            .collect();
        let buckets = |b: &super::ledger::Buckets| {
            let mut out = Vec::new();
            for (at, buckets) in b {
                let mut ids: Vec<_> = buckets.iter().collect();
                ids.sort_by_key(|(id, _)| **id);
                for (id, f) in ids {
                    let SavedFigures(r, c, i, o, m) = (*f).into();
                    out.push(SavedBucket(*at, id.0, r, c, i, o, m));
                }
            }
            out
        };
        let mut budgets = Vec::new();
        for (scope, map) in [
            ("key", &self.budgets.keys),
            ("region", &self.budgets.regions),
        ] {
            let mut names: Vec<_> = map.iter().collect();
            names.sort_by(|a, b| a.0.cmp(b.0));
            for (name, d) in names {
                budgets.push(SavedBudget {
                    scope: scope.to_string(),
                    name: name.clone(),
                    day: d.day,
                    spent: Exact(d.spent),
                    warned: d.warned,
                    reached: d.reached,
                });
            }
        }
        Snapshot {
            format: SNAPSHOT_FORMAT,
            currency: self.config.pricing.currency.clone(),
            hour: self.hour,
            hourly_floor: self.hourly_floor,
            folded_records: self.folded_records,
            series,
            hourly: buckets(&self.hourly),
            daily: buckets(&self.daily),
            budgets,
        }
    }

    /// The ledger a snapshot holds, under today's configuration: budgets
    /// no longer configured are left out; a smaller `max_series` than the
    /// saved series lets them age out (new series fold until then).
    pub fn restore(snapshot: Snapshot, config: Config) -> Result<Ledger, RestoreError> {
        config.check()?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(RestoreError::Format {
                found: snapshot.format,
            });
        }
        if snapshot.currency != config.pricing.currency {
            return Err(RestoreError::Currency {
                saved: snapshot.currency,
                configured: config.pricing.currency,
            });
        }
        let bad = RestoreError::Inconsistent;
        let mut ledger = Ledger::unchecked(config);
        ledger.hour = snapshot.hour;
        ledger.hourly_floor = snapshot.hourly_floor;
        ledger.folded_records = snapshot.folded_records;
        let mut seen = HashSet::new();
        for s in snapshot.series {
            if s.id >= MAX_SERIES_ID {
                return Err(bad(format!("series number {} is too large", s.id)));
            }
            let series = Series {
                model: s.model,
                version: s.version,
                key: s.key,
                place: s.place,
                jurisdiction: s.jurisdiction,
            };
            let lifetime = s
                .lifetime
                .figures()
                .map_err(|e| bad(format!("series {}: {e}", s.id)))?;
            let Some(probe) = series.probe() else {
                return Err(bad(format!(
                    "series {}: place {:?} is not cache, local or cloud:<region>",
                    s.id, series.place
                )));
            };
            let hash = probe.hash(&ledger.hasher);
            if !seen.insert(series.clone()) {
                return Err(bad(format!("series {} appears twice", s.id)));
            }
            let index = s.id as usize;
            if ledger.slots.len() <= index {
                ledger.slots.resize_with(index + 1, || None);
            }
            if ledger.slots[index].is_some() {
                return Err(bad(format!("series number {} appears twice", s.id)));
            }
            if !series.is_other() {
                ledger.live += 1;
            }
            ledger.slots[index] = Some(Slot {
                series,
                hash,
                lifetime,
                last_hour: s.last_hour,
            });
            ledger.index.entry(hash).or_default().push(SeriesId(s.id));
        }
        ledger.free = (0..ledger.slots.len() as u32)
            .rev()
            .map(SeriesId)
            .filter(|id| ledger.slots[id.index()].is_none())
            .collect();
        for (what, saved, into) in [
            ("hourly", snapshot.hourly, &mut ledger.hourly),
            ("daily", snapshot.daily, &mut ledger.daily),
        ] {
            for SavedBucket(at, id, r, c, i, o, m) in saved {
                let known = ledger.slots.get(id as usize).is_some_and(|s| s.is_some());
                if !known {
                    return Err(bad(format!(
                        "{what} bucket {at} names series {id}, which is not saved"
                    )));
                }
                let f = SavedFigures(r, c, i, o, m)
                    .figures()
                    .map_err(|e| bad(format!("{what} bucket {at} of series {id}: {e}")))?;
                into.entry(at)
                    .or_default()
                    .entry(SeriesId(id))
                    .or_default()
                    .add(&f);
            }
        }
        for b in snapshot.budgets {
            let (configured, map) = match b.scope.as_str() {
                "key" => (&ledger.config.budgets.keys, &mut ledger.budgets.keys),
                "region" => (&ledger.config.budgets.regions, &mut ledger.budgets.regions),
                other => return Err(bad(format!("budget scope {other:?}"))),
            };
            let Exact(spent) = b.spent;
            if !(spent.is_finite() && spent >= 0.0) {
                return Err(bad(format!("budget {}: spent {spent}", b.name)));
            }
            if configured.contains_key(&b.name) {
                map.insert(
                    b.name,
                    DaySpend {
                        day: b.day,
                        spent,
                        warned: b.warned,
                        reached: b.reached,
                    },
                );
            }
        }
        Ok(ledger)
    }
}
