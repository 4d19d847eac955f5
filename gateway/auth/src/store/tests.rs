//! What needs the store's insides: the constant-time path's probe, and
//! files written with redb directly to damage one record.

use std::path::{Path, PathBuf};

use redb::Database;

use super::*;
use crate::secret::probe;
use crate::spec::Role;

fn store() -> (tempfile::TempDir, PathBuf, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let store = KeyStore::open(&path).unwrap();
    (dir, path, store)
}

/// A valid `Stored` record for `name`, as JSON.
fn stored_json(name: &str, id: &str) -> String {
    let record = KeyRecord::new(id, KeySpec::new(name, Role::Infer), 1);
    serde_json::to_string(&Stored {
        record,
        salt: "00".repeat(SALT),
        hash: "11".repeat(32),
    })
    .unwrap()
}

const SALT: usize = crate::secret::SALT_LEN;

/// Writes rows into the keys table of a fresh store file at `path`.
fn write_rows(path: &Path, rows: &[(&str, &[u8])]) {
    drop(KeyStore::open(path).unwrap());
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut keys = txn.open_table(KEYS).unwrap();
        for (name, value) in rows {
            keys.insert(*name, *value).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn record_error(path: &Path) -> (String, String) {
    match KeyStore::open(path) {
        Err(StoreError::Record { name, reason, .. }) => (name, reason),
        Err(other) => panic!("expected a record error, got {other}"),
        Ok(_) => panic!("expected a record error, the store opened"),
    }
}

#[test]
fn unknown_prefix_hashes_and_compares_like_a_wrong_secret() {
    let (_dir, _path, store) = store();
    let (_, secret) = store.create(KeySpec::new("app", Role::Infer), 10).unwrap();
    let key = secret.expose();

    let before = probe::comparisons();
    assert!(store.authenticate(key, 10).is_ok());
    assert_eq!(probe::comparisons() - before, 1, "the right key");

    let mut wrong = key.to_owned();
    let last = if key.ends_with('A') { "B" } else { "A" };
    wrong.replace_range(KEY_LEN_MINUS_1.., last);
    let before = probe::comparisons();
    assert_eq!(store.authenticate(&wrong, 10), Err(AuthError::Unknown));
    assert_eq!(probe::comparisons() - before, 1, "a wrong secret");

    let unknown = format!("nusa_{}{}", flip_prefix(&key[5..13]), &key[13..]);
    let before = probe::comparisons();
    assert_eq!(store.authenticate(&unknown, 10), Err(AuthError::Unknown));
    assert_eq!(
        probe::comparisons() - before,
        1,
        "an unknown prefix is hashed and compared too"
    );

    let before = probe::comparisons();
    assert_eq!(
        store.authenticate("nusa_short", 10),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        probe::comparisons() - before,
        0,
        "malformed keys are not hashed"
    );
}

const KEY_LEN_MINUS_1: usize = crate::secret::KEY_LEN - 1;

fn flip_prefix(prefix: &str) -> String {
    let first = if prefix.starts_with('0') { '1' } else { '0' };
    format!("{first}{}", &prefix[1..])
}

#[test]
fn dummy_never_matches() {
    // Even a key whose prefix is unknown but whose hash happened to equal
    // the dummy's would be refused: the answer is ANDed with "known".
    let (_dir, _path, store) = store();
    let key = format!("nusa_0000abcd_{}", "A".repeat(43));
    assert_eq!(store.authenticate(&key, 0), Err(AuthError::Unknown));
}

#[test]
fn file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path, _store) = store();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn record_that_does_not_parse_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let good = stored_json("good", "0000aaaa");
    write_rows(
        &path,
        &[("good", good.as_bytes()), ("camera-7", b"{not json")],
    );
    let (name, reason) = record_error(&path);
    assert_eq!(name, "camera-7");
    assert!(!reason.is_empty());
    let message = KeyStore::open(&path).err().unwrap().to_string();
    assert!(
        message.contains("camera-7") && message.contains("keys.redb"),
        "{message}"
    );
}

#[test]
fn oversized_record_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let big = vec![b' '; MAX_RECORD + 1];
    write_rows(&path, &[("big", &big)]);
    let (name, reason) = record_error(&path);
    assert_eq!(name, "big");
    assert!(reason.contains("bytes"), "{reason}");
}

#[test]
fn inconsistent_records_are_refused() {
    let cases: [(&str, String, &str); 4] = [
        ("a", stored_json("b", "0000aaaa"), "filed under"),
        ("a", stored_json("a", "XYZ"), "hex digits"),
        (
            "a",
            stored_json("a", "0000aaaa").replace(&"00".repeat(SALT), "zz"),
            "salt",
        ),
        (
            "a",
            stored_json("a", "0000aaaa").replace("\"role\":\"infer\"", "\"role\":\"root\""),
            "root",
        ),
    ];
    for (name, json, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.redb");
        write_rows(&path, &[(name, json.as_bytes())]);
        let (got, reason) = record_error(&path);
        assert_eq!(got, name);
        assert!(reason.contains(expect), "{reason} should mention {expect}");
    }
}

#[test]
fn duplicate_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let (a, b) = (stored_json("a", "0000aaaa"), stored_json("b", "0000aaaa"));
    write_rows(&path, &[("a", a.as_bytes()), ("b", b.as_bytes())]);
    let (name, reason) = record_error(&path);
    assert_eq!(name, "b");
    assert!(reason.contains("also key \"a\""), "{reason}");
}

#[test]
fn other_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    drop(KeyStore::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema", 99).unwrap();
        txn.commit().unwrap();
    }
    match KeyStore::open(&path) {
        Err(StoreError::Schema { found: 99, .. }) => {}
        other => panic!("expected a schema error, got {:?}", other.err()),
    }
}

#[test]
fn open_twice_is_in_use() {
    let (_dir, path, _store) = store();
    match KeyStore::open(&path) {
        Err(StoreError::InUse { .. }) => {}
        other => panic!("expected in use, got {:?}", other.err()),
    }
}

#[test]
fn index_follows_rotation_and_subjects() {
    let (_dir, _path, store) = store();
    let mut spec = KeySpec::new("cam", Role::Infer);
    spec.cert_subject = Some("CN=cam".into());
    let (old, _) = store.create(spec, 1).unwrap();
    let (new, _) = store.rotate("cam", 2).unwrap();
    let index = store.index.read();
    assert!(!index.by_prefix.contains_key(&old.id));
    assert!(index.by_prefix.contains_key(&new.id));
    assert_eq!(index.by_subject["CN=cam"].record.id, new.id);
    assert_eq!(index.by_name.len(), 1);
}
