//! The attack table: each case publishes a real repository, applies one
//! attack, and asserts the client's specific refusal, with nothing
//! unverified returned (`open` fails, or the call fails without bytes).

use std::time::{Duration, SystemTime};

use nusa_ota_tuf::{create_keys, set_expiry, KeyCounts, Role, Thresholds, TufError};
use tough::schema::{Hashes, RoleType, Target};

use crate::forge::{next_targets, publish_targets, sign_as};
use crate::{expiries_with_timestamp, sha256, Fixture, DAY};

/// (a) A good release is found, highest semantic version first, with its
/// custom metadata, and its bytes verify.
#[tokio::test]
async fn a_good_release_is_found_with_custom_metadata() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.2.0", &[("image.img", b"old image")])
        .await;
    fx.release(
        "stable",
        "1.10.0",
        &[
            ("image.img", b"new image"),
            ("index.json", b"{\"chunks\":[]}"),
        ],
    )
    .await;
    fx.release("beta", "2.0.0", &[("image.img", b"beta image")])
        .await;

    let client = fx.client().await.expect("open");
    let release = client.latest_release("stable").expect("stable release");
    // 1.10.0 > 1.2.0 by semver, though not as strings.
    assert_eq!(release.version, nusa_ota_tuf::Version::new(1, 10, 0));
    let files: Vec<&str> = release.files.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(files, ["image.img", "index.json"]);
    let image = &release.files[0];
    assert_eq!(image.info.name, "stable/1.10.0/image.img");
    assert_eq!(image.info.length, 9);
    assert_eq!(image.info.sha256, sha256(b"new image"));
    assert_eq!(image.custom.get("variant"), Some(&"stable".into()));
    // The URL a range downloader fetches: the hash-prefixed stored file.
    let stored = image.info.url.to_file_path().expect("file URL");
    assert_eq!(std::fs::read(stored).expect("stored target"), b"new image");

    let index = client
        .read_target("stable/1.10.0/index.json")
        .await
        .expect("index");
    assert_eq!(index, b"{\"chunks\":[]}");
    assert_eq!(
        client.latest_release("beta").expect("beta").version.major,
        2
    );
    assert!(matches!(
        client.latest_release("nightly"),
        Err(TufError::UnknownVariant { variant }) if variant == "nightly"
    ));
    assert!(matches!(
        client.read_target("stable/9.9.9/image.img").await,
        Err(TufError::UnknownTarget { .. })
    ));
}

/// (b) Replay: after the device saw timestamp 3, an older (validly signed,
/// unexpired) timestamp is served to a new `Client` using the same
/// datastore; refused as a rollback. A device without that history would
/// accept it, which shows the datastore is what protects.
#[tokio::test]
async fn b_replayed_older_metadata_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let old = std::fs::read(fx.metadata().join("timestamp.json")).expect("old timestamp");
    fx.release("stable", "1.1.0", &[("image.img", b"v1.1")])
        .await;
    let seen = fx.client().await.expect("open");
    assert_eq!(seen.versions().timestamp, 3);
    drop(seen);

    std::fs::write(fx.metadata().join("timestamp.json"), &old).expect("replay");
    let err = fx.client().await.expect_err("replay must be refused");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::Rollback { ref role, trusted: 3, offered: 2 } if role == "timestamp"),
        "{err}"
    );

    let fresh_device = Fixture {
        datastore: fx.dir.path().join("other-device"),
        ..fx
    };
    let accepted = fresh_device.client().await.expect("no history: accepted");
    assert_eq!(
        accepted
            .latest_release("stable")
            .expect("release")
            .version
            .minor,
        0
    );
}

/// (c) A timestamp published already expired is refused at first contact.
#[tokio::test]
async fn c_expired_timestamp_is_refused() {
    let fx = Fixture::new().await;
    let past = SystemTime::now() - Duration::from_secs(3600);
    fx.release_with(
        "stable",
        "1.0.0",
        &[("image.img", b"v1")],
        &fx.keys,
        &expiries_with_timestamp(past),
    )
    .await
    .expect("publish");
    let err = fx.client().await.expect_err("expired");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::Expired { ref role } if role == "timestamp"),
        "{err}"
    );
}

/// (d) targets.json signed by a key root does not list (snapshot and
/// timestamp correctly signed over it) is refused.
#[tokio::test]
async fn d_targets_signed_by_unknown_key_are_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let rogue = create_keys(&fx.dir.path().join("rogue"), KeyCounts::default()).expect("rogue");
    let (root, mut targets) = next_targets(&fx);
    targets.targets.insert(
        "stable/6.6.6/image.img".try_into().expect("name"),
        target_of(b"malware"),
    );
    let signed = sign_as(&root, RoleType::Targets, targets, &rogue.targets).await;
    publish_targets(&fx, signed).await;

    let err = fx.client().await.expect_err("rogue targets");

    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::BadSignatures { ref role, threshold: 1, valid: 0 } if role == "targets"),
        "{err}"
    );
}

/// (e) Targets threshold 2: the publisher refuses to sign with one key, and
/// a targets.json carrying one valid signature is refused by the client.
#[tokio::test]
async fn e_threshold_two_with_one_signature_is_refused() {
    let counts = KeyCounts {
        targets: 2,
        ..KeyCounts::default()
    };
    let thresholds = Thresholds {
        targets: 2.try_into().expect("nonzero"),
        ..Thresholds::default()
    };
    let fx = Fixture::with(counts, thresholds).await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;

    let mut one_key = fx.keys.clone();
    one_key.targets.truncate(1);
    let refused = fx
        .release_with(
            "stable",
            "1.1.0",
            &[("image.img", b"v1.1")],
            &one_key,
            &nusa_ota_tuf::Expiries::standard(),
        )
        .await;
    assert!(
        matches!(refused, Err(nusa_ota_tuf::PublishError::Sign { .. })),
        "{refused:?}"
    );

    let (root, mut targets) = next_targets(&fx);
    targets.targets.insert(
        "stable/1.1.0/image.img".try_into().expect("name"),
        target_of(b"v1.1"),
    );
    let signed = sign_as(&root, RoleType::Targets, targets, &fx.keys.targets[..1]).await;
    publish_targets(&fx, signed).await;
    let err = fx.client().await.expect_err("one of two signatures");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::BadSignatures { ref role, threshold: 2, valid: 1 } if role == "targets"),
        "{err}"
    );
}

/// (f) Mix-and-match: the snapshot lists targets version 3, the server
/// serves version 2's targets under that name; refused.
#[tokio::test]
async fn f_targets_from_another_version_are_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    fx.release("stable", "1.1.0", &[("image.img", b"v1.1")])
        .await;
    let md = fx.metadata();
    std::fs::copy(md.join("2.targets.json"), md.join("3.targets.json")).expect("mix");

    let err = fx.client().await.expect_err("mix-and-match");

    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::MixAndMatch { ref detail } if detail.contains("3.targets.json")),
        "{err}"
    );
}

/// (i) A target name with `../`, signed with the real targets key: tough
/// would resolve it to a harmless-looking name; the client refuses the
/// repository outright.
#[tokio::test]
async fn i_path_traversal_in_a_target_name_is_refused() {
    let fx = Fixture::new().await;
    fx.release("stable", "1.0.0", &[("image.img", b"v1")]).await;
    let refused = fx
        .release_with(
            "stable",
            "1.1.0",
            &[("../evil", b"x")],
            &fx.keys,
            &nusa_ota_tuf::Expiries::standard(),
        )
        .await;
    assert!(
        matches!(refused, Err(nusa_ota_tuf::PublishError::Name(_))),
        "{refused:?}"
    );

    let evil = "stable/1.1.0/../../../../etc/cron.d/evil";
    let (root, mut targets) = next_targets(&fx);
    targets.targets.insert(
        evil.try_into().expect("tough accepts it"),
        target_of(b"* * * * * root sh"),
    );
    let signed = sign_as(&root, RoleType::Targets, targets, &fx.keys.targets).await;
    publish_targets(&fx, signed).await;

    let err = fx.client().await.expect_err("traversal");

    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::PathTraversal { ref name } if name == evil),
        "{err}"
    );
}

/// (k) Freeze: the device saw fresh metadata, then the server stops
/// refreshing the timestamp. Past its expiry the open client stops
/// answering and a new check is refused; a refresh recovers.
#[tokio::test]
async fn k_frozen_timestamp_is_refused_after_expiry() {
    let fx = Fixture::new().await;
    let soon = SystemTime::now() + Duration::from_secs(2);
    fx.release_with(
        "stable",
        "1.0.0",
        &[("index.json", b"{}")],
        &fx.keys,
        &expiries_with_timestamp(soon),
    )
    .await
    .expect("publish");
    let client = fx.client().await.expect("fresh");
    assert!(client.latest_release("stable").is_ok());

    tokio::time::sleep(Duration::from_millis(3100)).await;
    let expired = |r: Result<(), TufError>| matches!(r, Err(TufError::Expired { ref role }) if role == "timestamp");
    assert!(expired(client.latest_release("stable").map(drop)));
    assert!(expired(
        client
            .read_target("stable/1.0.0/index.json")
            .await
            .map(drop)
    ));
    assert!(expired(
        client.target_info("stable/1.0.0/index.json").map(drop)
    ));
    assert!(expired(fx.client().await.map(drop)));

    let only_timestamp = nusa_ota_tuf::SigningKeys {
        timestamp: fx.keys.timestamp.clone(),
        ..Default::default()
    };
    set_expiry(
        &fx.repo,
        &only_timestamp,
        Role::Timestamp,
        SystemTime::now() + DAY,
    )
    .await
    .expect("refresh with the timestamp key alone");
    assert!(fx
        .client()
        .await
        .expect("refreshed")
        .latest_release("stable")
        .is_ok());
}

pub fn target_of(bytes: &[u8]) -> Target {
    Target {
        length: bytes.len() as u64,
        hashes: Hashes {
            sha256: sha256(bytes).to_vec().into(),
            _extra: Default::default(),
        },
        custom: Default::default(),
        _extra: Default::default(),
    }
}
