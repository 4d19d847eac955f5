//! The registry's [`Decryptor`] on the appliance: the fleet's private model
//! key, read once from its own file (`models.decryption_key`, outside the
//! model store, owner-only permissions; there is no TPM sealing), opens an
//! installed encrypted version into memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use nusa_model_dist::encryption::{
    decrypt_file, unwrap_key, CryptoError, FleetPrivateKey, WrappedKey, KEYS_DIR,
};
use nusa_model_dist::{Manifest, MANIFEST_FILE, MAX_MANIFEST_BYTES};
use nusa_registry::Decryptor;
use zeroize::Zeroizing;

/// Decrypts with the key in one file.
pub struct KeyFileDecryptor {
    key: FleetPrivateKey,
    path: PathBuf,
}

impl std::fmt::Debug for KeyFileDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFileDecryptor")
            .field("path", &self.path)
            .field("key_id", &self.key.key_id())
            .finish()
    }
}

impl KeyFileDecryptor {
    /// Reads the private key at `path`, refusing a file its group or
    /// others may access, and one inside `store` (the model store: the key
    /// must not travel with the weights it opens).
    pub fn open(path: &Path, store: &Path) -> Result<KeyFileDecryptor, CryptoError> {
        let inside = |p: &Path| {
            let (Ok(a), Ok(b)) = (p.canonicalize(), store.canonicalize()) else {
                return false;
            };
            a.starts_with(b)
        };
        if inside(path) {
            return Err(CryptoError::BadKeyFile {
                path: path.to_owned(),
                why: format!(
                    "is inside the model store {}: keep the decryption key apart from the models",
                    store.display()
                ),
            });
        }
        let key = FleetPrivateKey::read(path)?;
        Ok(KeyFileDecryptor {
            key,
            path: path.to_owned(),
        })
    }

    /// The id of this box's key (first 16 hex digits of the SHA-256 of its
    /// public key), as wrappings name it.
    pub fn key_id(&self) -> String {
        self.key.key_id()
    }

    fn open_version(
        &self,
        model: &str,
        version: u64,
        dir: &Path,
        plaintext: &str,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let manifest = read_manifest(dir)?;
        if manifest.model != model || manifest.version != version {
            return Err(format!(
                "the manifest describes {} version {}",
                manifest.model, manifest.version
            ));
        }
        let file = manifest
            .encrypted(plaintext)
            .ok_or_else(|| format!("the signed manifest lists no encrypted {plaintext}"))?;
        let length = manifest
            .files
            .iter()
            .find(|f| f.path == file.path)
            .map(|f| f.length)
            .ok_or_else(|| format!("{} is not in the signed manifest", file.path))?;
        let key_id = self.key.key_id();
        let wrapping = dir.join(WrappedKey::file_path(&key_id));
        if !wrapping.is_file() {
            return Err(format!(
                "no data key is wrapped for this box's key {key_id} (wrapped for: {}): rewrap \
                 the version for this key (nusactl models rewrap)",
                wrapped_for(dir)
            ));
        }
        let wrapped = WrappedKey::read(&wrapping).map_err(|e| e.to_string())?;
        let data_key =
            unwrap_key(&wrapped, &self.key, model, version).map_err(|e| e.to_string())?;
        // The ciphertext, read once into the buffer that becomes the
        // plaintext: at most its signed length (+1 to see a longer file).
        let path = dir.join(&file.path);
        let mut data = Zeroizing::new(Vec::with_capacity(usize::try_from(length).unwrap_or(0)));
        std::fs::File::open(&path)
            .and_then(|f| f.take(length + 1).read_to_end(&mut data))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if data.len() as u64 != length {
            return Err(format!(
                "{} is {} bytes, {length} signed",
                file.path,
                data.len()
            ));
        }
        decrypt_file(&data_key, model, version, plaintext, &file.nonce, &mut data)
            .map_err(|e| e.to_string())?;
        Ok(data)
    }
}

impl Decryptor for KeyFileDecryptor {
    fn decrypt(
        &self,
        model: &str,
        version: u64,
        dir: &Path,
        plaintext: &str,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        self.open_version(model, version, dir, plaintext)
            .map_err(|why| format!("cannot decrypt model '{model}' version {version}: {why}"))
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = nusa_fsutil::read_bounded(&path, MAX_MANIFEST_BYTES).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The key ids a version folder holds wrappings for.
fn wrapped_for(dir: &Path) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(dir.join(KEYS_DIR))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .take(64)
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}
