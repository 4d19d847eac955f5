//! `Drift`: the thin tokio driver around the monitors.
//!
//! On the request path [`Drift::observe`] costs one atomic add; only a
//! sampled request clones its tensors (names, shapes and refcounted
//! `Bytes`, no element copied) into a bounded queue with `try_send`, and a
//! full queue drops the sample and counts it. The task owns the decoding:
//! it folds samples into the monitors and polls them on a one-second
//! timer. The queue holds at most [`QUEUE_SAMPLES`] requests, which keep
//! their body frames alive until folded.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nusa_telemetry::Metrics;
use nusa_tensor::Tensor;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::core::{
    Baseline, BaselineError, DriftConfig, Monitor, Poll, Report, Sampler, Settings, MAX_TENSORS,
};

mod clock;
mod metrics;

use clock::Clock;
use metrics::DriftMetrics;

/// Sampled requests waiting to be folded; more are dropped and counted.
pub const QUEUE_SAMPLES: usize = 64;

/// Models watched; samples of further models are left out.
pub const MAX_MODELS: usize = 256;

/// Versions watched per model: the newest ones seen. A newer version
/// replaces the oldest (and its metric series go).
pub const VERSIONS_PER_MODEL: usize = 2;

/// How often windows and baselines are checked for being due.
const TICK: Duration = Duration::from_secs(1);

/// The drift monitor of a running gateway.
pub struct Drift {
    enabled: bool,
    sampler: Sampler,
    tx: mpsc::Sender<Sample>,
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    models: Mutex<BTreeMap<String, Vec<Monitor>>>,
    metrics: Option<DriftMetrics>,
    dropped: AtomicU64,
    clock: Clock,
    /// The model bound was logged (once).
    full_logged: AtomicBool,
}

struct Sample {
    model: String,
    version: u64,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

impl Drift {
    /// The handle and its task, which the caller spawns; the task ends when
    /// the last handle is dropped. The families are registered in
    /// `metrics` when given. An out-of-range config is clamped (the config
    /// loader refuses it first with [`DriftConfig::check`]).
    pub fn new(
        config: &DriftConfig,
        metrics: Option<&Metrics>,
    ) -> (Arc<Drift>, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE_SAMPLES);
        let shared = Arc::new(Shared {
            settings: config.settings(),
            models: Mutex::new(BTreeMap::new()),
            metrics: metrics.map(DriftMetrics::new),
            dropped: AtomicU64::new(0),
            clock: Clock::new(),
            full_logged: AtomicBool::new(false),
        });
        let drift = Arc::new(Drift {
            enabled: config.enabled,
            sampler: Sampler::new(config.sample_every),
            tx,
            shared: shared.clone(),
        });
        (drift, run(shared, rx))
    }

    /// [`Drift::new`] with its task spawned on the current tokio runtime
    /// (panics outside one, as `tokio::spawn` does).
    pub fn spawn(config: &DriftConfig, metrics: Option<&Metrics>) -> Arc<Drift> {
        let (drift, task) = Drift::new(config, metrics);
        tokio::spawn(task);
        drift
    }

    /// Called once per answered request, on the request path: one atomic
    /// add decides whether it is sampled, and only then are the tensors
    /// (at most 32 each side) cloned and queued without waiting.
    pub fn observe(&self, model: &str, version: u64, inputs: &[Tensor], outputs: &[Tensor]) {
        if self.sample() {
            self.observe_sampled(model, version, inputs, outputs);
        }
    }

    /// Whether the request now on its way is one of the sampled (1 in
    /// `sample_every`): a caller that would have to copy its inputs to
    /// keep them asks first, and passes them to
    /// [`Drift::observe_sampled`] with the answer.
    pub fn sample(&self) -> bool {
        self.enabled && self.sampler.sample()
    }

    /// Queues a request [`Drift::sample`] picked, without asking again.
    pub fn observe_sampled(
        &self,
        model: &str,
        version: u64,
        inputs: &[Tensor],
        outputs: &[Tensor],
    ) {
        let sample = Sample {
            model: model.to_string(),
            version,
            inputs: inputs.iter().take(MAX_TENSORS).cloned().collect(),
            outputs: outputs.iter().take(MAX_TENSORS).cloned().collect(),
        };
        if self.tx.try_send(sample).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.shared.metrics {
                m.dropped();
            }
        }
    }

    /// Watches `version` against a published baseline from now on,
    /// replacing what was learned for it.
    pub fn set_baseline(
        &self,
        model: &str,
        version: u64,
        baseline: &Baseline,
    ) -> Result<(), BaselineError> {
        let now = self.shared.clock.now_ms();
        let monitor = Monitor::with_baseline(model, version, self.shared.settings, baseline, now)?;
        let mut models = self.shared.models.lock();
        if let Some(v) = models.get_mut(model) {
            if let Some(old) = v.iter_mut().find(|m| m.version() == version) {
                let gone = std::mem::replace(old, monitor);
                self.shared.forget(&gone);
                return Ok(());
            }
        }
        self.shared.insert(&mut models, monitor);
        Ok(())
    }

    /// The model's watched versions, oldest first; `None` when it has
    /// none.
    pub fn report(&self, model: &str) -> Option<Vec<Report>> {
        let models = self.shared.models.lock();
        let v = models.get(model)?;
        Some(v.iter().map(Monitor::report).collect())
    }

    /// Every watched version, by model name then version.
    pub fn reports(&self) -> Vec<Report> {
        let models = self.shared.models.lock();
        models.values().flatten().map(Monitor::report).collect()
    }

    /// A version's fixed baseline, to publish with it.
    pub fn baseline(&self, model: &str, version: u64) -> Option<Baseline> {
        let models = self.shared.models.lock();
        models
            .get(model)?
            .iter()
            .find(|m| m.version() == version)?
            .baseline()
    }

    /// Stops watching a model (unloaded); its series go.
    pub fn forget(&self, model: &str) {
        let gone = self.shared.models.lock().remove(model);
        for m in gone.iter().flatten() {
            self.shared.forget(m);
        }
    }

    /// Samples dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Sample>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            sample = rx.recv() => match sample {
                Some(s) => shared.fold(s),
                None => return,
            },
            _ = tick.tick() => shared.poll_all(),
        }
    }
}

impl Shared {
    fn fold(&self, s: Sample) {
        let now = self.clock.now_ms();
        let mut models = self.models.lock();
        let m = match self.monitor(&mut models, &s.model, s.version, now) {
            Some(m) => m,
            None => return,
        };
        // A sample belongs to the window it arrives in: close a due one
        // first rather than wait for the tick.
        let polled = m.poll(now);
        m.observe(&s.inputs, &s.outputs);
        if let Some(metrics) = &self.metrics {
            if polled == Poll::WindowClosed {
                metrics.window(&m.report());
            }
            metrics.sample(&s.model, s.version);
        }
    }

    fn poll_all(&self) {
        let now = self.clock.now_ms();
        let mut models = self.models.lock();
        for m in models.values_mut().flatten() {
            match m.poll(now) {
                Poll::WindowClosed => {
                    if let Some(metrics) = &self.metrics {
                        metrics.window(&m.report());
                    }
                }
                Poll::BaselineFixed => {
                    tracing::info!(model = %m.model(), version = m.version(), "drift baseline fixed");
                }
                Poll::Idle => {}
            }
        }
    }

    /// The version's monitor, made on its first sample within the bounds;
    /// `None` for a model past [`MAX_MODELS`] or a version older than the
    /// ones watched.
    fn monitor<'a>(
        &self,
        models: &'a mut BTreeMap<String, Vec<Monitor>>,
        model: &str,
        version: u64,
        now: u64,
    ) -> Option<&'a mut Monitor> {
        let known = models
            .get(model)
            .and_then(|v| v.iter().position(|m| m.version() == version));
        if known.is_none() {
            if !models.contains_key(model) && models.len() >= MAX_MODELS {
                if !self.full_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(model = %model, max = MAX_MODELS, "drift: too many models watched, samples of further models are left out");
                }
                return None;
            }
            let fresh = Monitor::new(model, version, self.settings, now);
            if !self.insert(models, fresh) {
                return None;
            }
        }
        models
            .get_mut(model)?
            .iter_mut()
            .find(|m| m.version() == version)
    }

    /// Adds a version's monitor, keeping the newest [`VERSIONS_PER_MODEL`];
    /// `false` when it is older than all of them.
    fn insert(&self, models: &mut BTreeMap<String, Vec<Monitor>>, monitor: Monitor) -> bool {
        let v = models.entry(monitor.model().to_string()).or_default();
        if v.len() >= VERSIONS_PER_MODEL && v.iter().all(|m| m.version() > monitor.version()) {
            return false;
        }
        let at = v.partition_point(|m| m.version() < monitor.version());
        v.insert(at, monitor);
        while v.len() > VERSIONS_PER_MODEL {
            let gone = v.remove(0);
            tracing::debug!(model = %gone.model(), version = gone.version(), "drift: older version no longer watched");
            self.forget(&gone);
        }
        true
    }

    fn forget(&self, m: &Monitor) {
        if let Some(metrics) = &self.metrics {
            metrics.forget(&m.report());
        }
    }
}

#[cfg(test)]
mod tests;
