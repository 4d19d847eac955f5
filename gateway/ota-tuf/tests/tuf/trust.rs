//! Where trust starts, and the attacks on metadata versions, sizes and the
//! clock (issue 17). Each test publishes a real repository on disk with the
//! crate's publishing API and real keys, then plays the attacker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nusa_ota_tuf::{
    create_keys, init_repo, local_urls, rotate_root, Client, Expiries, FilesystemTransport,
    KeyCounts, Limits, Thresholds, TimeSync, Transport, TransportError, TransportStream, TufError,
    Url, LATEST_KNOWN_TIME, METADATA_DIR, ROOTS_DIR,
};
use tough::schema::{Hashes, Metafile, RoleType, Snapshot, Timestamp};

use crate::forge::{published, sign_as};
use crate::{expiries_with_timestamp, Fixture};

/// A new root version with the same keys (what a root-expiry refresh does).
async fn bump_root(fx: &Fixture, expiries: &Expiries) {
    rotate_root(
        &fx.repo,
        &fx.keys,
        &fx.keys,
        &Thresholds::default(),
        expiries,
    )
    .await
    .expect("rotate root");
}

/// A repository of the attacker's own: fresh keys, its root rotated up to
/// `version` (so self-signed, and newer than the device's shipped root),
/// with a release of its own. Returns its folder.
async fn rogue_repo(fx: &Fixture, version: u64) -> PathBuf {
    let dir = fx.dir.path().join("rogue");
    let keys = create_keys(&dir.join("keys"), KeyCounts::default()).expect("rogue keys");
    let repo = dir.join("repo");
    init_repo(&repo, &keys, &Thresholds::default(), &Expiries::standard())
        .await
        .expect("rogue repo");
    for _ in 1..version {
        rotate_root(
            &repo,
            &keys,
            &keys,
            &Thresholds::default(),
            &Expiries::standard(),
        )
        .await
        .expect("rogue rotation");
    }
    let rogue = Fixture {
        dir: tempfile::tempdir().expect("tmp"),
        repo: repo.clone(),
        keys,
        shipped_root: fx.shipped_root.clone(),
        datastore: fx.datastore.clone(),
    };
    rogue
        .release("stable", "6.6.6", &[("image.img", b"malware")])
        .await;
    repo
}

/// A self-signed root with a higher version, planted in the datastore (as
/// tough's `root.json` and as a persisted chain), is not a start: the
/// device still starts from the shipped root, so the attacker's repository
/// (signed by the planted root's keys) is refused, and the real one still
/// works.
#[tokio::test]
async fn planted_self_signed_root_with_higher_version_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    assert_eq!(fx.client().await.expect("real repo").versions().root, 1);

    let rogue = rogue_repo(&fx, 3).await;
    let rogue_md = rogue.join(METADATA_DIR);
    // Plant tough's copy, and a whole (self-consistent) rogue chain.
    std::fs::copy(rogue_md.join("3.root.json"), fx.datastore.join("root.json")).expect("plant");
    let roots = fx.datastore.join(ROOTS_DIR);
    std::fs::create_dir_all(&roots).expect("roots dir");
    for v in 2..=3 {
        let name = format!("{v}.root.json");
        std::fs::copy(rogue_md.join(&name), roots.join(&name)).expect("plant chain");
    }

    // The attacker serves their repository to the device.
    let attacked = Fixture {
        dir: tempfile::tempdir().expect("tmp"),
        repo: rogue,
        keys: fx.keys.clone(),
        shipped_root: fx.shipped_root.clone(),
        datastore: fx.datastore.clone(),
    };
    let err = attacked
        .client()
        .await
        .expect_err("a planted root must not be trusted");
    eprintln!("refused: {err}");
    // The rogue 2.root.json is not signed by the shipped root's key.
    assert!(
        matches!(err, TufError::BadSignatures { ref role, valid: 0, .. } if role == "root"),
        "{err}"
    );

    // The real repository still opens, from the shipped root.
    let client = fx
        .client()
        .await
        .expect("real repo despite the planted root");
    assert_eq!(client.versions().root, 1);
    assert_eq!(
        client.latest_release("stable").expect("release").version,
        nusa_ota_tuf::Version::new(1, 0, 0)
    );
}

/// Root rollback: a device that walked to root 3 keeps starting from 3
/// (its persisted chain, re-verified from the shipped root 1) when the
/// server hides 2 and 3, and refuses an older, validly signed root (2)
/// served as the next version.
#[tokio::test]
async fn root_rollback_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    bump_root(&fx, &Expiries::standard()).await;
    bump_root(&fx, &Expiries::standard()).await;
    assert_eq!(fx.client().await.expect("walks to 3").versions().root, 3);
    for v in 2..=3 {
        let persisted = fx.datastore.join(ROOTS_DIR).join(format!("{v}.root.json"));
        assert!(persisted.exists(), "{}", persisted.display());
    }

    let md = fx.metadata();
    let old_root = std::fs::read(md.join("2.root.json")).expect("root 2");
    for v in 2..=3 {
        std::fs::remove_file(md.join(format!("{v}.root.json"))).expect("hide");
    }
    assert_eq!(
        fx.client()
            .await
            .expect("starts from its chain")
            .versions()
            .root,
        3
    );

    // Root 2 is signed by the same root key as 3, so only the version
    // check can refuse it.
    std::fs::write(md.join("4.root.json"), &old_root).expect("replay root 2 as 4");
    let err = fx.client().await.expect_err("older root");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::Rollback { ref role, trusted: 3, offered: 2 } if role == "root"),
        "{err}"
    );
}

/// The metafile entry that lists the metadata file at `path`.
fn metafile_of(path: &Path, version: u64) -> Metafile {
    let bytes = std::fs::read(path).expect("metadata file");
    Metafile {
        hashes: Some(Hashes {
            sha256: crate::sha256(&bytes).to_vec().into(),
            _extra: Default::default(),
        }),
        length: Some(bytes.len() as u64),
        version: version.try_into().expect("nonzero"),
        _extra: Default::default(),
    }
}

/// Snapshot rollback: after the device saw snapshot 3, a new timestamp
/// (version up, signed with the real timestamp key, unexpired) lists the
/// older, validly signed snapshot 2.
#[tokio::test]
async fn snapshot_rollback_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    fx.release("stable", "1.1.0", &[("image.img", b"v1.1")])
        .await;
    let seen = fx.client().await.expect("open");
    assert_eq!(seen.versions().snapshot, 3);
    drop(seen);

    let p = published(&fx);
    let md = fx.metadata();
    let mut timestamp: Timestamp = p.timestamp.signed.clone();
    timestamp.version = timestamp.version.checked_add(1).expect("version");
    timestamp.meta.insert(
        "snapshot.json".into(),
        metafile_of(&md.join("2.snapshot.json"), 2),
    );
    let signed = sign_as(
        &p.root.signed,
        RoleType::Timestamp,
        timestamp,
        &fx.keys.timestamp,
    )
    .await;
    signed.write(&md, true).await.expect("write timestamp");

    let err = fx.client().await.expect_err("older snapshot");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::Rollback { ref role, trusted: 3, offered: 2 } if role.starts_with("snapshot")),
        "{err}"
    );
}

/// Targets rollback: after the device saw targets 3, a new snapshot and
/// timestamp (versions up, real keys) list the older, validly signed
/// targets 2.
#[tokio::test]
async fn targets_rollback_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    fx.release("stable", "1.1.0", &[("image.img", b"v1.1")])
        .await;
    let seen = fx.client().await.expect("open");
    assert_eq!(seen.versions().targets, 3);
    drop(seen);

    let p = published(&fx);
    let md = fx.metadata();
    let mut snapshot: Snapshot = p.snapshot.signed.clone();
    snapshot.version = snapshot.version.checked_add(1).expect("version");
    snapshot.meta.insert(
        "targets.json".into(),
        metafile_of(&md.join("2.targets.json"), 2),
    );
    let snapshot = sign_as(
        &p.root.signed,
        RoleType::Snapshot,
        snapshot,
        &fx.keys.snapshot,
    )
    .await;
    snapshot.write(&md, true).await.expect("write snapshot");
    let snapshot_version = snapshot.signed().signed.version.get();
    let mut timestamp: Timestamp = p.timestamp.signed.clone();
    timestamp.version = timestamp.version.checked_add(1).expect("version");
    timestamp.meta.insert(
        "snapshot.json".into(),
        metafile_of(
            &md.join(format!("{snapshot_version}.snapshot.json")),
            snapshot_version,
        ),
    );
    let timestamp = sign_as(
        &p.root.signed,
        RoleType::Timestamp,
        timestamp,
        &fx.keys.timestamp,
    )
    .await;
    timestamp.write(&md, true).await.expect("write timestamp");

    let err = fx.client().await.expect_err("older targets");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::Rollback { ref role, trusted: 3, offered: 2 } if role.starts_with("targets")),
        "{err}"
    );
}

/// An expired root (the repository's latest, reached by a proper rotation)
/// is refused: a freeze of the root role.
#[tokio::test]
async fn expired_root_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let soon = Expiries {
        root: SystemTime::now() + Duration::from_secs(2),
        ..Expiries::standard()
    };
    bump_root(&fx, &soon).await;
    assert_eq!(fx.client().await.expect("fresh").versions().root, 2);
    tokio::time::sleep(Duration::from_millis(3100)).await;

    let err = fx.client().await.expect_err("expired root");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::Expired { ref role } if role == "root"),
        "{err}"
    );
}

/// Serves one file (by the end of its path) as endless 4 KiB chunks,
/// counting what it sent; everything else from the folder.
#[derive(Debug, Clone)]
struct Endless {
    suffix: String,
    sent: Arc<AtomicU64>,
}

const CHUNK: u64 = 4096;

#[tough::async_trait]
impl Transport for Endless {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if !url.path().ends_with(&self.suffix) {
            return FilesystemTransport.fetch(url).await;
        }
        let sent = Arc::clone(&self.sent);
        let chunk = tough::Bytes::from(vec![b' '; CHUNK as usize]);
        Ok(Box::pin(futures::stream::repeat_with(move || {
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok(chunk.clone())
        })))
    }
}

/// Opens `fx` with `suffix` served endlessly; returns the error and the
/// bytes sent.
async fn endless(fx: &Fixture, suffix: &str) -> (TufError, u64) {
    let sent = Arc::new(AtomicU64::new(0));
    let transport = Endless {
        suffix: suffix.to_owned(),
        sent: Arc::clone(&sent),
    };
    let err = fx
        .client_via(transport, Limits::default())
        .await
        .expect_err("endless metadata");
    eprintln!("refused: {err}");
    (err, sent.load(Ordering::Relaxed))
}

async fn one_release() -> Fixture {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    fx
}

/// Oversized root: `2.root.json` (length unknown until verified) is cut at
/// `max_root_size` (128 KiB), not read on.
#[tokio::test]
async fn oversized_root_is_refused_at_its_limit() {
    let fx = one_release().await;
    let max = Limits::default().max_root_size;
    assert_eq!(max, 128 * 1024);
    let (err, sent) = endless(&fx, "/2.root.json").await;
    assert!(
        matches!(err, TufError::MetadataTooLarge { ref detail } if detail.contains(&format!("over {max} bytes"))),
        "{err}"
    );
    assert!(sent <= max + CHUNK, "read {sent} bytes");
}

/// Oversized timestamp (its length is never signed) is cut at
/// `max_timestamp_size` (16 KiB).
#[tokio::test]
async fn oversized_timestamp_is_refused_at_its_limit() {
    let fx = one_release().await;
    let max = Limits::default().max_timestamp_size;
    assert_eq!(max, 16 * 1024);
    let (err, sent) = endless(&fx, "/timestamp.json").await;
    assert!(
        matches!(err, TufError::MetadataTooLarge { ref detail } if detail.contains(&format!("over {max} bytes"))),
        "{err}"
    );
    assert!(sent <= max + CHUNK, "read {sent} bytes");
}

/// Oversized snapshot: bounded by the length the timestamp signed.
#[tokio::test]
async fn oversized_snapshot_is_refused_at_its_signed_length() {
    let fx = one_release().await;
    let p = published(&fx);
    let meta = &p.timestamp.signed.meta["snapshot.json"];
    let signed_length = meta.length.expect("our timestamp signs the length");
    let (err, sent) = endless(&fx, &format!("/{}.snapshot.json", meta.version)).await;
    assert!(
        matches!(err, TufError::MetadataTooLarge { ref detail } if detail.contains("timestamp.json")),
        "{err}"
    );
    assert!(sent <= signed_length + CHUNK, "read {sent} bytes");
}

/// Oversized targets: bounded by the length the snapshot signed.
#[tokio::test]
async fn oversized_targets_is_refused_at_its_signed_length() {
    let fx = one_release().await;
    let p = published(&fx);
    let meta = &p.snapshot.signed.meta["targets.json"];
    let signed_length = meta.length.expect("our snapshot signs the length");
    let (err, sent) = endless(&fx, &format!("/{}.targets.json", meta.version)).await;
    assert!(
        matches!(err, TufError::MetadataTooLarge { ref detail } if detail.contains("snapshot.json")),
        "{err}"
    );
    assert!(sent <= signed_length + CHUNK, "read {sent} bytes");
}

/// Writes the time tough records, as a clock that jumped ahead left it.
fn record_time(fx: &Fixture, at: jiff::Timestamp) {
    std::fs::write(
        fx.datastore.join(LATEST_KNOWN_TIME),
        serde_json::to_vec(&at).expect("json"),
    )
    .expect("record time");
}

fn recorded_time(fx: &Fixture) -> jiff::Timestamp {
    let bytes = std::fs::read(fx.datastore.join(LATEST_KNOWN_TIME)).expect("recorded time");
    serde_json::from_slice(&bytes).expect("timestamp")
}

async fn open_with_sync(fx: &Fixture, sync: &TimeSync) -> Result<Client, TufError> {
    let (metadata_url, targets_url) = local_urls(&fx.repo)?;
    Client::open_with(
        &fx.shipped_root,
        &fx.datastore,
        metadata_url,
        targets_url,
        FilesystemTransport,
        Limits::default(),
        sync,
    )
    .await
}

/// A clock that jumped a day ahead once (its time recorded) does not wedge
/// the device: unsynchronized, the check fails with a clear error naming
/// the recovery, every time (never guessed right); once the clock is
/// synchronized, the next check drops the record and goes on. Expired
/// metadata is still refused after the recovery.
#[tokio::test]
async fn clock_that_jumped_ahead_recovers_after_time_sync() {
    let fx = one_release().await;
    fx.client().await.expect("first check");
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    record_time(&fx, ahead);

    let marker = fx.dir.path().join("synchronized");
    let sync = TimeSync::Marker(marker.clone());
    for _ in 0..2 {
        let err = open_with_sync(&fx, &sync)
            .await
            .expect_err("clock behind the record, not synced");
        eprintln!("refused: {err}");
        assert!(
            matches!(err, TufError::ClockWentBackward { ref detail }
                if detail.contains(LATEST_KNOWN_TIME) && detail.contains("synchronized")),
            "{err}"
        );
        assert_eq!(recorded_time(&fx), ahead, "the record is kept until synced");
    }

    std::fs::write(&marker, b"").expect("timesyncd synchronized");
    let client = open_with_sync(&fx, &sync)
        .await
        .expect("recovers once synchronized");
    assert_eq!(client.versions().timestamp, 2);
    assert!(recorded_time(&fx) <= jiff::Timestamp::now());
    drop(client);

    // Never accept expired metadata: recovery changes the clock record,
    // not expiry.
    record_time(&fx, ahead);
    let past = SystemTime::now() - Duration::from_secs(3600);
    fx.release_with(
        "stable",
        "1.1.0",
        &[("image.img", b"v1.1")],
        &fx.keys,
        &expiries_with_timestamp(past),
    )
    .await
    .expect("publish expired");
    let err = open_with_sync(&fx, &sync).await.expect_err("expired");
    assert!(
        matches!(err, TufError::Expired { ref role } if role == "timestamp"),
        "{err}"
    );
}

/// Without time sync, the documented manual recovery (removing the record
/// once the clock is known to be right) works.
#[tokio::test]
async fn clock_record_removed_by_hand_recovers() {
    let fx = one_release().await;
    fx.client().await.expect("first check");
    record_time(
        &fx,
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
    );
    let err = open_with_sync(&fx, &TimeSync::Never)
        .await
        .expect_err("behind");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::ClockWentBackward { ref detail } if detail.contains("remove")),
        "{err}"
    );
    std::fs::remove_file(fx.datastore.join(LATEST_KNOWN_TIME)).expect("manual recovery");
    open_with_sync(&fx, &TimeSync::Never)
        .await
        .expect("recovered");
}
