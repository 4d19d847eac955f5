//! TensorRT through a C ABI of our own (`include/nusa_trt.h`), loaded at
//! run time.
//!
//! Three layers, from the bottom:
//! - [`bindings`]: bindgen's output over our header, committed (bindgen is
//!   not part of the build; `scripts/check-trt-bindings` keeps it current).
//!   The shim is a shared library opened with libloading; so are TensorRT and
//!   the CUDA runtime, whose entry points we hand to the shim. Nothing is
//!   linked, so one binary runs with and without TensorRT.
//! - [`Trt`] and its RAII types ([`Runtime`], [`Engine`], [`Context`],
//!   [`Stream`], [`DeviceBuffer`]): each child holds its parent alive, so
//!   TensorRT's order (runtime outlives engine outlives context) cannot be
//!   broken from safe code.
//! - [`Instance`]: one thread per engine instance owning its context, stream
//!   and device buffers, reached over a channel.
//!
//! `unsafe` is allowed in this crate only (and the TensorRT engine); every
//! block says why it is sound.
#![allow(unsafe_code)]

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unused_qualifications,
    clippy::all,
    clippy::pedantic,
    unsafe_op_in_unsafe_fn
)]
pub mod bindings;
mod error;
mod instance;
mod load;
mod trt;

pub use error::{Status, TrtError};
pub use instance::{HostTensor, Instance, InstanceInfo};
pub use load::{LibraryPaths, LoadError};
pub use trt::{
    BuildOptions, Built, Context, DataType, DeviceBuffer, Engine, IoMode, IoTensor, ProfileRange,
    Runtime, Stream, Trt, VersionInfo,
};

use std::path::Path;

/// Whether this build compiled the real shim (TensorRT headers were found).
pub const SHIM_BUILT: bool = cfg!(nusa_trt_shim);

/// The shim this build compiled, when it compiled one.
pub fn built_shim() -> Option<&'static Path> {
    #[cfg(nusa_trt_shim)]
    {
        Some(Path::new(env!("NUSA_TRT_SHIM_BUILT")))
    }
    #[cfg(not(nusa_trt_shim))]
    {
        None
    }
}

/// The test double of our C ABI that the build script compiled (host memory
/// as "device"); see `testdouble/nusa_trt_double.c`. For tests here and in
/// the TensorRT engine.
#[doc(hidden)]
pub fn test_double() -> &'static Path {
    Path::new(env!("NUSA_TRT_DOUBLE_BUILT"))
}
