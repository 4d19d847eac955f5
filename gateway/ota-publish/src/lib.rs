//! Publishing an OS release on a release engineer's machine: from a root
//! filesystem image to signed TUF targets, the image, its chunk index (for
//! delta updates) and the release metadata every appliance checks before
//! it installs anything. `nusactl release add` calls it.
//!
//! Apart from `nusa-ota`, the appliance's updater, which only reads
//! releases: the updater carries no code path that signs. The layout both
//! sides agree on is `nusa_ota_core::release::{IMAGE_FILE, INDEX_FILE}`
//! under `nusa_ota_tuf::target_name`.
//!
//! The fleet brake ([`brake`]: pause, resume, yank) is published the same
//! way, as the signed target `brake/<n>/brake.json`.

#![forbid(unsafe_code)]

pub mod brake;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use nusa_ota_core::release::{IMAGE_FILE, INDEX_FILE};
use nusa_ota_core::{IndexBuilder, ReleaseInfo, Sha256Hasher, Variant, Version, Waves};
use nusa_ota_tuf::{target_name, Expiries, SigningKeys};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("reading the image {path}: {source}")]
    Image {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("release metadata: {0}")]
    Release(String),
    #[error(transparent)]
    Tuf(#[from] nusa_ota_tuf::PublishError),
}

/// What `add_release` publishes.
pub struct NewRelease<'a> {
    pub variant: &'a str,
    pub version: &'a str,
    pub image: &'a Path,
    pub min_version: Option<&'a str>,
    pub waves: Waves,
    pub chunk_size: u32,
    /// More files of the release (the kernel and initrd the boot partition
    /// gets for the slot): (file name, path).
    pub extra_files: Vec<(String, PathBuf)>,
}

/// Hashes the image, cuts its chunk index, and adds both as the release's
/// targets with the release metadata attached. Returns that metadata.
pub async fn add_release(
    repo: &Path,
    keys: &SigningKeys,
    release: NewRelease<'_>,
    expiries: &Expiries,
) -> Result<ReleaseInfo, PublishError> {
    let image_err = |source| PublishError::Image {
        path: release.image.to_path_buf(),
        source,
    };
    let mut index =
        IndexBuilder::new(release.chunk_size).map_err(|e| PublishError::Release(e.to_string()))?;
    let mut whole = Sha256Hasher::new();
    let mut file = std::fs::File::open(release.image).map_err(image_err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(image_err)?;
        if n == 0 {
            break;
        }
        index.update(&buf[..n]);
        whole.update(&buf[..n]);
        len += n as u64;
    }
    let index = index
        .finish()
        .map_err(|e| PublishError::Release(e.to_string()))?;
    let staging = tempfile::tempdir().map_err(image_err)?;
    let index_path = staging.path().join(INDEX_FILE);
    std::fs::write(&index_path, index.to_bytes()).map_err(image_err)?;

    let bad = |e: &dyn std::fmt::Display| PublishError::Release(e.to_string());
    let info = ReleaseInfo {
        version: release.version.parse::<Version>().map_err(|e| bad(&e))?,
        variant: Variant::new(release.variant).map_err(|e| bad(&e))?,
        min_version: release
            .min_version
            .map(str::parse::<Version>)
            .transpose()
            .map_err(|e| bad(&e))?,
        image_target: target_name(release.variant, release.version, IMAGE_FILE),
        image_len: len,
        image_sha256: whole.finish(),
        chunk_index_target: target_name(release.variant, release.version, INDEX_FILE),
        waves: release.waves,
    };
    let custom = match serde_json::to_value(&info) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) | Err(_) => return Err(PublishError::Release("not serializable".into())),
    };
    let mut files: Vec<(&str, &Path)> =
        vec![(IMAGE_FILE, release.image), (INDEX_FILE, &index_path)];
    for (name, path) in &release.extra_files {
        files.push((name.as_str(), path.as_path()));
    }
    nusa_ota_tuf::add_release(
        repo,
        keys,
        release.variant,
        release.version,
        &files,
        &custom,
        expiries,
    )
    .await?;
    Ok(info)
}
