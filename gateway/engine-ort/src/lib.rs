//! The CPU engine: ONNX Runtime through the `ort` crate, loaded at run time.
//!
//! ONNX Runtime is a shared library found at start-up (`load-dynamic`), so one
//! `nusad` binary runs wherever the library is present and says clearly where
//! it is not. Each engine instance owns one session on a thread of its own;
//! `run` sends the batch to that thread and awaits the answer, so inference
//! never blocks the async runtime.

mod convert;
mod library;

use std::path::Path;
use std::sync::mpsc;
use std::thread;

use nusa_engine::{
    BatchInput, BytesElements, Engine, EngineError, EngineFactory, Health, ModelMetadata,
    ModelSource, RunFuture, TensorSpec,
};
use nusa_tensor::Tensor;
use ort::session::Session;
use ort::value::ValueType;
use tokio::sync::oneshot;

pub use library::{init_library, library_candidates, LibraryError};

/// Session options shared by every instance this factory loads.
#[derive(Clone, Debug)]
pub struct OrtOptions {
    /// Threads inside one operator (ONNX Runtime's intra-op pool) per instance.
    pub intra_op_threads: usize,
    /// Threads across operators per instance (1 = sequential execution).
    pub inter_op_threads: usize,
}

impl Default for OrtOptions {
    fn default() -> OrtOptions {
        OrtOptions {
            intra_op_threads: 1,
            inter_op_threads: 1,
        }
    }
}

/// Loads `model.onnx` files into ONNX Runtime sessions.
pub struct OrtFactory {
    env: ort::environment::Environment,
    options: OrtOptions,
}

impl OrtFactory {
    /// Needs [`init_library`] to have succeeded first.
    pub fn new(options: OrtOptions) -> Result<OrtFactory, EngineError> {
        let env = library::environment().map_err(|e| EngineError::Library(e.to_string()))?;
        Ok(OrtFactory { env, options })
    }
}

impl EngineFactory for OrtFactory {
    fn model_file(&self) -> &'static str {
        "model.onnx"
    }

    fn load(&self, path: &Path) -> Result<Box<dyn Engine>, EngineError> {
        self.load_source(ModelSource::File(path))
    }

    /// The one place sessions are built: from a file, or from a model
    /// decrypted into memory (`commit_from_memory`: ONNX Runtime parses
    /// the buffer and keeps no reference to it, so the caller may wipe it
    /// once every instance is loaded).
    fn load_source(&self, source: ModelSource<'_>) -> Result<Box<dyn Engine>, EngineError> {
        let path = source.label();
        let load_err = |e: ort::Error| EngineError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let builder_err =
            |e: ort::Error<ort::session::builder::SessionBuilder>| EngineError::Load {
                path: path.to_path_buf(),
                message: e.to_string(),
            };
        let mut builder = Session::builder(&self.env)
            .map_err(load_err)?
            .with_intra_threads(self.options.intra_op_threads.max(1))
            .map_err(builder_err)?
            .with_inter_threads(self.options.inter_op_threads.max(1))
            .map_err(builder_err)?;
        let session = match source {
            ModelSource::File(file) => builder.commit_from_file(file),
            ModelSource::Memory { bytes, .. } => builder.commit_from_memory(bytes),
        }
        .map_err(load_err)?;
        let metadata = metadata(&session).map_err(|message| EngineError::Load {
            path: path.to_path_buf(),
            message,
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let name = format!(
            "ort-{}",
            path.parent()
                .and_then(|p| p.parent())
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let outputs = metadata.outputs.clone();
        thread::Builder::new()
            .name(name)
            .spawn(move || instance_thread(session, outputs, rx))
            .map_err(|e| EngineError::Load {
                path: path.to_path_buf(),
                message: format!("spawning the session thread: {e}"),
            })?;
        Ok(Box::new(OrtEngine { metadata, jobs: tx }))
    }
}

struct Job {
    inputs: Vec<BatchInput>,
    reply: oneshot::Sender<Result<Vec<Tensor>, EngineError>>,
}

struct OrtEngine {
    metadata: ModelMetadata,
    // std's Sender is Sync since Rust 1.72, so the engine can be shared.
    jobs: mpsc::Sender<Job>,
}

impl Engine for OrtEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn run(&self, inputs: Vec<BatchInput>) -> RunFuture {
        let (reply, rx) = oneshot::channel();
        let sent = self.jobs.send(Job { inputs, reply });
        Box::pin(async move {
            sent.map_err(|_| EngineError::Stopped)?;
            rx.await.map_err(|_| EngineError::Stopped)?
        })
    }

    fn health(&self) -> Health {
        Health::Ready
    }
}

/// Owns the session; ends when the engine (the sender) is dropped.
fn instance_thread(mut session: Session, outputs: Vec<TensorSpec>, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let result = run_batch(&mut session, &outputs, job.inputs);
        // The requester may have gone (client hung up); nothing to do then.
        let _ = job.reply.send(result);
    }
}

fn run_batch(
    session: &mut Session,
    outputs: &[TensorSpec],
    inputs: Vec<BatchInput>,
) -> Result<Vec<Tensor>, EngineError> {
    let mut values = Vec::with_capacity(inputs.len());
    for input in &inputs {
        values.push((input.name.clone(), convert::to_value(input)?));
    }
    let mut result = session.run(values).map_err(|e| match e.code() {
        // A kernel refusing the data (Gather's indices out of range, a
        // Reshape to a size the data cannot fill): the request's fault, a
        // 400 once the batch has been run apart to find it.
        ort::error::ErrorCode::InvalidArgument => EngineError::Input(e.to_string()),
        _ => EngineError::Run(e.to_string()),
    })?;
    outputs
        .iter()
        .map(|spec| {
            let value = result.remove(&spec.name).ok_or_else(|| {
                EngineError::Run(format!("output '{}' missing from the result", spec.name))
            })?;
            convert::from_value(&spec.name, &value)
        })
        .collect()
}

fn metadata(session: &Session) -> Result<ModelMetadata, String> {
    let spec = |o: &ort::value::Outlet| -> Result<TensorSpec, String> {
        match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: o.name().to_string(),
                datatype: convert::datatype(*ty).ok_or_else(|| {
                    format!(
                        "tensor '{}' has type {ty:?}, which the protocol cannot carry",
                        o.name()
                    )
                })?,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            }),
            other => Err(format!("'{}' is a {other:?}, not a tensor", o.name())),
        }
    };
    Ok(ModelMetadata {
        platform: "onnxruntime_onnx".into(),
        inputs: session
            .inputs()
            .iter()
            .map(spec)
            .collect::<Result<_, _>>()?,
        outputs: session
            .outputs()
            .iter()
            .map(spec)
            .collect::<Result<_, _>>()?,
        // Strings go in as C strings (see convert::to_value).
        bytes_elements: BytesElements::Utf8NoNul,
    })
}

/// An engine error at start-up, as the app reports it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct EngineErrorWrap(pub EngineError);
