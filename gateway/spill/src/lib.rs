//! The spill decision: whether a request waits in the local queue or goes
//! to a regional cloud endpoint, and which one.
//!
//! **Invariant:** no I/O and no clock. Every input that depends on time
//! takes `now` in microseconds; the caller measures and reports outcomes.
//!
//! The parts, in the order a request meets them:
//! - [`ServiceTimes`]: moving estimates of how long a batch of n rows takes
//!   on this box, learnt from the batches that ran.
//! - [`predict_wait`]: from the queue as it stands and those estimates, when
//!   a new request would be answered locally.
//! - [`Region`]: per region, measured latency, a circuit breaker and a spend
//!   cap.
//! - [`Spill::decide`]: local, a region, or 503, given the model's latency
//!   objective and the regions the request's residency allows
//!   ([`RegionSet`]).

mod breaker;
mod decide;
mod predict;
mod region_set;
mod spend;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use decide::{Decision, Reason, Region, RegionLimits, RequestFacts, Spill, LATENCY_STALE_US};
pub use predict::{predict_wait, QueueView, ServiceTimes};
pub use region_set::RegionSet;
pub use spend::SpendCap;

/// Time in microseconds from an origin the caller chooses.
pub type Micros = u64;
