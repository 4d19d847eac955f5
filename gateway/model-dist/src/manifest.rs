//! The signed manifest of one model version: who published it, when, from
//! what, and its files. Published as the target
//! `models/<model>/<version>/manifest.json` beside the files, so it is
//! signed by the targets role like them, and installed with them.
//!
//! Compatibility: sections added later (an `encryption` section, golden
//! test results) are optional fields with `#[serde(default)]`, so newer
//! code reads older manifests. Unknown fields are ignored, so a section an
//! older device may safely skip keeps `format` at 1; a section an older
//! device must not skip (it would install ciphertext as a model) raises
//! `format`, which older devices refuse.

use nusa_ota_core::Sha256Digest;
use serde::{Deserialize, Serialize};

/// The highest manifest format this code reads. Plain versions are
/// written as format 1 (every device reads them); encrypted ones as
/// [`ENCRYPTED_FORMAT`], which older devices refuse ("update the device
/// first") instead of installing ciphertext as a model.
pub const MANIFEST_FORMAT: u32 = 2;
/// The format of a manifest with an `encryption` section.
pub const ENCRYPTED_FORMAT: u32 = 2;
/// The format of a manifest without one.
pub const PLAIN_FORMAT: u32 = 1;

/// Largest manifest a device reads (checked against the signed length
/// before any byte is fetched).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Longest single-line provenance field.
const MAX_FIELD: usize = 256;
/// Longest `notes`.
const MAX_NOTES: usize = 16 * 1024;

/// The signed description of one published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub model: String,
    pub version: u64,
    /// RFC 3339, UTC, whole seconds (`2025-01-31T12:00:00Z`), set by the
    /// publishing run.
    pub published_at: String,
    pub provenance: Provenance,
    /// Every file of the version except the manifest and the key
    /// wrappings (`keys/`), sorted by path.
    pub files: Vec<ManifestFile>,
    /// Present when the model files are published encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How a version's model files are encrypted. Signed with the manifest;
/// the data key itself is not here but in the version's key wrappings,
/// `keys/<key-id>/key.json`, one signed target per fleet key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The files' cipher: `AES-256-GCM` (the tag ends each file).
    pub algorithm: String,
    /// How the data key is wrapped: `X25519-HKDF-SHA256-AES-256-GCM`.
    pub key_wrapping: String,
    /// Each encrypted file, sorted by path.
    pub files: Vec<EncryptedFile>,
}

/// One encrypted file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedFile {
    /// The published ciphertext, listed in `files` (`model.onnx.enc`).
    pub path: String,
    /// The plaintext's name, also bound into the cipher's associated data
    /// with the model and version (`model.onnx`).
    pub plaintext: String,
    /// The 96-bit nonce, hex.
    pub nonce: String,
}

impl Manifest {
    /// The encrypted file whose plaintext is `plaintext` (`model.onnx`).
    pub fn encrypted(&self, plaintext: &str) -> Option<&EncryptedFile> {
        self.encryption
            .as_ref()?
            .files
            .iter()
            .find(|f| f.plaintext == plaintext)
    }
}

/// Where a model version came from, as its publisher states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The commit (or other revision) of the training code.
    pub source_revision: String,
    /// The training run's identifier (an experiment tracker's run ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_run: Option<String>,
    /// A digest of the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
    /// Who published it (a person or a pipeline).
    pub publisher: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

/// One file of a version, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the version directory, `/`-separated.
    pub path: String,
    pub sha256: Sha256Digest,
    pub length: u64,
}

/// A provenance field that cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provenance {field}: {why}")]
pub struct ProvenanceError {
    pub field: &'static str,
    pub why: String,
}

impl Provenance {
    /// Refuses provenance that says nothing useful or cannot be shown on
    /// one line: a source revision and a publisher are required, and a
    /// training run or a data digest (or both).
    pub fn check(&self) -> Result<(), ProvenanceError> {
        let line = |field: &'static str, value: &str, required: bool| {
            let why = if value.trim().is_empty() {
                required.then(|| "is required".to_owned())
            } else if value.len() > MAX_FIELD {
                Some(format!("is longer than {MAX_FIELD} bytes"))
            } else if value.chars().any(char::is_control) {
                Some("contains a control character".to_owned())
            } else {
                None
            };
            why.map_or(Ok(()), |why| Err(ProvenanceError { field, why }))
        };
        line("source_revision", &self.source_revision, true)?;
        line("publisher", &self.publisher, true)?;
        let run = self.training_run.as_deref().unwrap_or("");
        let data = self.data_digest.as_deref().unwrap_or("");
        line("training_run", run, false)?;
        line("data_digest", data, false)?;
        if run.trim().is_empty() && data.trim().is_empty() {
            return Err(ProvenanceError {
                field: "training_run/data_digest",
                why: "give a training run, a data digest, or both".to_owned(),
            });
        }
        if self.notes.len() > MAX_NOTES {
            return Err(ProvenanceError {
                field: "notes",
                why: format!("is longer than {MAX_NOTES} bytes"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            source_revision: "abc123".into(),
            training_run: Some("run-7".into()),
            data_digest: None,
            publisher: "ci@example".into(),
            notes: String::new(),
        }
    }

    #[test]
    fn provenance_checks() {
        assert!(provenance().check().is_ok());
        let mut p = provenance();
        p.training_run = None;
        assert!(p.check().is_err());
        p.data_digest = Some("sha256:00".into());
        assert!(p.check().is_ok());
        p.publisher = " ".into();
        assert!(p.check().is_err());
        let mut p = provenance();
        p.source_revision = "a\nb".into();
        assert!(p.check().is_err());
    }

    /// A manifest without the optional fields (as an older publisher, or a
    /// future one, writes it) still reads, and extra sections are ignored.
    #[test]
    fn older_and_newer_manifests_read() {
        let json = r#"{"format":1,"model":"m","version":2,
            "published_at":"2025-01-31T12:00:00Z",
            "provenance":{"source_revision":"r","publisher":"p"},
            "files":[],"golden_results":{"scheme":"future"}}"#;
        let m: Manifest = serde_json::from_str(json).expect("reads");
        assert_eq!(m.provenance.training_run, None);
        assert_eq!(m.provenance.notes, "");
        assert_eq!(m.encryption, None);
    }

    #[test]
    fn an_encryption_section_round_trips_and_is_omitted_when_absent() {
        let json = r#"{"format":2,"model":"m","version":2,
            "published_at":"2025-01-31T12:00:00Z",
            "provenance":{"source_revision":"r","publisher":"p"},
            "files":[],"encryption":{"algorithm":"AES-256-GCM",
            "key_wrapping":"X25519-HKDF-SHA256-AES-256-GCM",
            "files":[{"path":"model.onnx.enc","plaintext":"model.onnx","nonce":"00"}]}}"#;
        let mut m: Manifest = serde_json::from_str(json).expect("reads");
        assert_eq!(
            m.encrypted("model.onnx").map(|f| f.path.as_str()),
            Some("model.onnx.enc")
        );
        assert!(m.encrypted("model.plan").is_none());
        m.encryption = None;
        let out = serde_json::to_string(&m).expect("json");
        assert!(!out.contains("encryption"), "{out}");
    }
}
