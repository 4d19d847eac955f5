//! The publishing API on its own: key files, repository layout, refusals,
//! and expiry refreshes that need only the keys of the roles they sign.

use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use nusa_ota_tuf::{
    create_keys, init_repo, set_expiry, Expiries, KeyCounts, PublishError, Role, SigningKeys,
    Thresholds,
};

use crate::{sha256, Fixture, DAY};

#[test]
fn keys_are_private_files_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("temp");
    let counts = KeyCounts {
        root: 3,
        ..KeyCounts::default()
    };
    let keys = create_keys(dir.path(), counts).expect("create");
    assert_eq!(keys.root.len(), 3);
    for path in Role::ALL.iter().flat_map(|r| keys.role(*r)) {
        let mode = std::fs::metadata(path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    assert_eq!(SigningKeys::load(dir.path()).expect("load"), keys);
    let again = create_keys(dir.path(), counts);
    assert!(matches!(again, Err(PublishError::Io { .. })), "{again:?}");
}

#[tokio::test]
async fn init_writes_the_layout_and_refuses_twice() {
    let fx = Fixture::new().await;
    let md = fx.metadata();
    for file in [
        "1.root.json",
        "root.json",
        "1.targets.json",
        "1.snapshot.json",
        "timestamp.json",
    ] {
        assert!(md.join(file).is_file(), "{file}");
    }
    let again = init_repo(
        &fx.repo,
        &fx.keys,
        &Thresholds::default(),
        &Expiries::standard(),
    )
    .await;
    assert!(
        matches!(again, Err(PublishError::RepoExists { .. })),
        "{again:?}"
    );
    // No staging folder is left behind.
    let leftovers = std::fs::read_dir(&fx.repo)
        .expect("repo")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".staging"))
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn thresholds_above_the_key_count_are_refused() {
    let dir = tempfile::tempdir().expect("temp");
    let keys = create_keys(&dir.path().join("keys"), KeyCounts::default()).expect("keys");
    let thresholds = Thresholds {
        root: 2.try_into().expect("nonzero"),
        ..Thresholds::default()
    };
    let err = init_repo(
        &dir.path().join("repo"),
        &keys,
        &thresholds,
        &Expiries::standard(),
    )
    .await;
    assert!(
        matches!(
            err,
            Err(PublishError::Threshold {
                role: Role::Root,
                threshold: 2,
                keys: 1
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn releases_are_stored_by_hash_and_immutable() {
    let fx = Fixture::new().await;
    let names = fx
        .release_with(
            "stable",
            "1.0.0",
            &[("image.img", b"abc")],
            &fx.keys,
            &Expiries::standard(),
        )
        .await
        .expect("publish");
    assert_eq!(names, ["stable/1.0.0/image.img"]);
    let hex: String = sha256(b"abc").iter().map(|b| format!("{b:02x}")).collect();
    let stored = fx.targets().join(format!("{hex}.stable/1.0.0/image.img"));
    assert_eq!(
        std::fs::read(stored).expect("stored by hash prefix"),
        b"abc"
    );
    for (file, version) in [("2.targets.json", 2), ("2.snapshot.json", 2)] {
        assert!(fx.metadata().join(file).is_file(), "version {version}");
    }

    let again = fx
        .release_with(
            "stable",
            "1.0.0",
            &[("image.img", b"other")],
            &fx.keys,
            &Expiries::standard(),
        )
        .await;
    assert!(
        matches!(again, Err(PublishError::ReleaseExists { .. })),
        "{again:?}"
    );
    for (variant, version, file) in [
        ("a/b", "1.0.0", "x"),
        ("stable", "1.0", "x"),
        ("stable", "2.0.0", ".."),
    ] {
        let bad = fx
            .release_with(
                variant,
                version,
                &[(file, b"x")],
                &fx.keys,
                &Expiries::standard(),
            )
            .await;
        assert!(
            matches!(bad, Err(PublishError::Name(_))),
            "{variant} {version} {file}: {bad:?}"
        );
    }
}

/// Each role's expiry can be refreshed with only the keys it needs; the
/// device accepts the result.
#[tokio::test]
async fn expiries_are_refreshed_per_role() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let later = SystemTime::now() + 10 * DAY;
    let only = |roles: &[Role]| {
        let mut keys = SigningKeys::default();
        for role in roles {
            match role {
                Role::Root => keys.root = fx.keys.root.clone(),
                Role::Targets => keys.targets = fx.keys.targets.clone(),
                Role::Snapshot => keys.snapshot = fx.keys.snapshot.clone(),
                Role::Timestamp => keys.timestamp = fx.keys.timestamp.clone(),
            }
        }
        keys
    };
    set_expiry(&fx.repo, &only(&[Role::Timestamp]), Role::Timestamp, later)
        .await
        .expect("timestamp");
    let refused = set_expiry(&fx.repo, &only(&[Role::Timestamp]), Role::Snapshot, later).await;
    assert!(
        matches!(refused, Err(PublishError::Sign { .. })),
        "{refused:?}"
    );
    set_expiry(
        &fx.repo,
        &only(&[Role::Snapshot, Role::Timestamp]),
        Role::Snapshot,
        later,
    )
    .await
    .expect("snapshot");
    set_expiry(&fx.repo, &fx.keys, Role::Targets, later)
        .await
        .expect("targets");
    set_expiry(
        &fx.repo,
        &only(&[Role::Root]),
        Role::Root,
        SystemTime::now() + 400 * DAY,
    )
    .await
    .expect("root");

    let client = fx.client().await.expect("open");
    let v = client.versions();
    assert_eq!((v.root, v.targets, v.snapshot, v.timestamp), (2, 3, 4, 5));
    assert_eq!(
        client
            .latest_release("stable")
            .expect("release")
            .files
            .len(),
        1
    );
}
