//! The Open Inference Protocol (KServe v2, Triton's HTTP protocol): request
//! and response types, JSON and binary-tensor codecs, and route parsing.
//!
//! No I/O: bodies come in as the frames they arrived in and go out as frames.
//! Every error is a [`ProtoError`] whose [`ErrorKind`] says whose fault it was.

mod body;
mod decode;
mod decode_response;
mod encode;
mod encode_request;
mod error;
mod json_data;
mod params;
mod route;

pub use body::Frames;
pub use decode::{decode_infer_request, InferRequest, RequestedOutput, SoleInput};
pub use decode_response::{decode_infer_response, InferResponse};
pub use encode::{encode_infer_response, EncodedResponse, ResponseOutput};
pub use encode_request::{encode_infer_request, EncodedRequest};
pub use error::{ErrorKind, ProtoError};
pub use params::{MAX_PARAMETERS_BYTES, MAX_PARAMETERS_DEPTH};
pub use route::{parse_route, Route};

/// Header naming the length of the JSON part of a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
