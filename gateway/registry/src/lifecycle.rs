//! Loading, hot-swapping, unloading and pinning model versions while the
//! repository serves.
//!
//! A change builds a complete new [`Model`] snapshot beside the serving one:
//! versions whose files and config are unchanged are reused as they are
//! (same engines, same queue); new or changed versions are loaded and warmed
//! up with one inference first. Only when every version of the snapshot is
//! ready is it swapped in, under a short write lock. Requests that resolved
//! a version before the swap keep it (their `Arc<ModelVersion>`) and are
//! answered there; its queue drains, and its engines are dropped with the
//! last request, which returns their memory. A snapshot that fails to build
//! changes nothing: the old one keeps serving, and the refusal is recorded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nusa_tensor::{element_count, DataType, Tensor, TensorData};

use crate::state::{now_s, Event, ModelMarks};
use crate::{
    encrypted, load_version, select, version_digest, ChangeError, Model, ModelConfig, ModelVersion,
    Repository, VersionPolicy, Warmup,
};

/// A version published with a rollout policy reaches traffic only through
/// a canary rollout of it.
pub use nusa_rollout::POLICY_FILE as ROLLOUT_POLICY;

/// A warm-up inference that takes longer than this fails the load.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(120);

/// What a load, pin or unpin did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeReport {
    /// Versions loaded (new, or their files changed), warmed up.
    pub loaded: Vec<u64>,
    /// Versions kept as they were serving (files and config unchanged).
    pub kept: Vec<u64>,
    /// Versions no longer served (they finish what they were given).
    pub dropped: Vec<u64>,
    /// The version requests without one get now, before and after.
    pub serving_before: Option<u64>,
    pub serving: Option<u64>,
}

impl Repository {
    /// Loads a model, or reloads it: new and changed versions are loaded and
    /// warmed up beside the serving ones, then swapped in (Triton's
    /// `POST /v2/repository/models/{m}/load`, with no gap in serving).
    pub async fn load_model(&self, name: &str) -> Result<ChangeReport, ChangeError> {
        self.change(name, Pin::Keep, Canary::Keep).await
    }

    /// Sets the version requests without one get (`None`: the latest
    /// loaded), loading it first when it is not; persisted.
    pub async fn pin(&self, name: &str, version: Option<u64>) -> Result<ChangeReport, ChangeError> {
        self.change(name, Pin::Set(version), Canary::Keep).await
    }

    /// Loads `version` beside the serving one as a canary: warmed up (and
    /// its goldens run) like any load, then in the snapshot but never
    /// "latest", so requests without a version keep getting the stable
    /// one until `nusa-canary` routes a share to it. Persisted.
    pub async fn start_canary(
        &self,
        name: &str,
        version: u64,
    ) -> Result<ChangeReport, ChangeError> {
        self.change(name, Pin::Keep, Canary::Start(version)).await
    }

    /// Ends a canary rollout: `Promote` makes the candidate the serving
    /// version (pinned to it when the model was pinned or a newer version
    /// is on disk), and the old one leaves as the version policy says;
    /// `Rollback` unloads the candidate and records it bad on this box
    /// with the reason: it is never served again by itself. Returns the
    /// report and the candidate's version.
    pub async fn end_canary(
        &self,
        name: &str,
        end: CanaryEnd,
    ) -> Result<(ChangeReport, u64), ChangeError> {
        let candidate = self
            .model(name)
            .ok()
            .and_then(|m| m.canary)
            .ok_or_else(|| ChangeError::Refused {
                model: name.to_string(),
                reason: "no canary rollout is in progress".into(),
            })?;
        let change = match end {
            CanaryEnd::Promote => Canary::Promote,
            CanaryEnd::Rollback(reason) => Canary::Rollback(reason),
        };
        let report = self.change(name, Pin::Keep, change).await?;
        Ok((report, candidate))
    }

    /// Versions published with a rollout policy (`rollout.toml`) that wait
    /// for their rollout: per model, the newest one newer than the serving
    /// version that neither passed nor failed a rollout here, with the
    /// policy's keys (or why they do not parse). Models in a rollout are
    /// skipped.
    pub async fn pending_rollouts(
        &self,
    ) -> Vec<(String, u64, Result<nusa_rollout::PlanSpec, String>)> {
        let Ok(marks) = self.changes.lock().await.marks() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in self.models() {
            if m.unloaded || m.canary.is_some() || marks.canary.contains_key(&m.name) {
                continue;
            }
            let Some(serving) = m.serving().map(|v| v.version) else {
                continue;
            };
            let dir = self.root.join(&m.name);
            let bad = marks.bad_versions(&m.name);
            let promoted = marks.promoted_versions(&m.name);
            let newest = self
                .version_dirs(&dir)
                .into_iter()
                .rev()
                .take_while(|v| *v > serving)
                .find(|v| {
                    !bad.contains(v)
                        && !promoted.contains(v)
                        && dir.join(v.to_string()).join(ROLLOUT_POLICY).is_file()
                });
            if let Some(v) = newest {
                let path = dir.join(v.to_string()).join(ROLLOUT_POLICY);
                out.push((m.name.clone(), v, read_policy(&path)));
            }
        }
        out
    }

    /// Canary and rolled-back versions of every model, as persisted.
    pub async fn marks(&self) -> Result<crate::Marks, ChangeError> {
        self.changes
            .lock()
            .await
            .marks()
            .map_err(ChangeError::State)
    }

    /// Stops serving a model: it answers 404 until loaded again. Requests
    /// already queued are answered.
    pub async fn unload_model(&self, name: &str) -> Result<ChangeReport, ChangeError> {
        check_name(name)?;
        let mut state = self.changes.lock().await;
        let Some(previous) = self.models.read().get(name).cloned() else {
            return Err(ChangeError::UnknownModel(name.to_string()));
        };
        let report = ChangeReport {
            dropped: previous.versions.keys().copied().collect(),
            serving_before: previous.serving().map(|v| v.version),
            ..ChangeReport::default()
        };
        let unloaded = Model {
            name: name.to_string(),
            config: previous.config.clone(),
            engine: previous.engine,
            versions: BTreeMap::new(),
            error: None,
            pinned: previous.pinned,
            canary: None,
            stable: None,
            unloaded: true,
        };
        self.install(name, unloaded);
        for mv in previous.versions.values() {
            let e = mv.engine();
            self.metrics
                .forget_model_engine(name, mv.version, e.engine, e.reason);
        }
        state.record(Event {
            at: now_s(),
            model: name.to_string(),
            version: None,
            event: "unload".into(),
            detail: format!("versions {:?} unloaded", report.dropped),
        });
        Ok(report)
    }

    /// The newest `limit` history events, of one model or all.
    pub async fn history(
        &self,
        model: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, ChangeError> {
        self.changes
            .lock()
            .await
            .history(model, limit)
            .map_err(ChangeError::State)
    }

    async fn change(
        &self,
        name: &str,
        pin: Pin,
        canary: Canary,
    ) -> Result<ChangeReport, ChangeError> {
        check_name(name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(ChangeError::UnknownModel(name.to_string()));
        }
        let mut state = self.changes.lock().await;
        let previous = self.models.read().get(name).cloned();
        let serving_before = previous
            .as_ref()
            .and_then(|m| m.serving())
            .map(|v| v.version);
        let mut pinned = match pin {
            Pin::Keep => previous.as_ref().and_then(|m| m.pinned),
            Pin::Set(v) => v,
        };
        let available = self.version_dirs(&dir);
        let unknown = |v: u64| ChangeError::UnknownVersion {
            model: name.to_string(),
            version: v,
            available: list(&available),
        };
        if let Pin::Set(Some(v)) = pin {
            if !available.contains(&v) {
                return Err(unknown(v));
            }
        }
        let mut marks = state.marks().map_err(ChangeError::State)?;
        let marks_before = marks.clone();
        let refused = |reason: String| ChangeError::Refused {
            model: name.to_string(),
            reason,
        };
        let running = marks.canary.get(name).copied();
        match &canary {
            Canary::Keep => {}
            Canary::Start(v) => {
                if let Some(c) = running {
                    return Err(refused(format!(
                        "a canary rollout of version {c} is in progress: promote or abort it first"
                    )));
                }
                if !available.contains(v) {
                    return Err(unknown(*v));
                }
                if serving_before == Some(*v) {
                    return Err(refused(format!(
                        "version {v} is the serving version already"
                    )));
                }
                // An operator's explicit rollout of a version rolled back
                // before: its mark goes, the rollout judges it anew.
                if let Some(b) = marks.bad.get_mut(name) {
                    b.remove(v);
                }
                marks.canary.insert(name.to_string(), *v);
                if let Some(stable) = serving_before {
                    marks.stable.insert(name.to_string(), stable);
                }
            }
            Canary::Promote => {
                let Some(c) = running else {
                    return Err(refused("no canary rollout is in progress".into()));
                };
                marks.canary.remove(name);
                marks.stable.remove(name);
                marks
                    .promoted
                    .entry(name.to_string())
                    .or_default()
                    .insert(c);
                let bad = marks.bad_versions(name);
                let promoted = marks.promoted_versions(name);
                let newest = available
                    .iter()
                    .rev()
                    .find(|v| {
                        !bad.contains(v)
                            && (promoted.contains(v)
                                || !dir.join(v.to_string()).join(ROLLOUT_POLICY).is_file())
                    })
                    .copied();
                if pinned.is_some() || newest != Some(c) {
                    pinned = Some(c);
                }
            }
            Canary::Rollback(reason) => {
                let Some(c) = running else {
                    return Err(refused("no canary rollout is in progress".into()));
                };
                marks.canary.remove(name);
                marks.stable.remove(name);
                marks
                    .bad
                    .entry(name.to_string())
                    .or_default()
                    .insert(c, reason.clone());
            }
        }
        let pin_changed = pinned != previous.as_ref().and_then(|m| m.pinned);
        let reuse = previous.as_deref().filter(|m| !m.unloaded);
        let model = self.build_model(name, pinned, &marks.of(name), reuse).await;
        if let Some(reason) = model.error.clone() {
            state.record(Event {
                at: now_s(),
                model: name.to_string(),
                version: None,
                event: "refused".into(),
                detail: reason.clone(),
            });
            // Gauges of versions that loaded for the refused snapshot and
            // are not serving.
            for mv in model.versions.values() {
                let serving = previous
                    .as_ref()
                    .is_some_and(|m| m.versions.contains_key(&mv.version));
                if !serving {
                    self.forget_engine(name, mv);
                }
            }
            if previous.is_none() {
                // Shown by the index, not ready, until a load succeeds.
                self.install(name, model);
            }
            return Err(ChangeError::Refused {
                model: name.to_string(),
                reason,
            });
        }
        if matches!(pin, Pin::Set(_)) || pin_changed {
            let mut pins = state.pins().map_err(ChangeError::State)?;
            match pinned {
                Some(v) => pins.insert(name.to_string(), v),
                None => pins.remove(name),
            };
            state.save_pins(&pins).map_err(ChangeError::State)?;
        }
        if marks != marks_before {
            state.save_marks(&marks).map_err(ChangeError::State)?;
        }
        let mut report = ChangeReport {
            serving_before,
            serving: model.serving().map(|v| v.version),
            ..ChangeReport::default()
        };
        for (v, mv) in &model.versions {
            let kept = reuse
                .and_then(|m| m.versions.get(v))
                .is_some_and(|old| Arc::ptr_eq(old, mv));
            if kept {
                report.kept.push(*v);
            } else {
                report.loaded.push(*v);
            }
        }
        let dropped: Vec<Arc<ModelVersion>> = reuse
            .map(|m| {
                m.versions
                    .values()
                    .filter(|old| {
                        !model
                            .versions
                            .get(&old.version)
                            .is_some_and(|new| Arc::ptr_eq(old, new))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        report.dropped = dropped
            .iter()
            .map(|v| v.version)
            .filter(|v| !model.versions.contains_key(v))
            .collect();
        // The swap: requests resolving from here on get the new snapshot.
        self.install(name, model);
        for old in &dropped {
            let e = old.engine();
            if !report.loaded.contains(&old.version) {
                self.metrics
                    .forget_model_engine(name, old.version, e.engine, e.reason);
            }
        }
        let at = now_s();
        for v in &report.loaded {
            state.record(Event {
                at,
                model: name.to_string(),
                version: Some(*v),
                event: "load".into(),
                detail: if dropped.iter().any(|d| d.version == *v) {
                    "files changed: reloaded, warmed up and swapped in".into()
                } else {
                    "loaded and warmed up".into()
                },
            });
        }
        for v in &report.dropped {
            state.record(Event {
                at,
                model: name.to_string(),
                version: Some(*v),
                event: "unload".into(),
                detail: "no longer in the model's version policy".into(),
            });
        }
        match &canary {
            Canary::Keep => {}
            Canary::Start(v) => state.record(Event {
                at,
                model: name.to_string(),
                version: Some(*v),
                event: "canary".into(),
                detail: format!(
                    "loaded and warmed up beside version {}: serves only the share its rollout gives it",
                    show(report.serving)
                ),
            }),
            Canary::Promote => state.record(Event {
                at,
                model: name.to_string(),
                version: report.serving,
                event: "promote".into(),
                detail: format!(
                    "the canary passed every step: serving version {} (was {})",
                    show(report.serving),
                    show(report.serving_before)
                ),
            }),
            Canary::Rollback(reason) => state.record(Event {
                at,
                model: name.to_string(),
                version: marks_before.canary.get(name).copied(),
                event: "rollback".into(),
                detail: format!("rolled back and recorded bad on this box: {reason}"),
            }),
        }
        if let Pin::Set(v) = pin {
            state.record(Event {
                at,
                model: name.to_string(),
                version: v,
                event: if v.is_some() { "pin" } else { "unpin" }.into(),
                detail: match v {
                    Some(v) => format!("requests without a version get version {v}"),
                    None => "requests without a version get the latest".into(),
                },
            });
        }
        if report.serving_before != report.serving
            || report.serving.is_some_and(|v| report.loaded.contains(&v))
        {
            state.record(Event {
                at,
                model: name.to_string(),
                version: report.serving,
                event: "swap".into(),
                detail: format!(
                    "serving version {} (was {})",
                    show(report.serving),
                    show(report.serving_before)
                ),
            });
        }
        Ok(report)
    }

    /// The version folders of a model that hold a file some engine loads.
    fn version_dirs(&self, dir: &Path) -> Vec<u64> {
        let factories =
            std::iter::once(&self.engines.onnxruntime).chain(self.engines.tensorrt.as_ref().ok());
        let factories: Vec<_> = factories.collect();
        let mut versions: Vec<u64> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        encrypted(&e.path()) || factories.iter().any(|f| f.has_model(&e.path()))
                    })
                    .filter_map(|e| e.file_name().to_str().and_then(canonical_version))
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_unstable();
        versions
    }

    /// A complete snapshot of model `name`: its config, engine and the
    /// versions its policy (and pin) asks for. Versions of `previous` whose
    /// files and config are unchanged are reused; others are loaded and
    /// warmed up. On any failure the snapshot carries the error.
    pub(crate) async fn build_model(
        &self,
        name: &str,
        pinned: Option<u64>,
        marks: &ModelMarks,
        previous: Option<&Model>,
    ) -> Model {
        let ModelMarks {
            canary,
            stable,
            bad,
            promoted,
        } = marks.clone();
        let stable = canary.and(stable);
        let dir = self.root.join(name);
        let mut model = Model {
            name: name.to_string(),
            config: ModelConfig::default(),
            engine: "",
            versions: BTreeMap::new(),
            error: None,
            pinned,
            canary,
            stable,
            unloaded: false,
        };
        match ModelConfig::load(&config_path(&dir)) {
            Ok(c) => model.config = c,
            Err(e) => {
                model.error = Some(e);
                return model;
            }
        }
        let selected = match select(model.config.engine, &self.engines, &dir) {
            Ok(s) => s,
            Err(e) => {
                model.error = Some(e);
                return model;
            }
        };
        tracing::info!(model = %name, engine = selected.engine, reason = %selected.reason, "engine selected");
        model.engine = selected.engine;
        let factory = &selected.factory;
        let mut versions: Vec<u64> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                // Encrypted versions too: refused with the reason when this
                // box cannot decrypt them, never silently skipped.
                .filter(|e| factory.has_model(&e.path()) || encrypted(&e.path()))
                .filter_map(|e| e.file_name().to_str().and_then(canonical_version))
                .collect(),
            Err(e) => {
                model.error = Some(format!("reading {}: {e}", dir.display()));
                return model;
            }
        };
        versions.sort_unstable();
        if versions.is_empty() {
            model.error = Some(format!(
                "no version directory with {} under {}",
                factory.model_file(),
                dir.display()
            ));
            return model;
        }
        if let Some(p) = pinned {
            if !versions.contains(&p) {
                model.error = Some(format!(
                    "pinned version {p} is not in the repository (available: {}); unpin it or put it back",
                    list(&versions)
                ));
            }
        }
        if let Some(c) = canary.filter(|c| !versions.contains(c)) {
            model.error = Some(format!(
                "canary version {c} is not in the repository (available: {})",
                list(&versions)
            ));
        }
        let on_disk = versions.clone();
        // Neither a canary, nor a version rolled back on this box, nor one
        // published with a rollout policy that has not passed it here is
        // "latest" or loaded by the policy; a pin or the rollout adds them.
        versions.retain(|v| {
            Some(*v) != canary
                && !bad.contains(v)
                && (promoted.contains(v) || !dir.join(v.to_string()).join(ROLLOUT_POLICY).is_file())
        });
        if model.config.versions == VersionPolicy::Latest {
            versions.drain(..versions.len().saturating_sub(1));
        }
        if let Some(s) = stable {
            // The rollout's stable version: the policy's pick is not served.
            if model.config.versions == VersionPolicy::Latest && pinned.is_none() {
                versions.clear();
            }
            if !on_disk.contains(&s) && model.error.is_none() {
                model.error = Some(format!(
                    "the rollout's stable version {s} is not in the repository (available: {})",
                    list(&on_disk)
                ));
            }
        }
        for extra in [pinned, canary, stable].into_iter().flatten() {
            if on_disk.contains(&extra) && !versions.contains(&extra) {
                versions.push(extra);
            }
        }
        versions.sort_unstable();
        if versions.is_empty() && model.error.is_none() {
            model.error = Some(format!(
                "every version under {} was rolled back on this box ({}): pin one or publish a new one",
                dir.display(),
                list(&bad)
            ));
            return model;
        }
        let same_setup =
            previous.is_some_and(|m| m.config == model.config && m.engine == model.engine);
        for v in versions {
            let vdir = dir.join(v.to_string());
            let digest = match version_digest(&vdir).await {
                Ok(d) => d,
                Err(e) => {
                    model.error = Some(format!("version {v}: {e}"));
                    continue;
                }
            };
            let unchanged = previous
                .filter(|_| same_setup)
                .and_then(|m| m.versions.get(&v))
                .filter(|old| old.digest == digest);
            if let Some(old) = unchanged {
                model.versions.insert(v, Arc::clone(old));
                continue;
            }
            let mut provenance = None;
            if let Some(admission) = &self.admission {
                let (a, m, d) = (Arc::clone(admission), name.to_string(), vdir.clone());
                let admitted = tokio::task::spawn_blocking(move || a.admit(&m, v, &d))
                    .await
                    .map_err(|e| format!("admission panicked: {e}"))
                    .and_then(|r| r);
                match admitted {
                    Ok(p) => provenance = p,
                    Err(e) => {
                        tracing::error!(model = %name, version = v, error = %e, "version refused by admission");
                        model.error = Some(format!("version {v} refused: {e}"));
                        continue;
                    }
                }
            }
            let loaded = load_version(
                &vdir,
                v,
                digest,
                name,
                &model.config,
                &selected,
                &self.engines,
                self.decryptor.as_ref(),
                &self.metrics,
            )
            .await;
            match loaded {
                Ok((mut mv, pending)) => {
                    mv.provenance = provenance;
                    if let Err(e) = check_before_traffic(&mv, &vdir, model.config.warmup).await {
                        model.error = Some(format!("version {v}: {e}"));
                        self.forget_engine(name, &mv);
                        continue;
                    }
                    let mv = Arc::new(mv);
                    if let Some(pending) = pending {
                        tokio::spawn(pending.run(Arc::clone(&mv), Arc::clone(&self.metrics)));
                    }
                    model.versions.insert(v, mv);
                }
                Err(e) => {
                    model.error = Some(format!("version {v}: {e}"));
                }
            }
        }
        model
    }

    fn forget_engine(&self, name: &str, mv: &ModelVersion) {
        let e = mv.engine();
        self.metrics
            .forget_model_engine(name, mv.version, e.engine, e.reason);
    }
}

/// A version's `rollout.toml`: `[rollout]` keys at its top level.
fn read_policy(path: &Path) -> Result<nusa_rollout::PlanSpec, String> {
    let text = nusa_fsutil::read_to_string_bounded(path, 64 << 10)
        .map_err(|e| format!("reading {}: {}", path.display(), e.detail()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

enum Pin {
    /// Keep the model's pin as it is.
    Keep,
    Set(Option<u64>),
}

/// How a change touches the model's canary.
enum Canary {
    Keep,
    Start(u64),
    Promote,
    Rollback(String),
}

/// How a canary rollout ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanaryEnd {
    Promote,
    /// With the reason, recorded with the version's bad mark.
    Rollback(String),
}

/// What a loaded version must pass before it takes traffic: its golden
/// requests (`tests/*.json`, compared within their tolerance; TensorRT's
/// FP16 one on TensorRT), else the configured warm-up. Both run through the
/// version's own queue, as requests will.
async fn check_before_traffic(mv: &ModelVersion, dir: &Path, warmup: Warmup) -> Result<(), String> {
    let d = dir.to_path_buf();
    let goldens = tokio::task::spawn_blocking(move || nusa_goldens::load(&d))
        .await
        .map_err(|e| format!("reading the golden tests panicked: {e}"))??;
    if goldens.is_empty() {
        return match warmup {
            Warmup::Zeros => warm_up(mv)
                .await
                .map_err(|e| format!("warm-up inference failed: {e}")),
            Warmup::None => Ok(()),
        };
    }
    let fp16 = mv.engine_name() == "tensorrt";
    for g in &goldens {
        let (inputs, rows) = g.inputs_for(&mv.metadata, mv.scheduler.batching())?;
        let out = tokio::time::timeout(WARMUP_TIMEOUT, mv.scheduler.infer(inputs, rows, 0, 0))
            .await
            .map_err(|_| {
                format!(
                    "golden {}: no answer in {} s",
                    g.name,
                    WARMUP_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("golden {}: {e}", g.name))?;
        g.check(&out.outputs, fp16)
            .map_err(|e| format!("golden test failed: {e}"))?;
    }
    tracing::info!(
        version = mv.version,
        goldens = goldens.len(),
        "golden tests passed"
    );
    Ok(())
}

/// One inference of zeros (empty strings for BYTES) with every variable
/// dimension 1, through the version's own queue: the engine has run once
/// (first-run allocations, lazy initialisation) before any request gets it.
async fn warm_up(mv: &ModelVersion) -> Result<(), String> {
    let mut inputs = Vec::with_capacity(mv.metadata.inputs.len());
    for spec in &mv.metadata.inputs {
        let shape: Vec<i64> = spec
            .shape
            .iter()
            .map(|&d| if d < 0 { 1 } else { d })
            .collect();
        let count = element_count(&shape)
            .ok_or_else(|| format!("input '{}' has shape {:?}", spec.name, spec.shape))?;
        let bytes = match spec.datatype {
            DataType::Bytes => vec![0u8; count * 4],
            dt => vec![0u8; count * dt.element_size().unwrap_or(1)],
        };
        inputs.push(Tensor {
            name: spec.name.clone(),
            datatype: spec.datatype,
            shape,
            data: TensorData::from(bytes),
        });
    }
    match tokio::time::timeout(WARMUP_TIMEOUT, mv.scheduler.infer(inputs, 1, 0, 0)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {} s", WARMUP_TIMEOUT.as_secs())),
    }
}

/// `<model>/config.toml`; without one, the newest version's own
/// `config.toml` (signed versions carry theirs), else the model-level path
/// (absent: defaults).
fn config_path(dir: &Path) -> std::path::PathBuf {
    let model_level = dir.join("config.toml");
    if model_level.is_file() {
        return model_level;
    }
    let newest = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(canonical_version))
                .filter(|v| dir.join(v.to_string()).join("config.toml").is_file())
                .max()
        })
        .ok()
        .flatten();
    match newest {
        Some(v) => dir.join(v.to_string()).join("config.toml"),
        None => model_level,
    }
}

/// A model name that is one plain folder of the repository.
fn check_name(name: &str) -> Result<(), ChangeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ChangeError::BadName(format!(
            "'{name}' is not a model name (1 to 128 of A-Z a-z 0-9 _ - ., not starting with '.')"
        )))
    }
}

/// `"3"` -> 3; `"03"`, `"+3"`, `"0"` name no version.
pub(crate) fn canonical_version(s: &str) -> Option<u64> {
    s.parse::<u64>()
        .ok()
        .filter(|&v| v > 0 && v.to_string() == s)
}

fn list(versions: &[u64]) -> String {
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}
