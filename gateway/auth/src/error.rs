//! The two error boundaries: authenticating a request, and managing the
//! store. **Invariant:** no message carries a presented key or a secret;
//! the only key material ever named is the public prefix.

use std::path::PathBuf;

/// Why a request is not authenticated (HTTP 401). The messages are written
/// for the response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")]
    Missing,
    #[error("the API key is malformed (expected nusa_<8 hex digits>_<43 characters>)")]
    Malformed,
    /// An unknown prefix and a wrong secret read the same, on purpose.
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
}

impl AuthError {
    /// The `WWW-Authenticate` value for the 401 (RFC 6750 §3).
    pub fn challenge(&self) -> &'static str {
        match self {
            AuthError::Missing => "Bearer realm=\"nusa\"",
            AuthError::Malformed => "Bearer realm=\"nusa\", error=\"invalid_request\"",
            _ => "Bearer realm=\"nusa\", error=\"invalid_token\"",
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>` (scheme
/// case-insensitive), else `x-api-key`. `Malformed` when `Authorization`
/// holds another scheme and there is no `x-api-key`.
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Result<&'a str, AuthError> {
    let bearer = authorization.map(|v| {
        let v = v.trim();
        match v.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(key.trim()),
            _ => Err(AuthError::Malformed),
        }
    });
    match (bearer, x_api_key.map(str::trim)) {
        (Some(Ok(key)), _) => Ok(key),
        (_, Some(key)) => Ok(key),
        (Some(Err(e)), None) => Err(e),
        (None, None) => Err(AuthError::Missing),
    }
}

/// Why a store operation failed. Names keys by name (and the file by path),
/// never by secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store {}: cannot create it: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key store {} is in use by another process", path.display())]
    InUse { path: PathBuf },
    #[error("key store {} is damaged or not a key store: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("key store {} has schema {found}; this build reads {expected}", path.display())]
    Schema {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    /// One record cannot be read; the store does not open, rather than
    /// run without a key an operator created.
    #[error("key store {}: the record of key {name:?} cannot be read: {reason}", path.display())]
    Record {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("a key named '{0}' already exists")]
    NameTaken(String),
    #[error("no key named '{0}'")]
    NotFound(String),
    #[error("key '{0}' is revoked")]
    Revoked(String),
    #[error("certificate subject {subject:?} already belongs to key '{holder}'")]
    SubjectTaken { subject: String, holder: String },
    #[error("key {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("key store write failed: {0}")]
    Write(Box<redb::Error>),
    #[error("the system's random number generator failed")]
    Random,
}

/// redb's errors of a write (or a read after the open) are rare and large:
/// boxed, with redb's own message.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Write(Box::new(e.into()))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<ring::error::Unspecified> for StoreError {
    fn from(_: ring::error::Unspecified) -> StoreError {
        StoreError::Random
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_key_sources() {
        assert_eq!(presented_key(Some("Bearer abc"), None), Ok("abc"));
        assert_eq!(presented_key(Some("bearer  abc "), None), Ok("abc"));
        assert_eq!(presented_key(None, Some("xyz")), Ok("xyz"));
        assert_eq!(presented_key(Some("Bearer abc"), Some("xyz")), Ok("abc"));
        assert_eq!(presented_key(Some("Basic dTpw"), Some("xyz")), Ok("xyz"));
        assert_eq!(
            presented_key(Some("Basic dTpw"), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(presented_key(None, None), Err(AuthError::Missing));
    }

    #[test]
    fn challenges() {
        assert_eq!(AuthError::Missing.challenge(), "Bearer realm=\"nusa\"");
        assert!(AuthError::Revoked.challenge().contains("invalid_token"));
    }
}
