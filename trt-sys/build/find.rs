//! Where TensorRT's headers are looked for, in order.

use std::path::{Path, PathBuf};

use crate::env;

/// The directory holding `NvInfer.h`, or None. Order: `TENSORRT_INCLUDE_DIR`,
/// `TENSORRT_ROOT/include`, the distribution locations (Jetson's aarch64
/// multiarch directory, x86's, NVIDIA's tarball under /usr/local), and last
/// the headers `scripts/fetch-tensorrt-headers` unpacked into the
/// workspace's `.cache/`.
pub fn tensorrt_headers(manifest: &Path) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = env("TENSORRT_INCLUDE_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(root) = env("TENSORRT_ROOT") {
        candidates.push(Path::new(&root).join("include"));
    }
    candidates.push(PathBuf::from("/usr/include/aarch64-linux-gnu"));
    candidates.push(PathBuf::from("/usr/include/x86_64-linux-gnu"));
    candidates.push(PathBuf::from("/usr/include"));
    candidates.extend(glob_dirs(Path::new("/usr/local"), "TensorRT", "include"));
    if let Some(workspace) = manifest.parent() {
        candidates.extend(glob_dirs(
            &workspace.join(".cache/tensorrt-headers"),
            "",
            "include",
        ));
    }
    let found = candidates
        .into_iter()
        .find(|dir| dir.join("NvInfer.h").is_file() && dir.join("NvOnnxParser.h").is_file())?;
    println!(
        "cargo::rerun-if-changed={}",
        found.join("NvInferVersion.h").display()
    );
    Some(found)
}

/// `parent/<prefix>*/leaf` for every entry, newest-looking name first.
fn glob_dirs(parent: &Path, prefix: &str, leaf: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path().join(leaf))
        .collect();
    dirs.sort();
    dirs.reverse();
    dirs
}
