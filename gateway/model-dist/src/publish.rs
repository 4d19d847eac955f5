//! Publishing: a model repository of its own, and immutable versions in it.
//!
//! Signing, metadata and the commit order are nusa-ota-tuf's
//! (`init_repo`, `add_targets`); this module decides what a version is:
//! its files, their target names and the signed manifest.

use std::path::{Path, PathBuf};

use nusa_ota_tuf::{
    create_keys, init_repo as init_tuf_repo, Expiries, KeyCounts, NameError, NewTarget,
    SigningKeys, Thresholds,
};

use crate::encryption::{
    encrypt_file, unwrap_key, wrap_key, CryptoError, DataKey, FleetPrivateKey, FleetPublicKey,
    WrappedKey, ENCRYPTED_SUFFIX, FILE_ALGORITHM, KEYS_DIR, WRAP_ALGORITHM,
};
use crate::hash_file;
use crate::manifest::{
    EncryptedFile, Encryption, Manifest, ManifestFile, Provenance, ProvenanceError,
    ENCRYPTED_FORMAT, PLAIN_FORMAT,
};
use crate::names::{check_file_path, check_model, parse_version, version_prefix, MANIFEST_FILE};

/// The files a version directory must have one of.
const MODEL_FILES: [&str; 2] = ["model.onnx", "model.plan"];
/// Bound on the files of one version (a directory of thousands of golden
/// tests is a mistake, and every file is a line in targets.json).
const MAX_FILES: usize = 1024;

/// Why publishing failed. Nothing was signed or committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("version directory {dir}: {detail}", dir = dir.display())]
    Layout { dir: PathBuf, detail: String },
    #[error(
        "model {model} version {version} is already published; versions are immutable, so it \
         is refused even with identical bytes: publish the change as a new version"
    )]
    VersionExists { model: String, version: u64 },
    #[error(
        "{dir} already holds signing keys; a model repository gets keys of its own (never the \
         OS release keys)", dir = dir.display()
    )]
    KeysExist { dir: PathBuf },
    #[error(transparent)]
    Tuf(#[from] nusa_ota_tuf::PublishError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("model {model} version {version}: {detail}")]
    Rewrap {
        model: String,
        version: u64,
        detail: String,
    },
}

/// How a version is published beyond its files and provenance.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Encrypt the model files for this fleet key (`--encrypt-for`).
    pub encrypt_for: Option<FleetPublicKey>,
}

/// Creates a model repository in `repo_dir` with new keys in `keys_dir`
/// (one per role, thresholds 1, standard expiries). Refuses a `keys_dir`
/// that already holds keys, so a model repository never shares keys with
/// the OS release repository. `nusa_ota_tuf::{set_expiry, rotate_root}`
/// maintain it afterwards, as they do the release repository.
pub async fn init_repo(repo_dir: &Path, keys_dir: &Path) -> Result<SigningKeys, PublishError> {
    if keys_dir.exists() {
        let existing = SigningKeys::load(keys_dir)?;
        if nusa_ota_tuf::Role::ALL
            .iter()
            .any(|r| !existing.role(*r).is_empty())
        {
            return Err(PublishError::KeysExist {
                dir: keys_dir.to_owned(),
            });
        }
    }
    let keys = create_keys(keys_dir, KeyCounts::default())?;
    init_tuf_repo(
        repo_dir,
        &keys,
        &Thresholds::default(),
        &Expiries::standard(),
    )
    .await?;
    Ok(keys)
}

/// Publishes `version_dir` as `version` of `model`: every file becomes the
/// target `models/<model>/<version>/<path>`, and a signed manifest
/// (provenance, publication time, every file's sha256 and length) the
/// target `models/<model>/<version>/manifest.json`. Uses the keys in
/// `keys_dir` and standard expiries for the re-signed roles.
///
/// The directory must hold `model.onnx` or `model.plan`; its files must
/// not change while this runs.
pub async fn publish_version(
    repo_dir: &Path,
    keys_dir: &Path,
    model: &str,
    version: &str,
    version_dir: &Path,
    provenance: &Provenance,
) -> Result<Manifest, PublishError> {
    publish_version_with(
        repo_dir,
        keys_dir,
        model,
        version,
        version_dir,
        provenance,
        &PublishOptions::default(),
    )
    .await
}

/// [`publish_version`] with options. With `encrypt_for`, `model.onnx` and
/// `model.plan` are published as `model.onnx.enc` and `model.plan.enc`
/// (AES-256-GCM under a new random data key, the tag at the end), the
/// manifest (format 2) gets an `encryption` section with each file's
/// nonce, and the data key, wrapped for the fleet key, is the target
/// `keys/<key-id>/key.json` of the version. The plaintext is read into
/// memory and never written anywhere; the hashes signed are the
/// ciphertext's.
pub async fn publish_version_with(
    repo_dir: &Path,
    keys_dir: &Path,
    model: &str,
    version: &str,
    version_dir: &Path,
    provenance: &Provenance,
    options: &PublishOptions,
) -> Result<Manifest, PublishError> {
    check_model(model)?;
    let version = parse_version(version)?;
    provenance.check()?;
    let keys = SigningKeys::load(keys_dir)?;
    let prefix = version_prefix(model, version);
    // Before hashing gigabytes: `add_targets` refuses it again under the
    // repository's own verification, so this early answer is a courtesy.
    if already_published(repo_dir, &prefix).await {
        return Err(PublishError::VersionExists {
            model: model.to_owned(),
            version,
        });
    }

    let mut files = version_files(version_dir)?;
    let scratch = tempfile::tempdir().map_err(|source| PublishError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    // With encryption: the model files are replaced by their ciphertext
    // (written to the scratch folder), and the wrapped key is one more
    // target that the manifest does not list.
    let mut encryption = None;
    let mut extra: Vec<(String, PathBuf)> = Vec::new();
    if let Some(fleet) = &options.encrypt_for {
        if let Some((rel, _)) = files.iter().find(|(rel, _)| {
            MODEL_FILES
                .iter()
                .any(|m| *rel == format!("{m}{ENCRYPTED_SUFFIX}"))
        }) {
            return Err(PublishError::Layout {
                dir: version_dir.to_owned(),
                detail: format!(
                    "{rel} is the name an encrypted model file is published under; give the \
                     plaintext model file and --encrypt-for"
                ),
            });
        }
        let data_key = DataKey::generate()?;
        let mut encrypted = Vec::new();
        for (rel, abs) in files.iter_mut() {
            if !MODEL_FILES.contains(&rel.as_str()) {
                continue;
            }
            let io = |source| PublishError::Io {
                path: abs.clone(),
                source,
            };
            let mut data = std::fs::read(&*abs).map_err(io)?;
            let nonce = encrypt_file(&data_key, model, version, rel, &mut data)?;
            let enc_rel = format!("{rel}{ENCRYPTED_SUFFIX}");
            let enc_abs = scratch.path().join(&enc_rel);
            std::fs::write(&enc_abs, &data).map_err(|source| PublishError::Io {
                path: enc_abs.clone(),
                source,
            })?;
            encrypted.push(EncryptedFile {
                path: enc_rel.clone(),
                plaintext: rel.clone(),
                nonce,
            });
            *rel = enc_rel;
            *abs = enc_abs;
        }
        files.sort();
        encrypted.sort_by(|a, b| a.path.cmp(&b.path));
        encryption = Some(Encryption {
            algorithm: FILE_ALGORITHM.to_owned(),
            key_wrapping: WRAP_ALGORITHM.to_owned(),
            files: encrypted,
        });
        let wrapped = wrap_key(&data_key, fleet, model, version)?;
        extra.push(write_wrapped(scratch.path(), &wrapped)?);
    }
    let mut listed = Vec::with_capacity(files.len());
    for (path, abs) in &files {
        let (sha256, length) = hash_file(abs).map_err(|source| PublishError::Io {
            path: abs.clone(),
            source,
        })?;
        listed.push(ManifestFile {
            path: path.clone(),
            sha256,
            length,
        });
    }
    let manifest = Manifest {
        format: if encryption.is_some() {
            ENCRYPTED_FORMAT
        } else {
            PLAIN_FORMAT
        },
        model: model.to_owned(),
        version,
        published_at: now_rfc3339(),
        provenance: provenance.clone(),
        files: listed,
        encryption,
    };
    let manifest_path = scratch.path().join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| PublishError::Io {
        path: manifest_path.clone(),
        source: e.into(),
    })?;
    std::fs::write(&manifest_path, json).map_err(|source| PublishError::Io {
        path: manifest_path.clone(),
        source,
    })?;

    let mut targets: Vec<NewTarget<'_>> = files
        .iter()
        .chain(&extra)
        .map(|(path, abs)| NewTarget {
            name: format!("{prefix}{path}"),
            path: abs,
            custom: Default::default(),
        })
        .collect();
    targets.push(NewTarget {
        name: format!("{prefix}{MANIFEST_FILE}"),
        path: &manifest_path,
        custom: Default::default(),
    });
    nusa_ota_tuf::add_targets(repo_dir, &keys, &prefix, &targets, &Expiries::standard())
        .await
        .map_err(|e| match e {
            nusa_ota_tuf::PublishError::GroupExists { .. } => PublishError::VersionExists {
                model: model.to_owned(),
                version,
            },
            other => other.into(),
        })?;
    tracing::info!(%model, version, files = manifest.files.len(), "model version published");
    Ok(manifest)
}

/// Whether the repository, read through the verifying client, already
/// signs a target under `prefix`. False when it cannot be read that way
/// (expired metadata, say): `add_targets` then decides.
async fn already_published(repo_dir: &Path, prefix: &str) -> bool {
    let Ok(datastore) = tempfile::tempdir() else {
        return false;
    };
    let Ok((metadata_url, targets_url)) = nusa_ota_tuf::local_urls(repo_dir) else {
        return false;
    };
    let root = repo_dir
        .join(nusa_ota_tuf::METADATA_DIR)
        .join("1.root.json");
    let client = nusa_ota_tuf::Client::open(
        &root,
        datastore.path(),
        metadata_url,
        targets_url,
        nusa_ota_tuf::FilesystemTransport,
        nusa_ota_tuf::Limits::default(),
    )
    .await;
    client
        .ok()
        .and_then(|c| c.targets().ok())
        .is_some_and(|t| t.iter().any(|i| i.name.starts_with(prefix)))
}

/// The regular files under `dir` as `(relative path, absolute path)`,
/// sorted, each path checked. Symbolic links and special files are
/// refused (a link could publish a file from outside the directory).
fn version_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, PublishError> {
    let layout = |detail: String| PublishError::Layout {
        dir: dir.to_owned(),
        detail,
    };
    let mut files = Vec::new();
    let mut pending = vec![(String::new(), dir.to_owned())];
    while let Some((rel_dir, abs_dir)) = pending.pop() {
        let io = |source| PublishError::Io {
            path: abs_dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&abs_dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| layout(format!("{:?} is not UTF-8", entry.path())))?;
            let rel = if rel_dir.is_empty() {
                name.to_owned()
            } else {
                format!("{rel_dir}/{name}")
            };
            check_file_path(&rel)?;
            if rel == KEYS_DIR || rel.starts_with(&format!("{KEYS_DIR}/")) {
                return Err(layout(format!(
                    "{rel}: the top-level folder '{KEYS_DIR}' is reserved for key wrappings"
                )));
            }
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                pending.push((rel, entry.path()));
            } else if kind.is_file() {
                files.push((rel, entry.path()));
            } else {
                return Err(layout(format!(
                    "{rel} is a symbolic link or special file; only regular files are published"
                )));
            }
            if files.len() > MAX_FILES {
                return Err(layout(format!("more than {MAX_FILES} files")));
            }
        }
    }
    if !files
        .iter()
        .any(|(rel, _)| MODEL_FILES.contains(&rel.as_str()))
    {
        return Err(layout(format!(
            "has neither {} nor {}",
            MODEL_FILES[0], MODEL_FILES[1]
        )));
    }
    files.sort();
    Ok(files)
}

/// Now as RFC 3339 in UTC, whole seconds.
fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// Writes `wrapped` as `<dir>/keys/<key-id>/key.json`; returns its path in
/// the version and where it is.
fn write_wrapped(dir: &Path, wrapped: &WrappedKey) -> Result<(String, PathBuf), PublishError> {
    let rel = WrappedKey::file_path(&wrapped.key_id);
    let abs = dir.join(&rel);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PublishError::Io { path, source }
    };
    if let Some(parent) = abs.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let json = serde_json::to_vec_pretty(wrapped).map_err(|e| PublishError::Io {
        path: abs.clone(),
        source: e.into(),
    })?;
    std::fs::write(&abs, json).map_err(io(&abs))?;
    Ok((rel, abs))
}

/// Adds a wrapping of an encrypted version's data key for `new_key`: the
/// one signed target `models/<model>/<version>/keys/<new-key-id>/key.json`.
/// The data key is unwrapped from the version's wrapping for `old_key`
/// (read from the repository's signed targets, each read bounded); the
/// version's files and manifest are not touched. Returns the new key id.
/// Refused when the version is not published, not encrypted, has no
/// wrapping for the old key, or already has one for the new key.
pub async fn rewrap(
    repo_dir: &Path,
    keys_dir: &Path,
    model: &str,
    version: &str,
    old_key: &FleetPrivateKey,
    new_key: &FleetPublicKey,
) -> Result<String, PublishError> {
    check_model(model)?;
    let version = parse_version(version)?;
    let keys = SigningKeys::load(keys_dir)?;
    let fail = |detail: String| PublishError::Rewrap {
        model: model.to_owned(),
        version,
        detail,
    };
    let datastore = tempfile::tempdir().map_err(|source| PublishError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let client = crate::ModelClient::open_dir(
        repo_dir,
        &repo_dir
            .join(nusa_ota_tuf::METADATA_DIR)
            .join("1.root.json"),
        datastore.path(),
    )
    .await
    .map_err(|e| fail(format!("reading the repository: {e}")))?;
    let published = client
        .version(model, &version.to_string())
        .await
        .map_err(|e| fail(e.to_string()))?;
    if published.manifest.encryption.is_none() {
        return Err(fail(
            "is not encrypted: there is no data key to rewrap".into(),
        ));
    }
    let old_path = WrappedKey::file_path(&old_key.key_id());
    let new_id = new_key.key_id();
    let new_path = WrappedKey::file_path(&new_id);
    if published.targets.iter().any(|(p, _)| *p == new_path) {
        return Err(fail(format!("already has a key wrapped for {new_id}")));
    }
    let Some((_, info)) = published.targets.iter().find(|(p, _)| *p == old_path) else {
        let have: Vec<&str> = published
            .targets
            .iter()
            .filter_map(|(p, _)| p.strip_prefix("keys/")?.strip_suffix("/key.json"))
            .collect();
        return Err(fail(format!(
            "has no key wrapped for the old key {} (wrapped for: {})",
            old_key.key_id(),
            have.join(", ")
        )));
    };
    let bytes = client
        .read_signed(&info.name, crate::encryption::MAX_KEY_BYTES)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let wrapped: WrappedKey = serde_json::from_slice(&bytes)
        .map_err(|e| fail(format!("{old_path}: not a wrapped key: {e}")))?;
    let data_key = unwrap_key(&wrapped, old_key, model, version)?;
    let rewrapped = wrap_key(&data_key, new_key, model, version)?;
    let scratch = tempfile::tempdir().map_err(|source| PublishError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let (rel, abs) = write_wrapped(scratch.path(), &rewrapped)?;
    let name = format!("{}{rel}", version_prefix(model, version));
    // Its own group: the key id's folder, so the same key cannot be added
    // twice, and nothing else of the version can be added this way.
    let group = format!("{}{KEYS_DIR}/{new_id}/", version_prefix(model, version));
    nusa_ota_tuf::add_targets(
        repo_dir,
        &keys,
        &group,
        &[NewTarget {
            name,
            path: &abs,
            custom: Default::default(),
        }],
        &Expiries::standard(),
    )
    .await?;
    tracing::info!(%model, version, key_id = %new_id, "data key rewrapped");
    Ok(new_id)
}
