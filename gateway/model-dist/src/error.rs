//! What the device refuses, and why. Every variant means nothing
//! unverified was installed: a refused file is deleted from staging, and
//! the version directory appears only once every file verified.

use std::path::PathBuf;

use nusa_ota_tuf::{NameError, TufError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The repository's metadata was refused (expired, rolled back, badly
    /// signed, a path-traversal name anywhere in the signed targets, ...).
    #[error("model repository refused: {0}")]
    Tuf(#[from] TufError),

    /// A model, version or file name asked for, or one the repository
    /// signed, that is not a valid name.
    #[error(transparent)]
    Name(#[from] NameError),

    /// No signed target names this version: files lying in the repository
    /// without a signature are never used.
    #[error("model {model} version {version} is not signed in the model repository")]
    NotPublished { model: String, version: u64 },

    /// The version's signed manifest is missing, too large, unreadable, or
    /// disagrees with the signed targets.
    #[error("model {model} version {version}: bad manifest: {detail}")]
    BadManifest {
        model: String,
        version: u64,
        detail: String,
    },

    /// A downloaded file does not hash to its signed sha256 (tampered, or
    /// data other than the published file); it was deleted.
    #[error("{name} does not match its signed sha256: expected {expected}, got {actual}")]
    HashMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    /// A file in a local repository whose size is not its signed length.
    #[error("{name} is {actual} bytes where {signed} are signed")]
    WrongLength {
        name: String,
        signed: u64,
        actual: u64,
    },

    /// More bytes arrived than the signed length; reading stopped there.
    #[error("{name} is longer than the {length} bytes signed for it")]
    TooLong { name: String, length: u64 },

    /// The download itself failed (server, network, missing file).
    #[error("downloading {name}: {source}")]
    Download {
        name: String,
        source: nusa_ota::fetch::FetchError,
    },

    /// A target served over http(s), but the client has no HTTP fetcher.
    #[error("{url} is served over HTTP, and this client was opened without an HTTP fetcher")]
    NoFetcher { url: String },

    /// The version is already installed with other content.
    #[error("{path} exists and does not hold the signed files of this version", path = path.display())]
    DestinationConflict { path: PathBuf },

    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
        move |source| ModelError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
