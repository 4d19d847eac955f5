//! The safe wrapper: RAII types over the shim's handles.
//!
//! Every child holds an `Rc` of its parent's inner state, so a runtime is
//! destroyed only after its last engine, and an engine after its last
//! context, whatever order the owners drop them in. Handles other than
//! [`Trt`] are neither `Send` nor `Sync` (`Rc`, raw pointers): they live on
//! the thread that made them, which [`crate::Instance`] arranges.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bindings;
use crate::error::{self, check, TrtError};
use crate::load::{self, LibraryPaths, LoadError};
use crate::Status;

/// TensorRT's datatypes (`nvinfer1::DataType` in TensorRT 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Float,
    Half,
    Int8,
    Int32,
    Bool,
    Uint8,
    Fp8,
    Bf16,
    Int64,
    Int4,
}

impl DataType {
    fn from_raw(v: i32) -> Option<Self> {
        use DataType::*;
        Some(match v as u32 {
            bindings::NUSA_TRT_FLOAT => Float,
            bindings::NUSA_TRT_HALF => Half,
            bindings::NUSA_TRT_INT8 => Int8,
            bindings::NUSA_TRT_INT32 => Int32,
            bindings::NUSA_TRT_BOOL => Bool,
            bindings::NUSA_TRT_UINT8 => Uint8,
            bindings::NUSA_TRT_FP8 => Fp8,
            bindings::NUSA_TRT_BF16 => Bf16,
            bindings::NUSA_TRT_INT64 => Int64,
            bindings::NUSA_TRT_INT4 => Int4,
            _ => return None,
        })
    }

    pub fn size_bits(self) -> usize {
        use DataType::*;
        match self {
            Int4 => 4,
            Int8 | Bool | Uint8 | Fp8 => 8,
            Half | Bf16 => 16,
            Float | Int32 => 32,
            Int64 => 64,
        }
    }

    /// Bytes of a tensor of this type and shape; None for a dynamic (-1) or
    /// overflowing shape.
    pub fn bytes_for(self, shape: &[i64]) -> Option<usize> {
        let mut n: usize = 1;
        for &d in shape {
            n = n.checked_mul(usize::try_from(d).ok()?)?;
        }
        Some(n.checked_mul(self.size_bits())?.div_ceil(8))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    Input,
    Output,
}

/// One of an engine's IO tensors; `shape` has -1 for dimensions set per run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoTensor {
    pub name: String,
    pub mode: IoMode,
    pub data_type: DataType,
    pub shape: Vec<i64>,
}

/// An input's shapes in an optimization profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRange {
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub abi: i32,
    pub tensorrt_compiled: i32,
    pub tensorrt_library: i32,
    /// 0 when no ONNX parser was loaded.
    pub onnx_parser: i32,
    pub cuda_runtime: i32,
}

/// What `Trt::build_from_onnx` builds.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub onnx: PathBuf,
    /// One profile: per input with a dynamic dimension, its range. Empty:
    /// every input with a dynamic first dimension takes `batch`.
    pub profile: Vec<(String, ProfileRange)>,
    /// (min, opt, max) rows, used when `profile` is empty.
    pub batch: (i64, i64, i64),
    pub workspace_bytes: u64,
    pub fp16: bool,
    /// A timing cache from an earlier build; TensorRT ignores one recorded
    /// for another version or GPU.
    pub timing_cache: Option<Vec<u8>>,
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct Built {
    pub plan: Vec<u8>,
    /// The timing cache after the build, to pass to the next one.
    pub timing_cache: Option<Vec<u8>>,
}

/// The opened shim, TensorRT and CUDA runtime. Cheap to clone; the libraries
/// stay loaded until the last clone and the last object made from it go.
#[derive(Clone)]
pub struct Trt {
    inner: Arc<TrtInner>,
}

struct TrtInner {
    lib: NonNull<bindings::nusa_trt_lib>,
    // Dropped after `lib` is closed (see Drop): the shim's code must stay
    // mapped while the handle is closed, TensorRT's while the shim uses it.
    shim: bindings::NusaTrtShim,
    log: Box<LogState>,
    shim_path: String,
    libraries: load::Libraries,
}

// SAFETY: the lib handle is written once by nusa_trt_open and only read
// afterwards; the shim's functions that take it are safe to call from any
// thread (its logger locks; the CUDA runtime is thread-safe). LogState is
// atomics only.
unsafe impl Send for TrtInner {}
// SAFETY: as for Send: no call mutates shared state without the shim's lock.
unsafe impl Sync for TrtInner {}

impl Drop for TrtInner {
    fn drop(&mut self) {
        // SAFETY: the handle came from nusa_trt_open and is closed once; every
        // object made from it holds this Arc, so none is alive now.
        unsafe { self.shim.nusa_trt_close(self.lib.as_ptr()) };
    }
}

/// Counts TensorRT's messages (tests read it) besides forwarding them.
struct LogState {
    messages: AtomicU64,
}

unsafe extern "C" fn log_to_tracing(
    user: *mut c_void,
    severity: i32,
    message: *const std::os::raw::c_char,
) {
    // SAFETY: `user` is the Box<LogState> owned by TrtInner, which outlives
    // the lib handle and so every callback; the message is NUL-terminated
    // for the duration of the call.
    let (state, msg) = unsafe { (&*(user as *const LogState), error::owned(message)) };
    state.messages.fetch_add(1, Ordering::Relaxed);
    match severity as u32 {
        bindings::NUSA_TRT_SEVERITY_INTERNAL_ERROR | bindings::NUSA_TRT_SEVERITY_ERROR => {
            tracing::error!(target: "tensorrt", "{msg}")
        }
        bindings::NUSA_TRT_SEVERITY_WARNING => tracing::warn!(target: "tensorrt", "{msg}"),
        bindings::NUSA_TRT_SEVERITY_INFO => tracing::info!(target: "tensorrt", "{msg}"),
        _ => tracing::debug!(target: "tensorrt", "{msg}"),
    }
}

impl Trt {
    /// Opens the shim, then TensorRT and the CUDA runtime, and hands their
    /// entry points to the shim. Each missing piece is its own error.
    pub fn load(paths: &LibraryPaths) -> Result<Self, LoadError> {
        let (shim, shim_path) = load::shim(&paths.shim)?;
        let libraries = load::libraries(paths)?;
        let log = Box::new(LogState {
            messages: AtomicU64::new(0),
        });
        let user = &*log as *const LogState as *mut c_void;
        let mut out = ptr::null_mut();
        let mut err = error::empty();
        // SAFETY: the entry points are valid while `libraries` is loaded, and
        // TrtInner keeps it until after nusa_trt_close; `user` stays valid as
        // long (see log_to_tracing); out and err are valid for writes.
        let rc = unsafe {
            shim.nusa_trt_open(
                &libraries.entry,
                Some(log_to_tracing),
                user,
                &mut out,
                &mut err,
            )
        };
        check("nusa_trt_open", rc, &err)?;
        let lib = NonNull::new(out).ok_or_else(|| {
            TrtError::new("nusa_trt_open", Status::Unknown(0), "returned no handle")
        })?;
        tracing::info!(shim = %shim_path, tensorrt = %libraries.nvinfer_path, "TensorRT loaded");
        Ok(Self {
            inner: Arc::new(TrtInner {
                lib,
                shim,
                log,
                shim_path,
                libraries,
            }),
        })
    }

    fn shim(&self) -> &bindings::NusaTrtShim {
        &self.inner.shim
    }

    fn lib(&self) -> *mut bindings::nusa_trt_lib {
        self.inner.lib.as_ptr()
    }

    pub fn shim_path(&self) -> &str {
        &self.inner.shim_path
    }

    pub fn tensorrt_path(&self) -> &str {
        &self.inner.libraries.nvinfer_path
    }

    /// How many messages TensorRT has logged through us.
    pub fn log_messages(&self) -> u64 {
        self.inner.log.messages.load(Ordering::Relaxed)
    }

    pub fn version(&self) -> Result<VersionInfo, TrtError> {
        let mut v = bindings::nusa_trt_version_info {
            abi: 0,
            tensorrt_compiled: 0,
            tensorrt_library: 0,
            onnx_parser: 0,
            cuda_runtime: 0,
        };
        let mut err = error::empty();
        // SAFETY: lib is open (self holds it); v and err are valid for writes.
        let rc = unsafe { self.shim().nusa_trt_version(self.lib(), &mut v, &mut err) };
        check("nusa_trt_version", rc, &err)?;
        Ok(VersionInfo {
            abi: v.abi,
            tensorrt_compiled: v.tensorrt_compiled,
            tensorrt_library: v.tensorrt_library,
            onnx_parser: v.onnx_parser,
            cuda_runtime: v.cuda_runtime,
        })
    }

    /// (major, minor) of a GPU: part of a plan cache key.
    pub fn compute_capability(&self, device: i32) -> Result<(i32, i32), TrtError> {
        let (mut major, mut minor) = (0, 0);
        let mut err = error::empty();
        // SAFETY: lib is open; the outputs are valid for writes.
        let rc = unsafe {
            self.shim().nusa_cuda_compute_capability(
                self.lib(),
                device,
                &mut major,
                &mut minor,
                &mut err,
            )
        };
        check("nusa_cuda_compute_capability", rc, &err)?;
        Ok((major, minor))
    }

    /// The GPU's name (cudaDeviceProp::name): part of a plan cache key.
    pub fn device_name(&self, device: i32) -> Result<String, TrtError> {
        let mut buf = [0 as std::os::raw::c_char; bindings::NUSA_TRT_DEVICE_NAME_LEN as usize];
        let mut err = error::empty();
        // SAFETY: lib is open; buf is valid for buf.len() bytes of writes and
        // the shim NUL-terminates within them.
        let rc = unsafe {
            self.shim().nusa_cuda_device_name(
                self.lib(),
                device,
                buf.as_mut_ptr(),
                buf.len(),
                &mut err,
            )
        };
        check("nusa_cuda_device_name", rc, &err)?;
        // SAFETY: on success the shim wrote a NUL-terminated string into buf.
        let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        Ok(name.to_string_lossy().into_owned())
    }

    /// Builds a serialized plan from an ONNX file (TensorRT's builder and ONNX
    /// parser; minutes on a Jetson for a large model).
    pub fn build_from_onnx(&self, options: &BuildOptions) -> Result<Built, TrtError> {
        let call = "nusa_trt_build_from_onnx";
        let onnx = path_cstring(call, &options.onnx)?;
        let names = options
            .profile
            .iter()
            .map(|(n, _)| cstring(call, n))
            .collect::<Result<Vec<_>, _>>()?;
        let profile = options
            .profile
            .iter()
            .zip(&names)
            .map(|((_, r), name)| {
                Ok(bindings::nusa_trt_profile_dims {
                    input_name: name.as_ptr(),
                    min: dims(call, &r.min)?,
                    opt: dims(call, &r.opt)?,
                    max: dims(call, &r.max)?,
                })
            })
            .collect::<Result<Vec<_>, TrtError>>()?;
        let raw = bindings::nusa_trt_build_options {
            onnx_path: onnx.as_ptr(),
            profile: profile.as_ptr(),
            profile_len: profile.len(),
            batch_min: options.batch.0,
            batch_opt: options.batch.1,
            batch_max: options.batch.2,
            workspace_bytes: options.workspace_bytes,
            fp16: i32::from(options.fp16),
            timing_cache: options
                .timing_cache
                .as_ref()
                .map_or(ptr::null(), |t| t.as_ptr().cast()),
            timing_cache_len: options.timing_cache.as_ref().map_or(0, Vec::len),
        };
        let mut out = bindings::nusa_trt_build_result {
            plan: ptr::null_mut(),
            timing_cache: ptr::null_mut(),
        };
        let mut err = error::empty();
        // SAFETY: every pointer in `raw` points into locals (onnx, names,
        // profile) or `options` that outlive the call; out and err are valid
        // for writes.
        let rc = unsafe {
            self.shim()
                .nusa_trt_build_from_onnx(self.lib(), &raw, &mut out, &mut err)
        };
        check(call, rc, &err)?;
        // Both memories are taken (and destroyed) before any error returns.
        let plan = self.take_host_memory(out.plan);
        let timing_cache = if out.timing_cache.is_null() {
            None
        } else {
            Some(self.take_host_memory(out.timing_cache)?)
        };
        Ok(Built {
            plan: plan?,
            timing_cache,
        })
    }

    /// Copies a host memory the shim handed over, and destroys it.
    fn take_host_memory(
        &self,
        memory: *mut bindings::nusa_trt_host_memory,
    ) -> Result<Vec<u8>, TrtError> {
        let (mut data, mut len) = (ptr::null(), 0usize);
        let mut err = error::empty();
        // SAFETY: `memory` is a host memory the shim just returned, owned by
        // us; data/len are valid for writes.
        let rc = unsafe {
            self.shim()
                .nusa_trt_host_memory_data(memory, &mut data, &mut len, &mut err)
        };
        let bytes = check("nusa_trt_host_memory_data", rc, &err).map(|()| {
            if len == 0 {
                Vec::new()
            } else {
                // SAFETY: the shim reports `len` readable bytes at `data`,
                // owned by `memory` until it is destroyed below.
                unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec()
            }
        });
        // SAFETY: `memory` came from the shim and is destroyed once, here.
        unsafe { self.shim().nusa_trt_host_memory_destroy(memory) };
        bytes
    }
}

fn cstring(call: &'static str, s: &str) -> Result<CString, TrtError> {
    CString::new(s).map_err(|_| {
        TrtError::new(
            call,
            Status::InvalidArgument,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

fn path_cstring(call: &'static str, p: &std::path::Path) -> Result<CString, TrtError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        TrtError::new(
            call,
            Status::InvalidArgument,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

fn dims(call: &'static str, shape: &[i64]) -> Result<bindings::nusa_trt_dims, TrtError> {
    let max = bindings::NUSA_TRT_MAX_DIMS as usize;
    if shape.len() > max {
        return Err(TrtError::new(
            call,
            Status::InvalidArgument,
            format!("{} dimensions, TensorRT takes {max}", shape.len()),
        ));
    }
    let mut d = bindings::nusa_trt_dims {
        nb_dims: shape.len() as i32,
        d: [0; bindings::NUSA_TRT_MAX_DIMS as usize],
    };
    d.d[..shape.len()].copy_from_slice(shape);
    Ok(d)
}

fn shape_of(d: &bindings::nusa_trt_dims) -> Vec<i64> {
    let n = usize::try_from(d.nb_dims).unwrap_or(0).min(d.d.len());
    d.d[..n].to_vec()
}

/// A TensorRT runtime (IRuntime).
pub struct Runtime {
    inner: Rc<RuntimeInner>,
}

struct RuntimeInner {
    trt: Trt,
    ptr: NonNull<bindings::nusa_trt_runtime>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        // SAFETY: made by nusa_trt_runtime_create, destroyed once; engines hold
        // this Rc, so none is alive; `trt` (the lib) is dropped after this.
        unsafe { self.trt.shim().nusa_trt_runtime_destroy(self.ptr.as_ptr()) };
    }
}

impl Runtime {
    pub fn new(trt: &Trt) -> Result<Self, TrtError> {
        let mut out = ptr::null_mut();
        let mut err = error::empty();
        // SAFETY: lib is open; out and err are valid for writes.
        let rc = unsafe {
            trt.shim()
                .nusa_trt_runtime_create(trt.lib(), &mut out, &mut err)
        };
        check("nusa_trt_runtime_create", rc, &err)?;
        let ptr = non_null("nusa_trt_runtime_create", out)?;
        Ok(Self {
            inner: Rc::new(RuntimeInner {
                trt: trt.clone(),
                ptr,
            }),
        })
    }
}

fn non_null<T>(call: &'static str, p: *mut T) -> Result<NonNull<T>, TrtError> {
    NonNull::new(p).ok_or_else(|| TrtError::new(call, Status::Unknown(0), "returned no handle"))
}

/// A deserialized engine (ICudaEngine) and its IO tensors.
pub struct Engine {
    inner: Rc<EngineInner>,
}

struct EngineInner {
    runtime: Rc<RuntimeInner>,
    ptr: NonNull<bindings::nusa_trt_engine>,
    io: Vec<IoTensor>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        // SAFETY: made by nusa_trt_engine_deserialize, destroyed once;
        // contexts hold this Rc; the runtime is dropped after this.
        unsafe {
            self.runtime
                .trt
                .shim()
                .nusa_trt_engine_destroy(self.ptr.as_ptr())
        };
    }
}

impl Engine {
    pub fn deserialize(runtime: &Runtime, plan: &[u8]) -> Result<Self, TrtError> {
        let rt = &runtime.inner;
        let shim = rt.trt.shim();
        let mut out = ptr::null_mut();
        let mut err = error::empty();
        // SAFETY: the runtime is alive; plan is readable for its length; out
        // and err are valid for writes.
        let rc = unsafe {
            shim.nusa_trt_engine_deserialize(
                rt.ptr.as_ptr(),
                plan.as_ptr().cast(),
                plan.len(),
                &mut out,
                &mut err,
            )
        };
        check("nusa_trt_engine_deserialize", rc, &err)?;
        let ptr = non_null("nusa_trt_engine_deserialize", out)?;
        // From here the engine is owned, so an error below still destroys it.
        let mut inner = EngineInner {
            runtime: Rc::clone(rt),
            ptr,
            io: Vec::new(),
        };
        inner.io = read_io(shim, ptr)?;
        Ok(Self {
            inner: Rc::new(inner),
        })
    }

    pub fn io(&self) -> &[IoTensor] {
        &self.inner.io
    }

    /// The shapes profile 0 allows for an input.
    pub fn profile(&self, input: &str) -> Result<ProfileRange, TrtError> {
        let call = "nusa_trt_engine_profile_shape";
        let name = cstring(call, input)?;
        let shim = self.inner.runtime.trt.shim();
        let get = |selector: u32| {
            let mut d = bindings::nusa_trt_dims {
                nb_dims: 0,
                d: [0; 8],
            };
            let mut err = error::empty();
            // SAFETY: the engine is alive; name is NUL-terminated; d and err
            // are valid for writes.
            let rc = unsafe {
                shim.nusa_trt_engine_profile_shape(
                    self.inner.ptr.as_ptr(),
                    name.as_ptr(),
                    0,
                    selector as i32,
                    &mut d,
                    &mut err,
                )
            };
            check(call, rc, &err).map(|()| shape_of(&d))
        };
        Ok(ProfileRange {
            min: get(bindings::NUSA_TRT_PROFILE_MIN)?,
            opt: get(bindings::NUSA_TRT_PROFILE_OPT)?,
            max: get(bindings::NUSA_TRT_PROFILE_MAX)?,
        })
    }
}

fn read_io(
    shim: &bindings::NusaTrtShim,
    engine: NonNull<bindings::nusa_trt_engine>,
) -> Result<Vec<IoTensor>, TrtError> {
    let mut n = 0;
    let mut err = error::empty();
    // SAFETY: the engine is alive; n and err are valid for writes.
    let rc = unsafe { shim.nusa_trt_engine_io_count(engine.as_ptr(), &mut n, &mut err) };
    check("nusa_trt_engine_io_count", rc, &err)?;
    let mut io = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        let mut t = bindings::nusa_trt_tensor_info {
            name: ptr::null(),
            mode: 0,
            data_type: 0,
            shape: bindings::nusa_trt_dims {
                nb_dims: 0,
                d: [0; 8],
            },
        };
        // SAFETY: as above; t is valid for writes.
        let rc = unsafe { shim.nusa_trt_engine_io_tensor(engine.as_ptr(), i, &mut t, &mut err) };
        check("nusa_trt_engine_io_tensor", rc, &err)?;
        // SAFETY: the name is owned by the engine, alive for this copy.
        let name = unsafe { error::owned(t.name) };
        let bad =
            |what: String| TrtError::new("nusa_trt_engine_io_tensor", Status::Unknown(0), what);
        let mode = match t.mode as u32 {
            bindings::NUSA_TRT_IO_INPUT => IoMode::Input,
            bindings::NUSA_TRT_IO_OUTPUT => IoMode::Output,
            m => return Err(bad(format!("tensor {name}: IO mode {m}"))),
        };
        let data_type = DataType::from_raw(t.data_type)
            .ok_or_else(|| bad(format!("tensor {name}: unknown datatype {}", t.data_type)))?;
        io.push(IoTensor {
            name,
            mode,
            data_type,
            shape: shape_of(&t.shape),
        });
    }
    Ok(io)
}

/// One input of [`Context::run`]: name, shape, bytes.
pub type RawInput<'a> = (&'a str, &'a [i64], &'a [u8]);
/// The outputs of [`Context::run`] in the engine's order: name, shape, bytes.
pub type Outputs = Vec<(String, Vec<i64>, Vec<u8>)>;

/// An execution context (IExecutionContext): per-run shapes and addresses.
pub struct Context {
    engine: Rc<EngineInner>,
    ptr: NonNull<bindings::nusa_trt_context>,
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: made by nusa_trt_context_create, destroyed once; the engine
        // is dropped after this.
        unsafe {
            self.engine
                .runtime
                .trt
                .shim()
                .nusa_trt_context_destroy(self.ptr.as_ptr())
        };
    }
}

impl Context {
    pub fn new(engine: &Engine) -> Result<Self, TrtError> {
        let e = &engine.inner;
        let mut out = ptr::null_mut();
        let mut err = error::empty();
        // SAFETY: the engine is alive; out and err are valid for writes.
        let rc = unsafe {
            e.runtime
                .trt
                .shim()
                .nusa_trt_context_create(e.ptr.as_ptr(), &mut out, &mut err)
        };
        check("nusa_trt_context_create", rc, &err)?;
        Ok(Self {
            engine: Rc::clone(e),
            ptr: non_null("nusa_trt_context_create", out)?,
        })
    }

    fn trt(&self) -> &Trt {
        &self.engine.runtime.trt
    }

    pub fn io(&self) -> &[IoTensor] {
        &self.engine.io
    }

    pub fn set_input_shape(&mut self, name: &str, shape: &[i64]) -> Result<(), TrtError> {
        let call = "nusa_trt_context_set_input_shape";
        let (n, d) = (cstring(call, name)?, dims(call, shape)?);
        let mut err = error::empty();
        // SAFETY: the context is alive and used by this thread only (&mut);
        // n and d outlive the call.
        let rc = unsafe {
            self.trt().shim().nusa_trt_context_set_input_shape(
                self.ptr.as_ptr(),
                n.as_ptr(),
                &d,
                &mut err,
            )
        };
        check(call, rc, &err)
    }

    pub fn tensor_shape(&self, name: &str) -> Result<Vec<i64>, TrtError> {
        let call = "nusa_trt_context_tensor_shape";
        let n = cstring(call, name)?;
        let mut d = bindings::nusa_trt_dims {
            nb_dims: 0,
            d: [0; 8],
        };
        let mut err = error::empty();
        // SAFETY: the context is alive; d and err are valid for writes.
        let rc = unsafe {
            self.trt().shim().nusa_trt_context_tensor_shape(
                self.ptr.as_ptr(),
                n.as_ptr(),
                &mut d,
                &mut err,
            )
        };
        check(call, rc, &err).map(|()| shape_of(&d))
    }

    /// One batch: copies `inputs` to device buffers (grown as needed), sets
    /// the shapes and addresses, enqueues, copies the outputs back and waits
    /// for the stream. Returns the outputs in the engine's order with their
    /// shapes. Every buffer is checked against its tensor's size first.
    ///
    /// Host memory handed to asynchronous copies must outlive them, so every
    /// path out of this function, error or not, passes one stream
    /// synchronisation after the first copy was queued.
    pub fn run(
        &mut self,
        stream: &Stream,
        buffers: &mut HashMap<String, DeviceBuffer>,
        inputs: &[RawInput<'_>],
    ) -> Result<Outputs, TrtError> {
        let call = "run";
        let io = self.engine.io.clone();
        for t in io.iter().filter(|t| t.mode == IoMode::Input) {
            if !inputs.iter().any(|(n, _, _)| *n == t.name) {
                return Err(TrtError::new(
                    call,
                    Status::InvalidArgument,
                    format!("input {} missing", t.name),
                ));
            }
        }
        for (name, shape, data) in inputs {
            let t = io
                .iter()
                .find(|t| t.name == *name && t.mode == IoMode::Input)
                .ok_or_else(|| {
                    TrtError::new(
                        call,
                        Status::InvalidArgument,
                        format!("the engine has no input {name}"),
                    )
                })?;
            let want = t.data_type.bytes_for(shape).ok_or_else(|| {
                TrtError::new(
                    call,
                    Status::InvalidArgument,
                    format!("input {name}: shape {shape:?} is not concrete"),
                )
            })?;
            if data.len() != want {
                return Err(TrtError::new(
                    call,
                    Status::InvalidArgument,
                    format!(
                        "input {name}: {} bytes for shape {shape:?} of {:?}, which needs {want}",
                        data.len(),
                        t.data_type
                    ),
                ));
            }
            self.set_input_shape(name, shape)?;
        }
        // Shapes of every tensor are now known; size the device buffers.
        let mut shapes = Vec::with_capacity(io.len());
        for t in &io {
            let shape = self.tensor_shape(&t.name)?;
            let bytes = t.data_type.bytes_for(&shape).ok_or_else(|| {
                TrtError::new(
                    call,
                    Status::TensorRt,
                    format!("tensor {}: shape {shape:?} not resolved", t.name),
                )
            })?;
            let buf = match buffers.remove(&t.name) {
                Some(b) if b.len() >= bytes => b,
                _ => DeviceBuffer::new(self.trt(), bytes)?,
            };
            buffers.insert(t.name.clone(), buf);
            shapes.push((shape, bytes));
        }
        let mut outputs: Outputs = Vec::new();
        let queued = self.queue(stream, buffers, inputs, &io, &shapes, &mut outputs);
        // Wait even when queueing failed part-way: copies may be in flight.
        let synced = stream.synchronize();
        queued?;
        synced?;
        Ok(outputs)
    }

    fn queue(
        &mut self,
        stream: &Stream,
        buffers: &HashMap<String, DeviceBuffer>,
        inputs: &[RawInput<'_>],
        io: &[IoTensor],
        shapes: &[(Vec<i64>, usize)],
        outputs: &mut Outputs,
    ) -> Result<(), TrtError> {
        let shim = self.trt().shim();
        let lib = self.trt().lib();
        let mut err = error::empty();
        for (t, (shape, bytes)) in io.iter().zip(shapes) {
            let buf = buffers
                .get(&t.name)
                .ok_or_else(|| TrtError::new("run", Status::Unknown(0), "buffer vanished"))?;
            debug_assert!(buf.len() >= *bytes);
            if t.mode == IoMode::Input {
                let data = inputs
                    .iter()
                    .find(|(n, _, _)| *n == t.name)
                    .map(|(_, _, d)| *d)
                    .unwrap_or(&[]);
                // SAFETY: buf holds at least data.len() bytes (sized above
                // from the same shape); data lives in the caller's frame until
                // `run` has synchronised the stream.
                let rc = unsafe {
                    shim.nusa_cuda_memcpy_h2d_async(
                        lib,
                        buf.ptr,
                        data.as_ptr().cast(),
                        data.len(),
                        stream.ptr,
                        &mut err,
                    )
                };
                check("nusa_cuda_memcpy_h2d_async", rc, &err)?;
            }
            let name = cstring("run", &t.name)?;
            // SAFETY: the address is a live device buffer of at least the
            // tensor's size, kept in `buffers` (borrowed by `run`) until the
            // stream is synchronised.
            let rc = unsafe {
                shim.nusa_trt_context_set_tensor_address(
                    self.ptr.as_ptr(),
                    name.as_ptr(),
                    buf.ptr,
                    &mut err,
                )
            };
            check("nusa_trt_context_set_tensor_address", rc, &err)?;
            if t.mode == IoMode::Output {
                outputs.push((t.name.clone(), shape.clone(), vec![0u8; *bytes]));
            }
        }
        // SAFETY: shapes and addresses are set; the stream is alive.
        let rc = unsafe {
            shim.nusa_trt_context_enqueue(self.ptr.as_ptr(), stream.ptr.cast(), &mut err)
        };
        check("nusa_trt_context_enqueue", rc, &err)?;
        for (name, _, host) in outputs.iter_mut() {
            let buf = buffers
                .get(name.as_str())
                .ok_or_else(|| TrtError::new("run", Status::Unknown(0), "buffer vanished"))?;
            // SAFETY: host has exactly the tensor's bytes and buf at least as
            // many; `outputs` outlives the synchronisation in `run`.
            let rc = unsafe {
                shim.nusa_cuda_memcpy_d2h_async(
                    lib,
                    host.as_mut_ptr().cast(),
                    buf.ptr,
                    host.len(),
                    stream.ptr,
                    &mut err,
                )
            };
            check("nusa_cuda_memcpy_d2h_async", rc, &err)?;
        }
        Ok(())
    }
}

/// A CUDA stream.
pub struct Stream {
    trt: Trt,
    ptr: *mut bindings::nusa_cuda_stream,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut err = error::empty();
        // SAFETY: made by nusa_cuda_stream_create, destroyed once.
        let rc = unsafe {
            self.trt
                .shim()
                .nusa_cuda_stream_destroy(self.trt.lib(), self.ptr, &mut err)
        };
        if let Err(e) = check("nusa_cuda_stream_destroy", rc, &err) {
            tracing::warn!(error = %e, "destroying a CUDA stream");
        }
    }
}

impl Stream {
    pub fn new(trt: &Trt) -> Result<Self, TrtError> {
        let mut out = ptr::null_mut();
        let mut err = error::empty();
        // SAFETY: lib is open; out and err are valid for writes.
        let rc = unsafe {
            trt.shim()
                .nusa_cuda_stream_create(trt.lib(), &mut out, &mut err)
        };
        check("nusa_cuda_stream_create", rc, &err)?;
        Ok(Self {
            trt: trt.clone(),
            ptr: out,
        })
    }

    pub fn synchronize(&self) -> Result<(), TrtError> {
        let mut err = error::empty();
        // SAFETY: the stream is alive.
        let rc = unsafe {
            self.trt
                .shim()
                .nusa_cuda_stream_synchronize(self.trt.lib(), self.ptr, &mut err)
        };
        check("nusa_cuda_stream_synchronize", rc, &err)
    }
}

/// Device memory (cudaMalloc).
pub struct DeviceBuffer {
    trt: Trt,
    ptr: *mut c_void,
    len: usize,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let mut err = error::empty();
        // SAFETY: made by nusa_cuda_malloc, freed once; work using it has been
        // synchronised by whoever lent it out (Context::run).
        let rc = unsafe {
            self.trt
                .shim()
                .nusa_cuda_free(self.trt.lib(), self.ptr, &mut err)
        };
        if let Err(e) = check("nusa_cuda_free", rc, &err) {
            tracing::warn!(error = %e, "freeing device memory");
        }
    }
}

impl DeviceBuffer {
    pub fn new(trt: &Trt, len: usize) -> Result<Self, TrtError> {
        let mut out = ptr::null_mut();
        let mut err = error::empty();
        // SAFETY: lib is open; out and err are valid for writes.
        let rc = unsafe {
            trt.shim()
                .nusa_cuda_malloc(trt.lib(), len, &mut out, &mut err)
        };
        check("nusa_cuda_malloc", rc, &err)?;
        Ok(Self {
            trt: trt.clone(),
            ptr: out,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `data` in and back out through the stream: the CUDA memory round
    /// trip the hardware checks run.
    pub fn round_trip(&mut self, stream: &Stream, data: &[u8]) -> Result<Vec<u8>, TrtError> {
        if data.len() > self.len {
            return Err(TrtError::new(
                "round_trip",
                Status::InvalidArgument,
                format!("{} bytes into a buffer of {}", data.len(), self.len),
            ));
        }
        let (shim, lib) = (self.trt.shim(), self.trt.lib());
        let mut back = vec![0u8; data.len()];
        let mut err = error::empty();
        // SAFETY: both copies stay within the buffer's and the slices'
        // lengths; data and back outlive the synchronisation below, which
        // runs on every path once a copy may be queued.
        let queued = unsafe {
            let rc = shim.nusa_cuda_memcpy_h2d_async(
                lib,
                self.ptr,
                data.as_ptr().cast(),
                data.len(),
                stream.ptr,
                &mut err,
            );
            check("nusa_cuda_memcpy_h2d_async", rc, &err).and_then(|()| {
                let rc = shim.nusa_cuda_memcpy_d2h_async(
                    lib,
                    back.as_mut_ptr().cast(),
                    self.ptr,
                    data.len(),
                    stream.ptr,
                    &mut err,
                );
                check("nusa_cuda_memcpy_d2h_async", rc, &err)
            })
        };
        let synced = stream.synchronize();
        queued?;
        synced?;
        Ok(back)
    }
}
