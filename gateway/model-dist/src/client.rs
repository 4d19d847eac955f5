//! The device side: which model versions are published, and installing one.
//!
//! Metadata is verified by nusa-ota-tuf's `Client` (trusted root from the
//! image, last-seen metadata in the datastore, expiry always enforced,
//! path-traversal names refuse the whole repository). Files are fetched
//! by byte range through nusa-ota's downloader, so an interrupted file
//! resumes; tough's `Transport` has no offset, so it carries the metadata
//! only.

mod download;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use nusa_ota::fetch::HttpFetcher;
use nusa_ota_core::Sha256Digest;
use nusa_ota_tuf::{Client, FilesystemTransport, Limits, TargetInfo, Transport, Url};

use crate::encryption::{is_key_id, KEYS_DIR, MAX_KEY_BYTES, WRAPPED_KEY_FILE};
use crate::manifest::{Manifest, MANIFEST_FORMAT, MAX_MANIFEST_BYTES};
use crate::names::{check_model, parse_version, split_target, MANIFEST_FILE};
use crate::ModelError;

pub use download::{FetchReport, FileOutcome, Outcome};

/// Under the destination, where versions are assembled before the rename
/// that installs them. Starts with `.`, so it is never a model name.
pub const INCOMING_DIR: &str = ".incoming";

/// Signed targets by (model, version), each as (path, info).
type Groups = BTreeMap<(String, u64), Vec<(String, TargetInfo)>>;

/// A verified view of a model repository.
pub struct ModelClient {
    tuf: Client,
    fetcher: Option<HttpFetcher>,
    /// Bytes of the version being fetched that are in place so far.
    progress: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelClient")
            .field("tuf", &self.tuf)
            .field("http", &self.fetcher.is_some())
            .finish()
    }
}

/// One published version: its signed manifest, and where each file is.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedVersion {
    /// Model, version, provenance, publication time, files.
    pub manifest: Manifest,
    /// Every signed target of the version, manifest included, by path.
    pub targets: Vec<(String, TargetInfo)>,
}

impl ModelClient {
    /// Verifies the model repository's metadata through `transport`.
    /// `trusted_root` is the model repository's root.json shipped in the
    /// image (not the OS release root); `datastore` a folder on the data
    /// partition, distinct from the OS updater's, where the last accepted
    /// metadata persists. Files at `http(s)` URLs are fetched through
    /// `fetcher`; `file` URLs are read directly.
    pub async fn open(
        trusted_root: &Path,
        datastore: &Path,
        metadata_url: Url,
        targets_url: Url,
        transport: impl Transport + 'static,
        fetcher: Option<HttpFetcher>,
        limits: Limits,
    ) -> Result<Self, ModelError> {
        let tuf = Client::open(
            trusted_root,
            datastore,
            metadata_url,
            targets_url,
            transport,
            limits,
        )
        .await?;
        Ok(Self {
            tuf,
            fetcher,
            progress: None,
        })
    }

    /// Counts, into `counter`, the bytes of each version `fetch_version`
    /// brings in place (kept, copied, resumed from and downloaded): a long
    /// pull's progress.
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// A repository in a local folder (a USB stick, a mounted share).
    pub async fn open_dir(
        repo_dir: &Path,
        trusted_root: &Path,
        datastore: &Path,
    ) -> Result<Self, ModelError> {
        let (metadata_url, targets_url) = nusa_ota_tuf::local_urls(repo_dir)?;
        Self::open(
            trusted_root,
            datastore,
            metadata_url,
            targets_url,
            FilesystemTransport,
            None,
            Limits::default(),
        )
        .await
    }

    /// Every published version, sorted by model and version, each with
    /// its verified manifest. A signed name under `models/` that is not a
    /// valid model target, or a version whose manifest disagrees with its
    /// targets, refuses the whole listing: its signer is broken.
    pub async fn list_versions(&self) -> Result<Vec<PublishedVersion>, ModelError> {
        let mut out = Vec::new();
        for ((model, version), targets) in self.groups()? {
            out.push(self.verified(&model, version, targets).await?);
        }
        Ok(out)
    }

    /// What the verified metadata signs for each version's manifest.json,
    /// by (model, version): no download, for admission at load.
    pub fn signed_manifests(
        &self,
    ) -> Result<BTreeMap<(String, u64), crate::SignedManifest>, ModelError> {
        let mut out = BTreeMap::new();
        for ((model, version), targets) in self.groups()? {
            if let Some((_, info)) = targets.iter().find(|(p, _)| p == MANIFEST_FILE) {
                out.insert(
                    (model, version),
                    crate::SignedManifest {
                        length: info.length,
                        sha256: info.sha256,
                    },
                );
            }
        }
        Ok(out)
    }

    /// One published version with its verified manifest.
    pub async fn version(
        &self,
        model: &str,
        version: &str,
    ) -> Result<PublishedVersion, ModelError> {
        check_model(model)?;
        let version = parse_version(version)?;
        let targets = self
            .groups()?
            .remove(&(model.to_owned(), version))
            .ok_or_else(|| ModelError::NotPublished {
                model: model.to_owned(),
                version,
            })?;
        self.verified(model, version, targets).await
    }

    /// Installs `version` of `model` as `dest_dir/<model>/<version>/`.
    ///
    /// Files are assembled in `dest_dir/.incoming/<model>/<version>/`: one
    /// already there with the signed sha256 is kept, a shorter one is
    /// resumed from its end, one with the same path and sha256 in another
    /// installed version of the model is copied; anything else is fetched.
    /// Every file is checked against its signed length and sha256, files
    /// the version does not sign are removed, and the folder is renamed
    /// into place only then. An installed version is checked, not fetched.
    pub async fn fetch_version(
        &self,
        model: &str,
        version: &str,
        dest_dir: &Path,
    ) -> Result<FetchReport, ModelError> {
        let published = self.version(model, version).await?;
        let version = published.manifest.version;
        let final_dir = dest_dir.join(model).join(version.to_string());
        if final_dir.exists() {
            // Key wrappings added since it was installed (a rewrap for a
            // new fleet key) are fetched into it; nothing else changes.
            self.add_key_wrappings(&published, dest_dir, &final_dir)
                .await?;
            return download::check_installed(&published, &final_dir);
        }
        let staging = dest_dir
            .join(INCOMING_DIR)
            .join(model)
            .join(version.to_string());
        make_dir(&staging)?;
        let mut files = Vec::with_capacity(published.targets.len());
        for (path, info) in &published.targets {
            let to = staging.join(path);
            if let Some(parent) = to.parent() {
                make_dir(parent)?;
            }
            let candidates = other_versions(dest_dir, model, version, path);
            let outcome = download::fetch_file(
                self.fetcher.as_ref(),
                info,
                &to,
                &candidates,
                self.progress.as_deref(),
            )
            .await?;
            files.push(FileOutcome {
                path: path.clone(),
                outcome,
            });
        }
        let listed: HashSet<&str> = published.targets.iter().map(|(p, _)| p.as_str()).collect();
        download::remove_unlisted(&staging, "", &listed)?;
        download::sync_dir(&staging)?;
        let model_dir = dest_dir.join(model);
        make_dir(&model_dir)?;
        std::fs::rename(&staging, &final_dir).map_err(ModelError::io(&final_dir))?;
        download::sync_dir(&model_dir)?;
        tracing::info!(%model, version, dir = %final_dir.display(), "model version installed");
        Ok(FetchReport {
            dir: final_dir,
            files,
            already_installed: false,
        })
    }

    /// Reads the signed target `name` (its whole verified content), if its
    /// signed length is at most `max`.
    pub async fn read_signed(&self, name: &str, max: u64) -> Result<Vec<u8>, ModelError> {
        let info = self
            .tuf
            .targets()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ModelError::BadManifest {
                model: String::new(),
                version: 0,
                detail: format!("{name} is not signed"),
            })?;
        if info.length > max {
            return Err(ModelError::TooLong {
                name: name.to_owned(),
                length: max,
            });
        }
        Ok(self.tuf.read_target(name).await?)
    }

    /// Fetches the key wrappings (`keys/<id>/key.json`) of an installed
    /// version that it lacks: staged and verified like any file, then
    /// renamed into the version folder.
    async fn add_key_wrappings(
        &self,
        published: &PublishedVersion,
        dest_dir: &Path,
        final_dir: &Path,
    ) -> Result<(), ModelError> {
        let version = published.manifest.version;
        for (path, info) in &published.targets {
            if !is_key_wrapping(path) || final_dir.join(path).exists() {
                continue;
            }
            let staging = dest_dir
                .join(INCOMING_DIR)
                .join(&published.manifest.model)
                .join(format!("{version}.keys"));
            let to = staging.join(path);
            if let Some(parent) = to.parent() {
                make_dir(parent)?;
            }
            download::fetch_file(self.fetcher.as_ref(), info, &to, &[], None).await?;
            let dest = final_dir.join(path);
            if let Some(parent) = dest.parent() {
                make_dir(parent)?;
            }
            std::fs::rename(&to, &dest).map_err(ModelError::io(&dest))?;
            if let Some(parent) = dest.parent() {
                download::sync_dir(parent)?;
            }
            let _ = std::fs::remove_dir_all(&staging);
            tracing::info!(model = %published.manifest.model, version, %path, "key wrapping installed");
        }
        Ok(())
    }

    /// The signed targets under `models/`, grouped by (model, version).
    fn groups(&self) -> Result<Groups, ModelError> {
        let mut groups: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for info in self.tuf.targets()? {
            let Some(parts) = split_target(&info.name) else {
                continue;
            };
            let (model, version, path) = parts?;
            groups
                .entry((model, version))
                .or_default()
                .push((path, info));
        }
        Ok(groups)
    }

    /// Reads the version's signed manifest and checks it lists exactly the
    /// version's other signed targets, with their lengths and hashes.
    async fn verified(
        &self,
        model: &str,
        version: u64,
        targets: Vec<(String, TargetInfo)>,
    ) -> Result<PublishedVersion, ModelError> {
        let bad = |detail: String| ModelError::BadManifest {
            model: model.to_owned(),
            version,
            detail,
        };
        let info = targets
            .iter()
            .find(|(path, _)| path == MANIFEST_FILE)
            .map(|(_, info)| info)
            .ok_or_else(|| bad("no signed manifest.json".to_owned()))?;
        if info.length > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{} bytes signed, over the {MAX_MANIFEST_BYTES} a manifest may have",
                info.length
            )));
        }
        let bytes = self.tuf.read_target(&info.name).await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if manifest.format == 0 || manifest.format > MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {} (this device reads 1 to {MANIFEST_FORMAT}): update the device first",
                manifest.format
            )));
        }
        if manifest.model != model || manifest.version != version {
            return Err(bad(format!(
                "it describes {} version {}",
                manifest.model, manifest.version
            )));
        }
        let signed: BTreeMap<&str, &TargetInfo> = targets
            .iter()
            .filter(|(path, _)| path != MANIFEST_FILE)
            .map(|(path, info)| (path.as_str(), info))
            .collect();
        let mut seen = HashSet::new();
        for file in &manifest.files {
            if !seen.insert(file.path.as_str()) {
                return Err(bad(format!("{} is listed twice", file.path)));
            }
            let Some(info) = signed.get(file.path.as_str()) else {
                return Err(bad(format!("{} is listed but not signed", file.path)));
            };
            if info.length != file.length || Sha256Digest::from_bytes(info.sha256) != file.sha256 {
                return Err(bad(format!(
                    "{} is listed with another length or sha256 than signed",
                    file.path
                )));
            }
        }
        // Key wrappings are signed targets the manifest cannot list (a
        // rewrap adds them later): allowed for encrypted versions only,
        // each `keys/<key-id>/key.json` and small.
        let encrypted = manifest.encryption.is_some();
        if let Some(extra) = signed
            .iter()
            .find(|(p, info)| {
                let key_wrapping = encrypted && is_key_wrapping(p) && info.length <= MAX_KEY_BYTES;
                !(seen.contains(*p) || key_wrapping)
            })
            .map(|(p, _)| p)
        {
            return Err(bad(format!("{extra} is signed but not listed")));
        }
        if let Some(enc) = &manifest.encryption {
            for file in &enc.files {
                if !seen.contains(file.path.as_str()) {
                    return Err(bad(format!("encrypted file {} is not listed", file.path)));
                }
            }
        }
        Ok(PublishedVersion { manifest, targets })
    }
}

/// Whether a version's file path is a key wrapping, `keys/<key-id>/key.json`.
pub(crate) fn is_key_wrapping(path: &str) -> bool {
    path.strip_prefix(KEYS_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.strip_suffix(WRAPPED_KEY_FILE))
        .and_then(|p| p.strip_suffix('/'))
        .is_some_and(is_key_id)
}

/// The same file path in the model's other installed versions.
fn other_versions(dest_dir: &Path, model: &str, version: u64, path: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dest_dir.join(model)) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|v| parse_version(v).ok())
                .is_some_and(|v| v != version)
        })
        .map(|e| e.path().join(path))
        .collect();
    found.sort();
    found
}

fn make_dir(dir: &Path) -> Result<(), ModelError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(ModelError::io(dir))
}
