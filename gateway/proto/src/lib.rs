//! The Open Inference Protocol (KServe v2, Triton's HTTP protocol): request
//! and response types, JSON and binary-tensor codecs, and route parsing.
//!
//! No I/O: bodies come in as the frames they arrived in and go out as frames.
//! Every error is a [`ProtoError`] whose [`ErrorKind`] says whose fault it was.

mod body;
mod decode;
mod encode;
mod error;
mod route;

pub use body::Frames;
pub use decode::{decode_infer_request, InferRequest, RequestedOutput, SoleInput};
pub use encode::{encode_infer_response, EncodedResponse, ResponseOutput};
pub use error::{ErrorKind, ProtoError};
pub use route::{parse_route, Route};

/// Header naming the length of the JSON part of a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
