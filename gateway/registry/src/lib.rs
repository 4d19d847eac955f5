//! The model repository: a directory in Triton's shape,
//! `<model>/<version>/model.onnx` (or `model.plan` for TensorRT) plus an
//! optional `<model>/config.toml`. Loading picks each model's engine, then
//! builds each version's engine instances and its scheduler.

mod config;
mod demo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nusa_engine::{Engine, EngineFactory, ModelMetadata};
use nusa_sched::Scheduler;
use nusa_telemetry::Metrics;

pub use config::{CachePolicy, EngineChoice, ModelConfig, Placement, Residency, VersionPolicy};
pub use demo::{materialize_demo, DEMO_MODEL_NAME};

/// One loaded version of a model.
pub struct ModelVersion {
    pub version: u64,
    pub metadata: ModelMetadata,
    pub scheduler: Scheduler,
    pub max_batch_size: usize,
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
    reason: String,
}

/// A model: its versions, or why it could not be loaded.
pub struct Model {
    pub name: String,
    pub config: ModelConfig,
    /// `onnxruntime` or `tensorrt`; empty when no engine could be chosen.
    pub engine: &'static str,
    pub versions: BTreeMap<u64, Arc<ModelVersion>>,
    /// Set when the model or one of its versions failed to load.
    pub error: Option<String>,
}

impl Model {
    pub fn ready(&self) -> bool {
        self.error.is_none() && !self.versions.is_empty()
    }

    pub fn latest(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.values().next_back()
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
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading model repository {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Repository {
    root: PathBuf,
    models: BTreeMap<String, Model>,
}

impl Repository {
    /// Scans `root` and loads every model found. A model that fails to load
    /// is kept, not ready, with its error; the others serve.
    pub async fn load(
        root: &Path,
        engines: Engines,
        metrics: &Metrics,
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
        let mut models = BTreeMap::new();
        for name in names {
            let model = load_model(&root.join(&name), &name, &engines, metrics).await;
            match &model.error {
                None => {
                    tracing::info!(model = %name, versions = ?model.versions.keys().collect::<Vec<_>>(), "model loaded")
                }
                Some(e) => tracing::error!(model = %name, error = %e, "model failed to load"),
            }
            models.insert(name, model);
        }
        Ok(Repository {
            root: root.to_path_buf(),
            models,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    pub fn model(&self, name: &str) -> Result<&Model, LookupError> {
        self.models
            .get(name)
            .ok_or_else(|| LookupError::UnknownModel(name.to_string()))
    }

    /// Every model found is ready (Triton's strict readiness).
    pub fn ready(&self) -> bool {
        self.models.values().all(Model::ready)
    }

    /// The version a request names, or the latest.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<ModelVersion>, LookupError> {
        let model = self.model(name)?;
        let found = match version {
            None | Some("") => model.latest(),
            Some(v) => v.parse::<u64>().ok().and_then(|n| model.versions.get(&n)),
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
            reason: "configured".into(),
        }),
        (EngineChoice::Tensorrt, Ok(trt)) => Ok(Selected {
            factory: Arc::clone(trt),
            engine: "tensorrt",
            reason: "configured".into(),
        }),
        (EngineChoice::Tensorrt, Err(why)) => Err(format!(
            "engine = \"tensorrt\" but TensorRT is not available: {why}"
        )),
        (EngineChoice::Auto, Err(why)) => Ok(Selected {
            factory: ort(),
            engine: "onnxruntime",
            reason: format!("auto: TensorRT not available: {why}"),
        }),
        (EngineChoice::Auto, Ok(trt)) => {
            let has_plan = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .any(|e| e.path().join(trt.model_file()).is_file())
                })
                .unwrap_or(false);
            if has_plan {
                Ok(Selected {
                    factory: Arc::clone(trt),
                    engine: "tensorrt",
                    reason: format!(
                        "auto: TensorRT available and a version has {}",
                        trt.model_file()
                    ),
                })
            } else {
                Ok(Selected {
                    factory: ort(),
                    engine: "onnxruntime",
                    reason: format!("auto: no version has {}", trt.model_file()),
                })
            }
        }
    }
}

async fn load_model(dir: &Path, name: &str, engines: &Engines, metrics: &Metrics) -> Model {
    let mut model = Model {
        name: name.to_string(),
        config: ModelConfig::default(),
        engine: "",
        versions: BTreeMap::new(),
        error: None,
    };
    match ModelConfig::load(&dir.join("config.toml")) {
        Ok(c) => model.config = c,
        Err(e) => {
            model.error = Some(e);
            return model;
        }
    }
    let selected = match select(model.config.engine, engines, dir) {
        Ok(s) => s,
        Err(e) => {
            model.error = Some(e);
            return model;
        }
    };
    tracing::info!(model = %name, engine = selected.engine, reason = %selected.reason, "engine selected");
    model.engine = selected.engine;
    let factory = &selected.factory;
    let mut versions: Vec<u64> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.path().join(factory.model_file()).is_file())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()))
            .filter(|&v| v > 0)
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
    if model.config.versions == VersionPolicy::Latest {
        versions.drain(..versions.len() - 1);
    }
    for v in versions {
        let path = dir.join(v.to_string()).join(factory.model_file());
        match load_version(&path, v, name, &model.config, factory, metrics).await {
            Ok(mv) => {
                model.versions.insert(v, Arc::new(mv));
            }
            Err(e) => {
                model.error = Some(format!("version {v}: {e}"));
            }
        }
    }
    model
}

async fn load_version(
    path: &Path,
    version: u64,
    name: &str,
    config: &ModelConfig,
    factory: &Arc<dyn EngineFactory>,
    metrics: &Metrics,
) -> Result<ModelVersion, String> {
    let mut engines: Vec<Arc<dyn Engine>> = Vec::new();
    for _ in 0..config.instances.count.max(1) {
        let factory = Arc::clone(factory);
        let path = path.to_path_buf();
        // Loading parses and optimises the model: keep it off the runtime.
        let engine = tokio::task::spawn_blocking(move || factory.load(&path))
            .await
            .map_err(|e| format!("loader panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        engines.push(Arc::from(engine));
    }
    let metadata = engines[0].metadata().clone();
    let policy = config.policy();
    if policy.max_batch_size > 0 && !metadata.batchable() {
        return Err(format!(
            "batching.max_batch_size is {} but not every input and output has a variable first dimension; set it to 0",
            policy.max_batch_size
        ));
    }
    let max_batch_size = policy.max_batch_size;
    let scheduler = Scheduler::spawn(policy, engines, metadata.clone(), metrics.model(name));
    Ok(ModelVersion {
        version,
        metadata,
        scheduler,
        max_batch_size,
    })
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
