//! The one place in the crate that reads the wall clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::{SystemTime, UNIX_EPOCH};

use super::Clock;
use crate::core::At;

/// Buckets and budget days in UTC, from the system clock (a clock before
/// 1970 reads as the epoch).
pub fn utc_clock() -> Clock {
    Box::new(|| {
        let s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        At::utc(s)
    })
}
