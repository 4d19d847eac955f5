//! Publishing: round trip, provenance, immutability, names and layouts,
//! and the model repository's separation from the OS release repository.

use std::os::unix::fs::symlink;

use nusa_model_dist::{
    init_repo, publish_version, run_publish, ModelClient, ModelError, PublishArgs, PublishError,
};
use nusa_ota_tuf::TufError;

use crate::{files, provenance, tree, Fixture, CONFIG, MODEL, TEST_CASE};

/// Publish, list, fetch: the installed folder holds exactly the published
/// bytes plus the signed manifest, and nothing is left in staging.
#[tokio::test]
async fn published_version_is_listed_and_installed_byte_for_byte() {
    let fx = Fixture::new().await;
    let published = fx.publish("resnet", "1", &files()).await;

    let client = fx.client().await.unwrap();
    let versions = client.list_versions().await.unwrap();
    assert_eq!(versions.len(), 1);
    let listed = &versions[0];
    assert_eq!(listed.manifest, published);
    let paths: Vec<&str> = listed.targets.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "config.toml",
            "manifest.json",
            "model.onnx",
            "tests/case-1.json"
        ]
    );
    let signed_names: Vec<&str> = listed
        .targets
        .iter()
        .map(|(_, i)| i.name.as_str())
        .collect();
    assert!(signed_names.contains(&"models/resnet/1/tests/case-1.json"));

    let report = client.fetch_version("resnet", "1", &fx.dest).await.unwrap();
    assert_eq!(report.dir, fx.installed("resnet", "1"));
    assert!(!report.already_installed);
    let expected_bytes = (MODEL.len() + CONFIG.len() + TEST_CASE.len()) as u64;
    assert!(report.downloaded_bytes() > expected_bytes, "{report:?}");

    let installed = tree(&report.dir);
    let names: Vec<&str> = installed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.toml",
            "manifest.json",
            "model.onnx",
            "tests/case-1.json"
        ]
    );
    assert_eq!(installed[2].1, MODEL);
    assert_eq!(installed[0].1, CONFIG);
    assert_eq!(installed[3].1, TEST_CASE);
    assert!(tree(&fx.dest.join(".incoming")).is_empty());
}

/// Every provenance field, the publication time and the file list come
/// back from the signed manifest as published, on the device too.
#[tokio::test]
async fn provenance_round_trips() {
    let fx = Fixture::new().await;
    let dir = fx.version_dir(&[("model.plan", b"plan"), ("config.toml", CONFIG)]);
    let args = PublishArgs {
        repo: fx.repo.clone(),
        keys: fx.keys_dir.clone(),
        model: "yolo_v8.int8".into(),
        version: "42".into(),
        dir,
        source_revision: "deadbeef".into(),
        training_run: None,
        data_digest: Some("sha256:0123".into()),
        publisher: "ana@example".into(),
        notes: "retrained on\nJanuary data".into(),
        encrypt_for: None,
        canary: false,
    };
    let report = run_publish(&args).await.unwrap();
    assert_eq!(
        report.targets,
        [
            "models/yolo_v8.int8/42/config.toml",
            "models/yolo_v8.int8/42/model.plan",
            "models/yolo_v8.int8/42/manifest.json",
        ]
    );
    let m = &report.manifest;
    assert_eq!(m.format, 1);
    assert_eq!((m.model.as_str(), m.version), ("yolo_v8.int8", 42));
    assert_eq!(m.provenance.source_revision, "deadbeef");
    assert_eq!(m.provenance.training_run, None);
    assert_eq!(m.provenance.data_digest.as_deref(), Some("sha256:0123"));
    assert_eq!(m.provenance.publisher, "ana@example");
    assert_eq!(m.provenance.notes, "retrained on\nJanuary data");
    // RFC 3339, UTC, whole seconds.
    let at: jiff::Timestamp = m.published_at.parse().unwrap();
    assert!(m.published_at.ends_with('Z') && !m.published_at.contains('.'));
    assert!((jiff::Timestamp::now() - at).get_seconds().abs() < 120);
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.files[1].path, "model.plan");
    assert_eq!(m.files[1].length, 4);
    assert_eq!(
        m.files[1].sha256.to_string(),
        "64879f7d6b960a01909762d911a32d4582c20010c5641ee90278b644a9e3b525"
    );
    assert!(report
        .to_string()
        .contains("published yolo_v8.int8 version 42"));

    let client = fx.client().await.unwrap();
    let listed = client.version("yolo_v8.int8", "42").await.unwrap();
    assert_eq!(&listed.manifest, m);
    let installed = client
        .fetch_version("yolo_v8.int8", "42", &fx.dest)
        .await
        .unwrap();
    let on_disk: nusa_model_dist::Manifest =
        serde_json::from_slice(&std::fs::read(installed.dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(&on_disk, m);
}

/// A published version is immutable: the same version again is refused,
/// with other bytes and with identical bytes; a new version is fine.
#[tokio::test]
async fn republishing_a_version_is_refused() {
    let fx = Fixture::new().await;
    fx.publish("resnet", "1", &files()).await;
    for attempt in [files().to_vec(), vec![("model.onnx", &b"other bytes"[..])]] {
        let err = fx.try_publish("resnet", "1", &attempt).await.unwrap_err();
        assert!(
            matches!(err, PublishError::VersionExists { ref model, version: 1 } if model == "resnet"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("immutable") && text.contains("identical bytes"),
            "{text}"
        );
    }
    fx.publish("resnet", "2", &files()).await;
    let client = fx.client().await.unwrap();
    let versions = client.list_versions().await.unwrap();
    assert_eq!(versions.len(), 2);
    let model = client.version("resnet", "1").await.unwrap();
    assert_eq!(model.manifest.files[1].sha256.to_string().len(), 64);
}

/// Names and layouts that would be unsafe or ambiguous are refused before
/// anything is signed.
#[tokio::test]
async fn bad_names_and_layouts_are_refused_at_publish() {
    let fx = Fixture::new().await;
    let good = fx.version_dir(&files());
    for (model, version) in [
        ("../etc", "1"),
        ("a/b", "1"),
        (".hidden", "1"),
        ("", "1"),
        ("a+b", "1"),
        ("resnet", "0"),
        ("resnet", "01"),
        ("resnet", "1.0"),
        ("resnet", "../1"),
    ] {
        let err = publish_version(&fx.repo, &fx.keys_dir, model, version, &good, &provenance())
            .await
            .unwrap_err();
        assert!(
            matches!(err, PublishError::Name(_)),
            "{model} {version}: {err}"
        );
    }

    let hidden = fx.version_dir(&[("model.onnx", MODEL), (".env", b"SECRET=1")]);
    let reserved = fx.version_dir(&[("model.onnx", MODEL), ("manifest.json", b"{}")]);
    let nested_hidden = fx.version_dir(&[("model.onnx", MODEL), ("tests/.x.json", b"{}")]);
    for dir in [hidden, reserved, nested_hidden] {
        let err = publish_version(&fx.repo, &fx.keys_dir, "m", "1", &dir, &provenance())
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::Name(_)), "{err}");
    }
    let linked = fx.version_dir(&[("model.onnx", MODEL)]);
    symlink("/etc/passwd", linked.join("config.toml")).unwrap();
    let no_model = fx.version_dir(&[("config.toml", CONFIG)]);
    for dir in [linked, no_model] {
        let err = publish_version(&fx.repo, &fx.keys_dir, "m", "1", &dir, &provenance())
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::Layout { .. }), "{err}");
    }
    let mut anonymous = provenance();
    anonymous.training_run = None;
    let err = publish_version(&fx.repo, &fx.keys_dir, "m", "1", &good, &anonymous)
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Provenance(_)), "{err}");

    // Nothing was published by any of these.
    let client = fx.client().await.unwrap();
    assert!(client.list_versions().await.unwrap().is_empty());
}

/// The model repository has its own root and keys: `init_repo` refuses a
/// keys folder that already holds keys (the OS release keys, say), and a
/// device trusting the OS root refuses the model repository.
#[tokio::test]
async fn the_model_repository_is_separate_from_the_os_repository() {
    let fx = Fixture::new().await;
    fx.publish("resnet", "1", &files()).await;
    let err = init_repo(&fx.dir.path().join("second"), &fx.keys_dir)
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::KeysExist { .. }), "{err}");

    // An OS release repository with its own keys, as nusa-ota-tuf makes it.
    let os_keys =
        nusa_ota_tuf::create_keys(&fx.dir.path().join("os-keys"), Default::default()).unwrap();
    let os_repo = fx.dir.path().join("os-repo");
    nusa_ota_tuf::init_repo(
        &os_repo,
        &os_keys,
        &Default::default(),
        &nusa_ota_tuf::Expiries::standard(),
    )
    .await
    .unwrap();
    let err = ModelClient::open_dir(
        &fx.repo,
        &os_repo.join("metadata/root.json"),
        &fx.dir.path().join("os-trusting-device"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ModelError::Tuf(TufError::BadSignatures { .. })),
        "{err}"
    );
}
