use super::*;

fn err(plan: Plan) -> String {
    match plan.validate() {
        Ok(()) => panic!("{plan:?} validated"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn default_is_valid_and_as_documented() {
    let p = Plan::default();
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(p.steps, [1, 5, 25, 50, 100]);
    assert_eq!((p.step_s, p.check_s), (300, 30));
    assert_eq!(p.split, Split::Key);
    assert!(!p.shadow);
    assert_eq!(
        (p.shadow_sample, p.shadow_atol, p.shadow_rtol),
        (0.1, 1e-4, 1e-3)
    );
    assert_eq!((p.max_error_rate, p.max_p99_ratio), (0.01, 1.5));
    assert_eq!(p.min_agreement, 0.99);
    assert_eq!((p.min_requests, p.max_failed_checks), (100, 2));
}

#[test]
fn every_validation_error_names_its_key() {
    let d = Plan::default;
    let cases: Vec<(Plan, &str)> = vec![
        (
            Plan {
                steps: vec![],
                ..d()
            },
            "rollout.steps must not be empty",
        ),
        (
            Plan {
                steps: vec![0, 50, 100],
                ..d()
            },
            "rollout.steps may start at 0 only in shadow mode (rollout.shadow = true): without it the candidate would get no request to judge (got [0, 50, 100])",
        ),
        (
            Plan {
                steps: vec![0, 0, 100],
                shadow: true,
                ..d()
            },
            "rollout.steps must each be between 1 and 100 (got [0, 0, 100])",
        ),
        (
            Plan {
                steps: vec![50, 101],
                ..d()
            },
            "rollout.steps must each be between 1 and 100 (got [50, 101])",
        ),
        (
            Plan {
                steps: vec![5, 5, 100],
                ..d()
            },
            "rollout.steps must be strictly increasing (got [5, 5, 100])",
        ),
        (
            Plan {
                steps: vec![50, 10, 100],
                ..d()
            },
            "rollout.steps must be strictly increasing (got [50, 10, 100])",
        ),
        (
            Plan {
                steps: vec![1, 5, 50],
                ..d()
            },
            "rollout.steps must end at 100 (got [1, 5, 50])",
        ),
        (
            Plan {
                step_s: 0,
                check_s: 0,
                ..d()
            },
            "rollout.step_s must be at least 1 (got 0)",
        ),
        (
            Plan { check_s: 0, ..d() },
            "rollout.check_s must be between 1 and step_s (300) (got 0)",
        ),
        (
            Plan {
                check_s: 301,
                ..d()
            },
            "rollout.check_s must be between 1 and step_s (300) (got 301)",
        ),
        (
            Plan {
                shadow_sample: 0.0,
                ..d()
            },
            "rollout.shadow_sample must be above 0 and at most 1 (got 0)",
        ),
        (
            Plan {
                shadow_sample: 1.5,
                ..d()
            },
            "rollout.shadow_sample must be above 0 and at most 1 (got 1.5)",
        ),
        (
            Plan {
                shadow_sample: f64::NAN,
                ..d()
            },
            "rollout.shadow_sample must be above 0 and at most 1 (got NaN)",
        ),
        (
            Plan {
                shadow_atol: -1e-4,
                ..d()
            },
            "rollout.shadow_atol must be a finite number >= 0 (got -0.0001)",
        ),
        (
            Plan {
                shadow_rtol: f64::INFINITY,
                ..d()
            },
            "rollout.shadow_rtol must be a finite number >= 0 (got inf)",
        ),
        (
            Plan {
                max_error_rate: 1.01,
                ..d()
            },
            "rollout.max_error_rate must be between 0 and 1 (got 1.01)",
        ),
        (
            Plan {
                max_error_rate: -0.1,
                ..d()
            },
            "rollout.max_error_rate must be between 0 and 1 (got -0.1)",
        ),
        (
            Plan {
                max_p99_ratio: 0.9,
                ..d()
            },
            "rollout.max_p99_ratio must be a finite number >= 1 (got 0.9)",
        ),
        (
            Plan {
                max_p99_ratio: f64::NAN,
                ..d()
            },
            "rollout.max_p99_ratio must be a finite number >= 1 (got NaN)",
        ),
        (
            Plan {
                min_agreement: 2.0,
                ..d()
            },
            "rollout.min_agreement must be between 0 and 1 (got 2)",
        ),
        (
            Plan {
                min_requests: 0,
                ..d()
            },
            "rollout.min_requests must be at least 1 (got 0)",
        ),
        (
            Plan {
                max_failed_checks: 0,
                ..d()
            },
            "rollout.max_failed_checks must be at least 1 (got 0)",
        ),
    ];
    for (plan, want) in cases {
        assert_eq!(err(plan), want);
    }
}

#[test]
fn edges_that_validate() {
    for plan in [
        Plan {
            steps: vec![0, 50, 100],
            shadow: true,
            ..Plan::default()
        },
        Plan {
            steps: vec![100],
            step_s: 1,
            check_s: 1,
            ..Plan::default()
        },
        Plan {
            shadow_sample: 1.0,
            shadow_atol: 0.0,
            shadow_rtol: 0.0,
            max_error_rate: 0.0,
            max_p99_ratio: 1.0,
            min_agreement: 1.0,
            min_requests: 1,
            max_failed_checks: 1,
            ..Plan::default()
        },
    ] {
        assert_eq!(plan.validate(), Ok(()), "{plan:?}");
    }
}

#[test]
fn spec_layers_over_plan() {
    // `[rollout]` of a model's config.toml.
    let spec: PlanSpec = toml::from_str(
        r#"
        steps = [10, 100]
        split = "request"
        shadow = true
        "#,
    )
    .expect("a valid spec");
    let plan = Plan::default().with(&spec).expect("valid");
    assert_eq!(plan.steps, [10, 100]);
    assert_eq!(plan.split, Split::Request);
    assert!(plan.shadow);
    // Unset keys keep the plan's values.
    assert_eq!(plan.step_s, 300);
    assert_eq!(plan.min_requests, 100);

    let bad = PlanSpec {
        check_s: Some(600),
        ..PlanSpec::default()
    };
    assert_eq!(
        Plan::default().with(&bad).map_err(|e| e.to_string()),
        Err("rollout.check_s must be between 1 and step_s (300) (got 600)".into())
    );
}

#[test]
fn specs_combine_before_validation() {
    // The model raises check_s, the CLI raises step_s: only together valid.
    let model = PlanSpec {
        check_s: Some(600),
        min_requests: Some(50),
        ..PlanSpec::default()
    };
    let cli = PlanSpec {
        step_s: Some(1200),
        min_requests: Some(20),
        ..PlanSpec::default()
    };
    let plan = Plan::default()
        .with(&model.then(&cli))
        .expect("valid together");
    assert_eq!(
        (plan.step_s, plan.check_s, plan.min_requests),
        (1200, 600, 20)
    );
    assert!(Plan::default().with(&model).is_err());
}

#[test]
fn spec_rejects_unknown_keys_and_wrong_split() {
    let e = serde_json::from_str::<PlanSpec>(r#"{"step": 5}"#)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("unknown field `step`"), "{e}");
    assert!(serde_json::from_str::<PlanSpec>(r#"{"split": "Key"}"#).is_err());
    assert_eq!(
        serde_json::from_str::<PlanSpec>("{}").ok(),
        Some(PlanSpec::default())
    );
}

#[test]
fn plan_and_spec_round_trip() {
    let plan = Plan {
        split: Split::Request,
        shadow: true,
        ..Plan::default()
    };
    let json = serde_json::to_string(&plan).unwrap_or_default();
    assert!(json.contains(r#""split":"request""#), "{json}");
    assert_eq!(serde_json::from_str::<Plan>(&json).ok(), Some(plan));
    // A spec writes only what it sets.
    let spec = PlanSpec {
        step_s: Some(60),
        ..PlanSpec::default()
    };
    assert_eq!(
        serde_json::to_string(&spec).unwrap_or_default(),
        r#"{"step_s":60}"#
    );
}
