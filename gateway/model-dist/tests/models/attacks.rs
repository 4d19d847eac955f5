//! The attack table: each case publishes a real repository, applies one
//! attack, and asserts the client's specific refusal, with nothing
//! installed (no `<dest>/<model>/<version>`, no refused file kept).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nusa_model_dist::{set_expiry, ModelError, Role};
use nusa_ota_tuf::TufError;

use crate::forge::{listing_of_targets, publish_targets, relist, store_target, targets_version};
use crate::http::{self, Server};
use crate::{files, Fixture, MODEL};

async fn fetch_err(fx: &Fixture, model: &str, version: &str) -> ModelError {
    let client = fx.client().await.unwrap();
    let err = client
        .fetch_version(model, version, &fx.dest)
        .await
        .unwrap_err();
    eprintln!("refused: {err}");
    assert!(!fx.dest.join(model).exists(), "nothing may be installed");
    err
}

/// (a) One changed byte in a stored model file: `HashMismatch`, and the
/// refused bytes are deleted from staging.
#[tokio::test]
async fn a_tampered_file_is_refused() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let stored = fx.stored("m", "1", "model.onnx").await;
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&stored, bytes).unwrap();

    let err = fetch_err(&fx, "m", "1").await;
    assert!(
        matches!(err, ModelError::HashMismatch { ref name, .. } if name == "models/m/1/model.onnx"),
        "{err}"
    );
    assert!(!fx.staging("m", "1").join("model.onnx").exists());
}

/// (b) A stored file longer or shorter than its signed length:
/// `WrongLength`, before any of its bytes is taken.
#[tokio::test]
async fn a_file_of_the_wrong_length_is_refused() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let stored = fx.stored("m", "1", "model.onnx").await;
    let signed = MODEL.len() as u64;
    for bytes in [[MODEL, b"appended"].concat(), MODEL[..5].to_vec()] {
        let actual = bytes.len() as u64;
        std::fs::write(&stored, &bytes).unwrap();
        let err = fetch_err(&fx, "m", "1").await;
        assert!(
            matches!(err, ModelError::WrongLength { signed: s, actual: a, .. } if s == signed && a == actual),
            "{err}"
        );
    }
}

/// (c) Endless data: the server answers the model file with zeros that
/// never end. The download stops at the signed length (the test ends),
/// the bytes are refused, and the server got to send only what socket
/// buffers took.
#[tokio::test]
async fn endless_data_is_cut_at_the_signed_length_and_refused() {
    let fx = Fixture::new().await;
    let model = vec![7u8; 100_000];
    fx.publish("m", "1", &[("model.onnx", &model)]).await;
    let server = Server::start(fx.repo.clone(), Some("model.onnx")).await;
    let client = http::client(&fx, &server).await.unwrap();

    let err = tokio::time::timeout(
        Duration::from_secs(60),
        client.fetch_version("m", "1", &fx.dest),
    )
    .await
    .expect("an endless body must not keep the client reading")
    .unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(err, ModelError::HashMismatch { ref name, .. } if name == "models/m/1/model.onnx"),
        "{err}"
    );
    assert!(!fx.installed("m", "1").exists());
    assert!(!fx.staging("m", "1").join("model.onnx").exists());
    let sent = server.endless_sent.load(Ordering::Relaxed);
    assert!(sent < 64 << 20, "read {sent} bytes of an endless body");
}

/// (d) Metadata past its expiry (a timestamp not refreshed): `Expired`
/// at open; a refresh with the timestamp key alone recovers.
#[tokio::test]
async fn expired_metadata_is_refused() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let past = SystemTime::now() - Duration::from_secs(3600);
    set_expiry(&fx.repo, &fx.keys, Role::Timestamp, past)
        .await
        .unwrap();
    let err = fx.client().await.unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(err, ModelError::Tuf(TufError::Expired { ref role }) if role == "timestamp"),
        "{err}"
    );
    let only_timestamp = nusa_model_dist::SigningKeys {
        timestamp: fx.keys.timestamp.clone(),
        ..Default::default()
    };
    let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    set_expiry(&fx.repo, &only_timestamp, Role::Timestamp, tomorrow)
        .await
        .unwrap();
    assert_eq!(
        fx.client()
            .await
            .unwrap()
            .list_versions()
            .await
            .unwrap()
            .len(),
        1
    );
}

/// (e) Rollback of the whole metadata set: after the device saw version 2
/// published, the repository is put back to its state before (the older,
/// validly signed, unexpired timestamp). A new client on the same
/// datastore (a restart) refuses it; a device with no history would not,
/// which shows the datastore is what protects.
#[tokio::test]
async fn replayed_older_metadata_is_refused_across_a_restart() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let old = std::fs::read(fx.metadata().join("timestamp.json")).unwrap();
    fx.publish("m", "2", &files()).await;
    {
        let seen = fx.client().await.unwrap();
        assert_eq!(seen.list_versions().await.unwrap().len(), 2);
    }
    std::fs::write(fx.metadata().join("timestamp.json"), &old).unwrap();

    let err = fx.client().await.unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(err, ModelError::Tuf(TufError::Rollback { ref role, trusted: 3, offered: 2 }) if role == "timestamp"),
        "{err}"
    );
    let fresh_device = Fixture {
        datastore: fx.dir.path().join("other-device"),
        ..fx
    };
    let accepted = fresh_device.client().await.unwrap();
    assert_eq!(accepted.list_versions().await.unwrap().len(), 1);
}

/// (e) Rollback of targets alone: a new snapshot and timestamp, signed
/// with the real keys, list an older targets version (hiding version 2).
/// Refused against the snapshot the device saw.
#[tokio::test]
async fn an_older_targets_listed_by_a_newer_snapshot_is_refused() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    fx.publish("m", "2", &files()).await;
    assert!(fx.client().await.is_ok());
    let older = targets_version(&fx) - 1;
    relist(&fx, listing_of_targets(&fx, older)).await;

    let err = fx.client().await.unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(err, ModelError::Tuf(TufError::Rollback { ref role, trusted: 3, offered: 2 }) if role.starts_with("targets")),
        "{err}"
    );
}

/// (f) A version that is not signed: its files copied into the
/// repository's targets folder under the names the publisher would use
/// are never listed nor installed; a signed version whose manifest is
/// missing, or lists a file that is not signed, is refused.
#[tokio::test]
async fn unsigned_versions_and_files_are_refused() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let stored = fx.stored("m", "1", "model.onnx").await;
    let name = stored.file_name().unwrap().to_str().unwrap();
    let planted = name.replace(".models/m/1/", ".models/m/9/");
    let planted = fx.repo.join("targets").join(planted);
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::copy(&stored, &planted).unwrap();

    let client = fx.client().await.unwrap();
    let versions: Vec<u64> = client
        .list_versions()
        .await
        .unwrap()
        .iter()
        .map(|v| v.manifest.version)
        .collect();
    assert_eq!(versions, [1]);
    let err = fetch_err(&fx, "m", "9").await;
    assert!(
        matches!(err, ModelError::NotPublished { ref model, version: 9 } if model == "m"),
        "{err}"
    );

    // Signed with the real targets key, but no manifest.
    publish_targets(&fx, |t| {
        let entry = store_target(&fx, "models/m/5/model.onnx", MODEL);
        t.targets
            .insert("models/m/5/model.onnx".try_into().unwrap(), entry);
    })
    .await;
    let err = fetch_err(&fx, "m", "5").await;
    assert!(
        matches!(err, ModelError::BadManifest { ref detail, .. } if detail.contains("no signed manifest")),
        "{err}"
    );

    // A manifest (signed) that lists a file the targets do not sign.
    let client = fx.client().await.unwrap();
    let mut manifest = client.version("m", "1").await.unwrap().manifest;
    manifest.version = 6;
    let listed_only = manifest.files[0].clone();
    manifest.files.push(nusa_model_dist::ManifestFile {
        path: "extra.bin".into(),
        ..listed_only
    });
    let json = serde_json::to_vec(&manifest).unwrap();
    publish_targets(&fx, |t| {
        for (path, bytes) in files().into_iter().chain([("manifest.json", &json[..])]) {
            let name = format!("models/m/6/{path}");
            let entry = store_target(&fx, &name, bytes);
            t.targets.insert(name.as_str().try_into().unwrap(), entry);
        }
    })
    .await;
    let err = fetch_err(&fx, "m", "6").await;
    assert!(
        matches!(err, ModelError::BadManifest { ref detail, .. } if detail.contains("extra.bin is listed but not signed")),
        "{err}"
    );
}

/// (g) Path traversal: names asked for are checked, and a repository
/// whose signed targets (real key) contain a `../` name or a model name no
/// publisher would sign is refused as a whole.
#[tokio::test]
async fn path_traversal_is_refused() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let client = fx.client().await.unwrap();
    for (model, version) in [("../../etc", "1"), ("m", "../1"), (".incoming", "1")] {
        let err = client
            .fetch_version(model, version, &fx.dest)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ModelError::Name(_)),
            "{model} {version}: {err}"
        );
    }

    let odd = "models/.incoming/1/model.onnx";
    publish_targets(&fx, |t| {
        let entry = store_target(&fx, odd, MODEL);
        t.targets.insert(odd.try_into().unwrap(), entry);
    })
    .await;
    let client = fx.client().await.unwrap();
    let err = client.list_versions().await.unwrap_err();
    eprintln!("refused: {err}");
    assert!(matches!(err, ModelError::Name(_)), "{err}");

    let evil = "models/m/1/../../../../etc/cron.d/evil";
    publish_targets(&fx, |t| {
        let entry = store_target(&fx, evil, b"* * * * * root sh");
        t.targets.insert(evil.try_into().unwrap(), entry);
    })
    .await;
    let err = fx.client().await.unwrap_err();
    eprintln!("refused: {err}");
    assert!(
        matches!(err, ModelError::Tuf(TufError::PathTraversal { ref name }) if name == evil),
        "{err}"
    );
}
