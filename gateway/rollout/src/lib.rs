//! Canary rollouts of model versions, as a core with no I/O and no clock.
//!
//! **Invariant:** nothing here reads a file, a socket or a clock (the
//! crate's `clippy.toml` bans them). Every function that depends on time
//! takes `now_ms`, the driver's wall clock in Unix milliseconds, which may
//! go backwards. The driver (`nusa-canary`) owns the clock, the timer,
//! persistence and the registry.
//!
//! The parts, in the order a request meets them:
//! - [`plan`]: the [`Plan`] (steps, timing, thresholds) and the
//!   [`PlanSpec`] layers it is built from.
//! - [`split`]: [`arm_for`], the deterministic split of keys over the arms.
//! - [`shadow`]: [`compare`], the candidate's outputs against stable ones.
//! - [`Rollout`]: records outcomes per step and arm; its checks
//!   ([`Rollout::poll`]) wait, pass, advance, promote or roll back.
//!
//! # Driving it
//!
//! ```
//! use nusa_rollout::{Arm, Decision, Outcome, Plan, Rollout};
//!
//! let plan = Plan { steps: vec![50, 100], step_s: 60, check_s: 30, min_requests: 10, ..Plan::default() };
//! let mut r = Rollout::start(7, 8, plan, 0).unwrap();
//! for now_ms in 0..=60_000 {
//!     if now_ms % 100 == 0 {
//!         // A request: pick the arm from its key, serve, record.
//!         let key = format!("client-{}", now_ms / 100 % 40);
//!         let arm = r.arm(key.as_bytes());
//!         r.record(arm, Outcome::ok(if arm == Arm::Candidate { 9_000 } else { 10_000 }));
//!     }
//!     // The driver's timer fires at next_check_ms().
//!     if now_ms >= r.next_check_ms() {
//!         if let Some(d) = r.poll(now_ms) {
//!             assert_eq!(d, Decision::Advance { step: 1, percent: 100 });
//!         }
//!     }
//! }
//! assert_eq!(r.percent(), 100);
//! ```

pub mod plan;
pub mod shadow;
pub mod split;

mod judge;
mod persist;
mod report;
mod rollout;
mod window;

pub use persist::{Saved, SAVED_FORMAT};
pub use plan::{Plan, PlanError, PlanSpec, Split};
pub use report::{ArmReport, Arms, Report, ShadowReport};
pub use rollout::{Decision, Phase, Rollout};
pub use shadow::{compare, ShadowResult};
pub use split::{arm_for, Arm};
pub use window::{Figures, Outcome};

/// A version folder holding this file was published with a rollout policy
/// (its `[rollout]` keys at the top level): it reaches traffic only
/// through a canary rollout of it.
pub const POLICY_FILE: &str = "rollout.toml";
