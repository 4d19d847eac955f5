//! One engine instance on a thread of its own.
//!
//! TensorRT's execution context, the CUDA stream and the device buffers are
//! made on that thread and never leave it; callers reach it over a channel
//! and get answers through a callback (so this crate needs no async
//! runtime; the gateway's engine turns the callback into a future).

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::{
    Context, DataType, DeviceBuffer, Engine, IoMode, IoTensor, ProfileRange, Runtime, Status,
    Stream, Trt, TrtError,
};

/// A tensor in host memory, as it goes in and comes out of an instance.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub data_type: DataType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// What an instance's engine takes and gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    pub io: Vec<IoTensor>,
    /// Profile 0's range per input, for inputs with a dynamic dimension.
    pub profiles: Vec<(String, ProfileRange)>,
}

pub type Reply = Box<dyn FnOnce(Result<Vec<HostTensor>, TrtError>) + Send>;

struct Job {
    inputs: Vec<HostTensor>,
    reply: Reply,
}

pub struct Instance {
    info: InstanceInfo,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Instance {
    /// Starts the thread, which deserializes `plan` and makes its context,
    /// stream and buffers; returns once the engine is loaded or failed.
    pub fn spawn(trt: Trt, plan: Vec<u8>, label: &str) -> Result<Self, TrtError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("nusa-trt-{label}"))
            .spawn(move || {
                let state = match State::new(&trt, &plan) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                drop(plan);
                if ready_tx.send(Ok(state.info.clone())).is_err() {
                    return;
                }
                state.serve(jobs_rx);
            })
            .map_err(|e| {
                TrtError::new(
                    "spawn",
                    Status::Unknown(0),
                    format!("starting the instance thread: {e}"),
                )
            })?;
        let info = ready_rx.recv().map_err(|_| {
            TrtError::new(
                "spawn",
                Status::Unknown(0),
                "the instance thread stopped while loading",
            )
        })??;
        Ok(Self {
            info,
            jobs: Some(jobs_tx),
            thread: Some(thread),
        })
    }

    pub fn info(&self) -> &InstanceInfo {
        &self.info
    }

    /// Queues a batch; `reply` runs on the instance thread with the outputs.
    /// Fails with Err(reply) when the thread has stopped.
    pub fn submit(&self, inputs: Vec<HostTensor>, reply: Reply) -> Result<(), Reply> {
        match &self.jobs {
            Some(tx) => tx.send(Job { inputs, reply }).map_err(|e| e.0.reply),
            None => Err(reply),
        }
    }

    /// Runs a batch and waits for it (tests, tools).
    pub fn run_blocking(&self, inputs: Vec<HostTensor>) -> Result<Vec<HostTensor>, TrtError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let stopped = || TrtError::new("run", Status::Unknown(0), "the instance thread stopped");
        self.submit(
            inputs,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining makes the
        // context, engine, runtime and buffers gone when drop returns.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("a TensorRT instance thread panicked");
            }
        }
    }
}

/// Everything the instance thread owns. Field order is drop order: buffers
/// and stream before the context, the context before the engine, the engine
/// before the runtime (the Arcs inside enforce it too).
struct State {
    buffers: HashMap<String, DeviceBuffer>,
    stream: Stream,
    context: Context,
    _engine: Engine,
    _runtime: Runtime,
    info: InstanceInfo,
}

impl State {
    fn new(trt: &Trt, plan: &[u8]) -> Result<Self, TrtError> {
        let runtime = Runtime::new(trt)?;
        let engine = Engine::deserialize(&runtime, plan)?;
        let mut profiles = Vec::new();
        for t in engine
            .io()
            .iter()
            .filter(|t| t.mode == IoMode::Input && t.shape.iter().any(|&d| d < 0))
        {
            profiles.push((t.name.clone(), engine.profile(&t.name)?));
        }
        let info = InstanceInfo {
            io: engine.io().to_vec(),
            profiles,
        };
        let context = Context::new(&engine)?;
        let stream = Stream::new(trt)?;
        Ok(Self {
            buffers: HashMap::new(),
            stream,
            context,
            _engine: engine,
            _runtime: runtime,
            info,
        })
    }

    fn serve(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            let result = self.run(&job.inputs);
            (job.reply)(result);
        }
    }

    fn run(&mut self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, TrtError> {
        for i in inputs {
            let t = self
                .info
                .io
                .iter()
                .find(|t| t.name == i.name && t.mode == IoMode::Input);
            if let Some(t) = t {
                if t.data_type != i.data_type {
                    return Err(TrtError::new(
                        "run",
                        Status::InvalidArgument,
                        format!(
                            "input {}: {:?}, the engine takes {:?}",
                            i.name, i.data_type, t.data_type
                        ),
                    ));
                }
            }
        }
        let raw: Vec<(&str, &[i64], &[u8])> = inputs
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice(), t.data.as_slice()))
            .collect();
        let outputs = self.context.run(&self.stream, &mut self.buffers, &raw)?;
        Ok(outputs
            .into_iter()
            .map(|(name, shape, data)| {
                let data_type = self
                    .info
                    .io
                    .iter()
                    .find(|t| t.name == name)
                    .map_or(DataType::Uint8, |t| t.data_type);
                HostTensor {
                    name,
                    data_type,
                    shape,
                    data,
                }
            })
            .collect())
    }
}
