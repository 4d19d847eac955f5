//! Release versions: `MAJOR.MINOR.PATCH`, ordered numerically.
//!
//! A small type rather than the `semver` crate: appliance releases are
//! numbered, never pre-releases or builds, and refusing `1.4.2-rc1` outright
//! is safer than ordering it by semver's pre-release rules (which put
//! `1.4.2-rc1` below `1.4.2`, so a box on an rc would take `1.4.2` and a box
//! on `1.4.2` would refuse the rc without force; fine, but one more rule to
//! get wrong in the version floor).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `MAJOR.MINOR.PATCH`; the derived order compares major, then minor, then
/// patch, as numbers (`1.10.0 > 1.9.0`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{self}")
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| VersionError {
            text: s.chars().take(32).collect(),
            why,
        };
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, VersionError> {
            let part = parts.next().ok_or(bad("it needs three numbers"))?;
            // No signs, no spaces, no leading zeros: one version, one spelling.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each part is a number made of digits only"));
            }
            if part.len() > 1 && part.starts_with('0') {
                return Err(bad("a part has a leading zero"));
            }
            part.parse().map_err(|_| bad("a part is above 4294967295"))
        };
        let v = Version::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad("it has more than three parts"));
        }
        Ok(v)
    }
}

impl TryFrom<String> for Version {
    type Error = VersionError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}

/// A version string that is not `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {text:?} is not MAJOR.MINOR.PATCH: {why}")]
pub struct VersionError {
    text: String,
    why: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn orders_numerically_not_as_text() {
        assert!(v("1.10.0") > v("1.9.0"));
        assert!(v("1.4.10") > v("1.4.2"));
        assert!(v("2.0.0") > v("1.99.99"));
        assert_eq!(v("1.4.2"), Version::new(1, 4, 2));
        assert_eq!(v("1.4.2").to_string(), "1.4.2");
    }

    #[test]
    fn refuses_anything_but_three_plain_numbers() {
        for bad in [
            "",
            "1",
            "1.4",
            "1.4.2.0",
            "1.4.2-rc1",
            "1.4.x",
            "1..2",
            "+1.4.2",
            " 1.4.2",
            "1.04.2",
            "1.4.4294967296",
        ] {
            let err = bad.parse::<Version>().unwrap_err();
            assert!(
                err.to_string().contains("MAJOR.MINOR.PATCH"),
                "{bad}: {err}"
            );
        }
        assert!(v("0.0.0") < v("0.0.1"));
    }

    #[test]
    fn serde_is_the_plain_string() {
        let json = serde_json::to_string(&v("1.4.2")).unwrap();
        assert_eq!(json, "\"1.4.2\"");
        assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), v("1.4.2"));
        assert!(serde_json::from_str::<Version>("\"1.4\"").is_err());
    }
}
