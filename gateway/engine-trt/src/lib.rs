//! The GPU engine: TensorRT plans run through trt-sys, built on the device
//! from `model.onnx` (see [`plans`]) or shipped prebuilt as `model.plan`.
//!
//! TensorRT and the CUDA runtime are opened at run time (trt-sys), so the
//! gateway binary runs where they are absent; [`TrtFactory::new`] is where
//! their absence becomes an error the app can act on (fall back to ONNX
//! Runtime). Each instance is a trt-sys [`Instance`]: one thread owning the
//! context, stream and device buffers.
//!
//! Batches larger than the plan's optimization profile allows are split into
//! runs of at most the profile's maximum and the outputs joined.
//!
//! No `unsafe` here yet: everything goes through trt-sys's safe wrapper.

mod convert;
pub mod plans;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use nusa_engine::{
    BatchInput, BytesElements, Engine, EngineError, EngineFactory, Health, LoadHints,
    ModelMetadata, RunFuture, TensorSpec,
};
use nusa_tensor::Tensor;
use parking_lot::Mutex;
use plans::{batch_range, BuildSettings, PlanStore};
use tokio::sync::oneshot;
use trt_sys::{BuildOptions, HostTensor, Instance, IoMode, LibraryPaths, Trt, VersionInfo};

const ONNX: &str = "model.onnx";
const PLAN: &str = "model.plan";

/// How the factory finds its libraries and keeps its plans.
#[derive(Clone, Debug)]
pub struct TrtOptions {
    pub libraries: LibraryPaths,
    /// Where built plans and the timing cache go (on the data partition).
    pub plan_dir: PathBuf,
    pub build: BuildSettings,
    /// The GPU this gateway runs on.
    pub device: i32,
}

/// Loads TensorRT plans, building them from ONNX when needed. Holds the
/// opened libraries for every instance.
pub struct TrtFactory {
    trt: Trt,
    version: VersionInfo,
    store: PlanStore,
    build: BuildSettings,
    /// One build at a time: each takes the GPU's memory and minutes, and
    /// they share the timing cache file.
    building: Mutex<()>,
}

impl TrtFactory {
    /// Opens the shim, TensorRT and the CUDA runtime, and reads what plan
    /// keys need from the GPU. Fails without a usable GPU.
    pub fn new(options: TrtOptions) -> Result<Self, EngineError> {
        let lib = |e: trt_sys::TrtError| EngineError::Library(e.to_string());
        let trt = Trt::load(&options.libraries).map_err(|e| EngineError::Library(e.to_string()))?;
        let version = trt.version().map_err(lib)?;
        let (major, minor) = trt
            .compute_capability(options.device)
            .map_err(|e| EngineError::Library(format!("no usable GPU: {e}")))?;
        // Older CUDA runtimes may lack the call; the capability still keys.
        let gpu = trt
            .device_name(options.device)
            .unwrap_or_else(|_| "unknown".into());
        tracing::info!(
            tensorrt = version.tensorrt_library,
            compiled = version.tensorrt_compiled,
            cuda = version.cuda_runtime,
            gpu = %gpu,
            compute_capability = %format!("{major}.{minor}"),
            builder = version.onnx_parser != 0,
            "TensorRT engine available"
        );
        let device = vec![
            ("tensorrt".into(), version.tensorrt_library.to_string()),
            ("onnx_parser".into(), version.onnx_parser.to_string()),
            ("shim_abi".into(), version.abi.to_string()),
            (
                "shim_tensorrt".into(),
                version.tensorrt_compiled.to_string(),
            ),
            ("gpu".into(), gpu),
            ("compute_capability".into(), format!("{major}.{minor}")),
        ];
        Ok(Self {
            trt,
            version,
            store: PlanStore::new(options.plan_dir, device),
            build: options.build,
            building: Mutex::new(()),
        })
    }

    pub fn trt(&self) -> &Trt {
        &self.trt
    }

    /// Whether plans can be built here (a lean runtime only deserializes).
    pub fn can_build(&self) -> bool {
        self.version.onnx_parser != 0
    }

    fn cached_plan(&self, dir: &Path, hints: &LoadHints) -> Result<PathBuf, EngineError> {
        let onnx = dir.join(ONNX);
        let key = self
            .store
            .key(&onnx, batch_range(hints.max_batch_size), &self.build)
            .map_err(|e| EngineError::Load {
                path: onnx.clone(),
                message: e.to_string(),
            })?;
        Ok(self.store.plan_path(&hints.model, hints.version, &key))
    }
}

impl EngineFactory for TrtFactory {
    fn model_file(&self) -> &'static str {
        PLAN
    }

    fn has_model(&self, dir: &Path) -> bool {
        dir.join(PLAN).is_file() || (self.can_build() && dir.join(ONNX).is_file())
    }

    /// A plan cached for this ONNX, machine and settings first, then a
    /// prebuilt `model.plan`; `None` when a build must run. A cached plan
    /// that fails to load is removed, so the build replaces it.
    fn load_version(
        &self,
        dir: &Path,
        hints: &LoadHints,
    ) -> Result<Option<Box<dyn Engine>>, EngineError> {
        let buildable = self.can_build() && dir.join(ONNX).is_file();
        if buildable {
            let cached = self.cached_plan(dir, hints)?;
            if cached.is_file() {
                match self.load(&cached) {
                    Ok(e) => return Ok(Some(e)),
                    Err(e) => {
                        tracing::warn!(model = %hints.model, version = hints.version, error = %e, "cached TensorRT plan does not load: removing it and building again");
                        if let Err(e) = std::fs::remove_file(&cached) {
                            tracing::warn!(path = %cached.display(), error = %e, "removing the bad plan");
                        }
                    }
                }
            }
        }
        let prebuilt = dir.join(PLAN);
        if prebuilt.is_file() {
            match self.load(&prebuilt) {
                Ok(e) => return Ok(Some(e)),
                Err(e) if buildable => {
                    tracing::warn!(model = %hints.model, version = hints.version, error = %e, "the shipped model.plan does not load here: building from model.onnx");
                }
                Err(e) => return Err(e),
            }
        }
        if buildable {
            return Ok(None);
        }
        Err(EngineError::Load {
            path: dir.to_path_buf(),
            message: if dir.join(ONNX).is_file() {
                "no model.plan, and this TensorRT install has no builder (ONNX parser) to build one from model.onnx".into()
            } else {
                "no model.plan or model.onnx".into()
            },
        })
    }

    fn build_version(&self, dir: &Path, hints: &LoadHints) -> Result<(), EngineError> {
        let _one_at_a_time = self.building.lock();
        let path = self.cached_plan(dir, hints)?;
        if path.is_file() {
            return Ok(());
        }
        let onnx = dir.join(ONNX);
        let batch = batch_range(hints.max_batch_size);
        let key = self
            .store
            .key(&onnx, batch, &self.build)
            .map_err(|e| EngineError::Load {
                path: onnx.clone(),
                message: e.to_string(),
            })?;
        let timing_cache = self.store.timing_cache();
        tracing::info!(model = %hints.model, version = hints.version, key = %key.id, batch = ?batch, timing_cache = timing_cache.is_some(), "building TensorRT plan");
        let started = Instant::now();
        let built = self
            .trt
            .build_from_onnx(&BuildOptions {
                onnx: onnx.clone(),
                profile: Vec::new(),
                batch,
                workspace_bytes: self.build.workspace_bytes,
                fp16: self.build.fp16,
                timing_cache,
            })
            .map_err(|e| EngineError::Load {
                path: onnx.clone(),
                message: format!("building a TensorRT plan: {e}"),
            })?;
        let io_err = |e: std::io::Error| EngineError::Load {
            path: path.clone(),
            message: format!("storing the built plan: {e}"),
        };
        self.store.store(&path, &key, &built.plan).map_err(io_err)?;
        if let Some(t) = &built.timing_cache {
            if let Err(e) = self.store.store_timing_cache(t) {
                tracing::warn!(error = %e, "storing the timing cache");
            }
        }
        tracing::info!(model = %hints.model, version = hints.version, seconds = started.elapsed().as_secs_f64(), bytes = built.plan.len(), path = %path.display(), "TensorRT plan built");
        Ok(())
    }

    fn load(&self, path: &Path) -> Result<Box<dyn Engine>, EngineError> {
        let load_err = |message: String| EngineError::Load {
            path: path.to_path_buf(),
            message,
        };
        let plan = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
        let label = path
            .parent()
            .and_then(|p| p.parent())
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let instance =
            Instance::spawn(self.trt.clone(), plan, &label).map_err(|e| load_err(e.to_string()))?;
        let metadata = metadata(&instance).map_err(load_err)?;
        // The most rows one run may take: the smallest profile maximum over
        // the inputs with a dynamic first dimension.
        let max_rows = instance
            .info()
            .profiles
            .iter()
            .filter_map(|(_, r)| r.max.first().copied())
            .min()
            .and_then(|m| usize::try_from(m).ok())
            .filter(|&m| m > 0);
        Ok(Box::new(TrtEngine {
            metadata,
            max_rows,
            instance: Arc::new(instance),
        }))
    }
}

fn metadata(instance: &Instance) -> Result<ModelMetadata, String> {
    let spec = |t: &trt_sys::IoTensor| -> Result<TensorSpec, String> {
        Ok(TensorSpec {
            name: t.name.clone(),
            datatype: convert::datatype(t.data_type).ok_or_else(|| {
                format!(
                    "tensor '{}' has type {:?}, which the protocol cannot carry",
                    t.name, t.data_type
                )
            })?,
            shape: t
                .shape
                .iter()
                .map(|&d| if d < 0 { -1 } else { d })
                .collect(),
        })
    };
    let io = &instance.info().io;
    Ok(ModelMetadata {
        platform: "tensorrt_plan".into(),
        inputs: io
            .iter()
            .filter(|t| t.mode == IoMode::Input)
            .map(spec)
            .collect::<Result<_, _>>()?,
        outputs: io
            .iter()
            .filter(|t| t.mode == IoMode::Output)
            .map(spec)
            .collect::<Result<_, _>>()?,
        // TensorRT has no string tensors: no input is BYTES.
        bytes_elements: BytesElements::Any,
    })
}

struct TrtEngine {
    metadata: ModelMetadata,
    max_rows: Option<usize>,
    instance: Arc<Instance>,
}

impl TrtEngine {
    /// Gathers each input into one host buffer (the one copy on the way in)
    /// and cuts the batch into runs the profile accepts.
    fn chunks(&self, inputs: &[BatchInput]) -> Result<Vec<Vec<HostTensor>>, EngineError> {
        let gathered = inputs
            .iter()
            .map(|i| {
                let spec = self.metadata.input(&i.name).ok_or_else(|| {
                    EngineError::Input(format!("the model has no input '{}'", i.name))
                })?;
                let data_type = convert::trt_datatype(spec.datatype).ok_or_else(|| {
                    EngineError::Input(format!("input '{}': {}", i.name, spec.datatype))
                })?;
                let mut data = vec![0u8; i.len()];
                i.gather_into(&mut data);
                Ok(HostTensor {
                    name: i.name.clone(),
                    data_type,
                    shape: i.shape.clone(),
                    data,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let rows = gathered
            .first()
            .and_then(|t| t.shape.first())
            .map_or(0, |&r| usize::try_from(r).unwrap_or(0));
        let Some(max) = self
            .max_rows
            .filter(|&m| rows > m && self.metadata.batchable())
        else {
            return Ok(vec![gathered]);
        };
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = max.min(rows - start);
            let chunk = gathered
                .iter()
                .map(|t| {
                    let row_bytes = t.data.len() / rows;
                    let mut shape = t.shape.clone();
                    if let Some(d) = shape.first_mut() {
                        *d = n as i64;
                    }
                    HostTensor {
                        name: t.name.clone(),
                        data_type: t.data_type,
                        shape,
                        data: t.data[start * row_bytes..(start + n) * row_bytes].to_vec(),
                    }
                })
                .collect();
            chunks.push(chunk);
            start += n;
        }
        Ok(chunks)
    }
}

impl Engine for TrtEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn run(&self, inputs: Vec<BatchInput>) -> RunFuture {
        let chunks = self.chunks(&inputs);
        let instance = Arc::clone(&self.instance);
        Box::pin(async move {
            let mut joined: Vec<Tensor> = Vec::new();
            for chunk in chunks? {
                let (tx, rx) = oneshot::channel();
                instance
                    .submit(
                        chunk,
                        Box::new(move |r| {
                            // The requester may have gone; nothing to do then.
                            let _ = tx.send(r);
                        }),
                    )
                    .map_err(|_| EngineError::Stopped)?;
                let outputs = rx
                    .await
                    .map_err(|_| EngineError::Stopped)?
                    .map_err(convert::run_error)?;
                joined = convert::append(joined, outputs)?;
            }
            Ok(joined)
        })
    }

    fn health(&self) -> Health {
        Health::Ready
    }
}
