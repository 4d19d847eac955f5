//! Compiling the shim and the test double into shared libraries.
//!
//! The `cc` crate makes static archives; we want `.so` files that libloading
//! opens, so we take its configured compiler (which honours CC/CXX/CFLAGS,
//! cross targets and their rerun-if-env-changed) and run it with `-shared`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn shim(manifest: &Path, out: &Path, headers: &Path) -> PathBuf {
    let lib = out.join("libnusa_trt_shim.so");
    let compiler = cc::Build::new()
        .cpp(true)
        .std("c++17")
        .cargo_metadata(false)
        .get_compiler();
    let mut cmd = compiler.to_command();
    // No -Werror: other compilers and TensorRT releases warn differently, and
    // a warning must not break an appliance build.
    cmd.args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra"])
        // kFP16 is deprecated in 10.12+ but is what the builder path uses.
        .arg("-Wno-deprecated-declarations")
        .arg("-I")
        .arg(manifest.join("include"))
        // NVIDIA's headers are not ours to keep warning-free.
        .arg("-isystem")
        .arg(headers)
        // After every real include path, so a real CUDA install wins.
        .arg("-idirafter")
        .arg(manifest.join("shim/cuda-standin"))
        .arg(manifest.join("shim/nusa_trt.cpp"))
        // Every symbol must resolve inside the shim or libstdc++/libc: a
        // TensorRT symbol left undefined would fail the link here.
        .arg("-Wl,--no-undefined")
        .arg("-o")
        .arg(&lib);
    run(cmd, "the TensorRT shim");
    lib
}

pub fn test_double(manifest: &Path, out: &Path) -> PathBuf {
    let lib = out.join("libnusa_trt_double.so");
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args([
        "-shared", "-fPIC", "-O1", "-std=c11", "-Wall", "-Wextra", "-Werror",
    ])
    .arg("-I")
    .arg(manifest.join("include"))
    .arg(manifest.join("testdouble/nusa_trt_double.c"))
    .arg(manifest.join("testdouble/ort_backend.c"))
    .arg("-Wl,--no-undefined")
    // dlopen lives in libc from glibc 2.34; older ones need libdl.
    .arg("-ldl")
    .arg("-lpthread")
    .arg("-o")
    .arg(&lib);
    run(cmd, "the trt-sys test double");
    lib
}

fn run(mut cmd: Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running the C/C++ compiler for {what} ({cmd:?}): {e}"));
    assert!(status.success(), "compiling {what} failed: {cmd:?}");
}
