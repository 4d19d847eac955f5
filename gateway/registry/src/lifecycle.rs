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

use crate::state::{now_s, Event};
use crate::{
    encrypted, load_version, select, version_digest, ChangeError, Model, ModelConfig, ModelVersion,
    Repository, VersionPolicy, Warmup,
};

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
        self.change(name, Pin::Keep).await
    }

    /// Sets the version requests without one get (`None`: the latest
    /// loaded), loading it first when it is not; persisted.
    pub async fn pin(&self, name: &str, version: Option<u64>) -> Result<ChangeReport, ChangeError> {
        self.change(name, Pin::Set(version)).await
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
            unloaded: true,
        };
        self.models
            .write()
            .insert(name.to_string(), Arc::new(unloaded));
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

    async fn change(&self, name: &str, pin: Pin) -> Result<ChangeReport, ChangeError> {
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
        let pinned = match pin {
            Pin::Keep => previous.as_ref().and_then(|m| m.pinned),
            Pin::Set(v) => v,
        };
        if let Pin::Set(Some(v)) = pin {
            let available = self.version_dirs(&dir);
            if !available.contains(&v) {
                return Err(ChangeError::UnknownVersion {
                    model: name.to_string(),
                    version: v,
                    available: list(&available),
                });
            }
        }
        let reuse = previous.as_deref().filter(|m| !m.unloaded);
        let model = self.build_model(name, pinned, reuse).await;
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
                self.models
                    .write()
                    .insert(name.to_string(), Arc::new(model));
            }
            return Err(ChangeError::Refused {
                model: name.to_string(),
                reason,
            });
        }
        if let Pin::Set(v) = pin {
            let mut pins = state.pins().map_err(ChangeError::State)?;
            match v {
                Some(v) => pins.insert(name.to_string(), v),
                None => pins.remove(name),
            };
            state.save_pins(&pins).map_err(ChangeError::State)?;
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
        self.models
            .write()
            .insert(name.to_string(), Arc::new(model));
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
        previous: Option<&Model>,
    ) -> Model {
        let dir = self.root.join(name);
        let mut model = Model {
            name: name.to_string(),
            config: ModelConfig::default(),
            engine: "",
            versions: BTreeMap::new(),
            error: None,
            pinned,
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
        if model.config.versions == VersionPolicy::Latest {
            versions.drain(..versions.len() - 1);
        }
        if let Some(p) = pinned.filter(|p| !versions.contains(p) && model.error.is_none()) {
            versions.push(p);
            versions.sort_unstable();
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

enum Pin {
    /// Keep the model's pin as it is.
    Keep,
    Set(Option<u64>),
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
