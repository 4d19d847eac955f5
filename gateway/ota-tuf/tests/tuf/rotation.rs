//! (j) Root key rotation: a device that ships root version 1 follows a
//! properly cross-signed `2.root.json` and then trusts only the new keys;
//! a `2.root.json` without the old root's threshold is refused.

use nusa_ota_tuf::{
    create_keys, rotate_root, Expiries, KeyCounts, PublishError, Thresholds, TufError,
};
use tough::schema::{RoleType, Root, Signed};

use crate::attacks::target_of;
use crate::forge::{next_targets, publish_targets, read, sign_as};
use crate::Fixture;

/// Rotates every key of `fx` to a fresh set; returns the new keys.
async fn rotate_all(fx: &Fixture) -> nusa_ota_tuf::SigningKeys {
    let new_keys =
        create_keys(&fx.dir.path().join("keys-2"), KeyCounts::default()).expect("new keys");
    rotate_root(
        &fx.repo,
        &fx.keys,
        &new_keys,
        &Thresholds::default(),
        &Expiries::standard(),
    )
    .await
    .expect("rotate");
    new_keys
}

#[tokio::test]
async fn j_rotated_root_is_followed_and_new_keys_sign_releases() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let before = fx.client().await.expect("v1 root");
    assert_eq!(before.versions().root, 1);
    drop(before);

    let new_keys = rotate_all(&fx).await;
    let root2: Signed<Root> = read(&fx.metadata().join("2.root.json"));
    assert_eq!(
        root2.signatures.len(),
        2,
        "signed by the old and the new root key"
    );

    // The old keys no longer sign anything root lists.
    let old = fx
        .release_with(
            "stable",
            "1.1.0",
            &[("image.img", b"v1.1")],
            &fx.keys,
            &Expiries::standard(),
        )
        .await;
    assert!(matches!(old, Err(PublishError::Sign { .. })), "{old:?}");
    fx.release_with(
        "stable",
        "1.1.0",
        &[("image.img", b"v1.1")],
        &new_keys,
        &Expiries::standard(),
    )
    .await
    .expect("new keys publish");

    // The device still ships root version 1.
    let client = fx.client().await.expect("follows 2.root.json");
    assert_eq!(client.versions().root, 2);
    let release = client.latest_release("stable").expect("release");
    assert_eq!(release.version, nusa_ota_tuf::Version::new(1, 1, 0));
    let bytes = client
        .read_target("stable/1.1.0/image.img")
        .await
        .expect("read");
    assert_eq!(bytes, b"v1.1");
}

#[tokio::test]
async fn j_root_signed_only_by_the_new_key_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let old_root: Signed<Root> = read(&fx.metadata().join("1.root.json"));
    rotate_all(&fx).await;

    // Drop the old key's signature: what an attacker holding only a new
    // (self-declared) key could produce.
    let path = fx.metadata().join("2.root.json");
    let mut root2: Signed<Root> = read(&path);
    let old_ids = &old_root.signed.roles[&tough::schema::RoleType::Root].keyids;
    root2.signatures.retain(|s| !old_ids.contains(&s.keyid));
    assert_eq!(root2.signatures.len(), 1);
    std::fs::write(&path, serde_json::to_vec_pretty(&root2).expect("json")).expect("write");

    let err = fx.client().await.expect_err("new key alone");

    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::BadSignatures { ref role, threshold: 1, valid: 0 } if role == "root"),
        "{err}"
    );
}

/// Root threshold 2 of 3: the publisher refuses to rotate with one old root
/// key, and a device refuses a 2.root.json with one old signature.
#[tokio::test]
async fn j_root_threshold_two_needs_two_old_signatures() {
    let counts = KeyCounts {
        root: 3,
        ..KeyCounts::default()
    };
    let thresholds = Thresholds {
        root: 2.try_into().expect("nonzero"),
        ..Thresholds::default()
    };
    let fx = Fixture::with(counts, thresholds).await;
    let new_keys = create_keys(&fx.dir.path().join("keys-2"), counts).expect("new keys");
    let mut one_root = fx.keys.clone();
    one_root.root.truncate(1);
    let refused = rotate_root(
        &fx.repo,
        &one_root,
        &new_keys,
        &thresholds,
        &Expiries::standard(),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(PublishError::RootNotSigned { by_version: 1, .. })
        ),
        "{refused:?}"
    );

    // A legitimate rotation to the same keys (new expiry), then one of its
    // two old signatures removed.
    rotate_root(
        &fx.repo,
        &fx.keys,
        &fx.keys,
        &thresholds,
        &Expiries::standard(),
    )
    .await
    .expect("rotate with two of three");
    let path = fx.metadata().join("2.root.json");
    let mut root2: Signed<Root> = read(&path);
    assert!(root2.signatures.len() >= 2);
    root2.signatures.truncate(1);
    std::fs::write(&path, serde_json::to_vec_pretty(&root2).expect("json")).expect("write");
    let err = fx.client().await.expect_err("one of two");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::BadSignatures { ref role, threshold: 2, valid: 1 } if role == "root"),
        "{err}"
    );
}

/// After a device followed a rotation, hiding `2.root.json` and serving
/// metadata signed by the revoked keys does not roll its trust back: it
/// starts from the root it persisted, not only from the shipped one.
#[tokio::test]
async fn j_hiding_the_new_root_does_not_restore_revoked_keys() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    rotate_all(&fx).await;
    assert_eq!(fx.client().await.expect("follows").versions().root, 2);

    // fx.keys are now the revoked keys: sign new metadata with them.
    let (root, mut targets) = next_targets(&fx);
    targets.targets.insert(
        "stable/6.6.6/image.img".try_into().expect("name"),
        target_of(b"malware"),
    );
    let signed = sign_as(&root, RoleType::Targets, targets, &fx.keys.targets).await;
    publish_targets(&fx, signed).await;
    std::fs::remove_file(fx.metadata().join("2.root.json")).expect("hide");

    let err = fx.client().await.expect_err("revoked keys");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::BadSignatures { ref role, valid: 0, .. } if role == "timestamp"),
        "{err}"
    );
}
