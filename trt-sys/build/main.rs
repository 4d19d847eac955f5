//! Build script for trt-sys, laid out like openssl-sys's: `find` looks for
//! TensorRT's headers, `compile` builds the shared libraries.
//!
//! Two shared libraries come out of it, both opened at run time with
//! libloading (nothing is linked into the Rust crate):
//! - the shim (`shim/nusa_trt.cpp`, forwarding into TensorRT 10), only when
//!   TensorRT headers are found; then `cfg(nusa_trt_shim)` is set and
//!   `NUSA_TRT_SHIM_BUILT` names the library;
//! - the test double (`testdouble/nusa_trt_double.c`), always, since it needs
//!   only our own header: `NUSA_TRT_DOUBLE_BUILT` names it.
//!
//! Bindgen does not run here: `src/bindings.rs` is committed and
//! `scripts/check-trt-bindings` regenerates and compares it.

mod compile;
mod find;

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(nusa_trt_shim)");
    println!("cargo::rerun-if-changed=include/nusa_trt.h");
    println!("cargo::rerun-if-changed=shim");
    println!("cargo::rerun-if-changed=testdouble");
    println!("cargo::rerun-if-changed=build");

    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR").expect("cargo sets OUT_DIR"));

    let double = compile::test_double(&manifest, &out);
    println!(
        "cargo::rustc-env=NUSA_TRT_DOUBLE_BUILT={}",
        double.display()
    );

    match find::tensorrt_headers(&manifest) {
        Some(headers) => {
            let shim = compile::shim(&manifest, &out, &headers);
            println!("cargo::rustc-cfg=nusa_trt_shim");
            println!("cargo::rustc-env=NUSA_TRT_SHIM_BUILT={}", shim.display());
            println!("cargo::metadata=include={}", headers.display());
        }
        None => {
            // Not an error: the gateway builds and runs without TensorRT. Say
            // how to get the shim, as openssl-sys does for a missing header.
            println!(
                "cargo::warning=TensorRT headers not found: the TensorRT shim is not built \
                 (set TENSORRT_ROOT or run scripts/fetch-tensorrt-headers)"
            );
        }
    }
}

/// Reads an environment variable and tells cargo to rerun when it changes.
fn env(name: &str) -> Option<String> {
    println!("cargo::rerun-if-env-changed={name}");
    std::env::var(name).ok()
}
