use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::test_support::{entry, lines, log_with, write_lines};
use crate::{verify, Actor, Outcome, ProblemKind};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn appends_chain_and_the_head_survives_a_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 0);
    assert_eq!(log.head(), None);
    let first = log.append(entry(1), 1001).unwrap();
    assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS));
    let second = log
        .append(
            Entry::new(Actor::uid(0), "key.revoke", "key mobile-app")
                .outcome(Outcome::Error("no such key".into())),
            1002,
        )
        .unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev, line_hash(lines(&path)[0].as_bytes()));
    assert_eq!(log.head(), Some((2, second.hash.clone())));
    drop(log);

    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.head(), Some((2, second.hash.clone())));
    assert_eq!(log.tail_damage(), None);
    let third = log.append(entry(3), 1003).unwrap();
    assert_eq!(third.seq, 3);
    assert_eq!(third.prev, line_hash(lines(&path)[1].as_bytes()));
    assert_eq!(log.list(None, 10).unwrap(), vec![first, second, third]);
    assert!(verify(&path, &[]).unwrap().ok());
}

#[test]
fn the_log_is_0600_in_a_0700_folder_and_a_wider_one_is_narrowed() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 1);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);

    let wide = d.path().join("wide.log");
    std::fs::write(&wide, b"").unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
    AuditLog::open(&wide).unwrap();
    assert_eq!(mode(&wide), 0o600);
}

#[test]
fn list_takes_the_newest_since_a_time_oldest_first() {
    let d = tempfile::tempdir().unwrap();
    let (_path, log) = log_with(d.path(), 20); // at = 1001..=1020
    let seqs = |v: Vec<Record>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(log.list(None, 3).unwrap()), vec![18, 19, 20]);
    assert_eq!(
        seqs(log.list(Some(1017), 100).unwrap()),
        vec![17, 18, 19, 20]
    );
    assert_eq!(seqs(log.list(Some(1010), 2).unwrap()), vec![19, 20]);
    assert_eq!(log.list(Some(5000), 10).unwrap(), vec![]);
    assert_eq!(log.list(None, 0).unwrap(), vec![]);
    assert_eq!(log.list(None, usize::MAX).unwrap().len(), 20);
}

#[test]
fn list_skips_lines_that_are_not_records() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 4);
    let mut l = lines(&path);
    l.insert(2, "garbage".into());
    write_lines(&path, &l);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"seq\":5,")
        .unwrap();
    let got: Vec<u64> = log.list(None, 10).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(got, vec![1, 2, 3, 4]);
}

#[test]
fn a_partial_last_line_is_reported_and_the_next_record_starts_a_new_line() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 3);
    let head = log.head();
    drop(log);
    let before = std::fs::read(&path).unwrap();
    let mut cut = before.clone();
    cut.extend_from_slice(br#"{"seq":4,"at":1004,"act"#);
    std::fs::write(&path, &cut).unwrap();

    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.head(), head);
    let damage = log.tail_damage().unwrap();
    assert_eq!(
        damage,
        TailDamage {
            offset: before.len() as u64,
            bytes: 23,
            partial: true
        }
    );
    assert!(damage.to_string().contains("partial line"), "{damage}");
    let r = log.append(entry(4), 1004).unwrap();
    assert_eq!(r.seq, 4);
    let l = lines(&path);
    assert_eq!(l.len(), 5);
    assert_eq!(l[3], r#"{"seq":4,"at":1004,"act"#);
    assert_eq!(serde_json::from_str::<Record>(&l[4]).unwrap(), r);
    let report = verify(&path, &[]).unwrap();
    let kinds: Vec<_> = report.problems.iter().map(|p| (p.kind, p.line)).collect();
    assert_eq!(kinds, vec![(ProblemKind::Malformed, 4)]);
}

#[test]
fn a_record_that_lost_only_its_newline_stays_the_head() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 3);
    let head = log.head();
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    let log = AuditLog::open(&path).unwrap();
    assert_eq!((log.head(), log.tail_damage()), (head, None));
    assert_eq!(log.list(None, 1).unwrap()[0].seq, 3);
    assert_eq!(log.append(entry(4), 1004).unwrap().seq, 4);
    assert!(verify(&path, &[]).unwrap().ok());
}

#[test]
fn complete_lines_of_garbage_at_the_end_are_stepped_over() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 3);
    let head = log.head();
    drop(log);
    let mut l = lines(&path);
    l.push("not a record".into());
    l.push("x".repeat(MAX_LINE * 2));
    write_lines(&path, &l);
    let log = AuditLog::open(&path).unwrap();
    assert_eq!(log.head(), head);
    let damage = log.tail_damage().unwrap();
    assert!(!damage.partial);
    assert_eq!(log.append(entry(4), 1004).unwrap().seq, 4);
    let report = verify(&path, &[]).unwrap();
    let kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, vec![ProblemKind::Malformed, ProblemKind::Malformed]);
}

#[test]
fn an_entry_over_the_line_bound_is_refused_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 2);
    let before = std::fs::read(&path).unwrap();
    let big = entry(3).detail(json!({"notes": "x".repeat(MAX_LINE)}));
    let e = log.append(big, 1003).unwrap_err();
    assert!(
        matches!(e, AuditError::TooLarge { max: MAX_LINE, .. }),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(log.append(entry(3), 1003).unwrap().seq, 3);
}

#[test]
fn secrets_and_bad_actions_are_refused_before_writing() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 1);
    let before = std::fs::read(&path).unwrap();
    let e = log
        .append(entry(2).detail(json!({"api_secret": "sk-123"})), 1)
        .unwrap_err();
    assert!(e.to_string().contains("api_secret"), "{e}");
    assert!(!e.to_string().contains("sk-123"), "{e}");
    log.append(Entry::new(Actor::system(), "Model Load", "x"), 1)
        .unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn appends_from_many_threads_make_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 0);
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append(entry(t * 100 + i), 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.head().map(|h| h.0), Some(200));
    let report = verify(&path, &[]).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!(report.records, 200);
}

#[test]
fn a_write_by_another_handle_is_noticed_before_the_next_append() {
    let d = tempfile::tempdir().unwrap();
    let (path, a) = log_with(d.path(), 2);
    let b = AuditLog::open(&path).unwrap();
    assert_eq!(b.append(entry(3), 1003).unwrap().seq, 3);
    // `a` still believes the head is 2, until it appends.
    assert_eq!(a.head().map(|h| h.0), Some(2));
    assert_eq!(a.append(entry(4), 1004).unwrap().seq, 4);
    assert!(verify(&path, &[]).unwrap().ok());
}

#[test]
fn a_float_detail_reads_back_as_written() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 0);
    for x in [0.1, 1e-300, 123456.789, -2.5e17, f64::MAX] {
        log.append(entry(1).detail(json!({ "x": x })), 1).unwrap();
    }
    assert!(verify(&path, &[]).unwrap().ok());
}

#[test]
fn open_refuses_a_folder() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("audit.log")).unwrap();
    let e = AuditLog::open(&d.path().join("audit.log")).unwrap_err();
    assert!(e.to_string().contains("audit.log"), "{e}");
}
