//! The engine seam: one trait that every engine implements (ONNX Runtime on
//! the CPU, TensorRT on the GPU, a regional cloud endpoint).
//!
//! An engine instance runs one batch at a time; the scheduler owns several
//! instances and decides what goes where. Engines never run model code on the
//! async runtime's threads: `run` hands the batch to the engine's own thread
//! (or to the network) and returns a future of the outputs.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use nusa_tensor::{bytes_elements, DataType, Tensor, TensorData};

/// A tensor the model takes or gives: name, datatype, and shape with -1 for
/// every variable dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// What an engine reports about the model it loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    /// Triton's platform string, e.g. `onnxruntime_onnx`.
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// What the engine takes as the elements of a BYTES input. The API
    /// checks every element against it before a request is queued, so that
    /// one request the engine cannot run never reaches a batch with others.
    pub bytes_elements: BytesElements,
}

/// The elements of BYTES inputs an engine can run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BytesElements {
    /// Any bytes (the protocol's own rule).
    #[default]
    Any,
    /// UTF-8 text without NUL: ONNX Runtime's string tensors are C strings
    /// (`FillStringTensor` takes `const char*`), built from Rust `String`s.
    Utf8NoNul,
}

impl BytesElements {
    /// Checks every element of a BYTES tensor (others pass). The error names
    /// the tensor and the element: its flat index and its position in the
    /// shape.
    pub fn check(self, t: &Tensor) -> Result<(), String> {
        if self == BytesElements::Any || t.datatype != DataType::Bytes {
            return Ok(());
        }
        let elements = bytes_elements(&t.data.contiguous())
            .map_err(|d| format!("input '{}': bad BYTES data: {d}", t.name))?;
        for (i, e) in elements.iter().enumerate() {
            let why = match std::str::from_utf8(e) {
                Err(u) => format!("is not valid UTF-8 (at byte {})", u.valid_up_to()),
                Ok(s) => match s.find('\0') {
                    Some(at) => format!("contains a NUL byte (at byte {at})"),
                    None => continue,
                },
            };
            return Err(format!(
                "input '{}': element {i} {} {why}; this model's engine takes BYTES elements as UTF-8 text without NUL",
                t.name,
                position(&t.shape, i),
            ));
        }
        Ok(())
    }
}

/// `[r, c, ...]`: where flat element `i` sits in `shape`.
fn position(shape: &[i64], mut i: usize) -> String {
    let mut at = vec![0usize; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        let d = d.max(1) as usize;
        at[k] = i % d;
        i /= d;
    }
    format!("{at:?}")
}

impl ModelMetadata {
    /// True when every input and output has a variable first dimension, so
    /// requests can be concatenated along it.
    pub fn batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first().is_some_and(|&d| d < 0))
    }

    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.name == name)
    }

    /// Puts the inputs in the model's order and checks names, datatypes,
    /// shapes and the elements of BYTES inputs against what the engine takes.
    /// Returns the inputs and the request's rows.
    pub fn order_inputs(
        &self,
        mut given: Vec<Tensor>,
        batching: bool,
    ) -> Result<(Vec<Tensor>, usize), String> {
        let meta = self;
        let names = || {
            meta.inputs
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(extra) = given.iter().find(|t| meta.input(&t.name).is_none()) {
            return Err(format!(
                "unknown input '{}': the model takes {}",
                extra.name,
                names()
            ));
        }
        let mut ordered = Vec::with_capacity(meta.inputs.len());
        let mut rows: Option<usize> = None;
        for spec in &meta.inputs {
            let Some(pos) = given.iter().position(|t| t.name == spec.name) else {
                return Err(format!(
                    "missing input '{}' ({} {:?}): the model takes {}",
                    spec.name,
                    spec.datatype,
                    spec.shape,
                    names()
                ));
            };
            let t = given.swap_remove(pos);
            if t.datatype != spec.datatype {
                return Err(format!(
                    "input '{}': datatype {} does not match the model's {}",
                    t.name, t.datatype, spec.datatype
                ));
            }
            let fits = t.shape.len() == spec.shape.len()
                && t.shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&got, &want)| want < 0 || got == want);
            if !fits {
                return Err(format!(
                    "input '{}': shape {:?} does not match the model's {:?} (-1 is any size)",
                    t.name, t.shape, spec.shape
                ));
            }
            // What the engine cannot take fails here, alone, with a 400: in a
            // batch it would fail every other request with it.
            meta.bytes_elements.check(&t)?;
            if batching {
                let r = t.shape[0] as usize;
                if r == 0 {
                    return Err(format!("input '{}': the batch dimension is 0", t.name));
                }
                match rows {
                None => rows = Some(r),
                Some(prev) if prev != r => {
                    return Err(format!(
                        "input '{}' has {r} rows but another input has {prev}: all inputs need the same batch size",
                        t.name
                    ))
                }
                Some(_) => {}
            }
            }
            ordered.push(t);
        }
        Ok((ordered, rows.unwrap_or(1)))
    }
}

#[cfg(test)]
mod tests {
    use nusa_tensor::encode_bytes_elements;

    use super::*;

    fn strings(shape: Vec<i64>, elements: &[&[u8]]) -> Tensor {
        Tensor {
            name: "text".into(),
            datatype: DataType::Bytes,
            shape,
            data: TensorData::from(encode_bytes_elements(elements.iter().copied())),
        }
    }

    #[test]
    fn utf8_without_nul_names_the_tensor_and_element() {
        let rule = BytesElements::Utf8NoNul;
        let good = strings(vec![2, 2], &[b"a", b"", b"nusa", "h\u{e9}llo".as_bytes()]);
        assert_eq!(rule.check(&good), Ok(()));

        let nul = strings(vec![2, 2], &[b"a", b"b", b"ok", b"x\0y"]);
        let e = rule.check(&nul).unwrap_err();
        assert!(
            e.contains("input 'text'") && e.contains("element 3 [1, 1]"),
            "{e}"
        );
        assert!(e.contains("NUL byte (at byte 1)"), "{e}");

        let latin1 = strings(vec![1, 3], &[b"a", b"caf\xe9", b"c"]);
        let e = rule.check(&latin1).unwrap_err();
        assert!(
            e.contains("element 1 [0, 1]") && e.contains("not valid UTF-8 (at byte 3)"),
            "{e}"
        );
    }

    #[test]
    fn any_and_other_datatypes_pass() {
        let nul = strings(vec![1], &[b"\0\xff"]);
        assert_eq!(BytesElements::Any.check(&nul), Ok(()));
        let floats = Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1],
            data: TensorData::from(vec![0u8, 0, 0, 0]),
        };
        assert_eq!(BytesElements::Utf8NoNul.check(&floats), Ok(()));
    }
}

/// One input of a batch: the parts of each request in order, to be gathered
/// by the engine into its own input buffer along the first dimension.
#[derive(Clone, Debug)]
pub struct BatchInput {
    pub name: String,
    pub datatype: DataType,
    /// Shape of the whole batch (first dimension = total rows).
    pub shape: Vec<i64>,
    pub parts: Vec<TensorData>,
}

impl BatchInput {
    pub fn len(&self) -> usize {
        self.parts.iter().map(TensorData::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies every part, in order, into `out` (exactly `self.len()` bytes).
    pub fn gather_into(&self, out: &mut [u8]) {
        let mut at = 0;
        for p in &self.parts {
            let n = p.len();
            p.copy_to(&mut out[at..at + n]);
            at += n;
        }
    }
}

/// Whether an engine can take work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ready,
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("loading model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("the engine library is not available: {0}")]
    Library(String),
    #[error("engine rejected the input: {0}")]
    Input(String),
    #[error("engine failed: {0}")]
    Run(String),
    #[error("engine instance stopped")]
    Stopped,
}

pub type RunFuture = Pin<Box<dyn Future<Output = Result<Vec<Tensor>, EngineError>> + Send>>;

/// One loaded instance of one model version.
pub trait Engine: Send + Sync + 'static {
    fn metadata(&self) -> &ModelMetadata;

    /// Runs one batch; the outputs come back in the model's output order with
    /// their full batch shapes.
    fn run(&self, inputs: Vec<BatchInput>) -> RunFuture;

    fn health(&self) -> Health;
}

/// What a factory knows of the model a version directory is loaded for.
#[derive(Clone, Debug)]
pub struct LoadHints {
    pub model: String,
    pub version: u64,
    /// The batcher's largest batch (0: no batching): compiled engines size
    /// their batch range by it.
    pub max_batch_size: usize,
}

/// Where a model's bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum ModelSource<'a> {
    /// A file on disk (`<version>/model.onnx`).
    File(&'a std::path::Path),
    /// Bytes in memory: a model decrypted at load, which must never be
    /// written to disk. `label` names it in errors and thread names (the
    /// encrypted file it came from); it is never opened.
    Memory {
        label: &'a std::path::Path,
        bytes: &'a [u8],
    },
}

impl ModelSource<'_> {
    /// The path that names the model in errors.
    pub fn label(&self) -> &std::path::Path {
        match self {
            ModelSource::File(p) => p,
            ModelSource::Memory { label, .. } => label,
        }
    }
}

/// How to load a model file into an engine: one per kind of engine.
///
/// Engines that compile models (TensorRT) override the `*_version` methods:
/// [`EngineFactory::load_version`] answers `Ok(None)` when a build must run
/// first, and [`EngineFactory::build_version`] runs it.
pub trait EngineFactory: Send + Sync + 'static {
    /// The file name in a version directory this engine loads, e.g. `model.onnx`.
    fn model_file(&self) -> &'static str;

    /// Loads one instance. Called off the async runtime (it may block).
    fn load(&self, path: &std::path::Path) -> Result<Box<dyn Engine>, EngineError>;

    /// Loads one instance from a file or from memory. Engines that cannot
    /// load from memory refuse [`ModelSource::Memory`] (the default).
    /// Called off the async runtime.
    fn load_source(&self, source: ModelSource<'_>) -> Result<Box<dyn Engine>, EngineError> {
        match source {
            ModelSource::File(path) => self.load(path),
            ModelSource::Memory { label, .. } => Err(EngineError::Load {
                path: label.to_path_buf(),
                message: "this engine cannot load a model from memory".into(),
            }),
        }
    }

    /// Whether a version directory holds something this engine can serve.
    fn has_model(&self, version_dir: &std::path::Path) -> bool {
        version_dir.join(self.model_file()).is_file()
    }

    /// Loads one instance for a version directory, or `Ok(None)` when it
    /// must be built first. Called off the async runtime.
    fn load_version(
        &self,
        version_dir: &std::path::Path,
        _hints: &LoadHints,
    ) -> Result<Option<Box<dyn Engine>>, EngineError> {
        self.load(&version_dir.join(self.model_file())).map(Some)
    }

    /// Builds what [`EngineFactory::load_version`] needs (blocking; minutes
    /// for a large model on a small GPU).
    fn build_version(
        &self,
        _version_dir: &std::path::Path,
        _hints: &LoadHints,
    ) -> Result<(), EngineError> {
        Ok(())
    }
}
