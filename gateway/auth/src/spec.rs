//! What an operator asks for when creating or changing a key, and the checks
//! that turn it into something the store keeps.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a key may do. Both roles may run inference (within the key's
/// model globs); only `Admin` reaches the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Infer,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Infer => "infer",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "infer" => Ok(Role::Infer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("{other:?} is not a role (infer, admin)")),
        }
    }
}

/// Limits of one scope (a key, or a key's calls to one model). `None`: no
/// limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sustained requests per second (GCRA); may be fractional (0.5: one
    /// every two seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// Requests allowed at once after a quiet spell; defaults to
    /// `max(1, ceil(rps))`. Meaningless without `rps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Requests per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_requests: Option<u64>,
    /// Bytes (request plus response) sent to regions per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_spill_bytes: Option<u64>,
}

/// The fastest rate a limit may name: governor's GCRA counts in whole
/// nanoseconds per request, and the interval must not round to zero.
pub const MAX_RPS: f64 = 1e9;

/// The longest a burst may take to refill (`burst / rps`): a year. Slower
/// limits are quotas, and governor's nanosecond arithmetic must not
/// overflow.
pub const MAX_REFILL_S: f64 = 365.0 * 86_400.0;

impl Limits {
    /// The GCRA burst in force: the configured one, else `max(1, ceil(rps))`.
    pub fn effective_burst(&self) -> Option<u32> {
        let rps = self.rps?;
        // `as` saturates; rps is at most MAX_RPS once validated.
        Some(self.burst.unwrap_or_else(|| (rps.ceil() as u32).max(1)))
    }

    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(rps) = self.rps {
            if !rps.is_finite() || rps <= 0.0 || rps > MAX_RPS {
                return Err(format!(
                    "rps must be a number above 0 and at most {MAX_RPS}, not {rps}"
                ));
            }
        }
        match (self.rps, self.burst) {
            (_, Some(0)) => return Err("burst must be at least 1".into()),
            (None, Some(_)) => return Err("burst needs rps (the rate it bursts above)".into()),
            _ => {}
        }
        if let (Some(rps), Some(burst)) = (self.rps, self.effective_burst()) {
            if f64::from(burst) / rps > MAX_REFILL_S {
                return Err(format!(
                    "a burst of {burst} at {rps} requests per second takes more than a year to \
                     refill (use daily_requests for slow quotas)"
                ));
            }
        }
        if self.max_concurrent == Some(0) {
            return Err("max_concurrent must be at least 1".into());
        }
        if self.daily_requests == Some(0) {
            return Err("daily_requests must be at least 1".into());
        }
        if self.daily_spill_bytes == Some(0) {
            return Err(
                "daily_spill_bytes must be at least 1 (set spill = false to forbid spilling)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A key as an operator describes it (`nusactl keys create`, the admin API,
/// the config file). Missing fields take the defaults below.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Unique among the store's keys; letters, digits, `-`, `_`, `.`.
    pub name: String,
    #[serde(default)]
    pub role: Role,
    /// Globs over model names (`resnet-*`, `*`, exact names).
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// Unix seconds; the key stops working at this second.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub limits: Limits,
    /// Limits of the key's calls to one model (exact model name), checked
    /// in addition to `limits`.
    #[serde(default)]
    pub model_limits: BTreeMap<String, Limits>,
    /// Where the key's requests may be processed: `["any"]`, `["local"]`
    /// (this box only) or ISO 3166-1 alpha-2 country codes of regions.
    #[serde(default = "any_residency")]
    pub residency: Vec<String>,
    /// Whether the key's requests may spill to a region at all.
    #[serde(default = "yes")]
    pub spill: bool,
    /// The subject of an mTLS client certificate that authenticates as this
    /// key (as the TLS layer renders it, e.g. `CN=camera-7, O=Acme`).
    #[serde(default)]
    pub cert_subject: Option<String>,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

fn any_residency() -> Vec<String> {
    vec![ANY.into()]
}

fn yes() -> bool {
    true
}

pub(crate) const ANY: &str = "any";
pub(crate) const LOCAL: &str = "local";

const MAX_NAME: usize = 64;
const MAX_MODEL: usize = 256;
const MAX_SUBJECT: usize = 1024;
const MAX_ENTRIES: usize = 256;

impl KeySpec {
    /// A spec with the defaults: every model, no expiry, no limits, any
    /// residency, spill allowed.
    pub fn new(name: impl Into<String>, role: Role) -> KeySpec {
        KeySpec {
            name: name.into(),
            role,
            models: all_models(),
            expires_at: None,
            limits: Limits::default(),
            model_limits: BTreeMap::new(),
            residency: any_residency(),
            spill: true,
            cert_subject: None,
        }
    }

    /// Checks every field and returns the spec in its stored form (country
    /// codes upper case). The message names the field, never a secret (a
    /// spec holds none).
    pub fn validated(mut self) -> Result<KeySpec, String> {
        validate_name(&self.name)?;
        if self.models.len() > MAX_ENTRIES {
            return Err(format!("at most {MAX_ENTRIES} model globs"));
        }
        for glob in &self.models {
            text("model glob", glob, MAX_MODEL)?;
            glob::Pattern::new(glob).map_err(|e| format!("model glob {glob:?}: {e}"))?;
        }
        self.limits.validate()?;
        if self.model_limits.len() > MAX_ENTRIES {
            return Err(format!("at most {MAX_ENTRIES} per-model limits"));
        }
        for (model, limits) in &self.model_limits {
            text("model name", model, MAX_MODEL)?;
            limits
                .validate()
                .map_err(|e| format!("limits of model {model:?}: {e}"))?;
        }
        self.residency = residency(self.residency)?;
        if let Some(subject) = &self.cert_subject {
            text("cert_subject", subject, MAX_SUBJECT)?;
        }
        Ok(self)
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
        ))
    }
}

fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(format!(
            "{what} {s:?}: 1 to {max} bytes without control characters"
        ));
    }
    Ok(())
}

/// `any` or `local` alone, or country codes (deduplicated, upper case).
fn residency(values: Vec<String>) -> Result<Vec<String>, String> {
    let help = "residency is [\"any\"], [\"local\"] or ISO 3166-1 alpha-2 country codes";
    match values.as_slice() {
        [] => return Err(format!("{help}, not empty")),
        [one] if one == ANY || one == LOCAL => return Ok(values),
        _ => {}
    }
    let mut codes = Vec::with_capacity(values.len());
    for v in &values {
        if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("{help} (\"any\" and \"local\" alone), not {v:?}"));
        }
        let code = v.to_ascii_uppercase();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> KeySpec {
        KeySpec::new("mobile-app", Role::Infer)
    }

    #[test]
    fn defaults_from_json() {
        let s: KeySpec = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!(s, KeySpec::new("a", Role::Infer));
        let err = serde_json::from_str::<KeySpec>(r#"{"name":"a","limits":{"rsp":1}}"#);
        assert!(err.is_err(), "unknown limit fields are refused");
    }

    #[test]
    fn refuses_bad_fields() {
        let bad = |f: &dyn Fn(&mut KeySpec)| {
            let mut s = spec();
            f(&mut s);
            s.validated().unwrap_err()
        };
        assert!(bad(&|s| s.name = "has space".into()).contains("name"));
        assert!(bad(&|s| s.name = String::new()).contains("name"));
        assert!(bad(&|s| s.models = vec!["resnet-[".into()]).contains("glob"));
        assert!(bad(&|s| s.limits.rps = Some(0.0)).contains("rps"));
        assert!(bad(&|s| s.limits.rps = Some(f64::NAN)).contains("rps"));
        assert!(bad(&|s| s.limits.burst = Some(3)).contains("burst needs rps"));
        assert!(bad(&|s| s.limits.rps = Some(1e-9)).contains("a year"));
        assert!(bad(&|s| {
            s.limits.rps = Some(1.0);
            s.limits.burst = Some(u32::MAX);
        })
        .contains("a year"));
        assert!(bad(&|s| s.limits.max_concurrent = Some(0)).contains("max_concurrent"));
        assert!(bad(&|s| s.limits.daily_requests = Some(0)).contains("daily_requests"));
        assert!(bad(&|s| {
            s.model_limits.insert(
                "resnet".into(),
                Limits {
                    daily_spill_bytes: Some(0),
                    ..Limits::default()
                },
            );
        })
        .contains("resnet"));
        assert!(bad(&|s| s.residency = vec![]).contains("residency"));
        assert!(bad(&|s| s.residency = vec!["any".into(), "ID".into()]).contains("residency"));
        assert!(bad(&|s| s.residency = vec!["IDN".into()]).contains("IDN"));
        assert!(bad(&|s| s.cert_subject = Some("CN=a\nO=b".into())).contains("cert_subject"));
    }

    #[test]
    fn normalises_residency() {
        let mut s = spec();
        s.residency = vec!["id".into(), "SG".into(), "ID".into()];
        assert_eq!(s.validated().unwrap().residency, ["ID", "SG"]);
    }

    #[test]
    fn burst_defaults_to_rate() {
        let l = |rps| Limits {
            rps: Some(rps),
            ..Limits::default()
        };
        assert_eq!(l(5.0).effective_burst(), Some(5));
        assert_eq!(l(2.5).effective_burst(), Some(3));
        assert_eq!(l(0.1).effective_burst(), Some(1));
        assert_eq!(Limits::default().effective_burst(), None);
    }
}
