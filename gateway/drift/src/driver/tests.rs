use std::time::Duration;

use nusa_telemetry::Metrics;
use nusa_tensor::{DataType, Tensor};
use tokio::time::sleep;

use super::*;
use crate::core::{Kind, Phase, TensorBaseline, WindowStatus};

fn fp32(name: &str, shape: &[i64], values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: shape.to_vec(),
        data: values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }
}

use crate::testutil::Normal;

/// A client's request to a 3-class classifier: 16 features, the answer's
/// logits `[-m, 0, m]` for their mean `m`.
fn request(g: &mut Normal, shift: f64) -> (Vec<Tensor>, Vec<Tensor>) {
    let x: Vec<f32> = (0..16).map(|_| (g.next() + shift) as f32).collect();
    let m = x.iter().sum::<f32>() / 16.0;
    (
        vec![fp32("x", &[1, 16], &x)],
        vec![fp32("probs", &[1, 3], &[-m, 0.0, m])],
    )
}

fn config() -> DriftConfig {
    DriftConfig {
        sample_every: 1,
        window_s: 60,
        baseline_s: 600,
        baseline_min_samples: 500,
        min_window_samples: 50,
        ..DriftConfig::default()
    }
}

/// The value of the first series starting with `prefix`.
fn series(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn shifted_inputs_cross_the_threshold() {
    let metrics = Metrics::new();
    let drift = Drift::spawn(&config(), Some(&metrics));
    let mut g = Normal(42);
    // The version's first request at 0 s starts its baseline (600 s, so
    // windows end on whole minutes); then 100 requests a minute, 0.15 s off
    // the minute so that window ends (closed by the one-second tick) fall
    // between requests and each window holds one minute's requests.
    let (i, o) = request(&mut g, 0.0);
    drift.observe("clf", 7, &i, &o);
    sleep(Duration::from_millis(150)).await;
    async fn minute(drift: &Drift, g: &mut Normal, shift: f64) {
        for _ in 0..100 {
            let (i, o) = request(g, shift);
            drift.observe("clf", 7, &i, &o);
            sleep(Duration::from_millis(600)).await;
        }
    }
    for _ in 0..9 {
        minute(&drift, &mut g, 0.0).await;
    }
    let r = &drift.report("clf").unwrap()[0];
    assert_eq!(r.phase, Phase::Baseline);
    minute(&drift, &mut g, 0.0).await;
    let r = &drift.report("clf").unwrap()[0];
    assert_eq!(r.phase, Phase::Watching, "fixed at 600 s");
    assert_eq!(r.baseline_samples, 1001);

    let psi_of = |drift: &Drift, kind: Kind| {
        let r = &drift.report("clf").unwrap()[0];
        r.tensors.iter().find(|t| t.kind == kind).unwrap().clone()
    };
    for w in 1..=3 {
        minute(&drift, &mut g, 0.0).await;
        assert_eq!(drift.report("clf").unwrap()[0].windows, w);
        for kind in [Kind::Input, Kind::Output, Kind::Argmax] {
            let t = psi_of(&drift, kind);
            assert_eq!(t.status, WindowStatus::Judged);
            assert_eq!(t.samples, 100);
            assert!(t.psi.unwrap() < 0.1, "window {w}, unshifted: {t:?}");
            assert!(!t.drifted);
        }
    }
    let text = metrics.encode();
    let input = r#"nusa_model_drift_psi{model="clf",version="7",tensor="x",kind="input"}"#;
    assert!(series(&text, input).unwrap() < 0.1, "{text}");

    // The client's inputs move up by two standard deviations.
    for w in 4..=5 {
        minute(&drift, &mut g, 2.0).await;
        for kind in [Kind::Input, Kind::Argmax] {
            let t = psi_of(&drift, kind);
            assert!(t.psi.unwrap() > 0.25, "window {w}, shifted: {t:?}");
            assert!(t.drifted);
        }
        let x = psi_of(&drift, Kind::Input);
        assert!((x.current_mean.unwrap() - 2.0).abs() < 0.2, "{x:?}");
        assert!(x.baseline_mean.unwrap().abs() < 0.1, "{x:?}");
    }
    let text = metrics.encode();
    assert!(series(&text, input).unwrap() > 0.25, "{text}");
    let drifted = r#"nusa_model_drift_drifted{model="clf",version="7",tensor="x",kind="input"}"#;
    assert_eq!(series(&text, drifted), Some(1.0), "{text}");
    let argmax = r#"nusa_model_drift_psi{model="clf",version="7",tensor="probs",kind="argmax"}"#;
    assert!(series(&text, argmax).unwrap() > 0.25, "{text}");
    assert_eq!(
        series(
            &text,
            r#"nusa_model_drift_samples_total{model="clf",version="7"}"#
        ),
        Some(1501.0)
    );

    // Back to normal: the next window is below the threshold again; the
    // worst stays.
    minute(&drift, &mut g, 0.0).await;
    let t = psi_of(&drift, Kind::Input);
    assert!(t.psi.unwrap() < 0.1 && !t.drifted, "{t:?}");
    assert!(t.worst_psi.unwrap() > 0.25);
    assert_eq!(drift.dropped(), 0);
    assert!(!drift.reports()[0].drifted());
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts() {
    let metrics = Metrics::new();
    let drift = Drift::spawn(&config(), Some(&metrics));
    let mut g = Normal(1);
    // No await in between: the task cannot drain the queue.
    for _ in 0..100 {
        let (i, o) = request(&mut g, 0.0);
        drift.observe("clf", 1, &i, &o);
    }
    assert_eq!(drift.dropped(), 100 - QUEUE_SAMPLES as u64);
    sleep(Duration::from_millis(10)).await;
    assert_eq!(
        drift.report("clf").unwrap()[0].samples,
        QUEUE_SAMPLES as u64
    );
    let text = metrics.encode();
    assert_eq!(
        series(&text, "nusa_model_drift_samples_dropped_total"),
        Some(36.0),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_request_in_n_is_sampled() {
    let drift = Drift::spawn(
        &DriftConfig {
            sample_every: 16,
            ..config()
        },
        None,
    );
    let mut g = Normal(1);
    for _ in 0..33 {
        let (i, o) = request(&mut g, 0.0);
        drift.observe("clf", 1, &i, &o);
        tokio::task::yield_now().await;
    }
    sleep(Duration::from_millis(10)).await;
    assert_eq!(drift.report("clf").unwrap()[0].samples, 3);
    let off = Drift::spawn(
        &DriftConfig {
            enabled: false,
            ..config()
        },
        None,
    );
    let (i, o) = request(&mut g, 0.0);
    off.observe("clf", 1, &i, &o);
    sleep(Duration::from_millis(10)).await;
    assert!(off.report("clf").is_none());
    assert!(off.reports().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_newest_two_versions_are_watched() {
    let metrics = Metrics::new();
    let drift = Drift::spawn(&config(), Some(&metrics));
    let mut g = Normal(1);
    for v in [1, 2, 3, 1] {
        let (i, o) = request(&mut g, 0.0);
        drift.observe("clf", v, &i, &o);
        sleep(Duration::from_millis(10)).await;
    }
    let versions: Vec<u64> = drift
        .report("clf")
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, vec![2, 3]);
    let text = metrics.encode();
    assert!(!text.contains(r#"version="1""#), "{text}");
    assert!(text.contains(r#"nusa_model_drift_samples_total{model="clf",version="3"} 1"#));
    drift.forget("clf");
    assert!(drift.report("clf").is_none());
    assert!(!metrics.encode().contains(r#"model="clf""#));
}

#[tokio::test(start_paused = true)]
async fn a_published_baseline_is_watched_from_the_start() {
    let drift = Drift::spawn(&config(), None);
    let baseline = Baseline {
        tensors: vec![TensorBaseline {
            name: "x".into(),
            kind: Kind::Input,
            edges: vec![-1.0, 0.0, 1.0],
            proportions: vec![0.16, 0.34, 0.34, 0.16],
            nan: 0.0,
            other: 0.0,
            mean: Some(0.0),
            std: Some(1.0),
            samples: 0,
        }],
    };
    drift.set_baseline("clf", 4, &baseline).unwrap();
    assert_eq!(drift.report("clf").unwrap()[0].phase, Phase::Watching);
    let mut g = Normal(8);
    sleep(Duration::from_millis(300)).await;
    for _ in 0..100 {
        let (i, o) = request(&mut g, 0.0);
        drift.observe("clf", 4, &i, &o);
        sleep(Duration::from_millis(600)).await;
    }
    let r = &drift.report("clf").unwrap()[0];
    assert_eq!(r.windows, 1);
    assert_eq!(r.tensors.len(), 1, "probs is not in the baseline");
    let x = &r.tensors[0];
    assert!(x.psi.unwrap() < 0.1, "{x:?}");
    // Its proportions already sum to 1, so it comes back as given.
    assert_eq!(drift.baseline("clf", 4).unwrap(), baseline);
    let bad = Baseline {
        tensors: vec![TensorBaseline {
            edges: vec![1.0, 0.0],
            ..baseline.tensors[0].clone()
        }],
    };
    assert!(drift.set_baseline("clf", 5, &bad).is_err());
}

#[tokio::test(start_paused = true)]
async fn the_task_ends_with_the_last_handle() {
    let (drift, task) = Drift::new(&config(), None);
    let task = tokio::spawn(task);
    sleep(Duration::from_secs(5)).await;
    assert!(!task.is_finished());
    drop(drift);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the task ended")
        .unwrap();
}
