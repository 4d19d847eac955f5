use super::*;
use crate::testutil::{pausing, v, x86, yanking};

fn entry(version: &str, variant: Option<&str>) -> BrakeEntry {
    BrakeEntry {
        version: v(version),
        variant: variant.map(|n| Variant::new(n).unwrap()),
        reason: "boot loop on Orin".into(),
        by: "bob".into(),
        at: 1_700_000_000,
    }
}

fn jetson() -> Variant {
    Variant::new(Variant::AARCH64_JETSON).unwrap()
}

#[test]
fn target_names_round_trip_and_nothing_else_is_a_brake() {
    assert_eq!(brake_target(7), "brake/7/brake.json");
    assert_eq!(brake_sequence("brake/7/brake.json"), Some(7));
    assert_eq!(brake_sequence(&brake_target(u64::MAX)), Some(u64::MAX));
    for other in [
        "x86_64-rtx/1.5.0/root.img",
        "brake/07/brake.json",
        "brake//brake.json",
        "brake/7/other.json",
        "brake/7/brake.json/x",
        "brake/-1/brake.json",
        "brake/1.0.0/brake.json",
        "brakes/7/brake.json",
        "brake/99999999999999999999999/brake.json",
    ] {
        assert_eq!(brake_sequence(other), None, "{other}");
    }
}

#[test]
fn a_pause_holds_its_version_and_variant_and_a_resume_lifts_it() {
    let mut b = Brake::default();
    assert_eq!(b.holds(v("1.5.0"), &x86()), None);
    b.pause(entry("1.5.0", Some(Variant::AARCH64_JETSON)))
        .unwrap();
    assert_eq!(b.holds(v("1.5.0"), &x86()), None, "another variant");
    assert!(matches!(
        b.holds(v("1.5.0"), &jetson()),
        Some(Refusal::Paused { reason, by, .. }) if reason == "boot loop on Orin" && by == "bob"
    ));
    b.pause(entry("1.5.0", None)).unwrap();
    assert!(b.holds(v("1.5.0"), &x86()).is_some());
    assert_eq!(b.holds(v("1.5.1"), &x86()), None, "another version");
    // Resuming one variant leaves the pause of every variant.
    b.resume(v("1.5.0"), Some(&jetson())).unwrap();
    assert!(b.holds(v("1.5.0"), &jetson()).is_some());
    b.resume(v("1.5.0"), None).unwrap();
    assert_eq!(b.holds(v("1.5.0"), &jetson()), None);
    assert!(matches!(
        b.resume(v("1.5.0"), None),
        Err(BrakeError::NotPaused { .. })
    ));
}

#[test]
fn a_yank_is_permanent_and_wins_over_a_pause() {
    let mut b = pausing("1.5.0");
    b.yank(entry("1.5.0", None)).unwrap();
    assert!(b.paused().is_empty(), "the yank replaces the pause");
    let refusal = b.holds(v("1.5.0"), &x86()).unwrap();
    assert!(matches!(refusal, Refusal::Yanked { .. }));
    assert!(refusal.to_string().contains("never installed"), "{refusal}");
    for r in [
        b.resume(v("1.5.0"), None),
        b.pause(entry("1.5.0", None)),
        b.yank(entry("1.5.0", None)),
        b.pause(entry("1.5.0", Some(Variant::X86_64_RTX))),
    ] {
        assert!(matches!(r, Err(BrakeError::Yanked { .. })), "{r:?}");
    }
    // A yank of one variant leaves the others to pause.
    let mut b = Brake::default();
    b.yank(entry("2.0.0", Some(Variant::AARCH64_JETSON)))
        .unwrap();
    b.pause(entry("2.0.0", Some(Variant::X86_64_RTX))).unwrap();
    assert!(matches!(
        b.holds(v("2.0.0"), &x86()),
        Some(Refusal::Paused { .. })
    ));
}

#[test]
fn the_brake_survives_its_published_form_and_bounds_what_it_reads() {
    let b = yanking("1.5.0");
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(serde_json::from_str::<Brake>(&json).unwrap(), b);
    // The lists may be left out.
    let empty: Brake = serde_json::from_str(r#"{"sequence": 3}"#).unwrap();
    assert_eq!(empty.sequence, 3);
    assert!(empty.paused().is_empty() && empty.yanked().is_empty());
    // Long reasons are cut; too many entries are refused.
    let long = format!(
        r#"{{"sequence":1,"paused":[{{"version":"1.0.0","reason":"{}","by":"{}","at":1}}]}}"#,
        "x".repeat(5000),
        "y".repeat(500)
    );
    let b: Brake = serde_json::from_str(&long).unwrap();
    assert_eq!(b.paused()[0].reason.len(), crate::bad::MAX_REASON_LEN);
    assert_eq!(b.paused()[0].by.len(), MAX_BY_LEN);
    let one = r#"{"version":"1.0.0","reason":"r","by":"b","at":1}"#;
    let many = format!(
        r#"{{"sequence":1,"yanked":[{}]}}"#,
        vec![one; MAX_ENTRIES + 1].join(",")
    );
    assert!(serde_json::from_str::<Brake>(&many).is_err());
}

#[test]
fn offline_the_last_verified_brake_decides_only_until_it_expires() {
    let now = 1_700_000_000;
    let stale = |brake, expires| BrakeCheck::Stale {
        brake,
        expires,
        error: "connection refused".into(),
    };
    let ver = v("1.5.0");
    assert_eq!(
        BrakeCheck::Fresh(Brake::default()).verdict(ver, &x86(), now),
        Ok(())
    );
    assert!(matches!(
        BrakeCheck::Fresh(pausing("1.5.0")).verdict(ver, &x86(), now),
        Err(Refusal::Paused { .. })
    ));
    // Unexpired and no brake: proceed.
    assert_eq!(
        stale(Brake::default(), now + 1).verdict(ver, &x86(), now),
        Ok(())
    );
    // Expired: unknown, whatever it said.
    let r = stale(Brake::default(), now).verdict(ver, &x86(), now);
    assert!(
        matches!(&r, Err(Refusal::BrakeUnknown { why, .. }) if why.contains("connection refused") && why.contains("expired")),
        "{r:?}"
    );
    // A brake the last metadata listed holds, expired or not.
    assert!(matches!(
        stale(yanking("1.5.0"), now + 1).verdict(ver, &x86(), now),
        Err(Refusal::Yanked { .. })
    ));
    assert!(matches!(
        BrakeCheck::Unknown {
            error: "no metadata".into()
        }
        .verdict(ver, &x86(), now),
        Err(Refusal::BrakeUnknown { .. })
    ));
}
