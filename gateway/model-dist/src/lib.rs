//! Signed model distribution: model versions published to a TUF
//! repository of their own (its own root and keys, apart from the OS
//! release repository), and the device's client that lists them and
//! installs one after verifying every byte. See README.md.
//!
//! - **Publishing** ([`init_repo`], [`publish_version`], [`run_publish`]):
//!   a version directory becomes the targets `models/<model>/<version>/<path>`
//!   plus a signed [`Manifest`] (provenance, file list). Versions are
//!   immutable.
//! - **Client** ([`ModelClient`]): [`ModelClient::list_versions`] and
//!   [`ModelClient::fetch_version`], which stages, verifies, resumes and
//!   renames into `<dest>/<model>/<version>/`.
//!
//! Keys, signing, metadata commits and the verifying TUF client are
//! nusa-ota-tuf's; ranged, resuming downloads are nusa-ota's.

#![forbid(unsafe_code)]

mod cli;
mod client;
pub mod encryption;
mod error;
mod installed;
mod manifest;
mod names;
mod publish;

use std::io::Read;
use std::path::Path;

use nusa_ota_core::{Sha256Digest, Sha256Hasher};

pub use cli::{
    run_keygen, run_publish, run_rewrap, KeygenArgs, PublishArgs, PublishReport, RewrapArgs,
};
pub use client::{FetchReport, FileOutcome, ModelClient, Outcome, PublishedVersion, INCOMING_DIR};
pub use error::ModelError;
pub use installed::{verify_installed, SignedManifest};
pub use manifest::{
    EncryptedFile, Encryption, Manifest, ManifestFile, Provenance, ProvenanceError,
    ENCRYPTED_FORMAT, MANIFEST_FORMAT, MAX_MANIFEST_BYTES, PLAIN_FORMAT,
};
pub use names::{check_file_path, check_model, parse_version, MANIFEST_FILE, MODELS_DIR};
pub use publish::{
    init_repo, publish_version, publish_version_with, rewrap, PublishError, PublishOptions,
};
// Maintaining the model repository is the same as the release one's.
pub use nusa_ota_tuf::{rotate_root, set_expiry, Expiries, Limits, Role, SigningKeys, Thresholds};

/// The sha256 and length of a file, read in 1 MiB pieces.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256Hasher::new();
    let length = hash_into(path, &mut hasher)?;
    Ok((hasher.finish(), length))
}

/// Feeds a whole file into `hasher`; returns its length.
pub(crate) fn hash_into(path: &Path, hasher: &mut Sha256Hasher) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut length = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(length);
        }
        hasher.update(&buf[..n]);
        length += n as u64;
    }
}

/// A signed target name split as the model client splits it, for the fuzz
/// targets in `fuzz/`; not an API.
#[doc(hidden)]
pub fn fuzz_split_target(
    raw: &str,
) -> Option<Result<(String, u64, String), nusa_ota_tuf::NameError>> {
    names::split_target(raw)
}
