//! The ledger: series, their hourly and daily buckets, and the budgets'
//! spend, advanced only by the hours its callers pass.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use super::budget::{BudgetBook, BudgetStatus, Crossing};
use super::config::{Budgets, Config, ConfigError, Pricing};
use super::usage::{At, Place, Usage, UNKNOWN_JURISDICTION};

/// The model and key labels of the series that count what the series
/// bound turned away (one per place and jurisdiction).
pub const OTHER: &str = "(other)";

/// A series' number in the ledger, stable while the series lives; the
/// number of a dropped series is given to a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub(crate) u32);

impl SeriesId {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// The labels a series counts under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Series {
    /// The model, or `(other)`.
    pub model: String,
    /// `None` in an `(other)` series.
    pub version: Option<u64>,
    /// The key's name, `-`, or `(other)`.
    pub key: String,
    /// `cache`, `local` or `cloud:<region>`.
    pub place: String,
    /// `local`, a country code, or `unknown`.
    pub jurisdiction: String,
}

impl Series {
    pub fn is_other(&self) -> bool {
        self.version.is_none()
    }

    /// The region's name for `cloud:` places.
    pub fn region(&self) -> Option<&str> {
        self.place.strip_prefix("cloud:")
    }

    pub(super) fn probe(&self) -> Option<Probe<'_>> {
        let place = match self.place.as_str() {
            "cache" => Place::Cache,
            "local" => Place::Local,
            p => Place::Region {
                name: p.strip_prefix("cloud:")?,
                country: (self.jurisdiction != UNKNOWN_JURISDICTION)
                    .then_some(self.jurisdiction.as_str()),
            },
        };
        Some(Probe {
            model: &self.model,
            version: self.version,
            key: &self.key,
            place,
        })
    }
}

/// A series as a request names it, looked up without allocating.
#[derive(Clone, Copy, Debug)]
pub(super) struct Probe<'a> {
    model: &'a str,
    version: Option<u64>,
    key: &'a str,
    place: Place<'a>,
}

impl<'a> Probe<'a> {
    fn of(usage: &Usage<'a>) -> Probe<'a> {
        Probe {
            model: usage.model,
            version: Some(usage.version),
            key: usage.key_name(),
            place: usage.place,
        }
    }

    fn other(place: Place<'a>) -> Probe<'a> {
        Probe {
            model: OTHER,
            version: None,
            key: OTHER,
            place,
        }
    }

    /// Hashes what [`Probe::matches`] compares, country in upper case.
    pub(super) fn hash(&self, state: &RandomState) -> u64 {
        let mut h = state.build_hasher();
        self.model.hash(&mut h);
        self.version.hash(&mut h);
        self.key.hash(&mut h);
        match self.place {
            Place::Cache => h.write_u8(0),
            Place::Local => h.write_u8(1),
            Place::Region { name, country } => {
                h.write_u8(2);
                name.hash(&mut h);
                match country {
                    Some(c) => {
                        h.write_u8(1);
                        for b in c.bytes() {
                            h.write_u8(b.to_ascii_uppercase());
                        }
                        h.write_u8(0xff);
                    }
                    None => h.write_u8(0),
                }
            }
        }
        h.finish()
    }

    fn matches(&self, s: &Series) -> bool {
        if s.model != self.model || s.version != self.version || s.key != self.key {
            return false;
        }
        match self.place {
            Place::Cache => s.place == "cache",
            Place::Local => s.place == "local",
            Place::Region { name, country } => {
                s.region() == Some(name)
                    && match country {
                        Some(c) => {
                            s.jurisdiction.len() == c.len()
                                && s.jurisdiction
                                    .bytes()
                                    .zip(c.bytes())
                                    .all(|(a, b)| a == b.to_ascii_uppercase())
                        }
                        None => s.jurisdiction == UNKNOWN_JURISDICTION,
                    }
            }
        }
    }

    fn series(&self) -> Series {
        Series {
            model: self.model.to_string(),
            version: self.version,
            key: self.key.to_string(),
            place: self.place.label(),
            jurisdiction: self.place.jurisdiction(),
        }
    }
}

/// What one bucket (or a series' lifetime) holds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Figures {
    pub requests: u64,
    pub compute_s: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cost: f64,
}

impl Figures {
    pub(crate) fn add(&mut self, o: &Figures) {
        self.requests = self.requests.saturating_add(o.requests);
        self.compute_s += o.compute_s;
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.cost += o.cost;
    }
}

pub(super) struct Slot {
    pub series: Series,
    pub hash: u64,
    /// Everything counted since the series began: what its metric counters
    /// hold, also across restarts.
    pub lifetime: Figures,
    /// The newest bucket's hour: the series goes when that bucket does.
    pub last_hour: u64,
}

/// The index's keys are already hashes.
#[derive(Default)]
pub(super) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Series numbers are small and dense: a multiply spreads them over the
/// table's bits, where SipHash would cost more than the rest of a lookup.
#[derive(Default)]
pub(super) struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(super) type Bucket = HashMap<SeriesId, Figures, BuildHasherDefault<Spread>>;
pub(super) type Buckets = BTreeMap<u64, Bucket>;

/// Requests, compute, bytes and money per series and hour, and the daily
/// budgets' spend. No I/O and no clock: every call that depends on time
/// takes it, and the ledger's time never goes back (a record from an
/// earlier hour than one already seen counts in the latest hour).
pub struct Ledger {
    pub(super) config: Config,
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) free: Vec<SeriesId>,
    pub(super) index: HashMap<u64, Vec<SeriesId>, BuildHasherDefault<Prehashed>>,
    pub(super) hasher: RandomState,
    /// Series that are not `(other)`: at most `bounds.max_series`.
    pub(super) live: usize,
    /// By Unix hour, from `hourly_floor` on.
    pub(super) hourly: Buckets,
    /// By Unix day (UTC), before `hourly_floor`.
    pub(super) daily: Buckets,
    /// The latest hour recorded or advanced to.
    pub(super) hour: Option<u64>,
    /// The first hour kept hour by hour (a day's start).
    pub(super) hourly_floor: u64,
    /// Records counted in an `(other)` series, ever.
    pub(super) folded_records: u64,
    pub(super) budgets: BudgetBook,
    /// Series dropped since [`Ledger::take_dropped`] was last called.
    pub(super) dropped: Vec<(SeriesId, Series)>,
}

/// What [`Ledger::record`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The series the request was counted in.
    pub series: SeriesId,
    /// That series began with this request.
    pub created: bool,
    /// The series bound sent the request to an `(other)` series.
    pub folded: bool,
    /// The request's money.
    pub money: f64,
    /// Budgets this request took past 80% or 100% of today's amount.
    pub crossings: Vec<Crossing>,
    /// Today's spend over the budget of the request's key, if it has one.
    pub key_ratio: Option<f64>,
    /// Today's spend over the budget of the answering region, if any.
    pub region_ratio: Option<f64>,
}

impl Ledger {
    pub fn new(config: Config) -> Result<Ledger, ConfigError> {
        config.check()?;
        Ok(Ledger::unchecked(config))
    }

    pub(super) fn unchecked(config: Config) -> Ledger {
        Ledger {
            config,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            hasher: RandomState::new(),
            live: 0,
            hourly: BTreeMap::new(),
            daily: BTreeMap::new(),
            hour: None,
            hourly_floor: 0,
            folded_records: 0,
            budgets: BudgetBook::default(),
            dropped: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// New prices and budgets (a configuration reload): what was counted
    /// keeps the money of its time, later requests are priced anew, and
    /// the budgets' day is rebased (see `BudgetBook::rebase`). The
    /// currency is part of every saved figure and of the metrics' labels:
    /// changing it is refused (it needs a restart, which refuses a ledger
    /// in another currency too).
    pub fn reconfigure(&mut self, pricing: Pricing, budgets: Budgets) -> Result<(), ConfigError> {
        let config = Config {
            pricing,
            budgets,
            bounds: self.config.bounds.clone(),
        };
        config.check()?;
        if config.pricing.currency != self.config.pricing.currency {
            return Err(ConfigError::new(
                "pricing.currency",
                format!(
                    "cannot change from {} to {} while running: restart nusad (the saved ledger counts in {})",
                    self.config.pricing.currency,
                    config.pricing.currency,
                    self.config.pricing.currency
                ),
            ));
        }
        self.budgets.rebase(&config.budgets);
        self.config = config;
        Ok(())
    }

    /// Counts one answered request at `at`, its money at today's prices,
    /// and charges it to its key's and region's budgets.
    pub fn record(&mut self, usage: &Usage<'_>, at: At) -> Recorded {
        self.advance(at.hour);
        let hour = self.hour.unwrap_or(at.hour);
        let money = self.config.pricing.money(usage);
        let figures = Figures {
            requests: 1,
            compute_s: usage.compute_s(),
            bytes_in: usage.bytes_in,
            bytes_out: usage.bytes_out,
            cost: money,
        };
        let (series, created, folded) = self.series_for(usage);
        if folded {
            self.folded_records += 1;
        }
        if let Some(slot) = self.slots.get_mut(series.index()).and_then(Option::as_mut) {
            slot.lifetime.add(&figures);
            slot.last_hour = hour;
        }
        self.hourly
            .entry(hour)
            .or_default()
            .entry(series)
            .or_default()
            .add(&figures);
        let mut crossings = Vec::new();
        let budgets = &self.config.budgets;
        let key_ratio =
            self.budgets
                .charge_key(budgets, usage.key_name(), money, at.day, &mut crossings);
        let region_ratio = match usage.place {
            Place::Region { name, .. } => {
                self.budgets
                    .charge_region(budgets, name, money, at.day, &mut crossings)
            }
            Place::Cache | Place::Local => None,
        };
        Recorded {
            series,
            created,
            folded,
            money,
            crossings,
            key_ratio,
            region_ratio,
        }
    }

    /// Moves the ledger's time to `hour` (no-op unless later): hours past
    /// `hourly_hours` become day buckets, days past `days` and the series
    /// left without buckets go. Whether the ledger's time moved.
    pub fn advance(&mut self, hour: u64) -> bool {
        if self.hour.is_some_and(|h| hour <= h) {
            return false;
        }
        self.hour = Some(hour);
        let bounds = &self.config.bounds;
        let cutoff = floor_day(hour.saturating_sub(u64::from(bounds.hourly_hours)));
        if cutoff > self.hourly_floor {
            let keep = self.hourly.split_off(&cutoff);
            let old = std::mem::replace(&mut self.hourly, keep);
            for (h, buckets) in old {
                let day = self.daily.entry(h / 24).or_default();
                for (series, f) in buckets {
                    day.entry(series).or_default().add(&f);
                }
            }
            self.hourly_floor = cutoff;
        }
        let floor = retention_floor(hour, bounds.days);
        self.daily = self.daily.split_off(&(floor / 24));
        // Empty unless hourly_hours reached past the days kept (check()
        // refuses that; this keeps the bound whatever the config).
        self.hourly = self.hourly.split_off(&floor);
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.last_hour < floor) {
                self.drop_slot(SeriesId(i as u32));
            }
        }
        true
    }

    /// The series dropped since the last call (their metric series go too).
    pub fn take_dropped(&mut self) -> Vec<(SeriesId, Series)> {
        std::mem::take(&mut self.dropped)
    }

    pub fn series(&self, id: SeriesId) -> Option<&Series> {
        self.slots
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|s| &s.series)
    }

    /// Every live series, `(other)` ones included.
    pub fn all_series(&self) -> impl Iterator<Item = (SeriesId, &Series)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (SeriesId(i as u32), &s.series)))
    }

    pub(crate) fn lifetime_figures(&self, id: SeriesId) -> Option<Figures> {
        self.slots
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|s| s.lifetime)
    }

    /// Records counted in an `(other)` series because of the series bound,
    /// since the ledger began.
    pub fn folded_records(&self) -> u64 {
        self.folded_records
    }

    /// Live series, `(other)` ones included.
    pub fn series_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    fn series_for(&mut self, usage: &Usage<'_>) -> (SeriesId, bool, bool) {
        let probe = Probe::of(usage);
        let hash = probe.hash(&self.hasher);
        if let Some(id) = self.find(hash, &probe) {
            return (id, false, false);
        }
        if self.live < self.config.bounds.max_series {
            self.live += 1;
            return (self.create(hash, &probe), true, false);
        }
        let other = Probe::other(usage.place);
        let hash = other.hash(&self.hasher);
        match self.find(hash, &other) {
            Some(id) => (id, false, true),
            None => (self.create(hash, &other), true, true),
        }
    }

    fn find(&self, hash: u64, probe: &Probe<'_>) -> Option<SeriesId> {
        self.index.get(&hash)?.iter().copied().find(|id| {
            self.slots[id.index()]
                .as_ref()
                .is_some_and(|s| probe.matches(&s.series))
        })
    }

    fn create(&mut self, hash: u64, probe: &Probe<'_>) -> SeriesId {
        let slot = Slot {
            series: probe.series(),
            hash,
            lifetime: Figures::default(),
            last_hour: self.hour.unwrap_or(0),
        };
        self.insert(slot)
    }

    pub(super) fn insert(&mut self, slot: Slot) -> SeriesId {
        let hash = slot.hash;
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id.index()] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                SeriesId((self.slots.len() - 1) as u32)
            }
        };
        self.index.entry(hash).or_default().push(id);
        id
    }

    fn drop_slot(&mut self, id: SeriesId) {
        let Some(slot) = self.slots[id.index()].take() else {
            return;
        };
        if let Some(ids) = self.index.get_mut(&slot.hash) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.index.remove(&slot.hash);
            }
        }
        if !slot.series.is_other() {
            self.live -= 1;
        }
        self.free.push(id);
        self.dropped.push((id, slot.series));
    }
}

/// The first hour of `hour`'s day.
pub(super) fn floor_day(hour: u64) -> u64 {
    hour - hour % 24
}

/// The first hour kept at `hour`: the start of the day `days - 1` before
/// `hour`'s.
pub(super) fn retention_floor(hour: u64, days: u32) -> u64 {
    (hour / 24 + 1).saturating_sub(u64::from(days)) * 24
}

impl Ledger {
    /// Every configured budget on `day`, keys then regions, by name.
    pub fn budget_state(&self, day: u64) -> Vec<BudgetStatus> {
        self.budgets.state(&self.config.budgets, day)
    }

    /// Whether a request of `key` may be sent to `region` on `day`: not
    /// once a `stop-spill` budget of either reached 100% that day.
    pub fn may_spill(&self, key: Option<&str>, region: &str, day: u64) -> bool {
        self.budgets
            .may_spill(&self.config.budgets, key, region, day)
    }
}
