//! Where a request is answered: from the edge cache, by the local queue, or
//! by a regional cloud endpoint. The thin driver around the `nusa-spill`
//! core: it reads the scheduler's published queue, asks the core, sends,
//! and reports outcomes back; and around `nusa-cache`.
//!
//! Order for one request: cache lookup (unless `no-cache`/`no-store` or the
//! model's cache is off) with concurrent identical misses coalesced; on a
//! miss, the spill decision; local run, or a region with bounded tries on
//! other regions; a region's answer is checked against the model's outputs
//! before it is returned or cached.
//!
//! Residency: each request carries the set of regions it may go to
//! ([`RegionSet`], built in `residency.rs` from the regions' countries and
//! the model's and caller's rules), and the core never sends it outside.

mod metrics;
mod residency;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nusa_cache::{Cache, CacheKey, EntryPolicy, Mode, Served};
use nusa_engine::ModelMetadata;
use nusa_engine_remote::{check_outputs, RegionClient};
use nusa_proto::{ErrorKind, ProtoError};
use nusa_registry::{ModelConfig, ModelVersion, Placement};
use nusa_sched::SchedError;
use nusa_spill::{predict_wait, Decision, Micros, Reason, RegionSet, RequestFacts, Spill};
use nusa_tensor::Tensor;
use nusa_trace::{KeyValue, Phases, TraceContext};
use parking_lot::Mutex;
use tracing::Instrument;

pub use metrics::DispatchMetrics;

/// How an answer was produced, for the `nusa-served-by` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServedBy {
    Cache,
    /// Computed here; the request's share of its batch's engine time
    /// (the batch's compute time), for the canary's judgement.
    Local {
        compute_us: u64,
        /// Rows in the batch it ran in (its share of the compute is its
        /// rows over these).
        batch_rows: usize,
    },
    Cloud(String),
}

/// An answer, and where the request's time went here.
#[derive(Debug)]
pub struct Answer {
    /// The requested outputs, in the model's order.
    pub outputs: Vec<Tensor>,
    pub served_by: ServedBy,
    /// For `Server-Timing`: the cache lookup, the queue wait and compute
    /// of a local run, the region calls; measured once, also the spans'.
    pub phases: Phases,
}

impl ServedBy {
    pub fn header(&self) -> String {
        match self {
            ServedBy::Cache => "cache".into(),
            ServedBy::Local { .. } => "local".into(),
            ServedBy::Cloud(r) => format!("cloud:{r}"),
        }
    }
}

pub struct DispatchConfig {
    pub spill_enabled: bool,
    pub max_tries: usize,
    /// Client prefixes whose requests never leave the box.
    pub local_only_clients: Vec<ipnet::IpNet>,
}

/// One inference request, checked against the model.
pub struct Job<'a> {
    pub model: &'a str,
    pub version: &'a Arc<ModelVersion>,
    pub config: &'a ModelConfig,
    /// In the model's input order.
    pub inputs: Vec<Tensor>,
    pub rows: usize,
    /// Output names to answer with, in the model's order; `None`: all.
    pub outputs: Option<Vec<String>>,
    pub priority: u64,
    pub timeout_us: u64,
    /// The request's own `residency: "local"`.
    pub pinned: bool,
    /// The caller's residency rule (from its API key): `["local"]`,
    /// `["any"]` or country codes, as a model's; `None`: no caller
    /// restriction. Intersected with the model's.
    pub caller_residency: Option<&'a [String]>,
    /// false: the caller's requests never leave the box, as if pinned.
    pub caller_may_spill: bool,
    /// The caller's key name, for the spend budgets' spill guard.
    pub caller: Option<&'a str>,
    pub peer: Option<IpAddr>,
    /// The caller's W3C trace context, sent on to a region as it came
    /// when tracing is off (with tracing on, the region call's own span
    /// is sent instead, in the same trace).
    pub trace: Option<TraceContext>,
    pub cache_control: Option<String>,
}

pub struct Dispatcher {
    cache: Option<Cache>,
    spill: Mutex<Spill>,
    regions: Vec<Arc<RegionClient>>,
    /// The regions' jurisdictions, read once from the core's regions so
    /// that a request's allowed set is built without taking its lock.
    countries: residency::Countries,
    config: DispatchConfig,
    metrics: DispatchMetrics,
    origin: Instant,
    /// Whether a caller (key name) may still spill to a region (by name)
    /// today: the spend budgets' `stop-spill` action.
    spill_guard: std::sync::OnceLock<SpillGuard>,
    /// By region index: what the log last said of its probes.
    probe_logs: Mutex<Vec<ProbeLog>>,
}

/// `(caller key name, region name) -> may spill there`.
pub type SpillGuard = Arc<dyn Fn(Option<&str>, &str) -> bool + Send + Sync>;

impl Dispatcher {
    /// Empties the edge cache (both tiers); `false` when there is none.
    pub async fn purge_cache(&self) -> bool {
        match &self.cache {
            Some(c) => {
                c.purge().await;
                true
            }
            None => false,
        }
    }

    /// Whether answers are cached here (`cache.memory_bytes > 0`).
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// Consults `guard` for every region a request may go to (spend
    /// budgets); without one, residency alone decides.
    pub fn set_spill_guard(&self, guard: SpillGuard) {
        let _ = self.spill_guard.set(guard);
    }

    /// `regions` and `spill.regions` are index-aligned; each region's
    /// country is `spill.regions[i].country`.
    pub fn new(
        cache: Option<Cache>,
        spill: Spill,
        regions: Vec<Arc<RegionClient>>,
        config: DispatchConfig,
        metrics: DispatchMetrics,
    ) -> Dispatcher {
        let regions_len = regions.len();
        Dispatcher {
            cache,
            countries: residency::Countries::new(spill.regions.iter().map(|r| r.country.clone())),
            spill: Mutex::new(spill),
            regions,
            config,
            metrics,
            origin: Instant::now(),
            spill_guard: std::sync::OnceLock::new(),
            probe_logs: Mutex::new((0..regions_len).map(|_| ProbeLog::default()).collect()),
        }
    }

    fn now(&self) -> Micros {
        self.origin.elapsed().as_micros() as Micros
    }

    /// Answers one request; the outputs are the requested ones in the
    /// model's order.
    pub async fn infer(&self, job: Job<'_>) -> Result<Answer, ProtoError> {
        let cache = match (&self.cache, job.config.cache.enabled) {
            (Some(c), true) => Some(c),
            _ => None,
        };
        let mode = cache_mode(job.cache_control.as_deref());
        let Some(cache) = cache.filter(|_| mode != Mode::NoStore) else {
            return self.compute(&job).await;
        };
        let names: Option<Vec<&str>> = job
            .outputs
            .as_ref()
            .map(|o| o.iter().map(String::as_str).collect());
        let key = CacheKey::compute(
            job.model,
            job.version.version,
            &job.version.digest.0,
            names.as_deref(),
            &job.inputs,
        );
        let policy = EntryPolicy {
            ttl: Duration::from_secs(job.config.cache.ttl_s),
            max_entry_bytes: job.config.cache.max_entry_bytes,
        };
        let looking = Instant::now();
        let computed: Mutex<Option<Computed>> = Mutex::new(None);
        let (outputs, how) = cache
            .get_or_compute(job.model, key, &policy, mode, || {
                *computed.lock() = Some(Computed {
                    started: Instant::now(),
                    answer: None,
                });
                async {
                    let a = self.compute(&job).await?;
                    if let Some(c) = computed.lock().as_mut() {
                        c.answer = Some((a.served_by, a.phases));
                    }
                    Ok::<_, ProtoError>(a.outputs)
                }
            })
            .await?;
        let (looked, computed) = match computed.into_inner() {
            Some(c) => (c.started, c.answer),
            None => (Instant::now(), None),
        };
        let (served_by, mut phases) = match how {
            Served::Computed => computed.unwrap_or((
                ServedBy::Local {
                    compute_us: 0,
                    batch_rows: 0,
                },
                Phases::default(),
            )),
            // A coalesced waiter did not compute: another request did.
            Served::Memory | Served::Disk | Served::Coalesced => {
                (ServedBy::Cache, Phases::default())
            }
        };
        // `no-cache` skips the lookup.
        if mode == Mode::Normal {
            phases.cache = Some(looked.saturating_duration_since(looking));
            nusa_trace::span_between("cache", looking, looked, || {
                let (result, tier) = match how {
                    Served::Memory => ("hit", "memory"),
                    Served::Disk => ("hit", "disk"),
                    Served::Coalesced => ("coalesced", "flight"),
                    Served::Computed => ("miss", "none"),
                };
                vec![
                    KeyValue::new("nusa.cache.result", result),
                    KeyValue::new("nusa.cache.tier", tier),
                ]
            });
        }
        Ok(Answer {
            outputs: outputs.as_ref().clone(),
            served_by,
            phases,
        })
    }

    async fn compute(&self, job: &Job<'_>) -> Result<Answer, ProtoError> {
        let sched = &job.version.scheduler;
        let (view, service) = sched.view();
        let predicted = predict_wait(&view, &service, job.rows, sched.now());
        let facts = RequestFacts {
            bytes: job.inputs.iter().map(|t| t.data.len() as u64).sum(),
            allowed: self.allowed_regions(job),
            slo_us: job.config.slo_ms.map(|ms| ms * 1_000),
            queue_full: sched.queue_full(),
            prefer_region: job.config.placement == Placement::Region,
        };
        let local_service = service.estimate(job.rows);
        let mut tried: Vec<usize> = Vec::new();
        let mut phases = Phases::default();
        loop {
            let decision = if !self.config.spill_enabled || self.regions.is_empty() {
                Decision::Local
            } else if tried.len() >= self.config.max_tries {
                // Bounded tries: after max_tries regions the request stays here.
                local_or_reject(&facts)
            } else {
                self.spill
                    .lock()
                    .decide(&facts, predicted, local_service, &tried, self.now())
            };
            match decision {
                Decision::Local => return self.run_local(job, predicted, phases).await,
                Decision::Reject { reason } => {
                    self.metrics.rejected(job.model, reason.label());
                    return Err(reject_error(job, reason, predicted));
                }
                Decision::Spill { region, .. } if !facts.allowed.contains(region) => {
                    // The core's invariant, checked once more where the
                    // request would leave: a breach sends data abroad.
                    tracing::error!(
                        region,
                        model = job.model,
                        "spill decision outside the allowed regions: not sent"
                    );
                    return match local_or_reject(&facts) {
                        Decision::Local => self.run_local(job, predicted, phases).await,
                        _ => Err(reject_error(job, Reason::QueueFull, predicted)),
                    };
                }
                Decision::Spill { region, reason } => {
                    self.metrics
                        .spilled(job.model, self.regions[region].name(), reason.label());
                    match self
                        .run_remote(job, region, tried.len() + 1, &mut phases)
                        .await
                    {
                        Ok(outputs) => {
                            return Ok(Answer {
                                outputs,
                                served_by: ServedBy::Cloud(self.regions[region].name().to_string()),
                                phases,
                            })
                        }
                        Err(Retry::Next) => tried.push(region),
                        Err(Retry::Here) => {
                            // Not sent again: served here unless the queue is full.
                            return match local_or_reject(&facts) {
                                Decision::Local => self.run_local(job, predicted, phases).await,
                                _ => Err(reject_error(job, Reason::QueueFull, predicted)),
                            };
                        }
                    }
                }
            }
        }
    }

    /// The regions this request may go to: none when it is pinned here (by
    /// itself, its client's address or its caller), else the regions whose
    /// country both the model's and the caller's residency allow.
    fn allowed_regions(&self, job: &Job<'_>) -> RegionSet {
        let pinned = job.pinned
            || !job.caller_may_spill
            || job.peer.is_some_and(|ip| {
                self.config
                    .local_only_clients
                    .iter()
                    .any(|p| prefix::contains(p, ip))
            });
        if pinned {
            return RegionSet::NONE;
        }
        let allowed = self.countries.allowed(
            residency::Rule::of_model(&job.config.residency),
            job.caller_residency
                .map_or(residency::Rule::Any, residency::Rule::of_caller),
        );
        match self.spill_guard.get() {
            None => allowed,
            Some(guard) => RegionSet::from_fn(self.regions.len(), |i| {
                allowed.contains(i) && guard(job.caller, self.regions[i].name())
            }),
        }
    }

    /// The jurisdiction of the region named `name` (as in
    /// `ServedBy::Cloud`), for cost and audit records; `None` when it
    /// declares none or there is no such region.
    pub fn region_country(&self, name: &str) -> Option<&str> {
        let i = self.regions.iter().position(|r| r.name() == name)?;
        self.countries.of(i)
    }

    /// Runs the request in the local queue; `phases` has the region tries
    /// made before, if any.
    async fn run_local(
        &self,
        job: &Job<'_>,
        predicted: Option<Micros>,
        mut phases: Phases,
    ) -> Result<Answer, ProtoError> {
        let submitted = Instant::now();
        let outcome = job
            .version
            .scheduler
            .infer(job.inputs.clone(), job.rows, job.priority, job.timeout_us)
            .await
            .map_err(sched_error)?;
        let answered = Instant::now();
        let timing = outcome.timing;
        if let Some(p) = predicted {
            let measured = timing.queue + timing.compute;
            self.metrics
                .wait(job.model, Duration::from_micros(p), measured);
        }
        phases.queue = Some(timing.queue);
        phases.compute = Some(timing.compute);
        // The scheduler's measures, laid out from the submission: queue
        // wait, the batch, and the engine's run that ended it.
        let batch_start = (submitted + timing.queue).min(answered);
        let batch_end = (batch_start + timing.compute).min(answered);
        let engine_start = batch_end
            .checked_sub(timing.engine)
            .map_or(batch_start, |t| t.max(batch_start));
        nusa_trace::span_between("queue", submitted, batch_start, Vec::new);
        nusa_trace::span_between("batch", batch_start, batch_end, || {
            vec![
                KeyValue::new("nusa.batch.size", timing.batch_rows as i64),
                KeyValue::new("nusa.batch.instance", timing.instance as i64),
            ]
        });
        nusa_trace::span_between("compute", engine_start, batch_end, || {
            vec![
                KeyValue::new("nusa.engine", job.version.engine_name()),
                KeyValue::new("nusa.model.version", job.version.version as i64),
            ]
        });
        let outputs = select(
            &job.version.metadata,
            outcome.outputs,
            job.outputs.as_deref(),
        );
        Ok(Answer {
            outputs,
            served_by: ServedBy::Local {
                compute_us: timing.compute.as_micros() as u64,
                batch_rows: timing.batch_rows,
            },
            phases,
        })
    }

    /// Sends the request to `region` (its `attempt`th try), adding the
    /// call's time to `phases`.
    async fn run_remote(
        &self,
        job: &Job<'_>,
        region: usize,
        attempt: usize,
        phases: &mut Phases,
    ) -> Result<Vec<Tensor>, Retry> {
        // Settled below on every outcome; if this future is dropped first
        // (the client went away), the ticket's drop says so to the core.
        let mut ticket = Ticket {
            spill: &self.spill,
            region,
            settled: false,
        };
        let client = &self.regions[region];
        let names: Option<Vec<&str>> = job
            .outputs
            .as_ref()
            .map(|o| o.iter().map(String::as_str).collect());
        let span = tracing::info_span!(
            target: nusa_trace::TARGET,
            "region",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            nusa.region = client.name(),
            nusa.try = attempt as i64,
            nusa.outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        // The region's spans join the trace under this call's span; with
        // tracing off the caller's context goes on as it came.
        let trace = nusa_trace::outgoing(&span).or_else(|| job.trace.clone());
        let traceparent = trace.as_ref().map(|t| t.parent.to_string());
        let headers = nusa_engine_remote::TraceHeaders {
            traceparent: traceparent.as_deref(),
            tracestate: trace.as_ref().and_then(|t| t.state.as_deref()),
        };
        let started = Instant::now();
        let result = client
            .infer_traced(
                job.model,
                Some(job.version.version),
                &job.inputs,
                names.as_deref(),
                headers,
            )
            .instrument(span.clone())
            .await;
        phases.add_region(started.elapsed());
        let now = self.now();
        if !span.is_disabled() {
            let (outcome, status) = match &result {
                Ok(_) => ("ok", Some(200)),
                Err(e) => (e.class(), e.status()),
            };
            span.record("nusa.outcome", outcome);
            if let Some(s) = status {
                span.record("http.response.status_code", i64::from(s));
            }
            if result.is_err() {
                span.record("otel.status_code", "ERROR");
            }
        }
        match result {
            Ok(answer) => {
                let bytes_back: u64 = answer.outputs.iter().map(|t| t.data.len() as u64).sum();
                let expected = expected_outputs(&job.version.metadata, job.outputs.as_deref());
                let rows = job.version.scheduler.batching().then_some(job.rows);
                if let Err(why) = check_outputs(&expected, &answer.outputs, rows) {
                    // The region answered, wrongly: it counts against it, and
                    // the request is served here rather than sent again.
                    tracing::warn!(region = %client.name(), model = job.model, %why, "region answer does not match the model");
                    span.record("nusa.outcome", "bad_answer");
                    span.record("otel.status_code", "ERROR");
                    self.settle(&mut ticket, now, None, true, bytes_back);
                    self.metrics.region_outcome(client.name(), "bad_answer");
                    return Err(Retry::Here);
                }
                let took = started.elapsed().as_micros() as Micros;
                self.settle(&mut ticket, now, Some(took), false, bytes_back);
                self.metrics.region_outcome(client.name(), "ok");
                // Order as the model's outputs, so callers see one shape.
                Ok(order_like(&expected, answer.outputs))
            }
            Err(e) => {
                self.settle(&mut ticket, now, None, e.counts_against_region(), 0);
                self.metrics.region_outcome(client.name(), e.class());
                tracing::debug!(region = %client.name(), model = job.model, error = %e, "region failed");
                // Failures that may pass elsewhere go to the next region; an
                // answer (undecodable, or a refusal of a request this box
                // accepted: the region's setup differs) is not sent again.
                if e.retryable() {
                    Err(Retry::Next)
                } else {
                    Err(Retry::Here)
                }
            }
        }
    }

    fn settle(
        &self,
        ticket: &mut Ticket<'_>,
        now: Micros,
        answered_in: Option<Micros>,
        counts_against: bool,
        bytes_back: u64,
    ) {
        let mut spill = self.spill.lock();
        spill.record(ticket.region, now, answered_in, counts_against, bytes_back);
        ticket.settled = true;
        if let Some(r) = spill.regions.get_mut(ticket.region) {
            let code = r.breaker_state(now).code();
            self.metrics.breaker(&r.name, code);
        }
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Flushes the cache's pending disk writes (shutdown).
    pub async fn flush(&self) {
        if let Some(c) = &self.cache {
            c.flush().await;
        }
    }

    /// Every region as its last probe left it, in configuration order (the
    /// status page and `nusactl status`).
    pub fn region_states(&self) -> Vec<RegionState> {
        let logs = self.probe_logs.lock();
        self.regions
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let last = logs.get(i).and_then(|l| l.last);
                RegionState {
                    name: client.name().to_string(),
                    probe: last.map(|(outcome, _)| outcome),
                    breaker: last.and_then(|(_, breaker)| breaker),
                }
            })
            .collect()
    }

    /// Opens the pooled connection to every region (TLS handshake included)
    /// without recording anything: the handshake is not what requests see.
    pub async fn warm_regions(&self) {
        for client in &self.regions {
            let _ = client.health().await;
        }
    }

    /// Probes every region's health now: round trip, and a failure counts
    /// against its breaker. A region whose probe outcome or breaker changes
    /// says so in the log (see [`ProbeLog`]).
    pub async fn probe_regions(&self) {
        for (i, client) in self.regions.iter().enumerate() {
            let result = client.health().await;
            let now = self.now();
            let breaker = {
                let mut spill = self.spill.lock();
                match &result {
                    Ok(rtt) => {
                        if let Some(r) = spill.regions.get_mut(i) {
                            r.observe_rtt(rtt.as_micros() as Micros);
                        }
                    }
                    Err(e) => spill.record(i, now, None, e.counts_against_region(), 0),
                }
                spill
                    .regions
                    .get_mut(i)
                    .map(|r| r.breaker_state(now).code())
            };
            match &result {
                Ok(rtt) => {
                    tracing::debug!(region = %client.name(), rtt_us = rtt.as_micros() as u64, "region probe");
                    self.metrics.rtt(client.name(), *rtt);
                    self.metrics.probe(client.name(), None);
                }
                Err(e) => {
                    tracing::debug!(region = %client.name(), error = %e, "region probe failed");
                    self.metrics.probe(client.name(), Some(e.class()));
                }
            }
            if let Some(code) = breaker {
                self.metrics.breaker(client.name(), code);
            }
            if let Some(log) = self.probe_logs.lock().get_mut(i) {
                log.observe(client.name(), &result, breaker, Instant::now());
            }
        }
    }
}

/// One region as its last probe left it.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionState {
    pub name: String,
    /// `None`: not probed yet; `Err(class)`: the failure's class.
    pub probe: Option<Result<(), &'static str>>,
    /// The breaker's code after the probe: 0 closed, 1 half-open, 2 open.
    pub breaker: Option<i64>,
}

/// What the log has said about one region's probes: a change of outcome
/// (reachable, or refused and why) or of its breaker is logged (a failure
/// at warning level, since spilling to that region stops), at most once a
/// minute per region: a change within the minute is logged when it ends if
/// it still holds, with the count of changes in between. Steady states log
/// nothing.
#[derive(Default)]
pub(crate) struct ProbeLog {
    /// The last probe's outcome (`Ok`, or the failure's class) and the
    /// breaker's code after it (0 closed, 1 half-open, 2 open).
    last: Option<ProbeState>,
    /// What the log says now.
    logged: Option<ProbeState>,
    logged_at: Option<Instant>,
    /// Changes since the last line.
    changes: u64,
}

type ProbeState = (Result<(), &'static str>, Option<i64>);

/// The most a region's probe changes are logged: once per this.
const PROBE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What [`ProbeLog::observe`] logged.
#[derive(Debug, PartialEq)]
pub(crate) enum Said {
    Reachable,
    Failed(&'static str),
}

impl ProbeLog {
    pub(crate) fn observe(
        &mut self,
        region: &str,
        result: &Result<Duration, nusa_engine_remote::RegionError>,
        breaker: Option<i64>,
        now: Instant,
    ) -> Option<Said> {
        let state = (result.as_ref().map(|_| ()).map_err(|e| e.class()), breaker);
        if self.last.is_some() && self.last != Some(state) {
            self.changes += 1;
        }
        self.last = Some(state);
        if self.logged == Some(state)
            || self
                .logged_at
                .is_some_and(|at| now.duration_since(at) < PROBE_LOG_EVERY)
        {
            return None;
        }
        let changes = std::mem::take(&mut self.changes);
        self.logged = Some(state);
        self.logged_at = Some(now);
        let breaker = match breaker {
            Some(0) => "closed",
            Some(1) => "half-open",
            Some(2) => "open",
            _ => "unknown",
        };
        match result {
            Ok(rtt) => {
                tracing::info!(
                    region,
                    rtt_ms = rtt.as_secs_f64() * 1e3,
                    breaker,
                    changes,
                    "region reachable: its probe passes"
                );
                Some(Said::Reachable)
            }
            Err(e) => {
                tracing::warn!(
                    region,
                    class = e.class(),
                    breaker,
                    changes,
                    "region probe failed ({e}); nothing spills there while its breaker is open"
                );
                Some(Said::Failed(e.class()))
            }
        }
    }
}

/// A computation the cache ran for a request: when it started (the end of
/// the lookup) and how it was answered. It travels beside the cache, which
/// stores only tensors.
struct Computed {
    started: Instant,
    answer: Option<(ServedBy, Phases)>,
}

/// A request in flight to a region, as the spill core counts it.
struct Ticket<'a> {
    spill: &'a Mutex<Spill>,
    region: usize,
    settled: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.spill.lock().abandon(self.region);
        }
    }
}

enum Retry {
    /// Try the next region (or here, when none is left).
    Next,
    /// Serve here without sending again.
    Here,
}

fn local_or_reject(facts: &RequestFacts) -> Decision {
    if facts.queue_full {
        Decision::Reject {
            reason: Reason::QueueFull,
        }
    } else {
        Decision::Local
    }
}

fn reject_error(job: &Job<'_>, reason: Reason, predicted: Option<Micros>) -> ProtoError {
    match reason {
        Reason::Slo => ProtoError::new(
            ErrorKind::Unavailable,
            format!(
                "model '{}' cannot answer within its objective of {} ms here (predicted {} ms) and the request may not leave this device",
                job.model,
                job.config.slo_ms.unwrap_or_default(),
                predicted.unwrap_or_default() / 1_000
            ),
        ),
        Reason::QueueFull | Reason::Retry | Reason::Placement => ProtoError::new(
            ErrorKind::QueueFull,
            format!("model '{}': the queue is full and no region can take the request", job.model),
        ),
    }
}

fn cache_mode(header: Option<&str>) -> Mode {
    let Some(h) = header else { return Mode::Normal };
    let tokens: Vec<String> = h
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    if tokens.iter().any(|t| t == "no-store") {
        Mode::NoStore
    } else if tokens.iter().any(|t| t == "no-cache") {
        Mode::NoCache
    } else {
        Mode::Normal
    }
}

/// The model's metadata with only the requested outputs.
fn expected_outputs(meta: &ModelMetadata, wanted: Option<&[String]>) -> ModelMetadata {
    let mut m = meta.clone();
    if let Some(w) = wanted {
        m.outputs.retain(|o| w.contains(&o.name));
    }
    m
}

fn select(meta: &ModelMetadata, outputs: Vec<Tensor>, wanted: Option<&[String]>) -> Vec<Tensor> {
    match wanted {
        None => outputs,
        Some(w) => outputs
            .into_iter()
            .zip(&meta.outputs)
            .filter(|(_, spec)| w.contains(&spec.name))
            .map(|(t, _)| t)
            .collect(),
    }
}

fn order_like(meta: &ModelMetadata, mut outputs: Vec<Tensor>) -> Vec<Tensor> {
    let mut ordered = Vec::with_capacity(outputs.len());
    for spec in &meta.outputs {
        if let Some(i) = outputs.iter().position(|t| t.name == spec.name) {
            ordered.push(outputs.swap_remove(i));
        }
    }
    ordered
}

fn sched_error(e: SchedError) -> ProtoError {
    let kind = match &e {
        SchedError::QueueFull { .. } => ErrorKind::QueueFull,
        SchedError::TooManyRows { .. } => ErrorKind::BadRequest,
        SchedError::Timeout => ErrorKind::Timeout,
        SchedError::Engine(nusa_engine::EngineError::Input(_)) => ErrorKind::BadRequest,
        SchedError::Engine(_) | SchedError::Stopped => ErrorKind::Internal,
    };
    ProtoError::new(kind, e.to_string())
}

/// Address-prefix matching (ipnet); the config parses and checks the
/// prefixes.
mod prefix {
    use std::net::IpAddr;

    /// Whether `ip` is in `net`; an IPv4 client seen on a dual-stack
    /// socket (`::ffff:a.b.c.d`) is matched as IPv4.
    pub fn contains(net: &ipnet::IpNet, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        net.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_prefixes() {
        let p: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(prefix::contains(&p, "10.2.3.4".parse().unwrap()));
        assert!(prefix::contains(&p, "::ffff:10.2.3.4".parse().unwrap()));
        assert!(!prefix::contains(&p, "11.0.0.1".parse().unwrap()));
        let all: ipnet::IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(prefix::contains(&all, "1.2.3.4".parse().unwrap()));
        let one: ipnet::IpNet = "::1/128".parse().unwrap();
        assert!(prefix::contains(&one, "::1".parse().unwrap()));
        assert!(!prefix::contains(&one, "::2".parse().unwrap()));
    }

    #[test]
    fn probe_changes_are_logged_once_a_minute_and_a_lasting_one_always() {
        use nusa_engine_remote::RegionError;
        let ok = || Ok(Duration::from_millis(3));
        let tls = || {
            Err(RegionError::Connect {
                region: "sg".into(),
                message: "invalid peer certificate: CaUsedAsEndEntity".into(),
                tls: true,
            })
        };
        let down = || {
            Err(RegionError::Timeout {
                region: "sg".into(),
                timeout: Duration::from_secs(1),
            })
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut log = ProbeLog::default();
        // The first outcome is said; the same again is not.
        assert_eq!(
            log.observe("sg", &tls(), Some(0), at(0)),
            Some(Said::Failed("tls"))
        );
        assert_eq!(log.observe("sg", &tls(), Some(0), at(5)), None);
        // A change within the minute waits for it to end, and is said then
        // if it still holds.
        assert_eq!(log.observe("sg", &ok(), Some(0), at(10)), None);
        assert_eq!(log.observe("sg", &ok(), Some(0), at(59)), None);
        assert_eq!(
            log.observe("sg", &ok(), Some(0), at(61)),
            Some(Said::Reachable)
        );
        // Flapping within a minute, back where the log is: nothing to say.
        assert_eq!(log.observe("sg", &down(), Some(0), at(70)), None);
        assert_eq!(log.observe("sg", &ok(), Some(0), at(75)), None);
        assert_eq!(log.observe("sg", &ok(), Some(0), at(200)), None);
        // The breaker opening is a change of its own.
        assert_eq!(
            log.observe("sg", &down(), Some(0), at(300)),
            Some(Said::Failed("timeout"))
        );
        assert_eq!(log.observe("sg", &down(), Some(2), at(330)), None);
        assert_eq!(
            log.observe("sg", &down(), Some(2), at(361)),
            Some(Said::Failed("timeout"))
        );
        assert_eq!(log.changes, 0);
    }

    #[test]
    fn cache_control_tokens() {
        assert_eq!(cache_mode(None), Mode::Normal);
        assert_eq!(cache_mode(Some("max-age=0, No-Cache")), Mode::NoCache);
        assert_eq!(cache_mode(Some("no-cache, no-store")), Mode::NoStore);
        assert_eq!(cache_mode(Some("private")), Mode::Normal);
    }
}
