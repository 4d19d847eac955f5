//! Finding and loading the ONNX Runtime shared library, once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The version whose library `scripts/fetch-onnxruntime` fetches.
pub const ORT_VERSION: &str = "1.31.1";

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(
        "ONNX Runtime library not found (looked in: {looked}); run scripts/fetch-onnxruntime, \
         or point ORT_DYLIB_PATH or [onnxruntime] library in the config at libonnxruntime.so"
    )]
    NotFound { looked: String },
    #[error("loading ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("ONNX Runtime was not initialised: {0}")]
    NotInitialised(String),
}

/// Where the library is looked for, in order: the configured path, then
/// `ORT_DYLIB_PATH`, then the appliance's and the developer cache's places.
pub fn library_candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = configured {
        c.push(p.to_path_buf());
        return c;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        c.push(PathBuf::from(p));
        return c;
    }
    let arch = std::env::consts::ARCH;
    c.push(PathBuf::from("/usr/lib/nusa/libonnxruntime.so"));
    c.push(PathBuf::from(format!(
        ".cache/onnxruntime/{ORT_VERSION}-{arch}/libonnxruntime.so"
    )));
    // A development build runs from target/{debug,release}: look beside the repo.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(repo) = exe.ancestors().nth(3) {
            c.push(repo.join(format!(
                ".cache/onnxruntime/{ORT_VERSION}-{arch}/libonnxruntime.so"
            )));
        }
    }
    c
}

/// Loads the library and creates the process's ONNX Runtime environment.
/// Returns the path it loaded. Later calls return the first call's outcome.
pub fn init_library(configured: Option<&Path>) -> Result<PathBuf, LibraryError> {
    let candidates = library_candidates(configured);
    let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
        return Err(LibraryError::NotFound {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let env = ENV.get_or_init(|| {
        ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("nusad").build().map_err(|e| e.to_string()))
    });
    match env {
        Ok(_) => Ok(path),
        Err(message) => Err(LibraryError::Load {
            path,
            message: message.clone(),
        }),
    }
}

pub(crate) fn environment() -> Result<ort::environment::Environment, LibraryError> {
    match ENV.get() {
        Some(Ok(env)) => Ok(env.clone()),
        Some(Err(e)) => Err(LibraryError::NotInitialised(e.clone())),
        None => Err(LibraryError::NotInitialised(
            "call init_library first".into(),
        )),
    }
}
