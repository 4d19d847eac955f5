//! Admission of an installed version at load: every file on disk against
//! the manifest installed with it, and that manifest against its signed
//! length and sha256 when the verified metadata is at hand.

use std::collections::BTreeSet;
use std::path::Path;

use nusa_ota_core::Sha256Digest;

use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::names::MANIFEST_FILE;
use crate::{hash_file, ModelError};

/// What the signed metadata says of a version's manifest.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    pub length: u64,
    pub sha256: [u8; 32],
}

/// Checks `dir` (`<store>/<model>/<version>`): its manifest.json (against
/// `signed` when given), every file it lists (regular file, length,
/// sha256), and no other file. Returns the manifest.
pub fn verify_installed(
    dir: &Path,
    model: &str,
    version: u64,
    signed: Option<SignedManifest>,
) -> Result<Manifest, ModelError> {
    let bad = |detail: String| ModelError::BadManifest {
        model: model.to_owned(),
        version,
        detail,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = match nusa_fsutil::read_bounded(&manifest_path, MAX_MANIFEST_BYTES) {
        Ok(bytes) => bytes,
        Err(nusa_fsutil::ReadError::Io { path, source }) => {
            return Err(ModelError::Io { path, source })
        }
        Err(e) => return Err(bad(format!("manifest.json: {}", e.detail()))),
    };
    if let Some(s) = signed {
        let digest = sha256_of(&bytes);
        if bytes.len() as u64 != s.length || digest != Sha256Digest::from_bytes(s.sha256) {
            return Err(bad(
                "the installed manifest.json is not the signed one".to_owned()
            ));
        }
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest.json: {e}")))?;
    if manifest.model != model || manifest.version != version {
        return Err(bad(format!(
            "the manifest describes {} version {}",
            manifest.model, manifest.version
        )));
    }
    let mut listed = BTreeSet::new();
    for file in &manifest.files {
        let path = dir.join(&file.path);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == file.length => {}
            Ok(m) if m.is_file() => {
                return Err(bad(format!(
                    "{} has {} bytes on disk, {} signed",
                    file.path,
                    m.len(),
                    file.length
                )))
            }
            _ => return Err(bad(format!("{} is missing or not a plain file", file.path))),
        }
        let (digest, _) = hash_file(&path).map_err(ModelError::io(&path))?;
        if digest != file.sha256 {
            return Err(bad(format!(
                "{} does not match its signed sha256 (changed on disk)",
                file.path
            )));
        }
        listed.insert(file.path.clone());
    }
    listed.insert(MANIFEST_FILE.to_owned());
    let mut found = Vec::new();
    walk(dir, "", &mut found).map_err(ModelError::io(dir))?;
    // Key wrappings are not in the manifest (they are added by rewraps);
    // one on disk is authenticated by its own AEAD when used, and can
    // only ever yield the data key that opens the signed ciphertext.
    let encrypted = manifest.encryption.is_some();
    if let Some(extra) = found
        .iter()
        .find(|p| !(listed.contains(*p) || encrypted && crate::client::is_key_wrapping(p)))
    {
        return Err(bad(format!(
            "{extra} is in the version folder but not signed"
        )));
    }
    Ok(manifest)
}

fn sha256_of(bytes: &[u8]) -> Sha256Digest {
    let mut h = nusa_ota_core::Sha256Hasher::new();
    h.update(bytes);
    h.finish()
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if entry.file_type()?.is_dir() {
            if out.len() < 10_000 {
                walk(dir, &child, out)?;
            }
        } else {
            out.push(child);
        }
    }
    Ok(())
}
