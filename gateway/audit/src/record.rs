//! One record: what a line of the log holds, its canonical form and its two
//! hashes (`hash` over its own content, and the line hash the next record
//! carries as `prev`).

use std::fmt;

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AuditError;

/// The `prev` of the first record: there is no line before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest action name (`model.rollback`, `update.mark_good`, ...).
const MAX_ACTION: usize = 64;

/// Detail keys that name a secret. The caller must keep secrets out of
/// `detail`; this only catches the obvious slip (a whole request body
/// passed through), it is no filter for secret values under other names.
const SECRET_KEY_PARTS: [&str; 4] = ["secret", "password", "passphrase", "private_key"];
const SECRET_KEYS: [&str; 5] = ["token", "authorization", "bearer", "pkcs8", "api_key_value"];

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// `uid 0`, a key's name (never the key), a certificate's subject, or
    /// `nusad`.
    pub id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A local user over the admin socket (peer credentials).
    Uid,
    /// An API key, by name.
    Key,
    /// A client certificate, by subject.
    Cert,
    /// The admin listener's bearer token (`server.admin_token_file`).
    Token,
    /// nusad itself (a scheduled rollout, an automatic rollback).
    System,
}

/// What happened, as the caller reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub actor: Actor,
    /// Dotted, lowercase: `model.load`, `key.create`, `update.apply`.
    pub action: String,
    /// What it was done to: `resnet/3`, `key mobile-app`.
    pub target: String,
    pub outcome: Outcome,
    /// Free and small; the caller must not put secrets in it.
    pub detail: Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error(String),
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1-based, consecutive.
    pub seq: u64,
    /// Unix seconds, from the caller.
    pub at: u64,
    #[serde(flatten)]
    pub entry: Entry,
    /// Hex SHA-256 of the previous record's line (its bytes without the
    /// newline); [`GENESIS`] for seq 1.
    pub prev: String,
    /// Hex SHA-256 of the record's canonical JSON without `hash`.
    pub hash: String,
}

/// A line read back: the record and whether its content still hashes to
/// its `hash`.
pub(crate) struct Parsed {
    pub record: Record,
    pub content_ok: bool,
}

impl Actor {
    pub fn uid(uid: u32) -> Actor {
        Actor {
            kind: ActorKind::Uid,
            id: format!("uid {uid}"),
        }
    }

    pub fn key(name: &str) -> Actor {
        Actor {
            kind: ActorKind::Key,
            id: name.to_owned(),
        }
    }

    pub fn cert(subject: &str) -> Actor {
        Actor {
            kind: ActorKind::Cert,
            id: subject.to_owned(),
        }
    }

    /// A caller of the admin listener, who showed its token.
    pub fn token() -> Actor {
        Actor {
            kind: ActorKind::Token,
            id: "admin token".to_owned(),
        }
    }

    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            id: "nusad".to_owned(),
        }
    }

    /// Whoever sent nusad a signal (`SIGHUP`): the kernel does not say who,
    /// so the record names the signal.
    pub fn signal(name: &str) -> Actor {
        Actor {
            kind: ActorKind::System,
            id: format!("signal {name}"),
        }
    }
}

impl Entry {
    /// A successful action with no detail; see [`Entry::outcome`] and
    /// [`Entry::detail`].
    pub fn new(actor: Actor, action: &str, target: &str) -> Entry {
        Entry {
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: Outcome::Ok,
            detail: Value::Null,
        }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Entry {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: Value) -> Entry {
        self.detail = detail;
        self
    }

    /// Refuses what must not be written: an action that is not a dotted
    /// lowercase name, and detail keys that name a secret.
    pub(crate) fn check(&self) -> Result<(), AuditError> {
        let a = &self.action;
        let well_formed = !a.is_empty()
            && a.len() <= MAX_ACTION
            && a.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && !a.starts_with('.')
            && !a.ends_with('.');
        if !well_formed {
            return Err(AuditError::Invalid(format!(
                "action {a:?} is not a dotted lowercase name like model.load"
            )));
        }
        if let Some(key) = secret_key(&self.detail) {
            return Err(AuditError::Invalid(format!(
                "detail key {key:?} names a secret; secrets never go into the audit log"
            )));
        }
        Ok(())
    }
}

impl Record {
    /// Builds the record that follows `prev` and fills in its `hash`.
    pub(crate) fn seal(
        seq: u64,
        at: u64,
        entry: Entry,
        prev: String,
    ) -> Result<Record, AuditError> {
        let mut record = Record {
            seq,
            at,
            entry,
            prev,
            hash: String::new(),
        };
        let value = serde_json::to_value(&record).map_err(encode)?;
        record.hash = content_hash(value).map_err(encode)?;
        Ok(record)
    }

    /// The line as written, without its newline.
    pub(crate) fn to_line(&self) -> Result<Vec<u8>, AuditError> {
        serde_json::to_vec(self).map_err(encode)
    }

    /// Reads a line. Everything that reads the log (open, list, verify)
    /// goes through here, so they agree on what is a record.
    pub(crate) fn parse(line: &[u8]) -> Result<Parsed, serde_json::Error> {
        let value: Value = serde_json::from_slice(line)?;
        let record = Record::deserialize(&value)?;
        if record.seq == 0 {
            return Err(serde::de::Error::custom("seq 0 (seqs start at 1)"));
        }
        let content_ok = content_hash(value)? == record.hash;
        Ok(Parsed { record, content_ok })
    }
}

impl fmt::Display for Record {
    /// One line for people: `seq 5 at 1005: key mobile-app: model.load resnet/3: ok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.entry;
        write!(
            f,
            "seq {} at {}: {}: {} {}: {}",
            self.seq, self.at, e.actor, e.action, e.target, e.outcome
        )?;
        if !e.detail.is_null() {
            write!(f, " {}", e.detail)?;
        }
        Ok(())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            // "uid 0" already says what it is.
            ActorKind::Uid => f.write_str(&self.id),
            ActorKind::Key => write!(f, "key {}", self.id),
            ActorKind::Cert => write!(f, "cert {}", self.id),
            ActorKind::System => write!(f, "system {}", self.id),
            ActorKind::Token => f.write_str(&self.id),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Hex SHA-256 of a record's line, without its newline: the next record's
/// `prev`.
pub(crate) fn line_hash(line: &[u8]) -> String {
    hex::encode(digest(&SHA256, line))
}

/// Hex SHA-256 of the canonical JSON of a record (a JSON object) without
/// its `hash` member. Hashing the parsed value, every member included,
/// means a member added by an editor counts as an edit too.
pub(crate) fn content_hash(mut record: Value) -> Result<String, serde_json::Error> {
    if let Value::Object(map) = &mut record {
        map.remove("hash");
    }
    let mut out = Vec::with_capacity(512);
    canonical(&record, &mut out)?;
    Ok(hex::encode(digest(&SHA256, &out)))
}

/// The canonical JSON of a value: no whitespace, object members sorted by
/// key (bytewise), strings and numbers as serde_json writes them. Written
/// out here rather than relying on `Value`'s map order, which another
/// crate's `preserve_order` feature would change under us.
fn canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                canonical(item, out)?;
            }
            out.push(b'}');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

/// The first object key, at any depth, that names a secret.
fn secret_key(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let lower = key.to_ascii_lowercase();
            let named = SECRET_KEY_PARTS.iter().any(|p| lower.contains(p))
                || SECRET_KEYS.contains(&lower.as_str());
            if named {
                Some(key.as_str())
            } else {
                secret_key(item)
            }
        }),
        Value::Array(items) => items.iter().find_map(secret_key),
        _ => None,
    }
}

fn encode(e: serde_json::Error) -> AuditError {
    AuditError::Invalid(format!("the entry cannot be encoded as JSON: {e}"))
}

#[cfg(test)]
mod tests;
