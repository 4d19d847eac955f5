//! The GPU engine: serialized TensorRT plans (`model.plan`) run through
//! trt-sys.
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

use std::path::Path;
use std::sync::Arc;

use nusa_engine::{
    BatchInput, Engine, EngineError, EngineFactory, Health, ModelMetadata, RunFuture, TensorSpec,
};
use nusa_tensor::Tensor;
use tokio::sync::oneshot;
use trt_sys::{HostTensor, Instance, IoMode, LibraryPaths, Trt};

/// Loads `model.plan` files. Holds the opened libraries for every instance.
pub struct TrtFactory {
    trt: Trt,
}

impl TrtFactory {
    /// Opens the shim, TensorRT and the CUDA runtime.
    pub fn new(paths: &LibraryPaths) -> Result<Self, EngineError> {
        let trt = Trt::load(paths).map_err(|e| EngineError::Library(e.to_string()))?;
        match trt.version() {
            Ok(v) => tracing::info!(
                tensorrt = v.tensorrt_library,
                compiled = v.tensorrt_compiled,
                cuda = v.cuda_runtime,
                "TensorRT engine available"
            ),
            Err(e) => return Err(EngineError::Library(e.to_string())),
        }
        Ok(Self { trt })
    }

    pub fn trt(&self) -> &Trt {
        &self.trt
    }
}

impl EngineFactory for TrtFactory {
    fn model_file(&self) -> &'static str {
        "model.plan"
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
