//! Signed mode's admission: a version loads only when its files verify.

use std::collections::BTreeMap;
use std::path::Path;

use nusa_model_dist::{verify_installed, SignedManifest};
use nusa_registry::Admission;
use parking_lot::RwLock;

/// Checks each version folder against the manifest installed with it, and
/// that manifest against the signed metadata of the last successful poll.
/// Before any poll succeeded (a box booting offline), the installed
/// manifest, verified when it was pulled, is the reference; once metadata
/// is known, a version it does not sign is refused.
#[derive(Default)]
pub struct SignedAdmission {
    signed: RwLock<Option<BTreeMap<(String, u64), SignedManifest>>>,
}

impl SignedAdmission {
    pub fn new() -> SignedAdmission {
        SignedAdmission::default()
    }

    /// The verified metadata's manifests, after a poll.
    pub fn update(&self, signed: BTreeMap<(String, u64), SignedManifest>) {
        *self.signed.write() = Some(signed);
    }
}

impl Admission for SignedAdmission {
    fn mode(&self) -> &'static str {
        "signed"
    }

    fn admit(
        &self,
        model: &str,
        version: u64,
        dir: &Path,
    ) -> Result<Option<serde_json::Value>, String> {
        let signed = self
            .signed
            .read()
            .as_ref()
            .map(|m| m.get(&(model.to_string(), version)).copied());
        let reference = match signed {
            Some(None) => {
                return Err(format!(
                "version {version} of '{model}' is not signed in the model repository's metadata"
            ))
            }
            Some(Some(s)) => Some(s),
            None => {
                tracing::info!(%model, version, "no verified metadata yet (offline?): checking the files against the manifest installed with them");
                None
            }
        };
        let manifest =
            verify_installed(dir, model, version, reference).map_err(|e| e.to_string())?;
        let mut shown = serde_json::to_value(&manifest.provenance).unwrap_or_default();
        if let Some(o) = shown.as_object_mut() {
            o.insert("published_at".into(), manifest.published_at.into());
        }
        Ok(Some(shown))
    }
}
