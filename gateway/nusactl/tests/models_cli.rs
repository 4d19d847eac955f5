//! `nusactl models init | publish` as a release engineer runs them: a new
//! model repository, a version published with its provenance, the same
//! version refused a second time.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::path::Path;
use std::process::{Command, Output};

fn nusactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nusactl"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn init_then_publish_with_provenance_and_never_twice() {
    let t = tempfile::tempdir().unwrap();
    let (repo, keys, dir) = (
        t.path().join("repo"),
        t.path().join("keys"),
        t.path().join("v1"),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let weights = b"not really onnx, but bytes to sign".repeat(100);
    std::fs::write(dir.join("model.onnx"), &weights).unwrap();
    std::fs::write(dir.join("config.toml"), "versions = \"latest\"\n").unwrap();

    let out = nusactl(&["models", "init", "--repo", s(&repo), "--keys", s(&keys)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(repo.join("metadata/root.json").is_file());

    let publish = |notes: &str| {
        nusactl(&[
            "models",
            "publish",
            "--json",
            "--repo",
            s(&repo),
            "--keys",
            s(&keys),
            "--model",
            "resnet",
            "--version",
            "1",
            "--dir",
            s(&dir),
            "--source-revision",
            "abc123",
            "--training-run",
            "run-42",
            "--publisher",
            "ci@example",
            "--notes",
            notes,
        ])
    };
    let out = publish("first");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["model"], "resnet");
    assert_eq!(manifest["provenance"]["source_revision"], "abc123");
    assert_eq!(manifest["provenance"]["training_run"], "run-42");
    assert_eq!(manifest["provenance"]["notes"], "first");
    let files = manifest["files"].as_array().unwrap();
    let onnx = files.iter().find(|f| f["path"] == "model.onnx").unwrap();
    assert_eq!(onnx["sha256"], sha256_hex(&weights));
    assert_eq!(onnx["length"], weights.len());

    // Immutable: the same version again is refused, even unchanged.
    let out = publish("again");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resnet") && err.contains("already"), "{err}");
    // A second init over the same keys is refused too.
    let out = nusactl(&[
        "models",
        "init",
        "--repo",
        s(&t.path().join("r2")),
        "--keys",
        s(&keys),
    ]);
    assert!(!out.status.success());
}
