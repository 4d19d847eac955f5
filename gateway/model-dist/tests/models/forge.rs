//! The attacker's (or a broken signer's) tools: new targets, snapshot and
//! timestamp written with tough directly and signed with the repository's
//! real keys, so the one defect under test is the only one.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use serde::de::DeserializeOwned;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{
    Hashes, KeyHolder, Metafile, Root, Signed, Snapshot, Target, Targets, Timestamp,
};

use crate::Fixture;

fn read<T: DeserializeOwned>(path: &Path) -> Signed<T> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn next(v: NonZeroU64) -> NonZeroU64 {
    v.checked_add(1).unwrap()
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

async fn sign<T: tough::schema::Role + serde::Serialize>(
    root: &Root,
    value: T,
    keys: &[PathBuf],
) -> SignedRole<T> {
    let sources: Vec<Box<dyn KeySource>> = keys
        .iter()
        .map(|path| Box::new(LocalKeySource { path: path.clone() }) as Box<dyn KeySource>)
        .collect();
    let holder = KeyHolder::Root(root.clone());
    SignedRole::new(value, &holder, &sources, &SystemRandom::new())
        .await
        .unwrap()
}

fn metafile(sha256: Vec<u8>, length: u64, version: NonZeroU64) -> Metafile {
    Metafile {
        hashes: Some(Hashes {
            sha256: sha256.into(),
            _extra: HashMap::new(),
        }),
        length: Some(length),
        version,
        _extra: HashMap::new(),
    }
}

fn metafile_of<T: tough::schema::Role>(role: &SignedRole<T>) -> Metafile {
    metafile(
        role.sha256().to_vec(),
        *role.length(),
        role.signed().signed.version(),
    )
}

/// The newest targets version as published.
pub fn targets_version(fx: &Fixture) -> u64 {
    let md = fx.metadata();
    let timestamp = read::<Timestamp>(&md.join("timestamp.json"));
    let snapshot_version = timestamp.signed.meta["snapshot.json"].version;
    let snapshot = read::<Snapshot>(&md.join(format!("{snapshot_version}.snapshot.json")));
    snapshot.signed.meta["targets.json"].version.get()
}

/// Publishes the next targets version, changed by `edit` and signed with
/// the real targets key, with a snapshot and timestamp over it.
pub async fn publish_targets(fx: &Fixture, edit: impl FnOnce(&mut Targets)) {
    let md = fx.metadata();
    let root = read::<Root>(&md.join("root.json")).signed;
    let current = targets_version(fx);
    let mut targets = read::<Targets>(&md.join(format!("{current}.targets.json"))).signed;
    targets.version = next(targets.version);
    edit(&mut targets);
    let signed = sign(&root, targets, &fx.keys.targets).await;
    signed.write(&md, true).await.unwrap();
    relist(fx, metafile_of(&signed)).await;
}

/// A new snapshot (real key) listing `targets` as given, and a new
/// timestamp (real key) over that snapshot.
pub async fn relist(fx: &Fixture, targets: Metafile) {
    let md = fx.metadata();
    let root = read::<Root>(&md.join("root.json")).signed;
    let mut timestamp = read::<Timestamp>(&md.join("timestamp.json")).signed;
    let snapshot_version = timestamp.meta["snapshot.json"].version;
    let mut snapshot =
        read::<Snapshot>(&md.join(format!("{snapshot_version}.snapshot.json"))).signed;
    snapshot.version = next(snapshot.version);
    snapshot.meta.insert("targets.json".into(), targets);
    let snapshot = sign(&root, snapshot, &fx.keys.snapshot).await;
    snapshot.write(&md, true).await.unwrap();
    timestamp.version = next(timestamp.version);
    timestamp
        .meta
        .insert("snapshot.json".into(), metafile_of(&snapshot));
    sign(&root, timestamp, &fx.keys.timestamp)
        .await
        .write(&md, true)
        .await
        .unwrap();
}

/// What a snapshot lists for an existing `N.targets.json`: to re-list an
/// older targets version (a rollback).
pub fn listing_of_targets(fx: &Fixture, version: u64) -> Metafile {
    let bytes = std::fs::read(fx.metadata().join(format!("{version}.targets.json"))).unwrap();
    metafile(
        sha256(&bytes),
        bytes.len() as u64,
        NonZeroU64::new(version).unwrap(),
    )
}

/// Stores `bytes` as target `name` (`targets/<sha256>.<name>`) and returns
/// the entry to sign for it.
pub fn store_target(fx: &Fixture, name: &str, bytes: &[u8]) -> Target {
    let hash = sha256(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let path = fx.repo.join("targets").join(format!("{hex}.{name}"));
    // A hostile name is only signed, never stored (it could point anywhere).
    if !name.contains("..") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    Target {
        length: bytes.len() as u64,
        hashes: Hashes {
            sha256: hash.into(),
            _extra: HashMap::new(),
        },
        custom: HashMap::new(),
        _extra: HashMap::new(),
    }
}
