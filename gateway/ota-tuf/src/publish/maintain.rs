//! Keeping a repository alive: refreshing expiries and rotating root keys.
//!
//! A timestamp refresh (the routine, often automated job) must need only
//! the timestamp key, so the other keys can stay offline. tough's
//! `RepositoryEditor::sign` always re-signs targets, so the snapshot and
//! timestamp refreshes build those two roles directly and sign them with
//! tough's `SignedRole::new`; a targets refresh goes through the editor.

use std::path::Path;
use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use tough::editor::signed::SignedRole;
use tough::editor::RepositoryEditor;
use tough::schema::{Hashes, KeyHolder, Metafile, Snapshot, Timestamp};
use tough::Repository;

use super::{
    next, root, sign_editor, store, to_jiff, tough_err, Expiries, PublishError, Thresholds,
};
use crate::{Role, SigningKeys};

/// Re-signs `role` with a new expiry and a bumped version. Roles that list
/// it are re-signed too (targets -> snapshot -> timestamp), keeping their
/// current expiry; so set the timestamp's expiry last. A new root expiry is
/// published as the next root version, signed by the current root keys.
pub async fn set_expiry(
    repo_dir: &Path,
    keys: &SigningKeys,
    role: Role,
    expires: SystemTime,
) -> Result<(), PublishError> {
    let dirs = store::Dirs::new(repo_dir);
    let repo = store::load(&dirs).await?;
    let expires = to_jiff(expires)?;
    let stage = store::staging(&dirs)?;
    let holder = KeyHolder::Root(repo.root().signed.clone());
    let rng = SystemRandom::new();
    let sources = keys.sources()?;
    let sign_error = |e: tough::error::Error| PublishError::Sign {
        detail: e.to_string(),
    };
    match role {
        Role::Root => {
            let current = repo.root().signed.clone();
            let mut new = current.clone();
            new.version = next(current.version)?;
            new.expires = expires;
            let signed = root::sign(new, &[(&current, keys)]).await?;
            signed
                .write(stage.path(), true)
                .await
                .map_err(tough_err("writing root.json"))?;
        }
        Role::Targets => {
            let expiries = current_expiries(&repo, expires);
            let versions = [
                next(repo.targets().signed.version)?,
                next(repo.snapshot().signed.version)?,
                next(repo.timestamp().signed.version)?,
            ];
            let root_path = dirs.root_file(repo.root().signed.version.get());
            let editor = RepositoryEditor::from_repo(&root_path, repo)
                .await
                .map_err(tough_err("opening the repository in the editor"))?;
            sign_editor(editor, versions, &expiries, keys)
                .await?
                .write(stage.path())
                .await
                .map_err(tough_err("writing metadata"))?;
        }
        Role::Snapshot => {
            let mut snapshot: Snapshot = repo.snapshot().signed.clone();
            snapshot.version = next(snapshot.version)?;
            snapshot.expires = expires;
            let snapshot = SignedRole::new(snapshot, &holder, &sources, &rng)
                .await
                .map_err(sign_error)?;
            let mut timestamp: Timestamp = repo.timestamp().signed.clone();
            timestamp.version = next(timestamp.version)?;
            timestamp
                .meta
                .insert("snapshot.json".to_owned(), metafile(&snapshot));
            let timestamp = SignedRole::new(timestamp, &holder, &sources, &rng)
                .await
                .map_err(sign_error)?;
            for write in [
                snapshot.write(stage.path(), true).await,
                timestamp.write(stage.path(), true).await,
            ] {
                write.map_err(tough_err("writing metadata"))?;
            }
        }
        Role::Timestamp => {
            let mut timestamp: Timestamp = repo.timestamp().signed.clone();
            timestamp.version = next(timestamp.version)?;
            timestamp.expires = expires;
            SignedRole::new(timestamp, &holder, &sources, &rng)
                .await
                .map_err(sign_error)?
                .write(stage.path(), true)
                .await
                .map_err(tough_err("writing timestamp.json"))?;
        }
    }
    store::commit(stage.path(), &dirs)
}

/// Publishes the next root version, listing the keys of `new_keys` with
/// `thresholds`, signed by a threshold of the current root keys (from
/// `old_keys`) and of the new ones, so devices that trust only the old root
/// accept it. If the targets, snapshot or timestamp keys changed, those
/// roles are re-signed with `new_keys` (versions bumped, `expiries`).
pub async fn rotate_root(
    repo_dir: &Path,
    old_keys: &SigningKeys,
    new_keys: &SigningKeys,
    thresholds: &Thresholds,
    expiries: &Expiries,
) -> Result<(), PublishError> {
    let dirs = store::Dirs::new(repo_dir);
    let repo = store::load(&dirs).await?;
    let old_root = repo.root().signed.clone();
    let new_root = root::build(
        new_keys,
        thresholds,
        next(old_root.version)?,
        to_jiff(expiries.root)?,
    )?;
    let signed_root = root::sign(
        new_root.clone(),
        &[(&old_root, old_keys), (&new_root, new_keys)],
    )
    .await?;

    let stage = store::staging(&dirs)?;
    signed_root
        .write(stage.path(), true)
        .await
        .map_err(tough_err("writing root.json"))?;

    let others_changed = [Role::Targets, Role::Snapshot, Role::Timestamp]
        .iter()
        .any(|role| {
            let keys_of = |r: &tough::schema::Root| {
                r.roles.get(&role.role_type()).map(|k| {
                    let mut ids = k.keyids.clone();
                    ids.sort();
                    (ids, k.threshold)
                })
            };
            keys_of(&old_root) != keys_of(&new_root)
        });
    if others_changed {
        let root_path = stage.path().join(format!("{}.root.json", new_root.version));
        let mut editor = RepositoryEditor::new(&root_path)
            .await
            .map_err(tough_err("opening the new root in the editor"))?;
        editor
            .targets(repo.targets().clone())
            .map_err(tough_err("carrying the targets over"))?;
        let versions = [
            next(repo.targets().signed.version)?,
            next(repo.snapshot().signed.version)?,
            next(repo.timestamp().signed.version)?,
        ];
        sign_editor(editor, versions, expiries, new_keys)
            .await?
            .write(stage.path())
            .await
            .map_err(tough_err("writing metadata"))?;
    }
    store::commit(stage.path(), &dirs)
}

/// The repository's current expiries, with `targets` replaced.
fn current_expiries(repo: &Repository, targets: jiff::Timestamp) -> Expiries {
    Expiries {
        root: repo.root().signed.expires.into(),
        targets: targets.into(),
        snapshot: repo.snapshot().signed.expires.into(),
        timestamp: repo.timestamp().signed.expires.into(),
    }
}

/// What the timestamp lists about a snapshot: version, length and sha256
/// of the exact bytes that will be written.
fn metafile(snapshot: &SignedRole<Snapshot>) -> Metafile {
    Metafile {
        hashes: Some(Hashes {
            sha256: snapshot.sha256().to_vec().into(),
            _extra: Default::default(),
        }),
        length: Some(*snapshot.length()),
        version: snapshot.signed().signed.version,
        _extra: Default::default(),
    }
}
