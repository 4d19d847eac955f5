//! The model repository: a directory in Triton's shape,
//! `<model>/<version>/model.onnx` (and/or `model.plan` for TensorRT) plus an
//! optional `<model>/config.toml`. Loading picks each model's engine, then
//! builds each version's engine instances and its scheduler.
//!
//! A TensorRT version whose plan must first be built on this device starts
//! on ONNX Runtime and moves to TensorRT when the build is done: the build
//! runs in the background, then the scheduler's engines are replaced (no
//! request is dropped). Until then the version reports engine `onnxruntime`,
//! state `building` (metric `nusa_model_engine`, response header
//! `nusa-engine`, repository index).

mod config;
mod demo;
mod digest;
mod lifecycle;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nusa_engine::{Engine, EngineFactory, LoadHints, ModelMetadata, ModelSource};
use nusa_sched::Scheduler;
use nusa_telemetry::Metrics;
use parking_lot::{Mutex, RwLock};

pub use config::{
    CachePolicy, EngineChoice, ModelConfig, Placement, Residency, VersionPolicy, Warmup,
};
pub use demo::{materialize_demo, DEMO_MODEL_NAME};
pub use digest::VersionDigest;
pub use lifecycle::{CanaryEnd, ChangeReport, ROLLOUT_POLICY};
pub use state::{read_json_file, write_json_file, Event, Marks, MAX_HISTORY_EVENTS};

/// One loaded version of a model.
pub struct ModelVersion {
    pub version: u64,
    /// The version directory's files as loaded: what the cache keys the
    /// version's answers by.
    pub digest: VersionDigest,
    /// Where it came from (signed mode: the manifest's provenance and
    /// publication time, as the admission read them).
    pub provenance: Option<serde_json::Value>,
    pub metadata: ModelMetadata,
    pub scheduler: Scheduler,
    pub max_batch_size: usize,
    engine: Mutex<EngineState>,
}

impl ModelVersion {
    /// The engine serving this version now, and why.
    pub fn engine(&self) -> EngineState {
        self.engine.lock().clone()
    }

    /// Just the engine's name: what each local answer's header carries,
    /// without cloning the state's text per request.
    pub fn engine_name(&self) -> &'static str {
        self.engine.lock().engine
    }
}

/// Which engine serves a version, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineState {
    /// `onnxruntime` or `tensorrt`.
    pub engine: &'static str,
    /// A short code (the metric label): `configured`, `auto_plan`,
    /// `auto_no_tensorrt`, `auto_no_model`, `building`, `build_failed`,
    /// `encrypted` (decrypted into memory: ONNX Runtime only).
    pub reason: &'static str,
    /// The whole story, for logs and the repository index.
    pub detail: String,
}

/// Who decides whether a version folder may be loaded. Without one (the
/// plain folder of `server.models`, development and the demo) every version
/// is; in signed mode only versions whose files verify against signed
/// metadata are.
pub trait Admission: Send + Sync + 'static {
    /// `signed`, shown by the status (`directory` without an admission).
    fn mode(&self) -> &'static str;
    /// Blocking (reads and hashes the files): called off the runtime.
    /// Returns what the status shows of where the version came from (the
    /// signed provenance and publication time), if anything.
    fn admit(
        &self,
        model: &str,
        version: u64,
        dir: &Path,
    ) -> Result<Option<serde_json::Value>, String>;
}

/// Decrypts the model file of an encrypted version into memory (signed
/// mode with `models.decryption_key`). The registry asks it for the
/// plaintext of `model.onnx` when a version folder holds `model.onnx.enc`,
/// and loads ONNX Runtime from those bytes: plaintext weights never reach
/// the disk. Without one, an encrypted version is refused.
pub trait Decryptor: Send + Sync + 'static {
    /// The plaintext of `plaintext` (`model.onnx`) of `model` `version`,
    /// installed in `dir`. Blocking (reads and decrypts the file): called
    /// off the runtime. The error says why (no wrapping for this box's key,
    /// the wrapping or the ciphertext does not authenticate), never with
    /// key material.
    fn decrypt(
        &self,
        model: &str,
        version: u64,
        dir: &Path,
        plaintext: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, String>;
}

/// What an encrypted model file is named in a version folder:
/// `model.onnx.enc` for `model.onnx`.
pub const ENCRYPTED_SUFFIX: &str = ".enc";

/// Whether a version folder holds an encrypted model file.
pub(crate) fn encrypted(dir: &Path) -> bool {
    ["model.onnx", "model.plan"]
        .iter()
        .any(|f| dir.join(format!("{f}{ENCRYPTED_SUFFIX}")).is_file())
}

/// An operator's request to pull a version now (`nusactl models pull`);
/// the puller answers with what it did, or why not.
pub struct PullRequest {
    pub model: String,
    pub version: u64,
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// The engines a repository can load models with.
#[derive(Clone)]
pub struct Engines {
    pub onnxruntime: Arc<dyn EngineFactory>,
    /// Err: why TensorRT is not available on this machine.
    pub tensorrt: Result<Arc<dyn EngineFactory>, String>,
}

/// The engine chosen for a model, and why (logged at load).
struct Selected {
    factory: Arc<dyn EngineFactory>,
    engine: &'static str,
    code: &'static str,
    reason: String,
}

/// A model as it serves now: an immutable snapshot. A load builds a new
/// snapshot beside it and swaps it in; requests that already resolved a
/// version keep it until they are answered.
pub struct Model {
    pub name: String,
    pub config: ModelConfig,
    /// `onnxruntime` or `tensorrt`; empty when no engine could be chosen.
    pub engine: &'static str,
    pub versions: BTreeMap<u64, Arc<ModelVersion>>,
    /// Set when the model or one of its versions failed to load.
    pub error: Option<String>,
    /// The version requests without one get (`None`: the latest loaded).
    pub pinned: Option<u64>,
    /// A version in a canary rollout: loaded beside the serving one, but
    /// never "latest"; `nusa-canary` sends it its share of requests.
    pub canary: Option<u64>,
    /// During a rollout, the version that served when it started: requests
    /// without a version keep getting it (unless a pin says otherwise).
    pub stable: Option<u64>,
    /// Unloaded through the repository API: serves nothing, and does not
    /// hold the server's readiness.
    pub unloaded: bool,
}

impl Model {
    pub fn ready(&self) -> bool {
        !self.unloaded && self.error.is_none() && !self.versions.is_empty()
    }

    /// The newest loaded version that is not a canary.
    pub fn latest(&self) -> Option<&Arc<ModelVersion>> {
        self.versions
            .values()
            .rev()
            .find(|v| Some(v.version) != self.canary)
    }

    /// The version a request without one gets (the stable one during a
    /// canary rollout): the pinned one, else the latest loaded.
    pub fn serving(&self) -> Option<&Arc<ModelVersion>> {
        match (self.pinned, self.canary.and(self.stable)) {
            (Some(v), _) | (None, Some(v)) => self.versions.get(&v),
            (None, None) => self.latest(),
        }
    }
}

/// Why a model or version lookup failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{model}' has no version '{version}' (available: {available})")]
    UnknownVersion {
        model: String,
        version: String,
        available: String,
    },
    #[error("model '{model}' is not ready: {reason}")]
    NotReady { model: String, reason: String },
    #[error("model '{0}' is unloaded (POST /v2/repository/models/{0}/load loads it)")]
    Unloaded(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading model repository {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model state: {0}")]
    State(String),
}

/// Why a load, unload or pin was refused; the models serve as before.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("unknown model '{0}': no such folder in the model repository")]
    UnknownModel(String),
    #[error("model '{model}' has no version {version} in the repository (available: {available})")]
    UnknownVersion {
        model: String,
        version: u64,
        available: String,
    },
    #[error("{0}")]
    BadName(String),
    #[error("model '{model}' was not changed: {reason}")]
    Refused { model: String, reason: String },
    #[error("model state: {0}")]
    State(String),
}

/// The model repository: a folder of models, each served from an
/// immutable [`Model`] snapshot that loads, unloads and pins replace.
pub struct Repository {
    root: PathBuf,
    engines: Engines,
    metrics: Arc<Metrics>,
    models: RwLock<BTreeMap<String, Arc<Model>>>,
    /// One change at a time; requests never wait on it.
    changes: tokio::sync::Mutex<state::StateDir>,
    admission: Option<Arc<dyn Admission>>,
    /// Opens encrypted versions; `None`: they are refused.
    decryptor: Option<Arc<dyn Decryptor>>,
    /// The puller, in signed mode.
    puller: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<PullRequest>>,
    /// The pull in progress, as the puller last reported it.
    pulling: parking_lot::Mutex<Option<nusa_admin::PullProgress>>,
}

impl Repository {
    /// Scans `root` and loads every model found (with its pinned version,
    /// from `state_dir`, the folder that keeps pins and history across
    /// restarts; `None` keeps them in memory). A model that fails to load is
    /// kept, not ready, with its error; the others serve.
    pub async fn load(
        root: &Path,
        state_dir: Option<PathBuf>,
        admission: Option<Arc<dyn Admission>>,
        decryptor: Option<Arc<dyn Decryptor>>,
        engines: Engines,
        metrics: &Arc<Metrics>,
    ) -> Result<Repository, RegistryError> {
        let read_err = |source| RegistryError::Read {
            path: root.to_path_buf(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(root).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if entry.file_type().map_err(read_err)?.is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    if !name.starts_with('.') {
                        names.push(name.to_string());
                    }
                }
            }
        }
        names.sort();
        let state = state::StateDir::new(state_dir.clone()).map_err(RegistryError::State)?;
        let pins = state.pins().map_err(RegistryError::State)?;
        let marks = state.marks().map_err(RegistryError::State)?;
        let repo = Repository {
            root: root.to_path_buf(),
            engines,
            metrics: Arc::clone(metrics),
            models: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(state),
            admission,
            decryptor,
            puller: std::sync::OnceLock::new(),
            pulling: parking_lot::Mutex::new(None),
        };
        for name in names {
            let model = repo
                .build_model(&name, pins.get(&name).copied(), &marks.of(&name), None)
                .await;
            match &model.error {
                None => {
                    tracing::info!(model = %name, versions = ?model.versions.keys().collect::<Vec<_>>(), pinned = ?model.pinned, "model loaded")
                }
                Some(e) => tracing::error!(model = %name, error = %e, "model failed to load"),
            }
            repo.install(&name, model);
        }
        // The model store and the model state: nusad's data partition on an
        // appliance (`nusa_filesystem_avail_bytes` warns before it fills).
        for dir in std::iter::once(root).chain(state_dir.as_deref()) {
            metrics.watch_filesystem(dir);
        }
        Ok(repo)
    }

    /// Swaps `model` in as `name`'s snapshot, and its readiness and latency
    /// objective into `nusa_model_ready` and `nusa_model_slo_seconds`.
    fn install(&self, name: &str, model: Model) {
        let ready = (!model.unloaded).then(|| model.ready());
        let slo = model
            .config
            .slo_ms
            .filter(|_| !model.unloaded)
            .map(|ms| ms as f64 / 1000.0);
        self.metrics.model_state(name, ready, slo);
        self.models
            .write()
            .insert(name.to_string(), Arc::new(model));
    }

    /// The puller's report of the pull in progress (`None`: none).
    pub fn set_pull_progress(&self, progress: Option<nusa_admin::PullProgress>) {
        *self.pulling.lock() = progress;
    }

    /// The pull in progress, for the status.
    pub fn pull_progress(&self) -> Option<nusa_admin::PullProgress> {
        self.pulling.lock().clone()
    }

    /// `directory` (a plain folder, not verified) or the admission's mode.
    pub fn mode(&self) -> &'static str {
        self.admission.as_ref().map_or("directory", |a| a.mode())
    }

    /// Hands operators' pull requests to the puller (signed mode).
    pub fn attach_puller(&self, tx: tokio::sync::mpsc::UnboundedSender<PullRequest>) {
        let _ = self.puller.set(tx);
    }

    /// Asks the puller to install a version now and load it.
    pub async fn request_pull(&self, model: &str, version: u64) -> Result<String, ChangeError> {
        let Some(tx) = self.puller.get() else {
            return Err(ChangeError::Refused {
                model: model.to_string(),
                reason: "no model repository is configured (models.repository): models come from the local folder".into(),
            });
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(PullRequest {
            model: model.to_string(),
            version,
            reply,
        })
        .map_err(|_| ChangeError::State("the puller stopped".into()))?;
        rx.await
            .map_err(|_| ChangeError::State("the puller stopped".into()))?
            .map_err(|reason| ChangeError::Refused {
                model: model.to_string(),
                reason,
            })
    }

    /// Records an event in the model history (the puller's pulls).
    pub async fn record(&self, event: Event) {
        self.changes.lock().await.record(event);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The models as they serve now.
    pub fn models(&self) -> Vec<Arc<Model>> {
        self.models.read().values().cloned().collect()
    }

    pub fn model(&self, name: &str) -> Result<Arc<Model>, LookupError> {
        self.models
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LookupError::UnknownModel(name.to_string()))
    }

    /// Every model that is not unloaded is ready (Triton's strict readiness).
    pub fn ready(&self) -> bool {
        self.models.read().values().all(|m| m.unloaded || m.ready())
    }

    /// The version a request names, or the latest.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<ModelVersion>, LookupError> {
        let model = self.model(name)?;
        if model.unloaded {
            return Err(LookupError::Unloaded(name.to_string()));
        }
        let found = match version {
            None | Some("") => model.serving(),
            // Canonical decimal only: `01` and `+1` name no version.
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| n.to_string() == v)
                .and_then(|n| model.versions.get(&n)),
        };
        match found {
            Some(v) => Ok(Arc::clone(v)),
            None if version.is_none() || model.versions.is_empty() => Err(LookupError::NotReady {
                model: name.to_string(),
                reason: model
                    .error
                    .clone()
                    .unwrap_or_else(|| "no version loaded".into()),
            }),
            None => Err(LookupError::UnknownVersion {
                model: name.to_string(),
                version: version.unwrap_or_default().to_string(),
                available: model
                    .versions
                    .keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Picks the engine for a model from its config, what this machine has,
/// and which model files its version directories hold.
fn select(choice: EngineChoice, engines: &Engines, dir: &Path) -> Result<Selected, String> {
    let ort = || Arc::clone(&engines.onnxruntime);
    match (choice, &engines.tensorrt) {
        (EngineChoice::Onnxruntime, _) => Ok(Selected {
            factory: ort(),
            engine: "onnxruntime",
            code: "configured",
            reason: "configured".into(),
        }),
        (EngineChoice::Tensorrt, Ok(trt)) => Ok(Selected {
            factory: Arc::clone(trt),
            engine: "tensorrt",
            code: "configured",
            reason: "configured".into(),
        }),
        (EngineChoice::Tensorrt, Err(why)) => Err(format!(
            "engine = \"tensorrt\" but TensorRT is not available: {why}"
        )),
        (EngineChoice::Auto, Err(why)) => Ok(Selected {
            factory: ort(),
            engine: "onnxruntime",
            code: "auto_no_tensorrt",
            reason: format!("auto: TensorRT not available: {why}"),
        }),
        (EngineChoice::Auto, Ok(trt)) => {
            let usable = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(Result::ok).any(|e| trt.has_model(&e.path())))
                .unwrap_or(false);
            if usable {
                Ok(Selected {
                    factory: Arc::clone(trt),
                    engine: "tensorrt",
                    code: "auto_plan",
                    reason: "auto: TensorRT available and a version has a plan or ONNX to build one from".into(),
                })
            } else {
                Ok(Selected {
                    factory: ort(),
                    engine: "onnxruntime",
                    code: "auto_no_model",
                    reason: "auto: no version has a model.plan, or a model.onnx this TensorRT can build from".into(),
                })
            }
        }
    }
}

async fn version_digest(dir: &Path) -> Result<VersionDigest, String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || VersionDigest::of_dir(&dir))
        .await
        .map_err(|e| format!("hashing the version's files panicked: {e}"))?
}

/// Loads every instance of one version on one factory: `Ok(None)` when a
/// build must run first (known from the first instance).
async fn instances(
    factory: &Arc<dyn EngineFactory>,
    dir: &Path,
    hints: &LoadHints,
    count: usize,
) -> Result<Option<Vec<Arc<dyn Engine>>>, String> {
    let mut engines: Vec<Arc<dyn Engine>> = Vec::new();
    for _ in 0..count.max(1) {
        let factory = Arc::clone(factory);
        let dir = dir.to_path_buf();
        let hints = hints.clone();
        // Loading parses and optimises the model: keep it off the runtime.
        let engine = tokio::task::spawn_blocking(move || factory.load_version(&dir, &hints))
            .await
            .map_err(|e| format!("loader panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        match engine {
            Some(e) => engines.push(Arc::from(e)),
            None if engines.is_empty() => return Ok(None),
            None => return Err("the engine's plan went away while loading instances".into()),
        }
    }
    Ok(Some(engines))
}

/// A TensorRT build to run once the version serves on ONNX Runtime.
struct PendingBuild {
    factory: Arc<dyn EngineFactory>,
    dir: PathBuf,
    hints: LoadHints,
    count: usize,
    code: &'static str,
}

impl PendingBuild {
    async fn run(self, version: Arc<ModelVersion>, metrics: Arc<Metrics>) {
        let model = self.hints.model.clone();
        let outcome = async {
            let factory = Arc::clone(&self.factory);
            let (dir, hints) = (self.dir.clone(), self.hints.clone());
            tokio::task::spawn_blocking(move || factory.build_version(&dir, &hints))
                .await
                .map_err(|e| format!("builder panicked: {e}"))?
                .map_err(|e| e.to_string())?;
            let engines = instances(&self.factory, &self.dir, &self.hints, self.count)
                .await?
                .ok_or("the built plan was not found")?;
            compatible(&version.metadata, engines[0].metadata())?;
            // The plan answers the version's goldens within the FP16
            // tolerance before it takes traffic.
            let dir = self.dir.clone();
            let goldens = tokio::task::spawn_blocking(move || nusa_goldens::load(&dir))
                .await
                .map_err(|e| format!("reading the golden tests panicked: {e}"))??;
            for g in &goldens {
                g.run_on(engines[0].as_ref(), true)
                    .await
                    .map_err(|e| format!("golden test failed on TensorRT: {e}"))?;
            }
            if !goldens.is_empty() {
                tracing::info!(model = %model, version = version.version, goldens = goldens.len(), "golden tests passed on the TensorRT plan (FP16 tolerance)");
            }
            version.scheduler.replace_engines(engines)
        }
        .await;
        let next = match outcome {
            Ok(()) => {
                tracing::info!(model = %model, version = version.version, "TensorRT plan loaded: the model now runs on TensorRT");
                EngineState {
                    engine: "tensorrt",
                    reason: self.code,
                    detail: "TensorRT plan built on this device".into(),
                }
            }
            Err(e) => {
                tracing::error!(model = %model, version = version.version, error = %e, "TensorRT build failed: the model stays on ONNX Runtime");
                EngineState {
                    engine: "onnxruntime",
                    reason: "build_failed",
                    detail: format!("TensorRT build failed: {e}"),
                }
            }
        };
        let mut state = version.engine.lock();
        metrics.model_engine(
            &model,
            version.version,
            next.engine,
            next.reason,
            Some((state.engine, state.reason)),
        );
        *state = next;
    }
}

/// Whether engines built for `new` can serve requests checked against
/// `old` (the ONNX Runtime metadata the API validates with).
fn compatible(old: &ModelMetadata, new: &ModelMetadata) -> Result<(), String> {
    let same = |a: &[nusa_engine::TensorSpec], b: &[nusa_engine::TensorSpec]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.name == y.name
                    && x.datatype == y.datatype
                    && x.shape.len() == y.shape.len()
                    && x.shape
                        .iter()
                        .zip(&y.shape)
                        .all(|(p, q)| p == q || *p < 0 || *q < 0)
            })
    };
    if same(&old.inputs, &new.inputs) && same(&old.outputs, &new.outputs) {
        Ok(())
    } else {
        Err(format!(
            "the TensorRT plan's tensors differ from the ONNX model's: {:?} -> {:?} vs {:?} -> {:?}",
            new.inputs, new.outputs, old.inputs, old.outputs
        ))
    }
}

/// Decrypts an encrypted version's `model.onnx` into memory and loads
/// every instance on ONNX Runtime from those bytes, which are wiped when
/// the last instance is loaded. TensorRT is not used: its plans are built
/// from (and cached as) files, and plaintext never reaches the disk.
async fn encrypted_instances(
    decryptor: Option<&Arc<dyn Decryptor>>,
    ort: &Arc<dyn EngineFactory>,
    dir: &Path,
    hints: &LoadHints,
    count: usize,
) -> Result<Vec<Arc<dyn Engine>>, String> {
    let (model, version) = (hints.model.clone(), hints.version);
    let file = ort.model_file();
    let encrypted_name = format!("{file}{ENCRYPTED_SUFFIX}");
    if !dir.join(&encrypted_name).is_file() {
        return Err(format!(
            "model '{model}' version {version} is encrypted but has no {encrypted_name}: an \
             encrypted TensorRT plan alone cannot be served (plans are built and loaded from \
             plaintext files); publish a model.onnx with it"
        ));
    }
    let Some(decryptor) = decryptor.cloned() else {
        return Err(format!(
            "model '{model}' version {version} is encrypted ({encrypted_name}) and this box has \
             no model decryption key (models.decryption_key): not loaded"
        ));
    };
    let ort = Arc::clone(ort);
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let plaintext = decryptor.decrypt(&model, version, &dir, file)?;
        let label = dir.join(&encrypted_name);
        let mut engines: Vec<Arc<dyn Engine>> = Vec::with_capacity(count.max(1));
        for _ in 0..count.max(1) {
            let engine = ort
                .load_source(ModelSource::Memory {
                    label: &label,
                    bytes: &plaintext,
                })
                .map_err(|e| e.to_string())?;
            engines.push(Arc::from(engine));
        }
        // `plaintext` is zeroed as it drops here.
        Ok(engines)
    })
    .await
    .map_err(|e| format!("loader panicked: {e}"))?
}

#[allow(clippy::too_many_arguments)]
async fn load_version(
    dir: &Path,
    version: u64,
    digest: VersionDigest,
    name: &str,
    config: &ModelConfig,
    selected: &Selected,
    all: &Engines,
    decryptor: Option<&Arc<dyn Decryptor>>,
    metrics: &Arc<Metrics>,
) -> Result<(ModelVersion, Option<PendingBuild>), String> {
    let policy = config.policy();
    let count = config.instances.count.max(1);
    let hints = LoadHints {
        model: name.to_string(),
        version,
        max_batch_size: policy.max_batch_size,
    };
    let loaded = if encrypted(dir) {
        let engines = encrypted_instances(decryptor, &all.onnxruntime, dir, &hints, count).await?;
        tracing::info!(model = %name, version, "encrypted version decrypted into memory and loaded on ONNX Runtime");
        Some(engines)
    } else {
        instances(&selected.factory, dir, &hints, count).await?
    };
    let (selected_engine, selected_code, selected_reason) = if encrypted(dir) {
        (
            "onnxruntime",
            "encrypted",
            "encrypted version: decrypted into memory and served by ONNX Runtime (TensorRT \
             plans are built from plaintext files, which never reach this disk)"
                .to_string(),
        )
    } else {
        (selected.engine, selected.code, selected.reason.clone())
    };
    // `digest` was hashed before the engines load, and is checked again
    // after: files replaced in between would leave it naming other weights
    // than the ones served.
    let (engines, state, pending) = match loaded {
        Some(engines) => (
            engines,
            EngineState {
                engine: selected_engine,
                reason: selected_code,
                detail: selected_reason,
            },
            None,
        ),
        None => {
            // A plan must be built: serve from the CPU meanwhile.
            let ort = &all.onnxruntime;
            if !ort.has_model(dir) {
                return Err(format!(
                    "the TensorRT plan must be built first and there is no {} to serve from meanwhile",
                    ort.model_file()
                ));
            }
            let engines = instances(ort, dir, &hints, count)
                .await?
                .ok_or("ONNX Runtime asked for a build")?;
            tracing::info!(model = %name, version, "no TensorRT plan for this device yet: serving from ONNX Runtime while it builds");
            let pending = PendingBuild {
                factory: Arc::clone(&selected.factory),
                dir: dir.to_path_buf(),
                hints: hints.clone(),
                count,
                code: selected.code,
            };
            (
                engines,
                EngineState {
                    engine: "onnxruntime",
                    reason: "building",
                    detail: "serving from ONNX Runtime while the TensorRT plan builds".into(),
                },
                Some(pending),
            )
        }
    };
    if version_digest(dir).await? != digest {
        return Err(format!(
            "the files under {} changed while the version loaded; it was not loaded",
            dir.display()
        ));
    }
    tracing::info!(model = %name, version, digest = %digest, "version files hashed");
    let metadata = engines[0].metadata().clone();
    if policy.max_batch_size > 0 && !metadata.batchable() {
        return Err(format!(
            "batching.max_batch_size is {} but not every input and output has a variable first dimension; set it to 0",
            policy.max_batch_size
        ));
    }
    let max_batch_size = policy.max_batch_size;
    let scheduler = Scheduler::spawn(policy, engines, metadata.clone(), metrics.model(name));
    metrics.model_engine(name, version, state.engine, state.reason, None);
    Ok((
        ModelVersion {
            version,
            digest,
            provenance: None,
            metadata,
            scheduler,
            max_batch_size,
            engine: Mutex::new(state),
        },
        pending,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nusa_engine::EngineError;

    struct Fake(&'static str);

    impl EngineFactory for Fake {
        fn model_file(&self) -> &'static str {
            self.0
        }

        fn load(&self, _: &Path) -> Result<Box<dyn Engine>, EngineError> {
            Err(EngineError::Library("fake".into()))
        }
    }

    fn engines(trt: bool) -> Engines {
        Engines {
            onnxruntime: Arc::new(Fake("model.onnx")),
            tensorrt: if trt {
                Ok(Arc::new(Fake("model.plan")))
            } else {
                Err("libnvinfer.so.10 not found".into())
            },
        }
    }

    #[test]
    fn selects_the_engine_from_config_machine_and_files() {
        let dir = std::env::temp_dir().join(format!("nusa-registry-select-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::write(dir.join("1/model.onnx"), b"").unwrap();
        let pick = |choice, trt| select(choice, &engines(trt), &dir).map(|s| (s.engine, s.reason));

        // No plan yet: auto stays on ONNX Runtime even with TensorRT present.
        assert_eq!(pick(EngineChoice::Auto, true).unwrap().0, "onnxruntime");
        let (engine, reason) = pick(EngineChoice::Auto, false).unwrap();
        assert_eq!(engine, "onnxruntime");
        assert!(reason.contains("libnvinfer.so.10 not found"), "{reason}");
        let e = pick(EngineChoice::Tensorrt, false).err().unwrap();
        assert!(e.contains("TensorRT is not available"), "{e}");

        std::fs::write(dir.join("1/model.plan"), b"").unwrap();
        assert_eq!(pick(EngineChoice::Auto, true).unwrap().0, "tensorrt");
        assert_eq!(pick(EngineChoice::Tensorrt, true).unwrap().0, "tensorrt");
        assert_eq!(
            pick(EngineChoice::Onnxruntime, true).unwrap().0,
            "onnxruntime"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
