use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::test_support::log_with;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_checkpoint_verifies_with_its_key_only() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 5);
    let key = CheckpointKey::load_or_create(&d.path().join("keys/checkpoint.pk8")).unwrap();
    let cp = checkpoint(&log, &key, 2000).unwrap();
    assert_eq!((cp.seq, cp.at), (5, 2000));
    assert_eq!(Some((cp.seq, cp.hash.clone())), log.head());
    assert_eq!(cp.key_id, key.key_id());
    assert_eq!(cp.key_id.len(), 16);
    verify_checkpoint(&cp, &key.public_key_hex()).unwrap();
    assert!(crate::verify(&path, std::slice::from_ref(&cp))
        .unwrap()
        .ok());

    let other = CheckpointKey::load_or_create(&d.path().join("other.pk8")).unwrap();
    assert_ne!(other.public_key_hex(), key.public_key_hex());
    let e = verify_checkpoint(&cp, &other.public_key_hex()).unwrap_err();
    assert!(e.to_string().contains("names key"), "{e}");
    // Another key that claims this key's id still fails on the signature.
    let mut forged = other.sign(cp.seq, &cp.hash, cp.at);
    forged.key_id = cp.key_id.clone();
    assert!(verify_checkpoint(&forged, &key.public_key_hex()).is_err());

    let changes: [fn(&mut Checkpoint); 5] = [
        |c| c.seq += 1,
        |c| {
            c.hash
                .replace_range(0..1, if c.hash.starts_with('0') { "1" } else { "0" })
        },
        |c| c.at -= 1,
        |c| c.key_id = "0000000000000000".into(),
        |c| {
            c.signature.replace_range(
                0..2,
                if c.signature.starts_with("00") {
                    "01"
                } else {
                    "00"
                },
            )
        },
    ];
    for change in changes {
        let mut bad = cp.clone();
        change(&mut bad);
        assert!(
            verify_checkpoint(&bad, &key.public_key_hex()).is_err(),
            "{bad:?}"
        );
    }
    assert!(verify_checkpoint(&cp, "zz").is_err());
}

#[test]
fn the_signed_message_is_domain_separated() {
    assert_eq!(
        checkpoint_message(7, "ab", 99),
        "nusa-audit-checkpoint/1\n7\nab\n99"
    );
}

#[test]
fn the_key_file_is_0600_and_reloads_to_the_same_key() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("keys").join("checkpoint.pk8");
    let key = CheckpointKey::load_or_create(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let again = CheckpointKey::load_or_create(&path).unwrap();
    assert_eq!(again.public_key_hex(), key.public_key_hex());
    assert_eq!(CheckpointKey::load(&path).unwrap().key_id(), key.key_id());
    let pk = hex::decode(key.public_key_hex()).unwrap();
    assert_eq!(key.key_id(), &hex::encode(digest(&SHA256, &pk))[..16]);
    // No temporary file left beside it.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn debug_shows_the_key_id_and_no_key_bytes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("checkpoint.pk8");
    let key = CheckpointKey::load_or_create(&path).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains(key.key_id()), "{shown}");
    let pkcs8 = std::fs::read(&path).unwrap();
    // The private seed is the 32 bytes after the 16-byte PKCS#8 prefix.
    let seed = hex::encode(&pkcs8[16..48]);
    assert!(!shown.contains(&seed[..16]), "{shown}");
    assert!(!shown.contains(&key.public_key_hex()), "{shown}");
}

#[test]
fn a_key_file_others_can_read_or_that_is_no_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("checkpoint.pk8");
    CheckpointKey::load_or_create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = CheckpointKey::load_or_create(&path).unwrap_err();
    assert!(e.to_string().contains("readable by others"), "{e}");

    let junk = d.path().join("junk.pk8");
    std::fs::write(&junk, b"not a key").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = CheckpointKey::load(&junk).unwrap_err();
    assert!(e.to_string().contains("junk.pk8"), "{e}");
    assert!(CheckpointKey::load(&d.path().join("absent.pk8")).is_err());
}

#[test]
fn checkpoints_are_kept_beside_the_log() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 2);
    let key = CheckpointKey::load_or_create(&d.path().join("checkpoint.pk8")).unwrap();
    let first = checkpoint(&log, &key, 2000).unwrap();
    log.append(crate::test_support::entry(3), 2001).unwrap();
    // A power cut in the middle of a checkpoint line.
    let list = checkpoints_path(&path);
    assert_eq!(list, path.parent().unwrap().join("checkpoints.jsonl"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&list)
        .unwrap()
        .write_all(b"{\"seq\":")
        .unwrap();
    let second = checkpoint(&log, &key, 2002).unwrap();
    assert_eq!(second.seq, 3);
    assert_eq!(mode(&list), 0o600);
    let kept = read_checkpoints(&list).unwrap();
    assert_eq!(kept.checkpoints, vec![first, second]);
    assert_eq!(kept.malformed, vec![2]);
}

#[test]
fn an_empty_log_has_no_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let (_path, log) = log_with(d.path(), 0);
    let key = CheckpointKey::load_or_create(&d.path().join("checkpoint.pk8")).unwrap();
    assert!(matches!(
        checkpoint(&log, &key, 1),
        Err(AuditError::Empty(_))
    ));
}
