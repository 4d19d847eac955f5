//! The fleet brake on the publishing side: `nusactl release pause`,
//! `resume` and `yank`. The current brake is read through the verifying
//! TUF client (the repository's own `1.root.json` as the trusted root,
//! walking any rotations), changed, and published whole as the next
//! `brake/<n>/brake.json` with `nusa_ota_tuf::add_targets`: signed by the
//! targets role through the same path as the releases. Two engineers
//! changing the brake at once: the second is refused and runs again.

use std::path::Path;

use nusa_ota_core::brake::{brake_sequence, brake_target, BRAKE_DIR, BRAKE_FILE};
use nusa_ota_core::release::IMAGE_FILE;
use nusa_ota_core::{Brake, BrakeEntry, UnixSecs, Variant, Version};
use nusa_ota_tuf::{Client, Expiries, FilesystemTransport, Limits, NewTarget, SigningKeys};

use crate::PublishError;

/// A change of the brake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrakeChange {
    /// Stop every box from starting or applying the release.
    Pause(BrakeEntry),
    /// Lift the pauses of a version (of one variant, or all).
    Resume {
        version: Version,
        variant: Option<Variant>,
    },
    /// Pause for good: never installed again, cannot be resumed.
    Yank(BrakeEntry),
}

/// Builds the entry for a pause or a yank from the CLI's words.
pub fn entry(
    version: &str,
    variant: Option<&str>,
    reason: &str,
    by: &str,
    at: UnixSecs,
) -> Result<BrakeEntry, PublishError> {
    let bad = |e: &dyn std::fmt::Display| PublishError::Release(e.to_string());
    Ok(BrakeEntry {
        version: version.parse::<Version>().map_err(|e| bad(&e))?,
        variant: variant.map(Variant::new).transpose().map_err(|e| bad(&e))?,
        reason: reason.to_owned(),
        by: by.to_owned(),
        at,
    })
}

/// The brake the repository publishes now (empty, sequence 0, when none),
/// and the releases it holds, read through the verifying client.
pub async fn current_brake(repo: &Path) -> Result<(Brake, Vec<String>), PublishError> {
    let tuf_err =
        |e: nusa_ota_tuf::TufError| PublishError::Release(format!("reading the repository: {e}"));
    let datastore = tempfile::tempdir().map_err(|source| PublishError::Image {
        path: std::env::temp_dir(),
        source,
    })?;
    let (metadata, targets) = nusa_ota_tuf::local_urls(repo).map_err(tuf_err)?;
    let root = repo.join(nusa_ota_tuf::METADATA_DIR).join("1.root.json");
    let client = Client::open(
        &root,
        datastore.path(),
        metadata,
        targets,
        FilesystemTransport,
        Limits::default(),
    )
    .await
    .map_err(tuf_err)?;
    let all = client.targets().map_err(tuf_err)?;
    let releases: Vec<String> = all
        .iter()
        .filter(|t| t.name.ends_with(&format!("/{IMAGE_FILE}")))
        .map(|t| t.name.clone())
        .collect();
    let newest = all
        .iter()
        .filter_map(|t| brake_sequence(&t.name).map(|n| (n, t)))
        .max_by_key(|(n, _)| *n);
    let Some((sequence, target)) = newest else {
        return Ok((Brake::default(), releases));
    };
    let bytes = client.read_target(&target.name).await.map_err(tuf_err)?;
    let brake: Brake = serde_json::from_slice(&bytes)
        .map_err(|e| PublishError::Release(format!("{}: {e}", target.name)))?;
    if brake.sequence != sequence {
        return Err(PublishError::Release(format!(
            "{} says it is number {}",
            target.name, brake.sequence
        )));
    }
    Ok((brake, releases))
}

/// Applies `change` to the published brake and publishes the result as the
/// next sequence. A pause or yank must name a published release (of the
/// variant, when one is given). Returns the new brake.
pub async fn change_brake(
    repo: &Path,
    keys: &SigningKeys,
    change: BrakeChange,
    expiries: &Expiries,
) -> Result<Brake, PublishError> {
    let (mut brake, releases) = current_brake(repo).await?;
    let refused = |e: nusa_ota_core::BrakeError| PublishError::Release(e.to_string());
    match change {
        BrakeChange::Pause(entry) => {
            require_release(&releases, &entry)?;
            brake.pause(entry).map_err(refused)?;
        }
        BrakeChange::Resume { version, variant } => {
            brake.resume(version, variant.as_ref()).map_err(refused)?;
        }
        BrakeChange::Yank(entry) => {
            require_release(&releases, &entry)?;
            brake.yank(entry).map_err(refused)?;
        }
    }
    brake.sequence = brake
        .sequence
        .checked_add(1)
        .ok_or_else(|| PublishError::Release("brake sequence overflow".into()))?;
    let staging = tempfile::tempdir().map_err(|source| PublishError::Image {
        path: std::env::temp_dir(),
        source,
    })?;
    let path = staging.path().join(BRAKE_FILE);
    let bytes = serde_json::to_vec_pretty(&brake)
        .map_err(|e| PublishError::Release(format!("brake: {e}")))?;
    std::fs::write(&path, bytes).map_err(|source| PublishError::Image {
        path: path.clone(),
        source,
    })?;
    let target = NewTarget {
        name: brake_target(brake.sequence),
        path: &path,
        custom: serde_json::Map::new(),
    };
    let prefix = format!("{BRAKE_DIR}/{}/", brake.sequence);
    nusa_ota_tuf::add_targets(repo, keys, &prefix, &[target], expiries)
        .await
        .map_err(|e| match e {
            nusa_ota_tuf::PublishError::GroupExists { .. } => PublishError::Release(format!(
                "brake {} was published meanwhile by someone else; run the command again",
                brake.sequence
            )),
            other => other.into(),
        })?;
    Ok(brake)
}

fn require_release(releases: &[String], entry: &BrakeEntry) -> Result<(), PublishError> {
    let version = format!("/{}/", entry.version);
    let found = releases.iter().any(|name| {
        name.contains(&version)
            && entry
                .variant
                .as_ref()
                .is_none_or(|v| name.starts_with(&format!("{v}/")))
    });
    if found {
        Ok(())
    } else {
        Err(PublishError::Release(format!(
            "no release {}{} in the repository",
            entry.version,
            entry
                .variant
                .as_ref()
                .map(|v| format!(" of {v}"))
                .unwrap_or_default()
        )))
    }
}
