//! The driver's own parts: its file, its clock, and what it answers with
//! no rollout running. Rollouts end to end (real nusad, real clients) are
//! `tests/integration/test_canary.py`; the judgement is `nusa-rollout`'s,
//! under simulated time.

use std::sync::Arc;

use nusa_engine::{Engine, EngineError, EngineFactory};
use nusa_registry::{Engines, Repository};
use nusa_rollout::{Plan, PlanSpec, Rollout};
use nusa_telemetry::Metrics;

use super::*;

/// Test double: a factory that loads nothing (the repositories here hold
/// no model).
struct NoModels;

impl EngineFactory for NoModels {
    fn model_file(&self) -> &'static str {
        "model.onnx"
    }

    fn load(&self, _: &std::path::Path) -> Result<Box<dyn Engine>, EngineError> {
        Err(EngineError::Library("test double: no engine".into()))
    }
}

async fn empty_repo(dir: &std::path::Path) -> Arc<Repository> {
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let engines = Engines {
        onnxruntime: Arc::new(NoModels),
        tensorrt: Err("test".into()),
    };
    Arc::new(
        Repository::load(
            &dir.join("models"),
            Some(dir.join("state")),
            None,
            None,
            engines,
            &Metrics::new(),
        )
        .await
        .unwrap(),
    )
}

#[test]
fn the_file_round_trips_and_a_damaged_one_is_an_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let store = store::Store::new(Some(d.path().to_path_buf()));
    assert!(store.load().unwrap().rollouts.is_empty());
    let r = Rollout::start(1, 2, Plan::default(), 1_000).unwrap();
    let mut file = store::File::default();
    file.rollouts.insert("m".into(), r.saved(2_000));
    file.ended.insert(
        "n".into(),
        Ended {
            stable: 3,
            candidate: 4,
            result: "rolled_back".into(),
            reason: Some("error rate".into()),
            at_ms: 5,
            step: 0,
            percent: 1,
            report: Some(r.report()),
        },
    );
    store.save(&file).unwrap();
    let back = store.load().unwrap();
    assert_eq!(back.rollouts["m"].candidate, 2);
    assert_eq!(back.ended["n"].reason.as_deref(), Some("error rate"));
    std::fs::write(d.path().join("canary.json"), b"{not json").unwrap();
    let e = store.load().unwrap_err();
    assert!(e.contains("canary.json"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn the_clock_maps_wall_milliseconds_onto_tokio_instants() {
    let c = Clock::new();
    let t0 = c.now_ms();
    tokio::time::advance(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(c.now_ms(), t0 + 1_500);
    assert_eq!(
        c.instant_at(t0 + 2_000),
        c.mono0 + std::time::Duration::from_millis(2_000)
    );
    // A time before the start is now, not a panic.
    assert_eq!(c.instant_at(0), c.mono0);
}

#[tokio::test]
async fn with_no_rollout_nothing_is_routed_and_operator_calls_say_so() {
    let d = tempfile::tempdir().unwrap();
    let repo = empty_repo(d.path()).await;
    let c = Canaries::new(
        Arc::clone(&repo),
        PlanSpec::default(),
        Some(d.path().join("state")),
        &Metrics::new(),
    )
    .unwrap();
    c.resume().await.unwrap();
    assert!(c.route("m", Some(b"client")).is_none());
    assert!(matches!(
        c.promote("m").await,
        Err(CanaryError::NoRollout(_))
    ));
    assert!(matches!(
        c.abort("m", None).await,
        Err(CanaryError::NoRollout(_))
    ));
    let e = c.start("m", 2, &PlanSpec::default()).await.unwrap_err();
    assert!(e.to_string().contains("'m'"), "{e}");
    assert!(c.status().is_empty());
    c.tick().await;
    c.start_pending().await;
}

#[tokio::test]
async fn a_wrong_plan_in_the_config_is_refused_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let repo = empty_repo(d.path()).await;
    let spec: PlanSpec = toml::from_str("steps = [5, 50]").unwrap();
    let e = Canaries::new(repo, spec, None, &Metrics::new())
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("rollout.steps must end at 100"),
        "{e}"
    );
}
