//! The driver under tokio's paused clock, with a test double for the engine.

use std::sync::Arc;
use std::time::Duration;

use nusa_engine::{BatchInput, Engine, EngineError, Health, ModelMetadata, RunFuture, TensorSpec};
use nusa_telemetry::ModelMetrics;
use nusa_tensor::{DataType, Tensor, TensorData};
use parking_lot::Mutex;

use super::*;

/// Test double: doubles an FP32 input `x` [-1, 2] into output `y`, taking
/// `delay` of (simulated) time per batch and recording batch sizes.
struct Doubler {
    metadata: ModelMetadata,
    delay: Duration,
    batches: Arc<Mutex<Vec<usize>>>,
    fail: bool,
    /// A batch holding this value fails whole, as ONNX Runtime fails a
    /// batch for one element it cannot take.
    poison: Option<f32>,
}

impl Doubler {
    fn new(delay_ms: u64, batches: Arc<Mutex<Vec<usize>>>) -> Doubler {
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        };
        Doubler {
            metadata: ModelMetadata {
                platform: "test-double".into(),
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
                bytes_elements: Default::default(),
            },
            delay: Duration::from_millis(delay_ms),
            batches,
            fail: false,
            poison: None,
        }
    }
}

impl Engine for Doubler {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn run(&self, inputs: Vec<BatchInput>) -> RunFuture {
        let input = inputs.into_iter().next().unwrap();
        self.batches.lock().push(input.shape[0] as usize);
        let delay = self.delay;
        let fail = self.fail;
        let poison = self.poison;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                return Err(EngineError::Run("injected failure".into()));
            }
            let mut buf = vec![0u8; input.len()];
            input.gather_into(&mut buf);
            let poisoned = buf
                .chunks_exact(4)
                .any(|c| Some(f32::from_le_bytes([c[0], c[1], c[2], c[3]])) == poison);
            if poisoned {
                return Err(EngineError::Input("poisoned element".into()));
            }
            let out: Vec<u8> = buf
                .chunks_exact(4)
                .flat_map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 2.0).to_le_bytes())
                .collect();
            Ok(vec![Tensor {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: input.shape,
                data: TensorData::from(out),
            }])
        })
    }

    fn health(&self) -> Health {
        Health::Ready
    }
}

fn rows(values: &[f32]) -> Tensor {
    Tensor {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![(values.len() / 2) as i64, 2],
        data: TensorData::from(
            values
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    }
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.data
        .contiguous()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn scheduler(policy: Policy, delay_ms: u64) -> (Scheduler, Arc<Mutex<Vec<usize>>>) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let engine = Doubler::new(delay_ms, batches.clone());
    let metadata = engine.metadata.clone();
    let s = Scheduler::spawn_with(
        policy,
        vec![Arc::new(engine)],
        metadata,
        ModelMetrics::detached(),
        TimerKind::Tokio,
    );
    (s, batches)
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_a_batch_and_get_their_own_rows() {
    let (s, batches) = scheduler(
        Policy {
            max_batch_size: 8,
            max_queue_delay_us: 5_000,
            ..Policy::default()
        },
        1,
    );
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = s.clone();
        let n = 1 + (i % 2);
        let vals: Vec<f32> = (0..n * 2).map(|k| (i * 10 + k) as f32).collect();
        tasks.push(tokio::spawn(async move {
            let out = s.infer(vec![rows(&vals)], n, 0, 0).await.unwrap();
            (vals, out)
        }));
    }
    for t in tasks {
        let (vals, out) = t.await.unwrap();
        let want: Vec<f32> = vals.iter().map(|v| v * 2.0).collect();
        assert_eq!(floats(&out.outputs[0]), want);
        assert_eq!(out.outputs[0].shape, vec![(vals.len() / 2) as i64, 2]);
        assert_eq!(out.timing.batch_rows, 6);
        // One instance ran it; the engine's run ends the request's compute.
        assert_eq!(out.timing.instance, 0);
        assert!(out.timing.engine <= out.timing.compute, "{:?}", out.timing);
    }
    assert_eq!(*batches.lock(), vec![6]);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_and_queue_full_are_reported() {
    let (s, _) = scheduler(
        Policy {
            max_batch_size: 1,
            max_queue_size: 1,
            default_timeout_us: 2_000,
            ..Policy::default()
        },
        10,
    );
    let busy = tokio::spawn({
        let s = s.clone();
        async move { s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0).await }
    });
    tokio::time::sleep(Duration::from_micros(10)).await;
    let waiting = tokio::spawn({
        let s = s.clone();
        async move { s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0).await }
    });
    tokio::time::sleep(Duration::from_micros(10)).await;
    let full = s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0).await;
    assert!(
        matches!(full, Err(SchedError::QueueFull { capacity: 1 })),
        "{full:?}"
    );
    assert!(matches!(waiting.await.unwrap(), Err(SchedError::Timeout)));
    assert!(busy.await.unwrap().is_ok());
    let too_big = s.infer(vec![rows(&[1.0, 2.0, 3.0, 4.0])], 2, 0, 0).await;
    assert!(matches!(
        too_big,
        Err(SchedError::TooManyRows { rows: 2, max: 1 })
    ));
}

#[tokio::test(start_paused = true)]
async fn engine_failure_reaches_every_request_and_the_queue_goes_on() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let mut engine = Doubler::new(1, batches.clone());
    engine.fail = true;
    let metadata = engine.metadata.clone();
    let s = Scheduler::spawn_with(
        Policy {
            max_batch_size: 4,
            max_queue_delay_us: 1_000,
            ..Policy::default()
        },
        vec![Arc::new(engine)],
        metadata,
        ModelMetrics::detached(),
        TimerKind::Tokio,
    );
    let (a, b) = tokio::join!(
        s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0),
        s.infer(vec![rows(&[3.0, 4.0])], 1, 0, 0)
    );
    assert!(matches!(a, Err(SchedError::Engine(_))));
    assert!(matches!(b, Err(SchedError::Engine(_))));
    let c = s.infer(vec![rows(&[3.0, 4.0])], 1, 0, 0).await;
    assert!(
        matches!(c, Err(SchedError::Engine(_))),
        "next batch still runs"
    );
    // The failed pair was run apart (each failed alone too), then c.
    assert_eq!(*batches.lock(), vec![2, 1, 1, 1]);
}

/// One request the engine cannot run, in a batch with others: it fails
/// alone (with the engine's input error, a 400), and every other request of
/// the batch gets its own answer.
#[tokio::test(start_paused = true)]
async fn a_failing_request_fails_alone_and_its_batch_is_answered() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let mut engine = Doubler::new(1, batches.clone());
    engine.poison = Some(-1.0);
    let metadata = engine.metadata.clone();
    let metrics = ModelMetrics::detached();
    let s = Scheduler::spawn_with(
        Policy {
            max_batch_size: 16,
            max_queue_delay_us: 1_000,
            ..Policy::default()
        },
        vec![Arc::new(engine)],
        metadata,
        metrics.clone(),
        TimerKind::Tokio,
    );
    // Eight requests of 1 or 2 rows; the third and the sixth are poisoned.
    let poisoned = [2usize, 5];
    let mut tasks = Vec::new();
    for i in 0..8usize {
        let s = s.clone();
        let n = 1 + i % 2;
        let mut vals: Vec<f32> = (0..n * 2).map(|k| (i * 10 + k) as f32).collect();
        if poisoned.contains(&i) {
            vals[n * 2 - 1] = -1.0;
        }
        tasks.push(tokio::spawn(async move {
            (vals.clone(), s.infer(vec![rows(&vals)], n, 0, 0).await)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (vals, out) = t.await.unwrap();
        if poisoned.contains(&i) {
            assert!(
                matches!(out, Err(SchedError::Engine(EngineError::Input(_)))),
                "request {i}: {out:?}"
            );
        } else {
            let out = out.unwrap_or_else(|e| panic!("request {i}: {e}"));
            let want: Vec<f32> = vals.iter().map(|v| v * 2.0).collect();
            assert_eq!(floats(&out.outputs[0]), want, "request {i}");
            assert_eq!(out.outputs[0].shape, vec![(vals.len() / 2) as i64, 2]);
        }
    }
    // Rows per run: all 8 requests (12 rows) fail; [0..4) fails; [0..2)
    // ok; [2..4) fails; [2] fails alone; [3] ok; [4..8) fails; [4..6)
    // fails; [4] ok; [5] fails alone; [6..8) ok.
    assert_eq!(*batches.lock(), vec![12, 6, 3, 3, 1, 2, 6, 3, 1, 2, 3]);
    assert_eq!(metrics.isolation_runs.get(), 10);
    // The queue goes on, and a batch without the poison runs whole.
    let out = s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0).await.unwrap();
    assert_eq!(floats(&out.outputs[0]), vec![2.0, 4.0]);
}

/// The production timer on the real clock: a lone request in a batching
/// window is dispatched when the window closes (it would hang otherwise).
#[tokio::test]
async fn precise_timer_closes_the_window() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let engine = Doubler::new(0, batches.clone());
    let metadata = engine.metadata.clone();
    let s = Scheduler::spawn(
        Policy {
            max_batch_size: 8,
            max_queue_delay_us: 300,
            ..Policy::default()
        },
        vec![Arc::new(engine)],
        metadata,
        ModelMetrics::detached(),
    );
    for _ in 0..3 {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0),
        )
        .await
        .expect("the window never closed")
        .unwrap();
        assert_eq!(floats(&out.outputs[0]), vec![2.0, 4.0]);
    }
    assert_eq!(*batches.lock(), vec![1, 1, 1]);
}

/// The view the spill decision reads: queued rows while the instance is
/// busy, the running batch, and service times learnt from finished batches.
#[tokio::test(start_paused = true)]
async fn the_published_view_follows_the_queue_and_learns_service_times() {
    let (s, _) = scheduler(
        Policy {
            max_batch_size: 2,
            max_queue_size: 8,
            ..Policy::default()
        },
        10,
    );
    let (view, service) = s.view();
    assert!(view.queued_rows.is_empty() && view.running == vec![None]);
    assert_eq!(service.estimate(1), None);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.infer(vec![rows(&[1.0, 2.0])], 1, 0, 0).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let (view, _) = s.view();
    // With no queue delay the first request ran alone at once.
    assert_eq!(
        view.running[0].map(|(_, r)| r),
        Some(1),
        "a batch of 1 runs"
    );
    assert_eq!(view.queued_rows, vec![1, 1, 1, 1], "four wait");
    assert!(!s.queue_full());
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (view, service) = s.view();
    assert!(view.queued_rows.is_empty() && view.running == vec![None]);
    // The test double takes 10 ms of (paused, exact) time per batch.
    assert_eq!(service.estimate(2), Some(10_000));
}

#[tokio::test(start_paused = true)]
async fn replaced_engines_take_later_batches_and_nothing_queued_is_lost() {
    let (s, old_batches) = scheduler(
        Policy {
            max_batch_size: 4,
            max_queue_delay_us: 0,
            ..Policy::default()
        },
        10,
    );
    // One batch running on the old engine, two requests queued behind it.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.infer(vec![rows(&[i as f32, 1.0])], 1, 0, 0).await
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let new_batches = Arc::new(Mutex::new(Vec::new()));
    let new = Doubler::new(1, new_batches.clone());
    assert!(s
        .replace_engines(vec![
            Arc::new(new),
            Arc::new(Doubler::new(1, new_batches.clone()))
        ])
        .unwrap_err()
        .contains("2 replacement engines for 1 instances"));
    s.replace_engines(vec![Arc::new(Doubler::new(1, new_batches.clone()))])
        .unwrap();
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.unwrap().unwrap();
        assert_eq!(floats(&out.outputs[0]), vec![i as f32 * 2.0, 2.0]);
    }
    assert_eq!(*old_batches.lock(), vec![1], "the running batch stayed");
    assert_eq!(*new_batches.lock(), vec![2], "the queued ones moved");
}
