//! The tokio task that drives a [`Batcher`]: it owns the queue, reads the
//! clock, starts batches on engine instances and splits their outputs back
//! to the requests. Callers hold a [`Scheduler`] handle (an actor's mailbox).
// The driver reads the clock and runs tasks: the crate's clippy.toml bans
// both for the batcher core, and this module (with its tests) is where they
// are allowed.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nusa_engine::{BatchInput, Engine, EngineError, ModelMetadata};
use nusa_spill::{QueueView, ServiceTimes};
use nusa_telemetry::ModelMetrics;
use nusa_tensor::{bytes_elements, element_count, DataType, Tensor, TensorData};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::batcher::{Batch, Batcher, Micros, Policy, Rejection, RequestInfo};

/// Where the time of one request went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub queue: Duration,
    /// From the batch's start to this request's answer (a request isolated
    /// from a failing batch includes the runs before its own).
    pub compute: Duration,
    /// Rows in the batch the request ran in.
    pub batch_rows: usize,
    /// The engine instance that ran it.
    pub instance: usize,
    /// The engine's run that answered it: the end of `compute`.
    pub engine: Duration,
}

#[derive(Debug)]
pub struct InferOutcome {
    /// This request's rows of every output, in the model's output order.
    pub outputs: Vec<Tensor>,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("the model's queue is full ({capacity} requests waiting)")]
    QueueFull { capacity: usize },
    #[error("the request has {rows} rows but the model's max_batch_size is {max}")]
    TooManyRows { rows: usize, max: usize },
    #[error("the request waited in the queue past its timeout")]
    Timeout,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the scheduler stopped")]
    Stopped,
}

struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: oneshot::Sender<Result<InferOutcome, SchedError>>,
}

enum Msg {
    Submit(Job, RequestInfo),
    /// New engines for the same instances (a TensorRT plan replacing ONNX
    /// Runtime once built): batches started later run on them.
    Replace(Vec<Arc<dyn Engine>>),
    /// An instance finished its batch of `rows`, successfully or not.
    Done {
        instance: usize,
        rows: usize,
        ok: bool,
    },
    /// The precise timer's wake-up.
    Tick,
}

enum Wake {
    Msg(Msg),
    /// The batcher's wake-up time came.
    Tick,
    /// Every handle is gone.
    Closed,
}

/// Where the driver's wake-ups come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// A thread of the scheduler's own that sleeps to the microsecond and
    /// posts the wake-up into the driver's mailbox. tokio's timer wheel has
    /// millisecond ticks, which would stretch a 200us batching window to
    /// 1-2 ms; this is the production timer.
    Precise,
    /// tokio's timer, which follows tokio's paused clock in tests.
    Tokio,
}

/// What the driver publishes for the spill decision: the queue as it
/// stands and what batches have cost.
struct Shared {
    view: QueueView,
    service: ServiceTimes,
}

/// Handle to one model version's batching queue.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Msg>,
    batching: bool,
    shared: Arc<Mutex<Shared>>,
    origin: Instant,
    max_queue_size: usize,
}

impl Scheduler {
    /// Starts the driver task on the current runtime, with the precise timer.
    pub fn spawn(
        policy: Policy,
        engines: Vec<Arc<dyn Engine>>,
        metadata: ModelMetadata,
        metrics: ModelMetrics,
    ) -> Scheduler {
        Scheduler::spawn_with(policy, engines, metadata, metrics, TimerKind::Precise)
    }

    pub fn spawn_with(
        policy: Policy,
        engines: Vec<Arc<dyn Engine>>,
        metadata: ModelMetadata,
        metrics: ModelMetrics,
        timer: TimerKind,
    ) -> Scheduler {
        let policy = Policy {
            instances: engines.len(),
            ..policy
        };
        let batching = policy.max_batch_size > 0;
        let shared = Arc::new(Mutex::new(Shared {
            view: QueueView {
                queued_rows: Vec::new(),
                running: vec![None; policy.instances.max(1)],
                max_batch_size: policy.max_batch_size,
                max_queue_delay_us: policy.max_queue_delay_us,
            },
            service: ServiceTimes::default(),
        }));
        let max_queue_size = policy.max_queue_size;
        let origin = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let timer = match timer {
            TimerKind::Precise => Some(PreciseTimer::start(tx.downgrade())),
            TimerKind::Tokio => None,
        };
        let driver = Driver {
            timer,
            batcher: Batcher::new(policy),
            engines,
            metadata: Arc::new(metadata),
            metrics,
            origin,
            done: tx.downgrade(),
            batching,
            shared: Arc::clone(&shared),
        };
        tokio::spawn(driver.run(rx));
        Scheduler {
            tx,
            batching,
            shared,
            origin,
            max_queue_size,
        }
    }

    /// Microseconds on the driver's clock (the clock of [`Scheduler::view`]).
    pub fn now(&self) -> Micros {
        self.origin.elapsed().as_micros() as Micros
    }

    /// The queue as it stands and the batch cost estimates.
    pub fn view(&self) -> (QueueView, ServiceTimes) {
        let s = self.shared.lock();
        (s.view.clone(), s.service.clone())
    }

    /// Whether a request queued now would be refused for a full queue.
    pub fn queue_full(&self) -> bool {
        self.max_queue_size > 0 && self.shared.lock().view.queued_rows.len() >= self.max_queue_size
    }

    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Moves the model onto other engines, one per instance as before.
    /// Batches already running finish on the old ones; nothing queued is
    /// lost. The batch cost estimates start over, since they were the old
    /// engines' costs.
    pub fn replace_engines(&self, engines: Vec<Arc<dyn Engine>>) -> Result<(), String> {
        let running = self.shared.lock().view.running.len();
        if engines.len() != running {
            return Err(format!(
                "{} replacement engines for {running} instances",
                engines.len()
            ));
        }
        self.tx
            .send(Msg::Replace(engines))
            .map_err(|_| "the scheduler stopped".to_string())
    }

    /// Queues one request whose inputs are already checked against the
    /// model (every input present, in the model's order, with one batch
    /// dimension of `rows` when batching).
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        priority: u64,
        timeout_us: u64,
    ) -> Result<InferOutcome, SchedError> {
        let (reply, rx) = oneshot::channel();
        let info = RequestInfo {
            rows,
            shape_key: shape_key(&inputs, self.batching),
            priority,
            timeout_us,
        };
        let job = Job {
            inputs,
            rows,
            reply,
        };
        self.tx
            .send(Msg::Submit(job, info))
            .map_err(|_| SchedError::Stopped)?;
        rx.await.map_err(|_| SchedError::Stopped)?
    }
}

/// Requests batch together only when every dimension but the first agrees.
fn shape_key(inputs: &[Tensor], batching: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in inputs {
        let dims = if batching {
            t.shape.get(1..).unwrap_or(&[])
        } else {
            &t.shape[..]
        };
        dims.hash(&mut h);
    }
    h.finish()
}

struct Driver {
    shared: Arc<Mutex<Shared>>,
    /// `None`: tokio's timer.
    timer: Option<PreciseTimer>,
    batcher: Batcher<Job>,
    engines: Vec<Arc<dyn Engine>>,
    metadata: Arc<ModelMetadata>,
    metrics: ModelMetrics,
    origin: Instant,
    // Weak, so the task ends once every Scheduler handle is gone.
    done: mpsc::WeakUnboundedSender<Msg>,
    batching: bool,
}

impl Driver {
    fn now(&self) -> Micros {
        self.origin.elapsed().as_micros() as Micros
    }

    fn instant(&self, t: Micros) -> Instant {
        self.origin + Duration::from_micros(t)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut wake_at: Option<Micros> = None;
        loop {
            let wake = match (wake_at, &self.timer) {
                (Some(t), None) => {
                    tokio::select! {
                        m = rx.recv() => m.map_or(Wake::Closed, Wake::Msg),
                        _ = tokio::time::sleep_until(self.instant(t)) => Wake::Tick,
                    }
                }
                _ => rx.recv().await.map_or(Wake::Closed, Wake::Msg),
            };
            let now = self.now();
            match wake {
                Wake::Closed => break,
                Wake::Tick | Wake::Msg(Msg::Tick) => {}
                Wake::Msg(Msg::Replace(engines)) => {
                    self.engines = engines;
                    self.shared.lock().service = ServiceTimes::default();
                }
                Wake::Msg(Msg::Submit(job, info)) => {
                    if let Err((job, why)) = self.batcher.enqueue(job, info, now) {
                        let err = match why {
                            Rejection::QueueFull { capacity } => SchedError::QueueFull { capacity },
                            Rejection::TooManyRows { rows, max } => {
                                SchedError::TooManyRows { rows, max }
                            }
                        };
                        let _ = job.reply.send(Err(err));
                    }
                }
                Wake::Msg(Msg::Done { instance, rows, ok }) => {
                    self.batcher.release(instance);
                    let mut shared = self.shared.lock();
                    let started = shared.view.running.get_mut(instance).and_then(Option::take);
                    // What an instance costs is the time it is taken, from
                    // dispatch to release, not only the engine's compute:
                    // that is what requests behind it wait for.
                    if let (true, Some((at, _))) = (ok, started) {
                        shared.service.observe(rows, now.saturating_sub(at));
                    }
                }
            }
            let poll = self.batcher.poll(now);
            for q in poll.expired {
                let _ = q.item.reply.send(Err(SchedError::Timeout));
            }
            for batch in poll.batches {
                self.shared.lock().view.running[batch.instance] = Some((now, batch.rows()));
                self.start(batch, now);
            }
            self.metrics.queue_depth.set(self.batcher.queued() as i64);
            self.shared.lock().view.queued_rows = self.batcher.queued_rows();
            wake_at = poll.wake_at;
            if let (Some(timer), Some(t)) = (&self.timer, wake_at) {
                timer.wake_at(self.instant(t).into_std());
            }
        }
    }

    fn start(&self, batch: Batch<Job>, now: Micros) {
        let engine = Arc::clone(&self.engines[batch.instance]);
        let metadata = Arc::clone(&self.metadata);
        let metrics = self.metrics.clone();
        let done = self.done.clone();
        let batching = self.batching;
        let rows = batch.rows();
        metrics.batch_size.observe(rows as f64);
        let instance = batch.instance;
        let queued: Vec<(Job, Duration)> = batch
            .items
            .into_iter()
            .map(|q| {
                let waited = Duration::from_micros(now.saturating_sub(q.enqueued));
                metrics.queue.observe(waited.as_secs_f64());
                (q.item, waited)
            })
            .collect();
        tokio::spawn(async move {
            let started = Instant::now();
            let (results, first_ok) =
                run_isolating(&*engine, &metadata, &queued, batching, &metrics).await;
            if let Some(tx) = done.upgrade() {
                let _ = tx.send(Msg::Done {
                    instance,
                    rows,
                    ok: first_ok,
                });
            }
            for ((job, waited), (result, at, engine)) in queued.into_iter().zip(results) {
                let reply = result
                    .map(|outputs| InferOutcome {
                        outputs,
                        timing: Timing {
                            queue: waited,
                            compute: at.duration_since(started),
                            batch_rows: rows,
                            instance,
                            engine,
                        },
                    })
                    .map_err(SchedError::Engine);
                let _ = job.reply.send(reply);
            }
        });
    }
}

/// One request's outputs, or why it has none.
type RequestResult = Result<Vec<Tensor>, EngineError>;

/// Runs a batch; when a batch of several requests fails, runs its halves
/// apart, and so on, so that a request the engine cannot run fails alone
/// and every other request is answered. `k` requests of which one fails
/// take about `2 log2 k` extra runs; an engine that fails everything takes
/// `2k - 1` in all, bounded by the batch size. An engine that stopped is not
/// retried. Returns each request's result with the time it was known, and
/// whether the first run succeeded (its time is then a batch cost sample).
/// Each result comes with when it was known and how long its run took.
async fn run_isolating(
    engine: &dyn Engine,
    metadata: &ModelMetadata,
    jobs: &[(Job, Duration)],
    batching: bool,
    metrics: &ModelMetrics,
) -> (Vec<(RequestResult, Instant, Duration)>, bool) {
    let mut results: Vec<Option<(RequestResult, Instant, Duration)>> =
        jobs.iter().map(|_| None).collect();
    // Ranges of `jobs` still to run, the next one last.
    let mut todo: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
    todo.push(0..jobs.len());
    let mut first_ok = None;
    while let Some(range) = todo.pop() {
        let part = &jobs[range.clone()];
        let rows = part.iter().map(|(j, _)| j.rows).sum();
        if first_ok.is_some() {
            metrics.isolation_runs.inc();
        }
        let inputs = batch_inputs(metadata, part, rows, batching);
        let started = Instant::now();
        let result = engine
            .run(inputs)
            .await
            .and_then(|outs| split_outputs(outs, part, rows, batching));
        let took = started.elapsed();
        metrics.compute.observe(took.as_secs_f64());
        first_ok.get_or_insert(result.is_ok());
        let at = Instant::now();
        match result {
            Ok(per_request) => {
                for (slot, outputs) in results[range].iter_mut().zip(per_request) {
                    *slot = Some((Ok(outputs), at, took));
                }
            }
            Err(e) if range.len() > 1 && !matches!(e, EngineError::Stopped) => {
                tracing::debug!(error = %e, requests = range.len(), "batch failed: running its halves apart");
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
            Err(e) => {
                let msg = e.to_string();
                for slot in &mut results[range] {
                    *slot = Some((Err(same_error(&e, &msg)), at, took));
                }
            }
        }
    }
    let at = Instant::now();
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| (Err(EngineError::Stopped), at, Duration::ZERO)))
        .collect();
    (results, first_ok.unwrap_or(false))
}

/// One engine error for each of several requests (errors are not `Clone`).
fn same_error(e: &EngineError, msg: &str) -> EngineError {
    match e {
        EngineError::Input(m) => EngineError::Input(m.clone()),
        EngineError::Stopped => EngineError::Stopped,
        _ => EngineError::Run(msg.to_string()),
    }
}

/// A thread that sleeps until the latest requested time and then posts a
/// [`Msg::Tick`]. A new request replaces the pending one: the driver asks
/// again after every poll, so only its latest answer matters.
struct PreciseTimer {
    tx: std::sync::mpsc::Sender<std::time::Instant>,
}

impl PreciseTimer {
    fn start(mailbox: mpsc::WeakUnboundedSender<Msg>) -> PreciseTimer {
        let (tx, rx) = std::sync::mpsc::channel::<std::time::Instant>();
        let spawned = std::thread::Builder::new()
            .name("nusa-batch-timer".into())
            .spawn(move || {
                // Ends when the driver (the only sender) is gone.
                while let Ok(mut deadline) = rx.recv() {
                    loop {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(newer) => deadline = newer,
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                match mailbox.upgrade() {
                                    Some(m) => {
                                        let _ = m.send(Msg::Tick);
                                    }
                                    None => return,
                                }
                                break;
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread the driver still runs; windows then close on
            // the next request or completion rather than on time.
            tracing::error!(error = %e, "starting the batch timer thread");
        }
        PreciseTimer { tx }
    }

    fn wake_at(&self, at: std::time::Instant) {
        let _ = self.tx.send(at);
    }
}

/// One input per model input: each request's bytes as parts, gathered by the
/// engine into its own buffer.
fn batch_inputs(
    metadata: &ModelMetadata,
    jobs: &[(Job, Duration)],
    rows: usize,
    batching: bool,
) -> Vec<BatchInput> {
    metadata
        .inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let first = &jobs[0].0.inputs[i];
            let mut shape = first.shape.clone();
            if batching {
                shape[0] = rows as i64;
            }
            BatchInput {
                name: spec.name.clone(),
                datatype: first.datatype,
                shape,
                parts: jobs.iter().map(|(j, _)| j.inputs[i].data.clone()).collect(),
            }
        })
        .collect()
}

/// Cuts every output along the batch dimension, request by request. Slices
/// of the engine's output buffer: no copy.
fn split_outputs(
    outputs: Vec<Tensor>,
    jobs: &[(Job, Duration)],
    rows: usize,
    batching: bool,
) -> Result<Vec<Vec<Tensor>>, EngineError> {
    let mut per_request: Vec<Vec<Tensor>> = jobs
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    if !batching {
        per_request[0] = outputs;
        return Ok(per_request);
    }
    for out in outputs {
        if out.shape.first().copied() != Some(rows as i64) {
            return Err(EngineError::Run(format!(
                "output '{}' has shape {:?}, expected {rows} rows",
                out.name, out.shape
            )));
        }
        let per_row = element_count(&out.shape[1..]).unwrap_or(0);
        let data = out.data.contiguous();
        let offsets = row_offsets(&out, &data, rows, per_row)?;
        let mut row = 0;
        for ((job, _), dest) in jobs.iter().zip(per_request.iter_mut()) {
            let mut shape = out.shape.clone();
            shape[0] = job.rows as i64;
            let (start, end) = (offsets[row], offsets[row + job.rows]);
            row += job.rows;
            dest.push(Tensor {
                name: out.name.clone(),
                datatype: out.datatype,
                shape,
                data: TensorData::from(data.slice(start..end)),
            });
        }
    }
    Ok(per_request)
}

/// Byte offset where each row starts, plus the end.
fn row_offsets(
    out: &Tensor,
    data: &Bytes,
    rows: usize,
    per_row: usize,
) -> Result<Vec<usize>, EngineError> {
    match out.datatype.element_size() {
        Some(size) => Ok((0..=rows).map(|r| r * per_row * size).collect()),
        None => {
            debug_assert_eq!(out.datatype, DataType::Bytes);
            let elements = bytes_elements(data).map_err(EngineError::Run)?;
            let mut offsets = Vec::with_capacity(rows + 1);
            let mut at = 0;
            for (i, e) in elements.iter().enumerate() {
                if i % per_row.max(1) == 0 {
                    offsets.push(at);
                }
                at += 4 + e.len();
            }
            offsets.push(at);
            if offsets.len() != rows + 1 {
                return Err(EngineError::Run(format!(
                    "BYTES output '{}' does not split into {rows} rows",
                    out.name
                )));
            }
            Ok(offsets)
        }
    }
}

#[cfg(test)]
mod tests;
