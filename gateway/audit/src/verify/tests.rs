//! Each tamper, on a real file, is reported once, with the right kind and
//! seq, and nothing else.

use serde_json::json;

use super::*;
use crate::test_support::{edit, lines, log_with, rechain, write_lines};
use crate::{checkpoint, AuditLog, CheckpointKey};

/// The problems as (kind, line, seq), for exact comparisons.
fn found(path: &Path, checkpoints: &[Checkpoint]) -> Vec<(ProblemKind, u64, Option<u64>)> {
    let report = verify(path, checkpoints).unwrap();
    for p in &report.problems {
        eprintln!("{p}");
    }
    report
        .problems
        .iter()
        .map(|p| (p.kind, p.line, p.seq))
        .collect()
}

fn only(path: &Path, checkpoints: &[Checkpoint]) -> Problem {
    let report = verify(path, checkpoints).unwrap();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    report.problems.into_iter().next().unwrap()
}

#[test]
fn a_thousand_appends_verify_clean() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 1000);
    let report = verify(&path, &[]).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!(report.records, 1000);
    assert_eq!(report.lines, 1000);
    assert_eq!(report.head, log.head());
    assert_eq!(report.head.map(|h| h.0), Some(1000));
}

#[test]
fn an_empty_log_verifies_clean() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 0);
    let report = verify(&path, &[]).unwrap();
    assert!(report.ok());
    assert_eq!((report.records, report.head), (0, None));
}

#[test]
fn an_edited_field_is_reported_on_that_record() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l[4] = edit(&l[4], "target", json!("resnet/999"), false);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Edited, 5, Some(5)));
    assert!(p.detail.contains("does not match its hash"), "{p}");
}

#[test]
fn an_edited_and_rehashed_record_is_caught_by_the_next_prev() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l[4] = edit(&l[4], "outcome", json!({"error": "denied"}), true);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Edited, 5, Some(5)));
    assert!(
        p.detail
            .contains("record seq 5 was changed after seq 6 (line 6) was written"),
        "{p}"
    );
}

#[test]
fn a_changed_seq_is_one_edit_not_a_gap_and_a_reorder() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l[4] = edit(&l[4], "seq", json!(50), true);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Edited, 5, Some(50)));
    assert!(p.detail.contains("it is seq 5"), "{p}");
}

#[test]
fn an_edited_last_record_needs_a_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 10);
    let key = CheckpointKey::load_or_create(&d.path().join("key.pk8")).unwrap();
    let cp = checkpoint(&log, &key, 2000).unwrap();
    let mut l = lines(&path);
    l[9] = edit(&l[9], "target", json!("resnet/999"), true);
    write_lines(&path, &l);
    // The chain alone cannot tell: nothing follows the last record.
    assert!(verify(&path, &[]).unwrap().ok());
    let p = only(&path, &[cp]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::CheckpointMismatch, 10, Some(10))
    );
}

#[test]
fn a_deleted_line_is_a_removed_seq() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l.remove(4);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Removed, 5, Some(5)));
    assert!(
        p.detail
            .contains("seq 5 is missing: seq 4 (line 4) is followed by seq 6 (line 5)"),
        "{p}"
    );
}

#[test]
fn deleted_lines_in_a_row_are_one_removal_naming_them_all() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l.drain(4..7);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Removed, 5, Some(5)));
    assert!(p.detail.contains("seqs 5..=7 are missing"), "{p}");
}

#[test]
fn a_deleted_first_line_is_a_removed_seq_1() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 5);
    let mut l = lines(&path);
    l.remove(0);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Removed, 1, Some(1)));
    assert!(p.detail.contains("the log starts at seq 2"), "{p}");
}

#[test]
fn two_swapped_lines_are_one_reorder() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l.swap(4, 5);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Reordered, 6, Some(5))
    );
    assert!(
        p.detail
            .contains("seq 5 (line 6) comes after seq 6 (line 5)"),
        "{p}"
    );
}

#[test]
fn a_record_moved_later_or_earlier_is_one_reorder() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let original = lines(&path);

    let mut later = original.clone();
    let moved = later.remove(3); // seq 4 goes after seq 7
    later.insert(6, moved);
    write_lines(&path, &later);
    assert_eq!(
        found(&path, &[]),
        vec![(ProblemKind::Reordered, 7, Some(4))]
    );

    let mut earlier = original.clone();
    let moved = earlier.remove(7); // seq 8 goes before seq 4
    earlier.insert(3, moved);
    write_lines(&path, &earlier);
    assert_eq!(
        found(&path, &[]),
        vec![(ProblemKind::Reordered, 5, Some(4))]
    );
}

#[test]
fn a_distant_swap_names_both_records_and_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l.swap(2, 6); // seqs 3 and 7
    write_lines(&path, &l);
    assert_eq!(
        found(&path, &[]),
        vec![
            (ProblemKind::Reordered, 4, Some(4)),
            (ProblemKind::Reordered, 7, Some(3)),
        ]
    );
}

#[test]
fn a_copied_line_is_a_repeated_seq() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 6);
    let mut l = lines(&path);
    let copy = l[1].clone();
    l.insert(4, copy);
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Reordered, 5, Some(2))
    );
    assert!(p.detail.contains("a copy of line 2"), "{p}");
}

#[test]
fn a_tail_cut_after_a_checkpoint_is_truncated() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 10);
    let key = CheckpointKey::load_or_create(&d.path().join("key.pk8")).unwrap();
    let cp = checkpoint(&log, &key, 2000).unwrap();
    let mut l = lines(&path);
    l.truncate(7);
    write_lines(&path, &l);
    // Without the checkpoint, a shorter log is a good log.
    assert!(verify(&path, &[]).unwrap().ok());
    let p = only(&path, std::slice::from_ref(&cp));
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Truncated, 7, Some(8))
    );
    assert!(
        p.detail.contains("seqs 8..=10 were cut from its end"),
        "{p}"
    );
    // An older checkpoint is still satisfied.
    let mut older = cp.clone();
    older.seq = 5;
    older.hash = serde_json::from_str::<Record>(&l[4]).unwrap().hash;
    assert!(verify(&path, &[older]).unwrap().ok());
}

#[test]
fn a_cut_tail_written_over_again_mismatches_the_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 10);
    let key = CheckpointKey::load_or_create(&d.path().join("key.pk8")).unwrap();
    let cp = checkpoint(&log, &key, 2000).unwrap();
    drop(log);
    let mut l = lines(&path);
    l.truncate(7);
    write_lines(&path, &l);
    let log = AuditLog::open(&path).unwrap();
    for i in 8..=12 {
        log.append(crate::test_support::entry(100 + i), 3000)
            .unwrap();
    }
    let p = only(&path, &[cp]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::CheckpointMismatch, 10, Some(10))
    );
}

#[test]
fn a_rewritten_and_rechained_tail_is_caught_only_by_a_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 10);
    let key = CheckpointKey::load_or_create(&d.path().join("key.pk8")).unwrap();
    let cp = checkpoint(&log, &key, 2000).unwrap();
    let mut l = lines(&path);
    l[3] = edit(&l[3], "action", json!("model.unload"), true);
    rechain(&mut l, 4);
    write_lines(&path, &l);
    assert!(verify(&path, &[]).unwrap().ok());
    let p = only(&path, &[cp]);
    assert_eq!(p.kind, ProblemKind::CheckpointMismatch);
}

#[test]
fn a_partial_last_line_is_malformed_and_the_next_append_steps_over_it() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 5);
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    let partial = lines(&path)[2][..40].to_owned();
    bytes.extend_from_slice(partial.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Malformed, 6, None));
    assert!(p.detail.contains("partial last line"), "{p}");

    let log = AuditLog::open(&path).unwrap();
    let r = log.append(crate::test_support::entry(6), 2000).unwrap();
    assert_eq!(r.seq, 6);
    let p = only(&path, &[]);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Malformed, 6, None));
    assert_eq!(lines(&path)[5], partial);
    let report = verify(&path, &[]).unwrap();
    assert_eq!((report.records, report.head.map(|h| h.0)), (6, Some(6)));
}

#[test]
fn a_record_turned_to_garbage_is_one_malformed_line_with_its_seq() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l[4] = "this is not json".to_owned();
    write_lines(&path, &l);
    let p = only(&path, &[]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Malformed, 5, Some(5))
    );
}

#[test]
fn an_inserted_line_that_is_no_record_is_malformed_only() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 10);
    let mut l = lines(&path);
    l.insert(4, r#"{"seq": "five"}"#.to_owned());
    l.insert(8, "x".repeat(MAX_LINE + 10));
    write_lines(&path, &l);
    assert_eq!(
        found(&path, &[]),
        vec![
            (ProblemKind::Malformed, 5, None),
            (ProblemKind::Malformed, 9, None),
        ]
    );
}

#[test]
fn a_checkpoint_of_a_log_now_empty_is_truncated() {
    let d = tempfile::tempdir().unwrap();
    let (path, log) = log_with(d.path(), 3);
    let key = CheckpointKey::load_or_create(&d.path().join("key.pk8")).unwrap();
    let cp = checkpoint(&log, &key, 2000).unwrap();
    std::fs::write(&path, b"").unwrap();
    let p = only(&path, &[cp]);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::Truncated, 0, Some(1))
    );
    assert!(p.detail.contains("holds no record"), "{p}");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let e = verify(&d.path().join("nope.log"), &[]).unwrap_err();
    assert!(e.to_string().contains("nope.log"), "{e}");
}

#[test]
fn the_report_serializes_for_nusactl_json() {
    let d = tempfile::tempdir().unwrap();
    let (path, _log) = log_with(d.path(), 3);
    let mut l = lines(&path);
    l.remove(1);
    write_lines(&path, &l);
    let report = verify(&path, &[]).unwrap();
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["problems"][0]["kind"], "removed");
    assert_eq!(v["problems"][0]["seq"], 2);
}
