//! The regional-cloud engine: a client of a remote server that speaks the
//! Open Inference Protocol (Triton, KServe, MLServer, or another `nusad`)
//! over HTTPS and HTTP/2.
//!
//! In the order a request goes through it:
//! - [`RegionClient`] holds one pooled HTTP/2 connection set per region
//!   (hyper-util's client over hyper-rustls, ring only, the region's own CA,
//!   an optional client certificate). [`RegionClient::infer`] encodes the
//!   tensors with the binary extension (their bytes go out as they are, no
//!   copy), bounds the exchange by one per-try timeout and the answer by
//!   `max_response_bytes`, and decodes the answer.
//! - [`RegionError`] says what a caller's retry and circuit-breaker logic
//!   needs: whether to try again, and whether the failure is the region's.
//! - [`check_outputs`] checks an answer against the local model's metadata
//!   before it is returned or cached: a region may serve a different model
//!   under the same name.
//! - [`RemoteEngine`] puts a region behind the [`nusa_engine::Engine`] seam.

mod check;
mod client;
mod config;
mod engine;
mod error;
mod tls;

pub use check::check_outputs;
pub use client::{RegionClient, RemoteAnswer, TraceHeaders};
pub use config::RegionConfig;
pub use engine::RemoteEngine;
pub use error::RegionError;
