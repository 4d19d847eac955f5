//! The fleet brake (`nusa_ota_core::brake`), read from the repository's
//! verified metadata: the signed target `brake/<n>/brake.json` with the
//! highest `n` (none: nothing is held).
//!
//! Each time the brake is read from metadata that verified, it is recorded
//! in the state folder (`brake-seen.json`) with the time that metadata
//! expires (the earliest expiry of the roles tough just accepted, from its
//! datastore). Before a written slot is armed ([`Command::CheckBrake`]) the
//! runner refreshes the metadata; when it cannot (offline, a mirror that
//! withholds or breaks it) it answers with that record, and the core
//! applies the release only while the recorded metadata is unexpired and
//! listed no brake for it. No record (or an unreadable one): the brake is
//! unknown and nothing is applied.
//!
//! [`Command::CheckBrake`]: nusa_ota_core::Command::CheckBrake

use std::path::Path;

use nusa_ota_core::brake::brake_sequence;
use nusa_ota_core::{Brake, BrakeCheck, UnixSecs};
use serde::{Deserialize, Serialize};

use super::{Fail, RunError, Runner};

/// The record of the last verified brake, in the state folder.
pub const SEEN_FILE: &str = "brake-seen.json";
/// A larger brake target is refused before it is read.
const MAX_BRAKE_BYTES: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    brake: Brake,
    /// When the metadata it came from expires (unix seconds).
    expires: UnixSecs,
}

impl Runner {
    /// The brake in the current client's verified metadata, recorded (with
    /// the metadata's expiry) for a later offline check. `Ok(Err)`: it
    /// could not be read; `Err`: the state folder failed.
    pub(crate) async fn read_brake(&mut self) -> Result<Result<Brake, Fail>, RunError> {
        let brake = match self.fetch_brake().await {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        match metadata_expiry(&self.setup.store.tuf_dir()) {
            Some(expires) => {
                let seen = Seen {
                    brake: brake.clone(),
                    expires,
                };
                match serde_json::to_vec(&seen) {
                    Ok(bytes) => self.setup.store.write_atomic(SEEN_FILE, &bytes)?,
                    Err(e) => tracing::warn!(error = %e, "recording the brake"),
                }
            }
            None => tracing::warn!(
                "the verified metadata's expiry is unreadable: an offline brake check will not proceed"
            ),
        }
        Ok(Ok(brake))
    }

    /// The answer to `CheckBrake`: fresh metadata's brake, else the record
    /// of the last verified one, else unknown.
    pub(crate) async fn check_brake(&mut self) -> Result<BrakeCheck, RunError> {
        // A fresh client: the metadata is refreshed and verified again.
        self.tuf = None;
        let error = match self.read_brake().await? {
            Ok(brake) => return Ok(BrakeCheck::Fresh(brake)),
            Err(e) => e,
        };
        tracing::warn!(%error, "no fresh metadata for the brake check; using the last verified");
        let seen = std::fs::read(self.setup.store.dir().join(SEEN_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Seen>(&b).ok());
        Ok(match seen {
            Some(Seen { brake, expires }) => BrakeCheck::Stale {
                brake,
                expires,
                error,
            },
            None => BrakeCheck::Unknown { error },
        })
    }

    async fn fetch_brake(&mut self) -> Result<Brake, Fail> {
        let tuf = self.tuf().await?;
        let newest = tuf
            .targets()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|t| brake_sequence(&t.name).map(|n| (n, t)))
            .max_by_key(|(n, _)| *n);
        let Some((sequence, target)) = newest else {
            return Ok(Brake::default());
        };
        let name = &target.name;
        if target.length > MAX_BRAKE_BYTES {
            return Err(format!(
                "brake {name} is {} bytes, over {MAX_BRAKE_BYTES}",
                target.length
            ));
        }
        let bytes = tuf
            .read_target(name)
            .await
            .map_err(|e| format!("brake {name}: {e}"))?;
        let brake: Brake =
            serde_json::from_slice(&bytes).map_err(|e| format!("brake {name}: {e}"))?;
        if brake.sequence != sequence {
            return Err(format!("brake {name} says it is number {}", brake.sequence));
        }
        Ok(brake)
    }
}

/// The earliest expiry of the metadata tough keeps in its datastore (what
/// it last verified); `None` when a file is missing or unreadable.
fn metadata_expiry(datastore: &Path) -> Option<UnixSecs> {
    let mut earliest: Option<UnixSecs> = None;
    for role in ["root", "timestamp", "snapshot", "targets"] {
        let bytes = std::fs::read(datastore.join(format!("{role}.json"))).ok()?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let expires = parse_utc(doc.get("signed")?.get("expires")?.as_str()?)?;
        earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
    }
    earliest
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)` (what TUF metadata writes) as
/// unix seconds.
fn parse_utc(s: &str) -> Option<UnixSecs> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let whole = time.split('.').next()?;
    let mut t = whole.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
        || !(1970..=9999).contains(&year)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    UnixSecs::try_from(days * 86_400 + hour * 3600 + min * 60 + sec).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_utc;

    #[test]
    fn tuf_expiry_times_parse_as_unix_seconds() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_utc("2024-02-29T12:34:56.789Z"), Some(1_709_210_096));
        assert_eq!(parse_utc("2024-02-29T12:34:56+00:00"), Some(1_709_210_096));
        for bad in [
            "2024-02-29T12:34:56",
            "2024-02-29 12:34:56Z",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56+02:00",
            "",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
