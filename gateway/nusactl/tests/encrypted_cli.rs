//! `nusactl models keygen | publish --encrypt-for | rewrap` as a release
//! engineer runs them, checked with the device's own client: the published
//! files are ciphertext, the wrapped data key opens them, a rewrap adds a
//! wrapping for a new key (fetched into an installed version) and changes
//! nothing else.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nusa_model_dist::encryption::{
    decrypt_file, unwrap_key, FleetPrivateKey, WrappedKey, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE,
};
use nusa_model_dist::{verify_installed, Manifest, ModelClient};

fn nusactl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nusactl"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Opens `model.onnx` of an installed version with `key`, as nusad does.
fn open_installed(dir: &Path, key: &FleetPrivateKey) -> Vec<u8> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let file = manifest.encrypted("model.onnx").unwrap();
    let wrapped = WrappedKey::read(&dir.join(WrappedKey::file_path(&key.key_id()))).unwrap();
    let data_key = unwrap_key(&wrapped, key, "resnet", 1).unwrap();
    let mut data = std::fs::read(dir.join(&file.path)).unwrap();
    decrypt_file(&data_key, "resnet", 1, "model.onnx", &file.nonce, &mut data).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_publish_encrypted_and_rewrap() {
    let t = tempfile::tempdir().unwrap();
    let (repo, keys, dir) = (
        t.path().join("repo"),
        t.path().join("keys"),
        t.path().join("v1"),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let weights = b"secret weights of the customer, not for the colo".repeat(50);
    std::fs::write(dir.join("model.onnx"), &weights).unwrap();
    std::fs::write(dir.join("config.toml"), "versions = \"latest\"\n").unwrap();

    let keygen = |name: &str| {
        let out = t.path().join(name);
        let json: serde_json::Value = serde_json::from_str(&ok(&nusactl(&[
            "models",
            "keygen",
            "--json",
            "--out",
            s(&out),
        ])))
        .unwrap();
        (out, json["key_id"].as_str().unwrap().to_owned())
    };
    let (fleet_a, a_id) = keygen("fleet-a");
    let (fleet_b, b_id) = keygen("fleet-b");
    let (fleet_c, _) = keygen("fleet-c");
    // Never over an existing key.
    assert!(!nusactl(&["models", "keygen", "--out", s(&fleet_a)])
        .status
        .success());
    let private = |d: &Path| d.join(PRIVATE_KEY_FILE);
    let public = |d: &Path| d.join(PUBLIC_KEY_FILE);

    ok(&nusactl(&[
        "models",
        "init",
        "--repo",
        s(&repo),
        "--keys",
        s(&keys),
    ]));
    let publish = |encrypt_for: &Path| {
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
            "abc",
            "--training-run",
            "run-1",
            "--publisher",
            "ci@example",
            "--encrypt-for",
            s(encrypt_for),
        ])
    };
    // The private key where the public one belongs is refused.
    let out = publish(&private(&fleet_a));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key"));

    let manifest: serde_json::Value =
        serde_json::from_str(&ok(&publish(&public(&fleet_a)))).unwrap();
    assert_eq!(manifest["format"], 2);
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["config.toml", "model.onnx.enc"]);
    assert_eq!(manifest["encryption"]["algorithm"], "AES-256-GCM");
    // Nothing in the repository holds the plaintext.
    for f in files_under(&repo) {
        assert!(
            !contains(&std::fs::read(&f).unwrap(), &weights[..64]),
            "{f:?}"
        );
    }

    // The device: install, admit, open with key A; key B has no wrapping.
    let root = repo.join("metadata/root.json");
    let store = t.path().join("store");
    let datastore = t.path().join("datastore");
    let client = ModelClient::open_dir(&repo, &root, &datastore)
        .await
        .unwrap();
    let report = client.fetch_version("resnet", "1", &store).await.unwrap();
    verify_installed(&report.dir, "resnet", 1, None).unwrap();
    let key_a = FleetPrivateKey::read(&private(&fleet_a)).unwrap();
    let key_b = FleetPrivateKey::read(&private(&fleet_b)).unwrap();
    assert_eq!(open_installed(&report.dir, &key_a), weights);
    assert!(!report.dir.join(WrappedKey::file_path(&b_id)).exists());
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(&report.dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();

    // Rotation: A -> B adds one wrapping.
    let rewrap = |old: &Path, new: &Path| {
        nusactl(&[
            "models",
            "rewrap",
            "--repo",
            s(&repo),
            "--keys",
            s(&keys),
            "--model",
            "resnet",
            "--version",
            "1",
            "--old-private",
            s(old),
            "--new-public",
            s(new),
        ])
    };
    let out = ok(&rewrap(&private(&fleet_a), &public(&fleet_b)));
    assert!(
        out.contains(&format!("models/resnet/1/keys/{b_id}/key.json")),
        "{out}"
    );
    // Again for B: refused. From a key with no wrapping (C): refused.
    let again = rewrap(&private(&fleet_a), &public(&fleet_b));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    let none = rewrap(&private(&fleet_c), &public(&fleet_c));
    let err = String::from_utf8_lossy(&none.stderr).into_owned();
    assert!(
        err.contains("no key wrapped for the old key") && err.contains(&a_id),
        "{err}"
    );
    assert!(!err.contains("nusa-model-key-private"), "{err}");

    // The installed version gets the new wrapping on the next fetch; its
    // files and manifest are unchanged, and key B now opens it.
    let client = ModelClient::open_dir(&repo, &root, &datastore)
        .await
        .unwrap();
    let again = client.fetch_version("resnet", "1", &store).await.unwrap();
    assert!(again.already_installed);
    for (p, b) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{p:?} changed");
    }
    assert!(report.dir.join(WrappedKey::file_path(&b_id)).is_file());
    verify_installed(&report.dir, "resnet", 1, None).unwrap();
    assert_eq!(open_installed(&report.dir, &key_b), weights);
    // A fresh box with key B installs both wrappings.
    let fresh = t.path().join("store2");
    let client = ModelClient::open_dir(&repo, &root, &t.path().join("ds2"))
        .await
        .unwrap();
    let r2 = client.fetch_version("resnet", "1", &fresh).await.unwrap();
    assert_eq!(open_installed(&r2.dir, &key_b), weights);
}
