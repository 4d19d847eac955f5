//! Who may call what on the public port (`auth.mode = "keys"`): the API key
//! (or client certificate) authenticated against `nusa-auth`'s store, the
//! key's role and model globs, and its limits. The answers: 401 with
//! `WWW-Authenticate`, 403 naming what the key lacks, 429 with `Retry-After`
//! naming the limit. Messages never carry a presented key.

use std::sync::Arc;

use nusa_auth::{presented_key, AuthError, Denied, KeyRecord, KeyStore, Limiter, Permit};
use nusa_proto::{ErrorKind, ProtoError};

use crate::{ApiResponse, Credentials};

/// The key store and the limits of every key.
pub struct Access {
    store: Arc<KeyStore>,
    limiter: Limiter,
}

/// Who a request on the public port is.
#[derive(Clone)]
pub enum Caller {
    /// `auth.mode = "none"`: nobody is checked.
    Open,
    Key(Arc<KeyRecord>),
}

impl Caller {
    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Caller::Open => None,
            Caller::Key(k) => Some(k),
        }
    }
}

impl Access {
    pub fn new(store: Arc<KeyStore>) -> Access {
        Access {
            store,
            limiter: Limiter::default(),
        }
    }

    pub fn store(&self) -> &Arc<KeyStore> {
        &self.store
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The key the request presents (`Authorization: Bearer`, `x-api-key`),
    /// else the key its verified client certificate maps to.
    pub(crate) fn authenticate(
        &self,
        c: &Credentials,
        now_s: u64,
    ) -> Result<Arc<KeyRecord>, ApiResponse> {
        let presented = presented_key(c.authorization.as_deref(), c.x_api_key.as_deref());
        let result = match (presented, c.cert_subject.as_deref()) {
            (Err(AuthError::Missing), Some(subject)) => self.store.by_subject(subject, now_s),
            (Ok(key), _) => self.store.authenticate(key, now_s),
            (Err(e), _) => Err(e),
        };
        result.map_err(unauthenticated)
    }

    /// The key's limits for one call of `model`; the permit holds its
    /// concurrency slot until dropped.
    pub(crate) fn admit(
        &self,
        key: &KeyRecord,
        model: &str,
        now_s: u64,
    ) -> Result<Permit, ApiResponse> {
        self.limiter
            .check(key, model, nusa_auth::utc_day(now_s))
            .map_err(|d| over_limit(&d, now_s))
    }
}

/// 429 with `Retry-After` and `{"error", "limit", "scope", ...}` naming the
/// limit a key is over.
pub(crate) fn over_limit(d: &Denied, now_s: u64) -> ApiResponse {
    let mut r = ApiResponse::json(
        429,
        serde_json::to_string(d).unwrap_or_else(|_| "{}".into()),
    );
    r.headers
        .push(("retry-after", d.retry_after(now_s).to_string()));
    r
}

fn unauthenticated(e: AuthError) -> ApiResponse {
    let mut r = ApiResponse::error(&ProtoError::new(ErrorKind::Unauthorized, e.to_string()));
    r.headers.push(("www-authenticate", e.challenge().into()));
    r
}

/// 403: a known key without the right.
pub(crate) fn forbidden(message: String) -> ApiResponse {
    ApiResponse::error(&ProtoError::new(ErrorKind::Forbidden, message))
}

/// A key may call `model`, or the 403 saying so.
pub(crate) fn may_call(caller: &Caller, model: &str) -> Result<(), ApiResponse> {
    match caller.key() {
        Some(k) if !k.may_call(model) => Err(forbidden(format!(
            "key '{}' may not call model '{model}' (its models: {})",
            k.name,
            k.models.join(", ")
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
