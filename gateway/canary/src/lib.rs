//! The canary driver: the thin tokio side of `nusa-rollout`'s core.
//!
//! It keeps one [`Rollout`] per model in a rollout, routes each request
//! without a version (`route`: stable or candidate by the core's split),
//! counts what each request and shadow comparison told (`Ticket`), runs the
//! core's checks when they are due on its own timer, and carries out what
//! the core decides through the registry: `start_canary` loads the
//! candidate beside the stable version, `end_canary` promotes it or rolls
//! it back (unloaded, recorded bad on this box). Progress is persisted in
//! `<state>/canary.json` after every decision, so a restart resumes the
//! rollout at its step.
//!
//! Time is wall-clock milliseconds (the persisted step start must mean
//! something after a restart), advanced by tokio's clock from one reading
//! at start, so the driver's tests run on tokio's paused clock.

mod metrics;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use nusa_registry::{CanaryEnd, ChangeError, Repository};
use nusa_rollout::{Arm, Decision, Outcome, Phase, Plan, PlanSpec, Report, Rollout, ShadowResult};
use nusa_telemetry::Metrics;
use parking_lot::{Mutex, RwLock};

use metrics::CanaryMetrics;
pub use nusa_rollout;
pub use store::Ended;

/// Why an operator's rollout request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// A plan key is wrong (names the key).
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("model '{0}' has no canary rollout in progress")]
    NoRollout(String),
    #[error("model '{model}' serves no version: a rollout needs a stable version to compare with")]
    NoStable { model: String },
    #[error("canary state: {0}")]
    State(String),
}

pub use nusa_admin::CanaryStatus;

/// The rollouts of one nusad.
pub struct Canaries {
    repo: Arc<Repository>,
    /// `[rollout]` of nusad's config, layered over the defaults.
    defaults: PlanSpec,
    store: store::Store,
    active: RwLock<BTreeMap<String, Arc<Active>>>,
    /// How many rollouts run: the serving path skips the map when none.
    running: AtomicUsize,
    ended: Mutex<BTreeMap<String, Ended>>,
    draws: AtomicU64,
    wake: tokio::sync::Notify,
    metrics: CanaryMetrics,
    clock: Clock,
    /// One start, promotion, abort or decision at a time.
    ops: tokio::sync::Mutex<()>,
    /// Published rollouts tried (and not started) by this process.
    refused: Mutex<std::collections::BTreeSet<(String, u64)>>,
    /// Where the judgement's own promotions and rollbacks are recorded.
    audit: std::sync::OnceLock<Arc<nusa_audit::Auditor>>,
}

/// How often versions with a published rollout policy are looked for.
const PENDING_SCAN_MS: u64 = 5_000;

struct Active {
    model: String,
    stable: u64,
    candidate: u64,
    core: Mutex<Rollout>,
}

/// One request's place in a rollout: which version serves it, and where
/// its outcome is counted.
pub struct Ticket {
    active: Arc<Active>,
    metrics: CanaryMetrics,
    pub arm: Arm,
    /// The version to resolve for this request.
    pub version: u64,
    /// A copy of this (stable) request goes to the candidate, whose answer
    /// is compared and never returned.
    pub shadow: Option<Shadow>,
}

/// Where a shadow copy goes and how its answer is compared.
#[derive(Clone, Copy, Debug)]
pub struct Shadow {
    pub candidate: u64,
    pub atol: f64,
    pub rtol: f64,
}

impl Ticket {
    /// Counts this request's outcome: `error` for a 5xx or engine failure,
    /// `compute_us` when it was computed here.
    pub fn record(&self, error: bool, compute_us: Option<u64>) {
        self.active
            .core
            .lock()
            .record(self.arm, Outcome { error, compute_us });
        self.metrics.request(
            &self.active.model,
            self.version,
            arm_label(self.arm),
            error,
            compute_us,
        );
    }

    /// Counts a shadow comparison; `None`: the candidate failed on the copy
    /// (an error of the candidate and a disagreement).
    pub fn record_shadow(&self, result: Option<&ShadowResult>, compute_us: Option<u64>) {
        let failed = ShadowResult {
            agree: false,
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            argmax_agree: None,
            detail: Some("the candidate failed on the shadow copy".into()),
        };
        let r = result.unwrap_or(&failed);
        {
            let mut core = self.active.core.lock();
            core.record_shadow(r);
            if result.is_none() {
                core.record(
                    Arm::Candidate,
                    Outcome {
                        error: true,
                        compute_us: None,
                    },
                );
            } else if compute_us.is_some() {
                // The candidate's compute time on real traffic, for its p99.
                core.record(
                    Arm::Candidate,
                    Outcome {
                        error: false,
                        compute_us,
                    },
                );
            }
        }
        let candidate = self.active.candidate;
        self.metrics.shadow(&self.active.model, candidate, r.agree);
        self.metrics.request(
            &self.active.model,
            candidate,
            "candidate",
            result.is_none(),
            compute_us,
        );
    }
}

fn arm_label(arm: Arm) -> &'static str {
    match arm {
        Arm::Stable => "stable",
        Arm::Candidate => "candidate",
    }
}

/// Wall-clock milliseconds advanced by tokio's clock.
struct Clock {
    wall0_ms: u64,
    mono0: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        let wall0_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            wall0_ms,
            mono0: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.wall0_ms + self.mono0.elapsed().as_millis() as u64
    }

    fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        self.mono0 + std::time::Duration::from_millis(ms.saturating_sub(self.wall0_ms))
    }
}

impl Canaries {
    /// `state_dir`: the registry's state folder (`<data>/models`), where
    /// `canary.json` is kept; `None` keeps rollouts in memory only.
    pub fn new(
        repo: Arc<Repository>,
        defaults: PlanSpec,
        state_dir: Option<PathBuf>,
        metrics: &Metrics,
    ) -> Result<Canaries, CanaryError> {
        Plan::default()
            .with(&defaults)
            .map_err(|e| CanaryError::Plan(e.to_string()))?;
        Ok(Canaries {
            repo,
            defaults,
            store: store::Store::new(state_dir),
            active: RwLock::new(BTreeMap::new()),
            running: AtomicUsize::new(0),
            ended: Mutex::new(BTreeMap::new()),
            draws: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            metrics: CanaryMetrics::new(metrics),
            clock: Clock::new(),
            ops: tokio::sync::Mutex::new(()),
            refused: Mutex::new(std::collections::BTreeSet::new()),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Records the promotions and rollbacks the judgement decides (actor
    /// `system`) in the audit log; operators' are recorded by the admin API.
    pub fn set_audit(&self, audit: Arc<nusa_audit::Auditor>) {
        let _ = self.audit.set(audit);
    }

    /// After a restart: each rollout the registry still has a canary for
    /// resumes at its saved step (the step restarts when the box was down
    /// longer than `step_s`); a canary with no saved rollout starts one
    /// from the plan of the model's config.
    pub async fn resume(&self) -> Result<(), CanaryError> {
        let _op = self.ops.lock().await;
        let file = self.store.load().map_err(CanaryError::State)?;
        *self.ended.lock() = file.ended.clone();
        let marks = self.repo.marks().await?;
        let now = self.clock.now_ms();
        for (model, candidate) in marks.canary {
            let rollout = match file.rollouts.get(&model) {
                Some(saved) if saved.candidate == candidate => Rollout::resume(saved.clone(), now),
                _ => {
                    let Some(stable) = self.stable_of(&model) else {
                        tracing::warn!(model = %model, candidate, "canary without a serving stable version: left as it is");
                        continue;
                    };
                    let plan = self.plan_for(&model, &PlanSpec::default())?;
                    Rollout::start(stable, candidate, plan, now)
                        .map_err(|e| CanaryError::Plan(e.to_string()))?
                }
            };
            tracing::info!(model = %model, candidate, step = rollout.step(), percent = rollout.percent(), "canary rollout resumed");
            self.insert(&model, rollout);
        }
        self.persist();
        self.wake.notify_one();
        Ok(())
    }

    /// Starts a rollout of `version`: the plan is the defaults, then the
    /// model's `[rollout]`, then `spec`; the candidate is loaded and warmed
    /// up beside the serving version before it gets any request.
    pub async fn start(
        &self,
        model: &str,
        version: u64,
        spec: &PlanSpec,
    ) -> Result<Report, CanaryError> {
        let _op = self.ops.lock().await;
        if self.active.read().contains_key(model) {
            return Err(ChangeError::Refused {
                model: model.to_string(),
                reason: "a canary rollout is in progress: promote or abort it first".into(),
            }
            .into());
        }
        let stable = self.stable_of(model).ok_or_else(|| CanaryError::NoStable {
            model: model.to_string(),
        })?;
        let plan = self.plan_for(model, spec)?;
        self.repo.start_canary(model, version).await?;
        let rollout = Rollout::start(stable, version, plan, self.clock.now_ms())
            .map_err(|e| CanaryError::Plan(e.to_string()))?;
        let report = rollout.report();
        tracing::info!(model = %model, stable, candidate = version, percent = rollout.percent(), "canary rollout started");
        self.insert(model, rollout);
        self.persist();
        self.wake.notify_one();
        Ok(report)
    }

    /// Operator: promote now, skipping the remaining steps.
    pub async fn promote(&self, model: &str) -> Result<Ended, CanaryError> {
        let _op = self.ops.lock().await;
        let active = self.get(model)?;
        active.core.lock().promote();
        Ok(self.finish(&active, Decision::Promote, "promoted").await)
    }

    /// Operator: roll back now; the version is recorded bad on this box.
    pub async fn abort(&self, model: &str, reason: Option<&str>) -> Result<Ended, CanaryError> {
        let _op = self.ops.lock().await;
        let active = self.get(model)?;
        let reason = match reason {
            Some(r) if !r.is_empty() => format!("aborted by the operator: {r}"),
            _ => "aborted by the operator".to_string(),
        };
        active.core.lock().abort(&reason);
        Ok(self
            .finish(&active, Decision::Rollback { reason }, "aborted")
            .await)
    }

    /// Every model with a rollout running or ended since this nusad started
    /// (or persisted from before).
    pub fn status(&self) -> Vec<CanaryStatus> {
        let active = self.active.read().clone();
        let ended = self.ended.lock().clone();
        let mut names: Vec<&String> = active.keys().chain(ended.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|m| CanaryStatus {
                model: m.clone(),
                running: active.get(m).map(|a| a.core.lock().report()),
                last: ended.get(m).cloned(),
            })
            .collect()
    }

    pub fn status_of(&self, model: &str) -> CanaryStatus {
        CanaryStatus {
            model: model.to_string(),
            running: self
                .active
                .read()
                .get(model)
                .map(|a| a.core.lock().report()),
            last: self.ended.lock().get(model).cloned(),
        }
    }

    /// The serving path: which version a request without one gets while
    /// `model` is in a rollout (`None`: no rollout, serve as usual). `key`
    /// is the request key the split hashes (the API key or the client's
    /// address); without one, or with `split = "request"`, each request is
    /// drawn anew.
    pub fn route(&self, model: &str, key: Option<&[u8]>) -> Option<Ticket> {
        if self.running.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let active = Arc::clone(self.active.read().get(model)?);
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        let (arm, shadow) = {
            let core = active.core.lock();
            if *core.phase() != Phase::Running {
                return None;
            }
            let drawn = draw.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
            let by_request = core.plan().split == nusa_rollout::Split::Request;
            let key = match key {
                Some(k) if !by_request => k,
                _ => &drawn[..],
            };
            let arm = core.arm(key);
            let shadow = (arm == Arm::Stable && core.shadow(draw)).then(|| Shadow {
                candidate: active.candidate,
                atol: core.plan().shadow_atol,
                rtol: core.plan().shadow_rtol,
            });
            (arm, shadow)
        };
        let version = match arm {
            Arm::Stable => active.stable,
            Arm::Candidate => active.candidate,
        };
        Some(Ticket {
            active,
            metrics: self.metrics.clone(),
            arm,
            version,
            shadow,
        })
    }

    /// The decision loop: sleeps until the earliest check is due (or a
    /// rollout starts), runs the due checks and carries out what they
    /// decide. Runs for the life of the process.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self
                .active
                .read()
                .values()
                .map(|a| a.core.lock().next_check_ms())
                .min();
            let woken = self.wake.notified();
            // Versions published with a rollout policy are looked for every
            // few seconds too.
            let scan = self.clock.now_ms() + PENDING_SCAN_MS;
            let at = next.map_or(scan, |ms| ms.min(scan));
            tokio::select! {
                _ = tokio::time::sleep_until(self.clock.instant_at(at)) => {}
                _ = woken => {}
            }
            self.tick().await;
            self.start_pending().await;
        }
    }

    /// Starts the rollout of each version published with a rollout policy
    /// (`rollout.toml`, signed with the version) that waits for one: a
    /// fleet's rollouts start on every box as it pulls the version.
    pub async fn start_pending(&self) {
        for (model, version, spec) in self.repo.pending_rollouts().await {
            if !self.refused.lock().insert((model.clone(), version)) {
                continue;
            }
            let started = match spec {
                Ok(spec) => self
                    .start(&model, version, &spec)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match started {
                Ok(_) => {
                    tracing::info!(model = %model, version, "canary rollout started from the version's published policy");
                    self.refused.lock().remove(&(model, version));
                }
                Err(e) => {
                    // Tried once per version and process; the history has it.
                    tracing::error!(model = %model, version, error = %e, "the version's published rollout could not start");
                    self.repo
                        .record(nusa_registry::Event {
                            at: self.clock.now_ms() / 1000,
                            model: model.clone(),
                            version: Some(version),
                            event: "refused".into(),
                            detail: format!("its published rollout could not start: {e}"),
                        })
                        .await;
                }
            }
        }
    }

    /// Runs every check that is due now.
    pub async fn tick(&self) {
        let _op = self.ops.lock().await;
        let now = self.clock.now_ms();
        let active: Vec<Arc<Active>> = self.active.read().values().cloned().collect();
        let mut changed = false;
        for a in active {
            let decision = a.core.lock().poll(now);
            let Some(decision) = decision else { continue };
            changed = true;
            match &decision {
                Decision::Wait { detail } => {
                    tracing::debug!(model = %a.model, candidate = a.candidate, %detail, "canary check: waiting for requests")
                }
                Decision::CheckFailed {
                    detail,
                    failed_checks,
                } => {
                    tracing::warn!(model = %a.model, candidate = a.candidate, %detail, failed_checks, "canary check failed")
                }
                Decision::Advance { step, percent } => {
                    tracing::info!(model = %a.model, candidate = a.candidate, step, percent, "canary step passed: next step");
                    self.metrics.step(&a.model, *percent);
                    self.repo
                        .record(nusa_registry::Event {
                            at: now / 1000,
                            model: a.model.clone(),
                            version: Some(a.candidate),
                            event: "canary-step".into(),
                            detail: format!(
                                "step {step} passed its checks: {percent}% of requests"
                            ),
                        })
                        .await;
                }
                Decision::Promote => {
                    let ended = self.finish(&a, decision.clone(), "promoted").await;
                    self.audit_decision(&a, &ended).await;
                }
                Decision::Rollback { .. } => {
                    let ended = self.finish(&a, decision.clone(), "rolled_back").await;
                    self.audit_decision(&a, &ended).await;
                }
            }
        }
        if changed {
            self.persist();
        }
    }

    /// Carries out a promotion or a rollback the core decided (its phase
    /// already says so, and routes every request to the winner).
    async fn finish(&self, a: &Arc<Active>, decision: Decision, result: &'static str) -> Ended {
        let report = a.core.lock().report();
        let (end, mut result, mut reason) = match decision {
            Decision::Promote => (CanaryEnd::Promote, result, None),
            Decision::Rollback { reason } => {
                (CanaryEnd::Rollback(reason.clone()), result, Some(reason))
            }
            _ => unreachable!("finish is called for a promotion or a rollback"),
        };
        let promoting = matches!(end, CanaryEnd::Promote);
        match self.repo.end_canary(&a.model, end).await {
            Ok(_) => {}
            Err(e) if promoting => {
                // The candidate could not become the serving version: it
                // leaves, the stable one stays.
                let why = format!("the promotion failed: {e}");
                tracing::error!(model = %a.model, candidate = a.candidate, error = %e, "canary promotion failed: rolling back");
                if let Err(e) = self
                    .repo
                    .end_canary(&a.model, CanaryEnd::Rollback(why.clone()))
                    .await
                {
                    tracing::error!(model = %a.model, error = %e, "rolling back the canary after a failed promotion");
                }
                result = "rolled_back";
                reason = Some(why);
            }
            Err(e) => {
                tracing::error!(model = %a.model, candidate = a.candidate, error = %e, "rolling back the canary in the registry")
            }
        }
        match &reason {
            Some(r) => {
                tracing::warn!(model = %a.model, candidate = a.candidate, reason = %r, "canary rolled back")
            }
            None => {
                tracing::info!(model = %a.model, candidate = a.candidate, "canary promoted")
            }
        }
        let ended = Ended {
            stable: a.stable,
            candidate: a.candidate,
            result: result.to_string(),
            reason,
            at_ms: self.clock.now_ms(),
            step: report.step,
            // The share it had on the step it ended on.
            percent: report
                .steps
                .get(report.step)
                .copied()
                .unwrap_or(report.percent),
            report: Some(report),
        };
        self.active.write().remove(&a.model);
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.ended.lock().insert(a.model.clone(), ended.clone());
        self.metrics.ended(&a.model, result);
        self.metrics.step(&a.model, 0);
        self.persist();
        ended
    }

    async fn audit_decision(&self, a: &Active, ended: &Ended) {
        let Some(audit) = self.audit.get().cloned() else {
            return;
        };
        let action = if ended.result == "promoted" {
            "model.canary.promote"
        } else {
            "model.canary.rollback"
        };
        let entry = nusa_audit::Entry::new(
            nusa_audit::Actor::system(),
            action,
            &format!("{}/{}", a.model, a.candidate),
        )
        .detail(serde_json::json!({
            "stable": a.stable,
            "step": ended.step,
            "percent": ended.percent,
            "reason": ended.reason,
        }));
        let _ = tokio::task::spawn_blocking(move || audit.record(entry)).await;
    }

    fn insert(&self, model: &str, rollout: Rollout) {
        self.metrics.step(model, rollout.percent());
        let active = Arc::new(Active {
            model: model.to_string(),
            stable: rollout.stable(),
            candidate: rollout.candidate(),
            core: Mutex::new(rollout),
        });
        if self
            .active
            .write()
            .insert(model.to_string(), active)
            .is_none()
        {
            self.running.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, model: &str) -> Result<Arc<Active>, CanaryError> {
        self.active
            .read()
            .get(model)
            .cloned()
            .ok_or_else(|| CanaryError::NoRollout(model.to_string()))
    }

    fn stable_of(&self, model: &str) -> Option<u64> {
        self.repo.model(model).ok()?.serving().map(|v| v.version)
    }

    /// Defaults, nusad's `[rollout]`, the model's `[rollout]`, then the
    /// operator's or the published policy's keys.
    fn plan_for(&self, model: &str, spec: &PlanSpec) -> Result<Plan, CanaryError> {
        let plan = |r: Result<Plan, nusa_rollout::PlanError>| {
            r.map_err(|e| CanaryError::Plan(e.to_string()))
        };
        let mut p = plan(Plan::default().with(&self.defaults))?;
        if let Some(m) = self
            .repo
            .model(model)
            .ok()
            .and_then(|m| m.config.rollout.clone())
        {
            p = plan(p.with(&m))?;
        }
        plan(p.with(spec))
    }

    fn persist(&self) {
        let now = self.clock.now_ms();
        let rollouts = self
            .active
            .read()
            .iter()
            .map(|(m, a)| (m.clone(), a.core.lock().saved(now)))
            .collect();
        let file = store::File {
            rollouts,
            ended: self.ended.lock().clone(),
        };
        if let Err(e) = self.store.save(&file) {
            tracing::error!(error = %e, "saving the canary rollouts");
        }
    }
}

#[cfg(test)]
mod tests;
