//! Checkpoints: a signed statement of the head (seq and hash at a time),
//! kept where whoever edits the log cannot reach it, so that records cut
//! from the end, or a re-hashed rewrite of the tail, show.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::lines::Forward;
use crate::{AuditError, AuditLog};

/// The first line of every signed message: a signature over a checkpoint
/// can never be taken for a signature over anything else.
pub const CHECKPOINT_DOMAIN: &str = "nusa-audit-checkpoint/1";
/// A PKCS#8 Ed25519 key is 83-85 bytes; a larger file is not one.
const MAX_KEY_FILE: u64 = 1024;

/// The head of the log at a time, signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    /// The `hash` of record `seq`.
    pub hash: String,
    /// Unix seconds, from the caller.
    pub at: u64,
    /// First 16 hex digits of the SHA-256 of the public key.
    pub key_id: String,
    /// Hex Ed25519 signature over [`checkpoint_message`].
    pub signature: String,
}

/// The Ed25519 key that signs checkpoints. Its bytes stay inside; `Debug`
/// shows the key id only.
pub struct CheckpointKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

/// What `checkpoints.jsonl` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointFile {
    pub checkpoints: Vec<Checkpoint>,
    /// Line numbers that are not checkpoints (a partial line after a power
    /// cut, say).
    pub malformed: Vec<u64>,
}

impl CheckpointKey {
    /// Loads the PKCS#8 key at `path`, or creates one there (0600, its
    /// folder 0700 if missing). A key file that others can read is refused.
    pub fn load_or_create(path: &Path) -> Result<CheckpointKey, AuditError> {
        if let Some(key) = CheckpointKey::read(path)? {
            return Ok(key);
        }
        let key_error = |detail: String| AuditError::Key {
            path: path.to_owned(),
            detail,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| key_error(format!("creating {}: {e}", dir.display())))?;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| key_error("the system random generator failed".into()))?;
        // Written whole under a temporary name, then linked into place: a
        // power cut never leaves an empty key file, and of two processes
        // creating at once one key wins and both use it.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pkcs8.as_ref())?;
            f.sync_all()
        })();
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
        // Best effort: the temporary name is ours alone.
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| key_error(format!("syncing {}: {e}", dir.display())))?;
                CheckpointKey::from_pkcs8(path, pkcs8.as_ref())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => CheckpointKey::load(path),
            Err(e) => Err(key_error(format!("creating: {e}"))),
        }
    }

    /// Loads an existing key (PKCS#8 v1 or v2, DER).
    pub fn load(path: &Path) -> Result<CheckpointKey, AuditError> {
        CheckpointKey::read(path)?.ok_or_else(|| AuditError::Key {
            path: path.to_owned(),
            detail: "no such file".into(),
        })
    }

    /// The key at `path`, or `None` if there is no file.
    fn read(path: &Path) -> Result<Option<CheckpointKey>, AuditError> {
        let key_error = |detail: String| AuditError::Key {
            path: path.to_owned(),
            detail,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(key_error(format!("opening: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| key_error(format!("reading: {e}")))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(key_error(format!(
                "readable by others (mode {:o}); make it 0600",
                mode & 0o777
            )));
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(key_error(format!(
                "over {MAX_KEY_FILE} bytes: not a PKCS#8 Ed25519 key"
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| key_error(format!("reading: {e}")))?;
        CheckpointKey::from_pkcs8(path, &bytes).map(Some)
    }

    fn from_pkcs8(path: &Path, bytes: &[u8]) -> Result<CheckpointKey, AuditError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).map_err(|e| AuditError::Key {
                path: path.to_owned(),
                detail: format!("not a PKCS#8 Ed25519 key: {e}"),
            })?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(CheckpointKey { pair, key_id })
    }

    /// The public key, hex: what `verify_checkpoint` needs, to be kept by
    /// the operator.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs a statement of the head.
    pub fn sign(&self, seq: u64, hash: &str, at: u64) -> Checkpoint {
        let signature = self.pair.sign(checkpoint_message(seq, hash, at).as_bytes());
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            at,
            key_id: self.key_id.clone(),
            signature: hex::encode(signature.as_ref()),
        }
    }
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The message a checkpoint signs.
pub fn checkpoint_message(seq: u64, hash: &str, at: u64) -> String {
    format!("{CHECKPOINT_DOMAIN}\n{seq}\n{hash}\n{at}")
}

/// First 16 hex digits of the SHA-256 of an Ed25519 public key.
pub fn key_id(public_key: &[u8]) -> String {
    let mut id = hex::encode(digest(&SHA256, public_key));
    id.truncate(16);
    id
}

/// Where the box keeps its own list of checkpoints: `checkpoints.jsonl`
/// beside the log. Whoever can edit the log can edit this list too; the
/// copies that count are those published elsewhere.
pub fn checkpoints_path(log: &Path) -> PathBuf {
    log.with_file_name("checkpoints.jsonl")
}

/// Signs the log's head and appends the checkpoint to the box's own list
/// ([`checkpoints_path`]). The caller publishes it elsewhere too (the
/// journal, the operator's copy).
pub fn checkpoint(log: &AuditLog, key: &CheckpointKey, at: u64) -> Result<Checkpoint, AuditError> {
    let (seq, hash) = log
        .head()
        .ok_or_else(|| AuditError::Empty(log.path().to_owned()))?;
    let cp = key.sign(seq, &hash, at);
    let path = checkpoints_path(log.path());
    append_checkpoint(&path, &cp).map_err(AuditError::io("appending to", &path))?;
    Ok(cp)
}

/// Checks a checkpoint's signature with the public key the operator kept.
pub fn verify_checkpoint(cp: &Checkpoint, public_key_hex: &str) -> Result<(), AuditError> {
    let public_key = hex::decode(public_key_hex)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| AuditError::Checkpoint("the public key is not 64 hex digits".into()))?;
    let expected = key_id(&public_key);
    if cp.key_id != expected {
        return Err(AuditError::Checkpoint(format!(
            "it names key {}, not {expected}",
            cp.key_id
        )));
    }
    let signature = hex::decode(&cp.signature)
        .map_err(|_| AuditError::Checkpoint("its signature is not hex".into()))?;
    UnparsedPublicKey::new(&ED25519, &public_key)
        .verify(
            checkpoint_message(cp.seq, &cp.hash, cp.at).as_bytes(),
            &signature,
        )
        .map_err(|_| {
            AuditError::Checkpoint(format!(
                "the signature over seq {} at {} is not key {expected}'s",
                cp.seq, cp.at
            ))
        })
}

/// Reads a list of checkpoints (JSON lines, each bounded by [`crate::MAX_LINE`]),
/// such as [`checkpoints_path`]. Lines that are not checkpoints are named,
/// not fatal.
pub fn read_checkpoints(path: &Path) -> Result<CheckpointFile, AuditError> {
    let file = File::open(path).map_err(AuditError::io("opening", path))?;
    let mut lines = Forward::new(BufReader::new(file));
    let mut out = CheckpointFile::default();
    while let Some(line) = lines.next_line().map_err(AuditError::io("reading", path))? {
        match line.bytes.map(serde_json::from_slice::<Checkpoint>) {
            Some(Ok(cp)) => out.checkpoints.push(cp),
            _ => out.malformed.push(line.number),
        }
    }
    Ok(out)
}

/// Appends one line (0600, fsync'd), after a newline if the file ends in a
/// partial line.
fn append_checkpoint(path: &Path, cp: &Checkpoint) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut buf = Vec::with_capacity(256);
    if len > 0 {
        let mut last = [0u8];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            buf.push(b'\n');
        }
    }
    serde_json::to_writer(&mut buf, cp)?;
    buf.push(b'\n');
    (&file).write_all(&buf)?;
    file.sync_data()
}

#[cfg(test)]
mod tests;
