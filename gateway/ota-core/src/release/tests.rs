use super::*;
use crate::testutil::{release, running, v};

const JSON: &str = r#"{
    "version": "1.5.0",
    "variant": "aarch64-jetson",
    "min_version": "1.2.0",
    "image_target": "nusa/aarch64-jetson-1.5.0.img",
    "image_len": 2147483648,
    "image_sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "chunk_index_target": "nusa/aarch64-jetson-1.5.0.cix",
    "waves": [{"start": 1000, "fraction_ppm": 10000}, {"start": 2000, "fraction_ppm": 1000000}],
    "published_by": "a newer publisher's field, ignored"
}"#;

#[test]
fn metadata_parses_and_round_trips() {
    let r: ReleaseInfo = serde_json::from_str(JSON).unwrap();
    assert_eq!(r.version, v("1.5.0"));
    assert_eq!(r.variant.as_str(), Variant::AARCH64_JETSON);
    assert_eq!(r.min_version, Some(v("1.2.0")));
    assert_eq!(r.image_len, 2 << 30);
    assert_eq!(r.waves.as_slice().len(), 2);
    let again: ReleaseInfo = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(again, r);
    // Optional parts may be left out.
    let mut bare: serde_json::Value = serde_json::from_str(JSON).unwrap();
    bare.as_object_mut().unwrap().remove("waves");
    bare.as_object_mut().unwrap().remove("min_version");
    let r: ReleaseInfo = serde_json::from_value(bare).unwrap();
    assert_eq!((r.min_version, r.waves), (None, Waves::default()));
}

#[test]
fn malformed_metadata_is_refused_naming_the_field() {
    let with = |key: &str, value: serde_json::Value| {
        let mut j: serde_json::Value = serde_json::from_str(JSON).unwrap();
        j[key] = value;
        serde_json::from_value::<ReleaseInfo>(j)
            .unwrap_err()
            .to_string()
    };
    use serde_json::json;
    let cases = [
        (
            "image_target",
            json!("../etc/shadow"),
            "image_target \"../etc/shadow\"",
        ),
        ("image_target", json!("/abs.img"), "relative path"),
        ("image_target", json!(""), "1 to 255 bytes"),
        ("chunk_index_target", json!("a b"), "chunk_index_target"),
        ("image_len", json!(0), "image_len 0 is outside"),
        (
            "image_len",
            json!(crate::chunk::MAX_IMAGE_LEN + 1),
            "is outside 1..=",
        ),
        (
            "min_version",
            json!("1.6.0"),
            "min_version 1.6.0 is above its own version 1.5.0",
        ),
        ("version", json!("1.5"), "MAJOR.MINOR.PATCH"),
        ("variant", json!("X86"), "variant \"X86\""),
        ("image_sha256", json!("00"), "64 hex digits"),
        (
            "waves",
            json!([{"start": 5, "fraction_ppm": 1500000}]),
            "wave 0: fraction 1.5",
        ),
        (
            "waves",
            json!([{"start": 5, "fraction_ppm": 500000}, {"start": 5, "fraction_ppm": 600000}]),
            "wave 1: start",
        ),
        (
            "waves",
            json!([{"start": 5, "fraction_ppm": 500000}, {"start": 6, "fraction_ppm": 400000}]),
            "never shrinks",
        ),
    ];
    for (key, value, msg) in cases {
        let err = with(key, value.clone());
        assert!(err.contains(msg), "{key}={value}: {err:?} lacks {msg:?}");
    }
    let many: Vec<Wave> = (0..65)
        .map(|i| Wave {
            start: i,
            fraction: 1.0,
        })
        .collect();
    assert_eq!(Waves::new(many), Err(WavesError::TooMany(65)));
    let nan = Waves::new(vec![Wave {
        start: 1,
        fraction: f64::NAN,
    }]);
    assert!(matches!(nan, Err(WavesError::Fraction { wave: 0, .. })));
}

#[test]
fn admission_checks_variant_min_version_bad_and_the_floor() {
    let run = running("1.4.2");
    let empty = BadReleases::new();
    assert_eq!(admit(&release("1.5.0"), &run, &empty, false), Ok(()));

    let older = admit(&release("1.4.1"), &run, &empty, false).unwrap_err();
    assert_eq!(
        older,
        Refusal::NotNewer {
            version: v("1.4.1"),
            running: v("1.4.2")
        }
    );
    assert!(older
        .to_string()
        .contains("not newer than the running 1.4.2"));
    let same = admit(&release("1.4.2"), &run, &empty, false);
    assert!(matches!(same, Err(Refusal::NotNewer { .. })));
    assert_eq!(
        admit(&release("1.4.1"), &run, &empty, true),
        Ok(()),
        "operator rollback"
    );

    let mut jetson = release("1.5.0");
    jetson.variant = Variant::new(Variant::AARCH64_JETSON).unwrap();
    for force in [false, true] {
        let err = admit(&jetson, &run, &empty, force).unwrap_err();
        assert!(matches!(err, Refusal::WrongVariant { .. }));
        assert!(err
            .to_string()
            .contains("built for variant aarch64-jetson, this appliance is x86_64-rtx"));
    }

    let mut needs = release("2.0.0");
    needs.min_version = Some(v("1.5.0"));
    for force in [false, true] {
        let err = admit(&needs, &run, &empty, force).unwrap_err();
        assert_eq!(
            err,
            Refusal::BelowMinVersion {
                version: v("2.0.0"),
                min: v("1.5.0"),
                running: v("1.4.2")
            }
        );
        assert!(err
            .to_string()
            .contains("installs only over 1.5.0 or later, this appliance runs 1.4.2"));
    }
    needs.min_version = Some(v("1.4.2"));
    assert_eq!(
        admit(&needs, &run, &empty, false),
        Ok(()),
        "min_version equal to running"
    );

    let mut bad = BadReleases::new();
    let r = release("1.5.0");
    bad.record(
        r.version,
        r.image_sha256,
        "health gate: inference failed",
        10,
    );
    let err = admit(&release("1.5.0"), &run, &bad, false).unwrap_err();
    assert!(
        err.to_string()
            .contains("recorded bad (health gate: inference failed)"),
        "{err}"
    );
    assert_eq!(admit(&release("1.5.0"), &run, &bad, true), Ok(()));
    assert_eq!(admit(&release("1.5.1"), &run, &bad, false), Ok(()));
}

fn fleet() -> Vec<u32> {
    (0..10_000)
        .map(|i| seed_from_machine_id(format!("box-{i:05}").as_bytes()))
        .collect()
}

#[test]
fn wave_shares_match_the_configured_fractions_across_a_fleet() {
    let waves = Waves::new(vec![
        Wave {
            start: 100,
            fraction: 0.01,
        },
        Wave {
            start: 200,
            fraction: 0.10,
        },
        Wave {
            start: 300,
            fraction: 0.50,
        },
        Wave {
            start: 400,
            fraction: 1.0,
        },
    ])
    .unwrap();
    let seeds = fleet();
    let share = |now| {
        let n = seeds
            .iter()
            .filter(|&&s| eligible(s, &waves, now) == Eligibility::Now)
            .count();
        n as f64 / seeds.len() as f64
    };
    assert_eq!(share(99), 0.0);
    for (now, want) in [
        (100, 0.01),
        (150, 0.01),
        (200, 0.10),
        (300, 0.50),
        (400, 1.0),
        (10_000, 1.0),
    ] {
        let got = share(now);
        assert!((got - want).abs() <= 0.01, "at {now}: {got} vs {want}");
    }
    // Every box not yet covered is told when its wave starts, and is
    // covered from then on.
    for &s in &seeds {
        match eligible(s, &waves, 150) {
            Eligibility::Now => assert_eq!(eligible(s, &waves, 400), Eligibility::Now),
            Eligibility::NotBefore(t) => {
                assert!([200, 300, 400].contains(&t));
                assert_eq!(eligible(s, &waves, t - 1), Eligibility::NotBefore(t));
                assert_eq!(eligible(s, &waves, t), Eligibility::Now);
            }
            Eligibility::Never => panic!("the last wave covers everyone"),
        }
    }
}

#[test]
fn a_box_decision_is_stable_and_seeds_are_stable() {
    let waves = Waves::new(vec![Wave {
        start: 0,
        fraction: 0.3,
    }])
    .unwrap();
    let seed = seed_from_machine_id(b"3f1c9d2e5b7a4c8d9e0f1a2b3c4d5e6f");
    assert_eq!(
        seed,
        seed_from_machine_id(b"3f1c9d2e5b7a4c8d9e0f1a2b3c4d5e6f")
    );
    assert_ne!(
        seed,
        seed_from_machine_id(b"3f1c9d2e5b7a4c8d9e0f1a2b3c4d5e6e")
    );
    let first = eligible(seed, &waves, 50);
    assert!((0..1000).all(|_| eligible(seed, &waves, 50) == first));
    // A capped rollout never reaches the boxes above its last fraction.
    assert_eq!(eligible(u32::MAX, &waves, 50), Eligibility::Never);
    assert_eq!(eligible(0, &waves, 50), Eligibility::Now);
    // Before the first wave, and with no waves at all.
    assert_eq!(eligible(0, &waves, 0), Eligibility::Now);
    let later = Waves::new(vec![Wave {
        start: 10,
        fraction: 0.3,
    }])
    .unwrap();
    assert_eq!(eligible(0, &later, 9), Eligibility::NotBefore(10));
    assert_eq!(eligible(u32::MAX, &Waves::default(), 0), Eligibility::Now);
    // Fraction 0 covers nobody, 1.0 everybody.
    let zero = Waves::new(vec![Wave {
        start: 0,
        fraction: 0.0,
    }])
    .unwrap();
    assert_eq!(eligible(0, &zero, 5), Eligibility::Never);
    let all = Waves::new(vec![Wave {
        start: 0,
        fraction: 1.0,
    }])
    .unwrap();
    assert_eq!(eligible(u32::MAX, &all, 5), Eligibility::Now);
}
