//! One answered request, as the ledger counts it, and the time it is
//! counted at.

/// Where a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    /// The edge cache (memory or redb tier): no compute.
    Cache,
    /// The local engine.
    Local,
    /// A regional cloud endpoint, by its configured name, and the country
    /// (ISO 3166-1 alpha-2) it processes in when configured.
    Region {
        name: &'a str,
        country: Option<&'a str>,
    },
}

/// The jurisdiction of answers from this box (and its cache).
pub const LOCAL_JURISDICTION: &str = "local";
/// The jurisdiction of a region whose country is not configured.
pub const UNKNOWN_JURISDICTION: &str = "unknown";
/// The key label of requests without an API key.
pub const NO_KEY: &str = "-";

impl Place<'_> {
    /// The `place` label: `cache`, `local` or `cloud:<region>` (as the
    /// `nusa-served-by` header).
    pub fn label(&self) -> String {
        match self {
            Place::Cache => "cache".to_string(),
            Place::Local => "local".to_string(),
            Place::Region { name, .. } => format!("cloud:{name}"),
        }
    }

    /// Where the answer was computed, in law: `local` for the box and its
    /// cache, the region's country in upper case, or `unknown`.
    pub fn jurisdiction(&self) -> String {
        match self {
            Place::Cache | Place::Local => LOCAL_JURISDICTION.to_string(),
            Place::Region {
                country: Some(c), ..
            } => c.to_ascii_uppercase(),
            Place::Region { country: None, .. } => UNKNOWN_JURISDICTION.to_string(),
        }
    }
}

/// One answered request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage<'a> {
    pub model: &'a str,
    pub version: u64,
    /// The API key's name (never its secret); `None` without a key.
    pub key: Option<&'a str>,
    pub place: Place<'a>,
    /// This request's share of its batch's compute on the local engine, in
    /// seconds: see [`share`]. Zero from the cache and regions.
    pub compute_s: f64,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Answer body bytes sent to the client.
    pub bytes_out: u64,
}

impl<'a> Usage<'a> {
    /// The key label: the key's name, or `-`.
    pub fn key_name(&self) -> &'a str {
        self.key.unwrap_or(NO_KEY)
    }

    /// `compute_s`, with a negative or not-a-number figure (a clock that
    /// went back while timing the batch) counted as none.
    pub fn compute_s(&self) -> f64 {
        if self.compute_s.is_finite() && self.compute_s > 0.0 {
            self.compute_s
        } else {
            0.0
        }
    }
}

/// A request's share of its batch's compute: the batch's seconds times the
/// request's rows over the batch's rows. The shares of a batch's requests
/// add up to the batch's seconds.
pub fn share(batch_compute_s: f64, rows: usize, batch_rows: usize) -> f64 {
    if batch_rows == 0 {
        return 0.0;
    }
    batch_compute_s * rows as f64 / batch_rows as f64
}

/// The time a record counts at: the Unix hour for its bucket and the day
/// its budgets count in. The driver reads the clock; the core only
/// compares these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct At {
    /// Hours since the Unix epoch (UTC).
    pub hour: u64,
    /// The budget day: days since the Unix epoch, in the time zone the
    /// driver chose (UTC with [`At::utc`]).
    pub day: u64,
}

impl At {
    /// Buckets and budget days in UTC.
    pub fn utc(unix_s: u64) -> At {
        At {
            hour: unix_s / 3600,
            day: unix_s / 86_400,
        }
    }
}
