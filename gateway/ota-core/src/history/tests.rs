use super::*;
use crate::testutil::{release, v};

#[test]
fn attempts_open_and_close() {
    let mut h = History::new();
    assert!(!h.finish(Outcome::Succeeded, None, 1), "nothing open");
    h.begin(v("1.5.0"), false, 10);
    assert_eq!(h.last_attempt().unwrap().outcome, Outcome::InProgress);
    assert!(h.finish(
        Outcome::Failed {
            step: Step::Download
        },
        Some("503"),
        20
    ));
    let a = h.last_attempt().unwrap();
    assert_eq!(
        (a.started, a.ended, a.reason.as_deref()),
        (10, Some(20), Some("503"))
    );
    assert!(!h.finish(Outcome::Succeeded, None, 30), "already closed");
    // An attempt left open is closed when the next one begins.
    h.begin(v("1.5.0"), false, 40);
    h.begin(v("1.5.1"), true, 50);
    let all: Vec<_> = h.attempts().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].outcome, Outcome::Abandoned);
    assert_eq!(all[1].ended, Some(50));
    assert!(all[2].forced);
}

#[test]
fn attempts_are_bounded_oldest_dropped() {
    let mut h = History::new();
    for i in 0..(MAX_ATTEMPTS as u64 + 8) {
        h.begin(v("1.5.0"), false, i);
        h.finish(Outcome::Succeeded, None, i);
    }
    assert_eq!(h.attempts().len(), MAX_ATTEMPTS);
    assert_eq!(h.attempts().next().unwrap().started, 8);
}

#[test]
fn bad_releases_are_recorded_replaced_cleared_and_bounded() {
    let mut h = History::new();
    h.record_bad(&release("1.5.0"), "boot", 1);
    h.record_bad(&release("1.5.0"), "health", 2);
    assert_eq!(h.bad_releases().len(), 1);
    assert_eq!(h.bad(v("1.5.0")).unwrap().reason, "health");
    assert_eq!(
        h.bad(v("1.5.0")).unwrap().image_sha256,
        release("1.5.0").image_sha256
    );
    assert!(h.bad(v("1.5.1")).is_none());
    assert!(h.clear_bad(v("1.5.0")));
    assert!(!h.clear_bad(v("1.5.0")));

    for i in 0..MAX_BAD as u32 {
        h.record_bad(&release(&format!("2.{i}.0")), "x", 0);
    }
    h.record_bad(&release("1.0.0"), "x", 0);
    assert_eq!(h.bad_releases().len(), MAX_BAD);
    assert!(h.bad(v("1.0.0")).is_some(), "the newest record stays");
    assert!(h.bad(v("2.0.0")).is_none(), "the lowest version went");
    assert!(h.bad(v("2.1.0")).is_some());
}

#[test]
fn reasons_are_cut_on_a_character_boundary() {
    let mut h = History::new();
    let long = "é".repeat(MAX_REASON_LEN);
    h.record_bad(&release("1.5.0"), &long, 0);
    let kept = &h.bad(v("1.5.0")).unwrap().reason;
    assert_eq!(kept.len(), MAX_REASON_LEN);
    assert!(kept.chars().all(|c| c == 'é'));
}

#[test]
fn serde_round_trip_and_oversized_files_are_trimmed() {
    let mut h = History::new();
    h.begin(v("1.5.0"), false, 1);
    h.finish(Outcome::Failed { step: Step::Health }, Some("gate"), 2);
    h.record_bad(&release("1.5.0"), "gate", 2);
    let json = serde_json::to_string(&h).unwrap();
    assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);

    let mut big = History::new();
    for i in 0..MAX_ATTEMPTS as u64 {
        big.begin(v("1.5.0"), false, i);
    }
    for i in 0..MAX_BAD as u32 {
        big.record_bad(&release(&format!("3.{i}.0")), "x", 0);
    }
    let mut j: serde_json::Value = serde_json::to_value(&big).unwrap();
    let first_attempt = j["attempts"][0].clone();
    j["attempts"].as_array_mut().unwrap().push(first_attempt);
    let mut low = j["bad"][0].clone();
    low["version"] = "0.1.0".into();
    low["reason"] = "y".repeat(MAX_REASON_LEN * 2).into();
    j["bad"].as_array_mut().unwrap().push(low);
    let read: History = serde_json::from_value(j).unwrap();
    assert_eq!(read.attempts().len(), MAX_ATTEMPTS);
    assert_eq!(read.bad_releases().len(), MAX_BAD);
    assert!(
        read.bad(v("0.1.0")).is_none(),
        "the lowest version is trimmed"
    );
}
