//! Errors that cross the C ABI: the shim's status code and message.

use std::ffi::CStr;

use crate::bindings;

/// The status codes of `nusa_trt.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    InvalidArgument,
    /// An entry point the call needs was not loaded (e.g. no ONNX parser).
    Unavailable,
    /// TensorRT refused; the message carries its logger's last error.
    TensorRt,
    Cuda,
    /// A C++ exception stopped at the shim's boundary.
    Exception,
    OutOfMemory,
    /// A code this crate does not know: a shim newer than the bindings.
    Unknown(i32),
}

impl Status {
    fn from_raw(code: i32) -> Self {
        match code as u32 {
            bindings::NUSA_TRT_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            bindings::NUSA_TRT_ERR_UNAVAILABLE => Status::Unavailable,
            bindings::NUSA_TRT_ERR_TENSORRT => Status::TensorRt,
            bindings::NUSA_TRT_ERR_CUDA => Status::Cuda,
            bindings::NUSA_TRT_ERR_EXCEPTION => Status::Exception,
            bindings::NUSA_TRT_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            _ => Status::Unknown(code),
        }
    }
}

/// A failed call: which one, the status, and the shim's message.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{call}: {message} ({status:?})")]
pub struct TrtError {
    pub call: &'static str,
    pub status: Status,
    pub message: String,
}

impl TrtError {
    pub(crate) fn new(call: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self {
            call,
            status,
            message: message.into(),
        }
    }
}

/// The buffer every call writes its message into.
pub(crate) fn empty() -> bindings::nusa_trt_error {
    bindings::nusa_trt_error {
        status: 0,
        message: [0; bindings::NUSA_TRT_ERROR_LEN as usize],
    }
}

/// Turns a call's status and message buffer into a Result.
pub(crate) fn check(
    call: &'static str,
    rc: i32,
    err: &bindings::nusa_trt_error,
) -> Result<(), TrtError> {
    if rc == bindings::NUSA_TRT_OK as i32 {
        return Ok(());
    }
    // The shim NUL-terminates within the buffer; a shim that did not (or
    // wrote nothing) still gives a bounded read.
    let bytes: Vec<u8> = err
        .message
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let message = if bytes.is_empty() {
        "no message".to_owned()
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Err(TrtError::new(call, Status::from_raw(rc), message))
}

/// A C string from the shim, copied.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string valid for the call.
pub(crate) unsafe fn owned(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}
