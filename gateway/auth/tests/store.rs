//! The key store through its public API, on real redb files.

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::path::PathBuf;

use nusa_auth::{AuthError, KeySpec, KeyStore, Limits, Role, Secret, StoreError};

const NOW: u64 = 1_750_000_000;

fn open() -> (tempfile::TempDir, PathBuf, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("keys.redb");
    let store = KeyStore::open(&path).unwrap();
    (dir, path, store)
}

fn spec(name: &str) -> KeySpec {
    let mut s = KeySpec::new(name, Role::Infer);
    s.models = vec!["resnet-*".into(), "bert".into()];
    s.limits = Limits {
        rps: Some(5.0),
        burst: Some(10),
        ..Limits::default()
    };
    s
}

/// The part of a key that is secret (after the public prefix).
fn tail(secret: &Secret) -> &str {
    &secret.expose()[14..]
}

fn with_last_char_changed(key: &str) -> String {
    let mut k = key.to_owned();
    let last = k.pop().unwrap();
    k.push(if last == 'A' { 'B' } else { 'A' });
    k
}

#[test]
fn create_then_authenticate() {
    let (_dir, _path, store) = open();
    let (record, secret) = store.create(spec("mobile-app"), NOW).unwrap();
    assert_eq!(secret.expose().len(), nusa_auth::KEY_LEN);
    assert!(secret.expose().starts_with(&format!("nusa_{}_", record.id)));
    assert_eq!(record.created_at, NOW);
    let got = store.authenticate(secret.expose(), NOW).unwrap();
    assert_eq!(*got, record);
    assert_eq!(store.get("mobile-app"), Some(record.clone()));
    assert_eq!(store.list(), vec![record]);
}

#[test]
fn wrong_unknown_and_malformed_keys_fail() {
    let (_dir, _path, store) = open();
    let (record, secret) = store.create(spec("a"), NOW).unwrap();
    let key = secret.expose();
    assert_eq!(
        store.authenticate(&with_last_char_changed(key), NOW),
        Err(AuthError::Unknown)
    );
    let other_prefix = if record.id == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    let unknown = key.replace(&record.id, other_prefix);
    assert_eq!(store.authenticate(&unknown, NOW), Err(AuthError::Unknown));
    for bad in [
        "",
        "Bearer x",
        "nusa_",
        &key[..key.len() - 1],
        &format!("{key}x"),
    ] {
        assert_eq!(
            store.authenticate(bad, NOW),
            Err(AuthError::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn revoked_key_fails() {
    let (_dir, _path, store) = open();
    let (_, secret) = store.create(spec("a"), NOW).unwrap();
    let revoked = store.revoke("a", NOW + 5).unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    assert_eq!(
        store.authenticate(secret.expose(), NOW + 6),
        Err(AuthError::Revoked)
    );
    assert_eq!(
        store.revoke("a", NOW + 9).unwrap().revoked_at,
        Some(NOW + 5)
    );
    assert!(matches!(
        store.rotate("a", NOW),
        Err(StoreError::Revoked(_))
    ));
    assert!(matches!(
        store.update("a", spec("a")),
        Err(StoreError::Revoked(_))
    ));
    assert!(matches!(
        store.revoke("nope", NOW),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn expired_key_fails_from_its_expiry() {
    let (_dir, _path, store) = open();
    let mut s = spec("a");
    s.expires_at = Some(NOW + 100);
    let (_, secret) = store.create(s, NOW).unwrap();
    assert!(store.authenticate(secret.expose(), NOW + 99).is_ok());
    assert_eq!(
        store.authenticate(secret.expose(), NOW + 100),
        Err(AuthError::Expired)
    );
    // A wrong secret of an expired key is just wrong.
    assert_eq!(
        store.authenticate(&with_last_char_changed(secret.expose()), NOW + 100),
        Err(AuthError::Unknown)
    );
    let mut past = spec("b");
    past.expires_at = Some(NOW);
    assert!(matches!(
        store.create(past, NOW),
        Err(StoreError::Invalid { .. })
    ));
}

#[test]
fn rotated_key_old_fails_new_works() {
    let (_dir, _path, store) = open();
    let (old_record, old) = store.create(spec("a"), NOW).unwrap();
    let (record, new) = store.rotate("a", NOW + 1).unwrap();
    assert_ne!(record.id, old_record.id);
    assert_eq!(record.rotated_at, Some(NOW + 1));
    assert_eq!(
        (record.role, &record.limits, &record.models),
        (old_record.role, &old_record.limits, &old_record.models)
    );
    assert_eq!(
        store.authenticate(old.expose(), NOW + 1),
        Err(AuthError::Unknown)
    );
    assert_eq!(
        store.authenticate(new.expose(), NOW + 1).unwrap().id,
        record.id
    );
}

#[test]
fn records_survive_a_restart() {
    let (_dir, path, store) = open();
    let (a, secret_a) = store.create(spec("a"), NOW).unwrap();
    let (_, secret_b) = store.create(spec("b"), NOW).unwrap();
    store.revoke("b", NOW + 1).unwrap();
    let (c, secret_c) = store.rotate("a", NOW + 2).unwrap();
    assert_ne!(a.id, c.id);
    let before = store.list();
    drop(store);

    let store = KeyStore::open(&path).unwrap();
    assert_eq!(store.list(), before);
    assert_eq!(
        store.authenticate(secret_c.expose(), NOW + 3).unwrap().name,
        "a"
    );
    assert_eq!(
        store.authenticate(secret_a.expose(), NOW + 3),
        Err(AuthError::Unknown)
    );
    assert_eq!(
        store.authenticate(secret_b.expose(), NOW + 3),
        Err(AuthError::Revoked)
    );
}

#[test]
fn duplicate_name_is_refused() {
    let (_dir, _path, store) = open();
    store.create(spec("a"), NOW).unwrap();
    let err = store.create(spec("a"), NOW).unwrap_err();
    assert!(
        matches!(err, StoreError::NameTaken(ref n) if n == "a"),
        "{err}"
    );
    assert_eq!(store.list().len(), 1);
}

#[test]
fn invalid_specs_are_refused() {
    let (_dir, _path, store) = open();
    let mut s = spec("a");
    s.models = vec!["resnet-[".into()];
    let err = store.create(s, NOW).unwrap_err();
    assert!(err.to_string().contains("glob"), "{err}");
    let mut s = spec("a");
    s.limits.rps = Some(-1.0);
    assert!(matches!(
        store.create(s, NOW),
        Err(StoreError::Invalid { .. })
    ));
    let mut s = spec("a");
    s.residency = vec!["Indonesia".into()];
    assert!(matches!(
        store.create(s, NOW),
        Err(StoreError::Invalid { .. })
    ));
    assert!(store.list().is_empty());
}

#[test]
fn update_keeps_the_secret() {
    let (_dir, path, store) = open();
    let (before, secret) = store.create(spec("a"), NOW).unwrap();
    let mut s = spec("a");
    s.role = Role::Admin;
    s.models = vec!["*".into()];
    s.limits = Limits::default();
    s.expires_at = Some(NOW + 10);
    let after = store.update("a", s).unwrap();
    assert_eq!(
        (after.id.as_str(), after.created_at),
        (before.id.as_str(), before.created_at)
    );
    assert!(after.is_admin() && after.may_call("yolo"));
    let got = store.authenticate(secret.expose(), NOW).unwrap();
    assert_eq!(*got, after);
    assert_eq!(
        store.authenticate(secret.expose(), NOW + 10),
        Err(AuthError::Expired)
    );
    assert!(matches!(
        store.update("a", spec("b")),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.update("zz", spec("zz")),
        Err(StoreError::NotFound(_))
    ));
    drop(store);
    assert_eq!(KeyStore::open(&path).unwrap().get("a"), Some(after));
}

#[test]
fn delete_frees_the_name() {
    let (_dir, path, store) = open();
    let (_, old) = store.create(spec("a"), NOW).unwrap();
    store.delete("a").unwrap();
    assert_eq!(
        store.authenticate(old.expose(), NOW),
        Err(AuthError::Unknown)
    );
    store.create(spec("a"), NOW).unwrap();
    drop(store);
    assert_eq!(KeyStore::open(&path).unwrap().list().len(), 1);
}

#[test]
fn certificate_subjects() {
    let (_dir, _path, store) = open();
    let mut s = spec("camera-7");
    s.cert_subject = Some("CN=camera-7,O=Acme".into());
    let (record, _) = store.create(s.clone(), NOW).unwrap();
    assert_eq!(
        store.by_subject("CN=camera-7,O=Acme", NOW).unwrap().id,
        record.id
    );
    assert_eq!(
        store.by_subject("CN=camera-8,O=Acme", NOW),
        Err(AuthError::Unknown)
    );

    let mut other = spec("camera-8");
    other.cert_subject = s.cert_subject.clone();
    let err = store.create(other, NOW).unwrap_err();
    assert!(matches!(err, StoreError::SubjectTaken { ref holder, .. } if holder == "camera-7"));
    store.update("camera-7", s).unwrap();

    store.revoke("camera-7", NOW).unwrap();
    assert_eq!(
        store.by_subject("CN=camera-7,O=Acme", NOW),
        Err(AuthError::Revoked)
    );
}

#[test]
fn model_globs_and_roles() {
    let (_dir, _path, store) = open();
    let (_, secret) = store.create(spec("a"), NOW).unwrap();
    let key = store.authenticate(secret.expose(), NOW).unwrap();
    assert!(key.may_call("resnet-50") && key.may_call("bert"));
    assert!(!key.may_call("bert-large") && !key.may_call("yolo"));
    assert!(!key.is_admin());
    let mut admin = KeySpec::new("ops", Role::Admin);
    admin.models = vec![];
    let (record, _) = store.create(admin, NOW).unwrap();
    assert!(record.is_admin() && !record.may_call("bert"));
}

#[test]
fn secrets_never_appear_in_output() {
    let (_dir, path, store) = open();
    let (record, secret) = store.create(spec("a"), NOW).unwrap();
    let (rotated, rotated_secret) = store.rotate("a", NOW + 1).unwrap();
    let key = secret.expose().to_owned();
    let mut texts = vec![
        format!("{record:?}"),
        format!("{record:#?}"),
        format!("{rotated:?}"),
        serde_json::to_string(&record).unwrap(),
        serde_json::to_string(&store.list()).unwrap(),
        format!("{secret} {secret:?} {rotated_secret} {rotated_secret:?}"),
    ];
    for presented in [
        key.clone(),
        with_last_char_changed(&key),
        rotated_secret.expose().to_owned(),
        format!("{key}x"),
    ] {
        for now in [NOW, u64::MAX] {
            if let Err(e) = store.authenticate(&presented, now) {
                texts.push(format!("{e} {e:?}"));
            }
        }
    }
    store.revoke("a", NOW + 2).unwrap();
    if let Err(e) = store.authenticate(rotated_secret.expose(), NOW + 2) {
        texts.push(format!("{e} {e:?}"));
    }
    for err in [
        store.create(spec("a"), NOW).unwrap_err(),
        store.rotate("a", NOW).unwrap_err(),
        store.update("a", spec("b")).unwrap_err(),
    ] {
        texts.push(format!("{err} {err:?}"));
    }
    drop(store);
    let file = std::fs::read(&path).unwrap();
    for s in [&secret, &rotated_secret] {
        let tail = tail(s);
        for t in &texts {
            assert!(!t.contains(tail), "a secret leaked into {t:?}");
        }
        assert!(
            !file.windows(tail.len()).any(|w| w == tail.as_bytes()),
            "a secret is stored in the file"
        );
    }
    assert!(
        texts.iter().any(|t| t.contains(&record.id)),
        "the prefix is shown"
    );
}

#[test]
fn damaged_file_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = KeyStore::open(&path)
        .err()
        .expect("a damaged file must not open");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("keys.redb") && message.contains("damaged"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0x5a; 8192],
        "left as it was"
    );
}

#[test]
fn truncated_file_gives_a_clear_error() {
    let (_dir, path, store) = open();
    store.create(spec("a"), NOW).unwrap();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = KeyStore::open(&path)
        .err()
        .expect("a truncated file must not open");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[test]
fn flipped_byte_at_rest_is_caught_at_open() {
    let (_dir, path, store) = open();
    store.create(spec("a"), NOW).unwrap();
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"\"bert\"";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the record is in the file");
    // "bert" -> "cert": still a valid record, silently allowing another
    // model; only redb's page checksums can tell.
    bytes[at + 1] = b'c';
    std::fs::write(&path, &bytes).unwrap();
    let err = KeyStore::open(&path)
        .err()
        .expect("a flipped byte must not open");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[test]
fn an_imported_key_authenticates_and_survives_reopening_but_is_stored_hashed() {
    let (_dir, path, store) = open();
    let text = nusa_auth::generate_text().unwrap();
    let record = store.import(spec("flashed"), text.expose(), NOW).unwrap();
    assert_eq!(record.id, text.prefix());
    assert_eq!(*store.authenticate(text.expose(), NOW).unwrap(), record);
    // The same text or name again, a malformed text: refused.
    assert!(matches!(
        store.import(spec("flashed"), text.expose(), NOW),
        Err(StoreError::NameTaken(_))
    ));
    let e = store.import(spec("twin"), text.expose(), NOW).unwrap_err();
    assert!(e.to_string().contains("same prefix"), "{e}");
    let e = store.import(spec("bad"), "hunter2", NOW).unwrap_err();
    assert!(
        e.to_string().contains("malformed") && !e.to_string().contains("hunter2"),
        "{e}"
    );
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    let tail = &text.expose()[14..];
    assert!(!bytes.windows(tail.len()).any(|w| w == tail.as_bytes()));
    let store = KeyStore::open(&path).unwrap();
    assert_eq!(
        store.authenticate(text.expose(), NOW).unwrap().name,
        "flashed"
    );
}
