//! Opening the shim, TensorRT and the CUDA runtime with libloading.
//!
//! Each library is a list of candidates (a path, or a name the dynamic loader
//! searches for); the first that opens wins. A library that opens but lacks
//! a symbol is an error naming the symbol.

use std::path::PathBuf;

use libloading::Library;

use crate::bindings;

/// Where the libraries are looked for. `Default` gives the names TensorRT 10
/// and CUDA 12/13 install under, and the shim this build compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryPaths {
    pub shim: Vec<PathBuf>,
    /// The full runtime first; the lean runtime deserializes only.
    pub nvinfer: Vec<PathBuf>,
    /// Empty: no builder path (a lean-runtime install).
    pub onnx_parser: Vec<PathBuf>,
    pub cudart: Vec<PathBuf>,
}

impl Default for LibraryPaths {
    fn default() -> Self {
        let mut shim: Vec<PathBuf> = crate::built_shim().map(PathBuf::from).into_iter().collect();
        shim.push("/usr/lib/nusa/libnusa_trt_shim.so".into());
        shim.push("libnusa_trt_shim.so".into());
        Self {
            shim,
            nvinfer: vec!["libnvinfer.so.10".into(), "libnvinfer_lean.so.10".into()],
            onnx_parser: vec!["libnvonnxparser.so.10".into()],
            cudart: vec!["libcudart.so.12".into(), "libcudart.so.13".into()],
        }
    }
}

impl LibraryPaths {
    /// Every library taken from one file: the test double, which carries our
    /// ABI and stand-ins for TensorRT's and CUDA's entry points.
    pub fn all_from(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            shim: vec![path.clone()],
            nvinfer: vec![path.clone()],
            onnx_parser: vec![path.clone()],
            cudart: vec![path],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what} library not found: tried {tried}; last error: {last}")]
    Library {
        what: &'static str,
        tried: String,
        last: String,
    },
    #[error("{what} library {path}: missing symbol {symbol}: {source}")]
    Symbol {
        what: &'static str,
        path: String,
        symbol: &'static str,
        source: libloading::Error,
    },
    #[error("shim {path}: {source}")]
    Shim {
        path: String,
        source: libloading::Error,
    },
    #[error("shim {path} speaks ABI version {found}, this build wants {want}")]
    Abi { path: String, found: i32, want: u32 },
    #[error(transparent)]
    Open(#[from] crate::TrtError),
}

/// An opened library and the candidate it came from.
pub(crate) struct Opened {
    pub library: Library,
    pub path: String,
}

pub(crate) fn open(what: &'static str, candidates: &[PathBuf]) -> Result<Opened, LoadError> {
    let mut last = String::from("no candidates configured");
    for c in candidates {
        // SAFETY: opening a library runs its initialisers. The candidates are
        // the operator's configuration or our defaults (TensorRT, CUDA, our
        // shim), whose initialisers are trusted like the gateway's own code.
        match unsafe { Library::new(c) } {
            Ok(library) => {
                return Ok(Opened {
                    library,
                    path: c.display().to_string(),
                })
            }
            Err(e) => last = e.to_string(),
        }
    }
    let tried = candidates
        .iter()
        .map(|c| c.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(LoadError::Library { what, tried, last })
}

/// Copies one function pointer out of a library.
///
/// # Safety
/// `T` must be the C signature `symbol` has in that library.
unsafe fn symbol<T: Copy>(
    opened: &Opened,
    what: &'static str,
    symbol: &'static str,
) -> Result<T, LoadError> {
    let name = format!("{symbol}\0");
    // SAFETY: the caller guarantees T is the symbol's type; the pointer is
    // copied out and stays valid while `opened.library` is loaded, which the
    // caller keeps for as long as the entry points are used.
    unsafe { opened.library.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|source| LoadError::Symbol {
            what,
            path: opened.path.clone(),
            symbol,
            source,
        })
}

/// The shim, with every function of our header resolved.
pub(crate) fn shim(candidates: &[PathBuf]) -> Result<(bindings::NusaTrtShim, String), LoadError> {
    let opened = open("nusa_trt shim", candidates)?;
    let path = opened.path.clone();
    // SAFETY: the library is a shim built from our header (the loader's
    // contract with its configuration); the generated struct resolves every
    // function by the header's signature and holds the library open.
    let shim =
        unsafe { bindings::NusaTrtShim::from_library(opened.library) }.map_err(|source| {
            LoadError::Shim {
                path: path.clone(),
                source,
            }
        })?;
    // SAFETY: nusa_trt_abi_version takes nothing and returns an int in every
    // ABI version, so it is safe to call before knowing the version.
    let found = unsafe { shim.nusa_trt_abi_version() };
    if found != bindings::NUSA_TRT_ABI_VERSION as i32 {
        return Err(LoadError::Abi {
            path,
            found,
            want: bindings::NUSA_TRT_ABI_VERSION,
        });
    }
    Ok((shim, path))
}

/// TensorRT's and CUDA's libraries, kept open for as long as the entry
/// points taken from them are in use.
pub(crate) struct Libraries {
    pub entry: bindings::nusa_trt_entry_points,
    pub nvinfer_path: String,
    _nvinfer: Library,
    _onnx_parser: Option<Library>,
    _cudart: Library,
}

pub(crate) fn libraries(paths: &LibraryPaths) -> Result<Libraries, LoadError> {
    let nvinfer = open("TensorRT (libnvinfer)", &paths.nvinfer)?;
    let cudart = open("CUDA runtime (libcudart)", &paths.cudart)?;
    // The parser is optional: without it the builder path reports Unavailable.
    let parser = if paths.onnx_parser.is_empty() {
        None
    } else {
        match open("TensorRT ONNX parser (libnvonnxparser)", &paths.onnx_parser) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::info!(error = %e, "no ONNX parser: engines can be loaded but not built");
                None
            }
        }
    };
    const NVINFER: &str = "TensorRT";
    const CUDART: &str = "CUDA runtime";
    const PARSER: &str = "ONNX parser";
    // SAFETY (every `symbol` call below): each type is the field's type in
    // nusa_trt_entry_points, which our header declares with the signature of
    // the exported C function of that name (TensorRT 10's NvInfer*.h and
    // NvOnnxParser.h, CUDA's cuda_runtime_api.h with enums as int and
    // cudaStream_t as a pointer).
    let entry = unsafe {
        bindings::nusa_trt_entry_points {
            create_infer_runtime: Some(symbol(&nvinfer, NVINFER, "createInferRuntime_INTERNAL")?),
            get_infer_lib_version: Some(symbol(&nvinfer, NVINFER, "getInferLibVersion")?),
            // The lean runtime has no builder; the build call then reports it.
            create_infer_builder: symbol(&nvinfer, NVINFER, "createInferBuilder_INTERNAL").ok(),
            create_onnx_parser: match &parser {
                Some(p) => Some(symbol(p, PARSER, "createNvOnnxParser_INTERNAL")?),
                None => None,
            },
            get_onnx_parser_version: match &parser {
                Some(p) => Some(symbol(p, PARSER, "getNvOnnxParserVersion")?),
                None => None,
            },
            cuda_malloc: Some(symbol(&cudart, CUDART, "cudaMalloc")?),
            cuda_free: Some(symbol(&cudart, CUDART, "cudaFree")?),
            cuda_memcpy_async: Some(symbol(&cudart, CUDART, "cudaMemcpyAsync")?),
            cuda_stream_create: Some(symbol(&cudart, CUDART, "cudaStreamCreate")?),
            cuda_stream_synchronize: Some(symbol(&cudart, CUDART, "cudaStreamSynchronize")?),
            cuda_stream_destroy: Some(symbol(&cudart, CUDART, "cudaStreamDestroy")?),
            cuda_device_get_attribute: Some(symbol(&cudart, CUDART, "cudaDeviceGetAttribute")?),
            cuda_runtime_get_version: Some(symbol(&cudart, CUDART, "cudaRuntimeGetVersion")?),
            cuda_get_error_string: Some(symbol(&cudart, CUDART, "cudaGetErrorString")?),
            // Only for the GPU's name in plan cache keys: optional.
            cuda_get_device_properties: symbol(&cudart, CUDART, "cudaGetDeviceProperties_v2")
                .or_else(|_| symbol(&cudart, CUDART, "cudaGetDeviceProperties"))
                .ok(),
        }
    };
    Ok(Libraries {
        entry,
        nvinfer_path: nvinfer.path,
        _nvinfer: nvinfer.library,
        _onnx_parser: parser.map(|p| p.library),
        _cudart: cudart.library,
    })
}
