//! Dynamic batching: a policy core with no I/O and no clock ([`Batcher`]),
//! and the thin tokio driver that feeds it requests and the time
//! ([`Scheduler`]).

mod batcher;
mod driver;

pub use batcher::{Batch, Batcher, Micros, Policy, Poll, Queued, Rejection, RequestInfo};
pub use driver::{InferOutcome, SchedError, Scheduler, TimerKind, Timing};
