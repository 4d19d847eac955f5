//! API keys, their authorization, and the rate-limit and quota core.
//!
//! A request's path through this crate, in order:
//!
//! 1. `presented_key` picks the key out of `Authorization: Bearer` or
//!    `x-api-key` (or the TLS layer hands over a verified client
//!    certificate's subject for `KeyStore::by_subject`);
//! 2. `KeyStore::authenticate` finds the record by the key's public prefix
//!    in memory and checks the salted SHA-256 of the key in constant time
//!    (401 `AuthError`, with `AuthError::challenge` for `WWW-Authenticate`);
//! 3. `KeyRecord::may_call` / `is_admin` decide role and model (403);
//! 4. `Limiter::check` applies rate, concurrency and daily quota (429
//!    `Denied`), and `Limiter::may_spill` / `try_spill` with
//!    `KeyRecord::may_spill_to` gate spilling to a region.
//!
//! **Invariant:** no secret reaches a `Debug`, `Display`, serialised
//! record or error message; the only key material ever printed is the
//! public prefix. **Invariant:** the per-request path does no disk I/O and
//! the limiter reads no clock but the one it is given.

mod error;
mod limiter;
mod record;
mod secret;
mod spec;
mod store;

pub use error::{presented_key, AuthError, StoreError};
pub use limiter::{
    seconds_until_next_utc_day, utc_day, Denied, Limiter, ModelUsage, Permit, Usage,
    SECONDS_PER_DAY,
};
pub use record::{KeyRecord, Residency};
pub use secret::{generate_text, Secret, KEY_LEN};
pub use spec::{KeySpec, Limits, Role, MAX_REFILL_S, MAX_RPS};
pub use store::{KeyStore, MAX_RECORD};

/// Re-exported so callers name the same clocks the limiter is generic over.
pub use governor::clock;
