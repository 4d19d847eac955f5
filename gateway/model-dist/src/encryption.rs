//! Encrypted model versions: the fleet's model key, wrapping a version's
//! data key for it, and the AES-256-GCM of the model files.
//!
//! - **Fleet model key**: an X25519 key pair (`nusactl models keygen`).
//!   Publishers hold only the public key; the devices hold the private key
//!   in a file of its own (`models.decryption_key`, mode 0600 or tighter).
//!   Its key id is the first 16 hex digits of the SHA-256 of the public key.
//! - **Data key**: 32 random bytes per version. Each model file is sealed
//!   with AES-256-GCM under it (random 96-bit nonce per file, named in the
//!   signed manifest); the associated data binds the model, version and
//!   plaintext path, so a ciphertext cannot be moved to another version.
//! - **Wrapping** (ECIES-style): an ephemeral X25519 key agrees with the
//!   fleet's public key; HKDF-SHA256 (salt: ephemeral public key || fleet
//!   public key) gives an AES-256-GCM key that seals the data key, with the
//!   model, version and key id as associated data. One wrapping per fleet
//!   key, each its own signed target (`keys/<key-id>/key.json`): rotation
//!   adds a wrapping, it never re-encrypts the weights.
//!
//! ring does X25519 with ephemeral keys only (it cannot load a private key
//! from bytes), so the publisher wraps with `ring::agreement` and the device
//! unwraps with `x25519-dalek`'s `StaticSecret`; HKDF, AES-GCM and the
//! random numbers are ring's. Nothing here puts key bytes into an error
//! message or a log.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The model files' cipher, as the manifest names it.
pub const FILE_ALGORITHM: &str = "AES-256-GCM";
/// The data key's wrapping, as manifests and wrapped keys name it.
pub const WRAP_ALGORITHM: &str = "X25519-HKDF-SHA256-AES-256-GCM";
/// Appended to a model file's name when it is published encrypted.
pub const ENCRYPTED_SUFFIX: &str = ".enc";
/// The folder of a version's key wrappings: `keys/<key-id>/key.json`.
pub const KEYS_DIR: &str = "keys";
/// The file name of one wrapping in its key id's folder.
pub const WRAPPED_KEY_FILE: &str = "key.json";
/// Largest key file or wrapped key read (they are about 300 bytes).
pub const MAX_KEY_BYTES: u64 = 4096;
/// `keygen`'s file names.
pub const PRIVATE_KEY_FILE: &str = "fleet-model-key";
pub const PUBLIC_KEY_FILE: &str = "fleet-model-key.pub";

const PRIVATE_PREFIX: &str = "nusa-model-key-private-x25519:";
const PUBLIC_PREFIX: &str = "nusa-model-key-public-x25519:";
const HKDF_INFO: &[u8] = b"nusa model data key wrap v1";
const TAG_LEN: usize = 16;

/// Why a key could not be read, or a version not be decrypted. The texts
/// name files, models, versions and key ids, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("{path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}", path = path.display())]
    BadKeyFile { path: PathBuf, why: String },
    #[error(
        "{path} is readable by its group or others (mode {mode:o}): the model decryption key \
         must be readable by its owner only (chmod 600)", path = path.display()
    )]
    LooseKeyFile { path: PathBuf, mode: u32 },
    #[error("{0} exists: keygen never overwrites a key")]
    Exists(PathBuf),
    #[error("wrapped key: {0}")]
    BadWrappedKey(String),
    #[error(
        "this device's key {have} cannot unwrap a key wrapped for {wrapped_for}: rewrap the \
         version for this device's key (nusactl models rewrap)"
    )]
    WrongKey { have: String, wrapped_for: String },
    #[error(
        "the data key wrapped for key {key_id} does not authenticate (tampered, or wrapped for \
         another model or version)"
    )]
    UnwrapFailed { key_id: String },
    #[error(
        "{path} does not authenticate under the version's data key (tampered ciphertext or tag)"
    )]
    DecryptFailed { path: String },
    #[error("the system's random number generator failed")]
    Random,
    #[error("{0}")]
    Crypto(&'static str),
}

/// A fleet's public model key: what publishers encrypt for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FleetPublicKey([u8; 32]);

/// A fleet's private model key: what devices decrypt with. Zeroed on drop;
/// its `Debug` shows the key id only.
pub struct FleetPrivateKey {
    secret: x25519_dalek::StaticSecret,
    public: FleetPublicKey,
}

impl FleetPublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> FleetPublicKey {
        FleetPublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 16 hex digits of the SHA-256 of the public key.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        hex(&digest.as_ref()[..8])
    }

    /// Reads a public key file (`fleet-model-key.pub`).
    pub fn read(path: &Path) -> Result<FleetPublicKey, CryptoError> {
        let text = read_bounded(path)?;
        let bad = |why: &str| CryptoError::BadKeyFile {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        if text.trim().starts_with(PRIVATE_PREFIX) {
            return Err(bad(
                "this is a private key: give the fleet's public key (fleet-model-key.pub)",
            ));
        }
        let hex_key = text
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or_else(|| bad("not a nusa model public key (nusactl models keygen)"))?;
        let bytes = unhex32(hex_key).ok_or_else(|| bad("the key is not 64 hex digits"))?;
        Ok(FleetPublicKey(bytes))
    }
}

impl fmt::Debug for FleetPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetPublicKey({})", self.key_id())
    }
}

impl FleetPrivateKey {
    /// A new random key.
    pub fn generate() -> Result<FleetPrivateKey, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| CryptoError::Random)?;
        Ok(FleetPrivateKey::from_bytes(*bytes))
    }

    fn from_bytes(bytes: [u8; 32]) -> FleetPrivateKey {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = FleetPublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        FleetPrivateKey { secret, public }
    }

    pub fn public(&self) -> FleetPublicKey {
        self.public
    }

    pub fn key_id(&self) -> String {
        self.public.key_id()
    }

    /// Reads a private key file, refusing one its group or others can
    /// read or write (or that is not a plain file). Reads at most
    /// [`MAX_KEY_BYTES`].
    pub fn read(path: &Path) -> Result<FleetPrivateKey, CryptoError> {
        check_key_permissions(path)?;
        let text = Zeroizing::new(read_bounded(path)?);
        let bad = |why: &str| CryptoError::BadKeyFile {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        let hex_key = text
            .trim()
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or_else(|| bad("not a nusa model private key (nusactl models keygen)"))?;
        let bytes =
            Zeroizing::new(unhex32(hex_key).ok_or_else(|| bad("the key is not 64 hex digits"))?);
        Ok(FleetPrivateKey::from_bytes(*bytes))
    }

    /// The file's text: a prefix and 64 hex digits.
    fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PRIVATE_PREFIX}{}\n", hex(self.secret.as_bytes())))
    }
}

impl fmt::Debug for FleetPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetPrivateKey({})", self.key_id())
    }
}

/// Refuses a key file that is not a plain file, or whose mode gives its
/// group or others any access.
pub fn check_key_permissions(path: &Path) -> Result<(), CryptoError> {
    let meta = std::fs::metadata(path).map_err(|source| CryptoError::Io {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(CryptoError::BadKeyFile {
            path: path.to_owned(),
            why: "is not a plain file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::LooseKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// What `nusactl models keygen` wrote.
#[derive(Debug, Clone)]
pub struct KeygenReport {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub key_id: String,
}

/// Writes a new fleet key pair into `dir` (created 0700 if missing): the
/// private key 0600, the public key 0644. Never overwrites either file.
pub fn keygen(dir: &Path) -> Result<KeygenReport, CryptoError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CryptoError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let private_key = dir.join(PRIVATE_KEY_FILE);
    let public_key = dir.join(PUBLIC_KEY_FILE);
    for p in [&private_key, &public_key] {
        if p.exists() {
            return Err(CryptoError::Exists(p.clone()));
        }
    }
    let key = FleetPrivateKey::generate()?;
    let write = |path: &Path, mode: u32, text: &[u8]| -> Result<(), CryptoError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(io(path))?;
        f.write_all(text).map_err(io(path))?;
        f.sync_all().map_err(io(path))
    };
    write(&private_key, 0o600, key.to_text().as_bytes())?;
    let public_text = format!("{PUBLIC_PREFIX}{}\n", hex(key.public().as_bytes()));
    write(&public_key, 0o644, public_text.as_bytes())?;
    Ok(KeygenReport {
        private_key,
        public_key,
        key_id: key.key_id(),
    })
}

/// A version's data key.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// 32 random bytes.
    pub fn generate() -> Result<DataKey, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| CryptoError::Random)?;
        Ok(DataKey(key))
    }

    fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        UnboundKey::new(&AES_256_GCM, self.0.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::Crypto("AES-256-GCM key"))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The associated data of a model file: model, version and plaintext path.
fn file_aad(model: &str, version: u64, path: &str) -> Vec<u8> {
    format!("nusa-model-file/v1\n{model}\n{version}\n{path}").into_bytes()
}

/// The associated data of a wrapped data key: model, version and key id.
fn wrap_aad(model: &str, version: u64, key_id: &str) -> Vec<u8> {
    format!("nusa-model-key/v1\n{model}\n{version}\n{key_id}").into_bytes()
}

/// Seals `plaintext` (the file `path`, e.g. `model.onnx`, of `model`
/// `version`) in place: the ciphertext followed by the 16-byte tag.
/// Returns the random nonce as hex, for the manifest.
pub fn encrypt_file(
    key: &DataKey,
    model: &str,
    version: u64,
    path: &str,
    data: &mut Vec<u8>,
) -> Result<String, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CryptoError::Random)?;
    key.aead()?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(file_aad(model, version, path)),
            data,
        )
        .map_err(|_| CryptoError::Crypto("AES-256-GCM seal"))?;
    Ok(hex(&nonce))
}

/// Opens what [`encrypt_file`] sealed, in place: `data` becomes the
/// plaintext. A wrong key, nonce, model, version, path, or any changed
/// byte of the ciphertext or tag is `DecryptFailed`.
pub fn decrypt_file(
    key: &DataKey,
    model: &str,
    version: u64,
    path: &str,
    nonce_hex: &str,
    data: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let failed = || CryptoError::DecryptFailed {
        path: path.to_owned(),
    };
    let nonce = unhex(nonce_hex)
        .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
        .ok_or_else(failed)?;
    let len = key
        .aead()?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(file_aad(model, version, path)),
            data,
        )
        .map_err(|_| failed())?
        .len();
    data.truncate(len);
    Ok(())
}

/// A version's data key wrapped for one fleet key: the target
/// `models/<model>/<version>/keys/<key-id>/key.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub format: u32,
    /// [`WRAP_ALGORITHM`].
    pub algorithm: String,
    pub model: String,
    pub version: u64,
    /// The fleet key it is wrapped for.
    pub key_id: String,
    /// The ephemeral X25519 public key, hex.
    pub ephemeral_public_key: String,
    /// AES-256-GCM nonce, hex.
    pub nonce: String,
    /// The sealed data key and its tag, hex.
    pub wrapped_key: String,
}

impl WrappedKey {
    /// The path of this wrapping in its version folder.
    pub fn file_path(key_id: &str) -> String {
        format!("{KEYS_DIR}/{key_id}/{WRAPPED_KEY_FILE}")
    }

    /// Reads a wrapped key file, at most [`MAX_KEY_BYTES`].
    pub fn read(path: &Path) -> Result<WrappedKey, CryptoError> {
        let text = read_bounded(path)?;
        serde_json::from_str(&text)
            .map_err(|e| CryptoError::BadWrappedKey(format!("{}: {e}", path.display())))
    }
}

/// A key id as `keygen` makes them: 16 lowercase hex digits.
pub fn is_key_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Wraps `data_key` for `fleet` (ephemeral-static X25519, HKDF-SHA256,
/// AES-256-GCM; model, version and key id as associated data).
pub fn wrap_key(
    data_key: &DataKey,
    fleet: &FleetPublicKey,
    model: &str,
    version: u64,
) -> Result<WrappedKey, CryptoError> {
    let rng = SystemRandom::new();
    let ephemeral =
        EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| CryptoError::Random)?;
    let ephemeral_public = ephemeral
        .compute_public_key()
        .map_err(|_| CryptoError::Crypto("X25519 public key"))?;
    let eph: [u8; 32] = ephemeral_public
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::Crypto("X25519 public key"))?;
    let kek = agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&X25519, fleet.as_bytes()),
        |shared| kek(shared, &eph, fleet.as_bytes()),
    )
    .map_err(|_| CryptoError::Crypto("X25519 agreement (a degenerate public key?)"))??;
    let key_id = fleet.key_id();
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut sealed = data_key.0.to_vec();
    kek.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(wrap_aad(model, version, &key_id)),
        &mut sealed,
    )
    .map_err(|_| CryptoError::Crypto("AES-256-GCM seal"))?;
    Ok(WrappedKey {
        format: 1,
        algorithm: WRAP_ALGORITHM.to_owned(),
        model: model.to_owned(),
        version,
        key_id,
        ephemeral_public_key: hex(&eph),
        nonce: hex(&nonce),
        wrapped_key: hex(&sealed),
    })
}

/// Unwraps the data key of `model` `version` with this device's key. The
/// wrapping must be for this key id and authenticate with `model` and
/// `version` as associated data (whatever the wrapping's own fields say).
pub fn unwrap_key(
    wrapped: &WrappedKey,
    key: &FleetPrivateKey,
    model: &str,
    version: u64,
) -> Result<DataKey, CryptoError> {
    let have = key.key_id();
    if wrapped.key_id != have {
        return Err(CryptoError::WrongKey {
            have,
            wrapped_for: wrapped.key_id.clone(),
        });
    }
    if wrapped.format != 1 || wrapped.algorithm != WRAP_ALGORITHM {
        return Err(CryptoError::BadWrappedKey(format!(
            "format {} algorithm {:?} (this device reads format 1, {WRAP_ALGORITHM})",
            wrapped.format, wrapped.algorithm
        )));
    }
    let failed = || CryptoError::UnwrapFailed {
        key_id: have.clone(),
    };
    let eph = unhex32(&wrapped.ephemeral_public_key).ok_or_else(failed)?;
    let nonce = unhex(&wrapped.nonce)
        .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
        .ok_or_else(failed)?;
    let mut sealed = Zeroizing::new(unhex(&wrapped.wrapped_key).ok_or_else(failed)?);
    if sealed.len() != 32 + TAG_LEN {
        return Err(failed());
    }
    let shared = key
        .secret
        .diffie_hellman(&x25519_dalek::PublicKey::from(eph));
    if !shared.was_contributory() {
        return Err(failed());
    }
    let kek = kek(shared.as_bytes(), &eph, key.public().as_bytes())?;
    let plain = kek
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(wrap_aad(model, version, &have)),
            &mut sealed,
        )
        .map_err(|_| failed())?;
    let mut data_key = Zeroizing::new([0u8; 32]);
    data_key.copy_from_slice(plain);
    Ok(DataKey(data_key))
}

/// The key-encryption key: HKDF-SHA256 over the shared secret, salted with
/// both public keys.
fn kek(
    shared: &[u8],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> Result<LessSafeKey, CryptoError> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let prk = Salt::new(HKDF_SHA256, &salt).extract(shared);
    let info = [HKDF_INFO];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| CryptoError::Crypto("HKDF expand"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Reads a small text file, refusing one over [`MAX_KEY_BYTES`].
fn read_bounded(path: &Path) -> Result<String, CryptoError> {
    // nusa-fsutil wipes what it read of a file found too large.
    let bytes = nusa_fsutil::read_bounded(path, MAX_KEY_BYTES).map_err(|e| match e {
        nusa_fsutil::ReadError::Io { path, source } => CryptoError::Io { path, source },
        nusa_fsutil::ReadError::TooLarge { path, .. } => CryptoError::BadKeyFile {
            path,
            why: format!("is larger than {MAX_KEY_BYTES} bytes"),
        },
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let mut b = e.into_bytes();
        b.fill(0);
        CryptoError::BadKeyFile {
            path: path.to_owned(),
            why: "is not text".into(),
        }
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let v = Zeroizing::new(unhex(s)?);
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_setup() -> (FleetPrivateKey, DataKey, WrappedKey) {
        let device = FleetPrivateKey::generate().expect("key");
        let data = DataKey::generate().expect("data key");
        let wrapped = wrap_key(&data, &device.public(), "resnet", 3).expect("wraps");
        (device, data, wrapped)
    }

    #[test]
    fn wraps_and_unwraps_across_ring_and_dalek() {
        let (device, data, wrapped) = roundtrip_setup();
        assert_eq!(wrapped.key_id, device.key_id());
        assert!(is_key_id(&wrapped.key_id));
        let back = unwrap_key(&wrapped, &device, "resnet", 3).expect("unwraps");
        assert_eq!(*back.0, *data.0);
        // Survives JSON.
        let json = serde_json::to_string(&wrapped).expect("json");
        let read: WrappedKey = serde_json::from_str(&json).expect("reads");
        assert!(unwrap_key(&read, &device, "resnet", 3).is_ok());
    }

    #[test]
    fn another_key_cannot_unwrap() {
        let (_, _, wrapped) = roundtrip_setup();
        let other = FleetPrivateKey::generate().expect("key");
        let e = unwrap_key(&wrapped, &other, "resnet", 3).expect_err("refused");
        assert!(matches!(e, CryptoError::WrongKey { .. }), "{e}");
        // Even when the wrapping claims the other key's id.
        let mut forged = wrapped.clone();
        forged.key_id = other.key_id();
        let e = unwrap_key(&forged, &other, "resnet", 3).expect_err("refused");
        assert!(matches!(e, CryptoError::UnwrapFailed { .. }), "{e}");
    }

    #[test]
    fn a_wrapping_is_bound_to_its_model_and_version() {
        let (device, _, wrapped) = roundtrip_setup();
        for (m, v) in [("resnet", 4), ("other", 3)] {
            let e = unwrap_key(&wrapped, &device, m, v).expect_err("refused");
            assert!(
                matches!(e, CryptoError::UnwrapFailed { .. }),
                "{m} {v}: {e}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_of_a_wrapping_is_refused() {
        let (device, _, wrapped) = roundtrip_setup();
        for field in 0..3 {
            let mut w = wrapped.clone();
            let s = match field {
                0 => &mut w.wrapped_key,
                1 => &mut w.nonce,
                _ => &mut w.ephemeral_public_key,
            };
            let mut b = unhex(s).expect("hex");
            b[0] ^= 1;
            *s = hex(&b);
            assert!(
                unwrap_key(&w, &device, "resnet", 3).is_err(),
                "field {field} flipped"
            );
        }
    }

    #[test]
    fn files_round_trip_and_tampering_is_refused() {
        let key = DataKey::generate().expect("key");
        let plain = b"weights weights weights".to_vec();
        let mut data = plain.clone();
        let nonce = encrypt_file(&key, "m", 1, "model.onnx", &mut data).expect("seals");
        assert_eq!(data.len(), plain.len() + TAG_LEN);
        assert!(!data.windows(7).any(|w| w == b"weights"));
        let mut ok = data.clone();
        decrypt_file(&key, "m", 1, "model.onnx", &nonce, &mut ok).expect("opens");
        assert_eq!(ok, plain);

        let refused = |mut d: Vec<u8>, m: &str, v: u64, p: &str, k: &DataKey| {
            decrypt_file(k, m, v, p, &nonce, &mut d).is_err()
        };
        let mut flipped = data.clone();
        flipped[0] ^= 0x80;
        assert!(
            refused(flipped, "m", 1, "model.onnx", &key),
            "ciphertext byte"
        );
        let mut tag = data.clone();
        let last = tag.len() - 1;
        tag[last] ^= 1;
        assert!(refused(tag, "m", 1, "model.onnx", &key), "tag byte");
        let mut short = data.clone();
        short.truncate(plain.len());
        assert!(refused(short, "m", 1, "model.onnx", &key), "tag cut off");
        assert!(refused(data.clone(), "m", 2, "model.onnx", &key), "version");
        assert!(refused(data.clone(), "n", 1, "model.onnx", &key), "model");
        assert!(refused(data.clone(), "m", 1, "model.plan", &key), "path");
        let other = DataKey::generate().expect("key");
        assert!(refused(data, "m", 1, "model.onnx", &other), "other key");
    }

    #[test]
    fn keygen_writes_tight_files_and_reads_them_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("fleet");
        let report = keygen(&out).expect("keygen");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&report.private_key), 0o600);
        let private = FleetPrivateKey::read(&report.private_key).expect("private");
        let public = FleetPublicKey::read(&report.public_key).expect("public");
        assert_eq!(private.public(), public);
        assert_eq!(public.key_id(), report.key_id);
        assert!(!format!("{private:?}").contains(&hex(private.secret.as_bytes())));
        assert!(matches!(keygen(&out), Err(CryptoError::Exists(_))));

        // The private key where a public key is expected, and a loose mode.
        let e = FleetPublicKey::read(&report.private_key).expect_err("refused");
        assert!(e.to_string().contains("private key"), "{e}");
        std::fs::set_permissions(&report.private_key, std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        let e = FleetPrivateKey::read(&report.private_key).expect_err("refused");
        assert!(matches!(e, CryptoError::LooseKeyFile { .. }), "{e}");
        assert!(!e.to_string().contains(PRIVATE_PREFIX));
    }
}
