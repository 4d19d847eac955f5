//! The attacker's tools: rewrite metadata files with tough directly,
//! signing with whatever keys the attack assumes (a rogue key, too few real
//! keys, the real key over a bad name), and re-chain snapshot and timestamp
//! with the real keys so that the one defect under test is the only one.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use serde::de::DeserializeOwned;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{
    Hashes, KeyHolder, Metafile, Role, RoleKeys, RoleType, Root, Signed, Snapshot, Targets,
    Timestamp,
};
use tough::sign::{parse_keypair, Sign};

use crate::Fixture;

pub fn read<T: DeserializeOwned>(path: &Path) -> Signed<T> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("parse metadata")
}

/// The latest root, timestamp, snapshot and targets as published.
pub struct Published {
    pub root: Signed<Root>,
    pub timestamp: Signed<Timestamp>,
    pub snapshot: Signed<Snapshot>,
    pub targets: Signed<Targets>,
}

pub fn published(fx: &Fixture) -> Published {
    let md = fx.metadata();
    let root = read::<Root>(&md.join("root.json"));
    let timestamp = read::<Timestamp>(&md.join("timestamp.json"));
    let snapshot_version = timestamp.signed.meta["snapshot.json"].version;
    let snapshot = read::<Snapshot>(&md.join(format!("{snapshot_version}.snapshot.json")));
    let targets_version = snapshot.signed.meta["targets.json"].version;
    let targets = read::<Targets>(&md.join(format!("{targets_version}.targets.json")));
    Published {
        root,
        timestamp,
        snapshot,
        targets,
    }
}

/// Signs `value` as `role` with exactly `key_files`, whether or not root
/// lists them: the key holder is a copy of the real root whose `role` lists
/// these keys with threshold 1 (it is never written anywhere).
pub async fn sign_as<T: Role + serde::Serialize>(
    real_root: &Root,
    role: RoleType,
    value: T,
    key_files: &[PathBuf],
) -> SignedRole<T> {
    let mut holder = real_root.clone();
    let mut keyids = Vec::new();
    for path in key_files {
        let key = parse_keypair(&std::fs::read(path).expect("read key"))
            .expect("parse key")
            .tuf_key();
        let id = key.key_id().expect("key id");
        holder.keys.insert(id.clone(), key);
        keyids.push(id);
    }
    holder.roles.insert(
        role,
        RoleKeys {
            keyids,
            threshold: NonZeroU64::MIN,
            _extra: HashMap::new(),
        },
    );
    let sources: Vec<Box<dyn KeySource>> = key_files
        .iter()
        .map(|path| Box::new(LocalKeySource { path: path.clone() }) as Box<dyn KeySource>)
        .collect();
    SignedRole::new(
        value,
        &KeyHolder::Root(holder),
        &sources,
        &SystemRandom::new(),
    )
    .await
    .expect("sign")
}

fn metafile<T: Role>(role: &SignedRole<T>) -> Metafile {
    Metafile {
        hashes: Some(Hashes {
            sha256: role.sha256().to_vec().into(),
            _extra: HashMap::new(),
        }),
        length: Some(*role.length()),
        version: role.signed().signed.version(),
        _extra: HashMap::new(),
    }
}

/// Publishes `targets` (already signed however the attack wants) as the
/// next targets version, with a snapshot and timestamp signed by the real
/// keys that list it.
pub async fn publish_targets(fx: &Fixture, targets: SignedRole<Targets>) {
    let p = published(fx);
    let md = fx.metadata();
    targets.write(&md, true).await.expect("write targets");

    let mut snapshot = p.snapshot.signed.clone();
    snapshot.version = snapshot.version.checked_add(1).expect("version");
    snapshot
        .meta
        .insert("targets.json".into(), metafile(&targets));
    let snapshot = sign_as(
        &p.root.signed,
        RoleType::Snapshot,
        snapshot,
        &fx.keys.snapshot,
    )
    .await;
    snapshot.write(&md, true).await.expect("write snapshot");

    let mut timestamp = p.timestamp.signed.clone();
    timestamp.version = timestamp.version.checked_add(1).expect("version");
    timestamp
        .meta
        .insert("snapshot.json".into(), metafile(&snapshot));
    let timestamp = sign_as(
        &p.root.signed,
        RoleType::Timestamp,
        timestamp,
        &fx.keys.timestamp,
    )
    .await;
    timestamp.write(&md, true).await.expect("write timestamp");
}

/// The published targets as the next version, unsigned, for an attack to
/// change and sign.
pub fn next_targets(fx: &Fixture) -> (Root, Targets) {
    let p = published(fx);
    let mut targets = p.targets.signed;
    targets.version = targets.version.checked_add(1).expect("version");
    (p.root.signed, targets)
}
