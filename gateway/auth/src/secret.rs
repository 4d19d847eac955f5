//! The key's text form, its generation and its hash.
//!
//! A key reads `nusa_<prefix>_<secret>`: 8 lowercase hex digits (32 random
//! bits, the public id used to find the record) and 43 base64url characters
//! (256 random bits, never stored). The store keeps SHA-256(salt || key)
//! with a 128-bit random salt per key.

use std::fmt;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

pub(crate) const TAG: &str = "nusa_";
pub(crate) const PREFIX_HEX: usize = 8;
const SECRET_BYTES: usize = 32;
/// base64url of 32 bytes without padding.
const SECRET_CHARS: usize = 43;
/// `nusa_` + prefix + `_` + secret.
pub const KEY_LEN: usize = TAG.len() + PREFIX_HEX + 1 + SECRET_CHARS;
pub(crate) const SALT_LEN: usize = 16;
pub(crate) const HASH_LEN: usize = 32;

/// A key's full text, shown once when it is created or rotated.
/// `Debug` and `Display` print only the prefix (`nusa_ab12cd34_…`);
/// `expose()` gives the whole key. Wiped from memory when dropped.
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The whole key, to show to the operator once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The public prefix (the key record's id).
    pub fn prefix(&self) -> &str {
        // Cannot panic: a `Secret` is made only by `generate`, whose text is
        // ASCII laid out as `KEY_LEN` describes.
        &self.0[TAG.len()..TAG.len() + PREFIX_HEX]
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({self})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TAG}{}_…", self.prefix())
    }
}

/// What the store keeps of a key: never the key itself.
#[derive(Clone)]
pub(crate) struct Hashed {
    pub salt: [u8; SALT_LEN],
    pub hash: [u8; HASH_LEN],
}

impl fmt::Debug for Hashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hashed(..)")
    }
}

impl Hashed {
    fn of(salt: [u8; SALT_LEN], key: &str) -> Hashed {
        Hashed {
            salt,
            hash: digest(&salt, key),
        }
    }

    /// Hashes `presented` with this salt and compares in constant time. The
    /// caller decides only after combining the answer with whether the
    /// record was real (see `KeyStore::authenticate`), so the same work is
    /// done for an unknown prefix as for a wrong secret.
    pub fn verify(&self, presented: &str) -> Choice {
        let got = digest(&self.salt, presented);
        #[cfg(test)]
        probe::COMPARISONS.with(|c| c.set(c.get() + 1));
        got[..].ct_eq(&self.hash[..])
    }

    /// A record that matches no key (its hash is random, not the hash of
    /// anything), verified against when the prefix is unknown.
    pub fn dummy(rng: &SystemRandom) -> Result<Hashed, ring::error::Unspecified> {
        let mut h = Hashed {
            salt: [0; SALT_LEN],
            hash: [0; HASH_LEN],
        };
        rng.fill(&mut h.salt)?;
        rng.fill(&mut h.hash)?;
        Ok(h)
    }
}

/// Counts hash comparisons, per thread, so a test can see that the unknown
/// prefix path does the same work as the wrong-secret path.
#[cfg(test)]
pub(crate) mod probe {
    use std::cell::Cell;

    thread_local! {
        pub static COMPARISONS: Cell<u64> = const { Cell::new(0) };
    }

    pub fn comparisons() -> u64 {
        COMPARISONS.with(Cell::get)
    }
}

fn digest(salt: &[u8; SALT_LEN], key: &str) -> [u8; HASH_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt);
    ctx.update(key.as_bytes());
    let mut out = [0; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A fresh key with the given prefix, and its salted hash.
pub(crate) fn generate(
    rng: &SystemRandom,
    prefix: &str,
) -> Result<(Secret, Hashed), ring::error::Unspecified> {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    rng.fill(bytes.as_mut())?;
    let mut salt = [0; SALT_LEN];
    rng.fill(&mut salt)?;
    let mut key = Zeroizing::new(String::with_capacity(KEY_LEN));
    key.push_str(TAG);
    key.push_str(prefix);
    key.push('_');
    base64url(bytes.as_ref(), &mut key);
    debug_assert_eq!(key.len(), KEY_LEN);
    let hashed = Hashed::of(salt, &key);
    Ok((Secret(key), hashed))
}

/// A random prefix: 8 lowercase hex digits.
/// A key given from outside (provisioned at flash time, `bootstrap_keys`):
/// its text checked, then hashed with a new salt like a generated one.
pub(crate) fn adopt(
    rng: &SystemRandom,
    key: &str,
) -> Option<Result<(String, Hashed), ring::error::Unspecified>> {
    let prefix = parse(key)?.to_owned();
    let mut salt = [0; SALT_LEN];
    Some(
        rng.fill(&mut salt)
            .map(|()| (prefix, Hashed::of(salt, key))),
    )
}

/// A new key's text, made away from any store (`nusactl keys generate`,
/// for a box's provisioned keys).
pub fn generate_text() -> Result<Secret, ring::error::Unspecified> {
    let rng = SystemRandom::new();
    let prefix = random_prefix(&rng)?;
    Ok(generate(&rng, &prefix)?.0)
}

pub(crate) fn random_prefix(rng: &SystemRandom) -> Result<String, ring::error::Unspecified> {
    let mut b = [0u8; PREFIX_HEX / 2];
    rng.fill(&mut b)?;
    Ok(hex::encode(b))
}

/// The prefix of a well-formed key; `None` for anything else. Checks bytes
/// before slicing, so no input can panic it.
pub(crate) fn parse(presented: &str) -> Option<&str> {
    let b = presented.as_bytes();
    let well_formed = b.len() == KEY_LEN
        && presented.starts_with(TAG)
        && b[TAG.len()..TAG.len() + PREFIX_HEX]
            .iter()
            .all(is_lower_hex)
        && b[TAG.len() + PREFIX_HEX] == b'_'
        && b[TAG.len() + PREFIX_HEX + 1..].iter().all(is_base64url);
    if well_formed {
        presented.get(TAG.len()..TAG.len() + PREFIX_HEX)
    } else {
        None
    }
}

pub(crate) fn is_prefix(s: &str) -> bool {
    s.len() == PREFIX_HEX && s.as_bytes().iter().all(is_lower_hex)
}

fn is_lower_hex(b: &u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(b)
}

fn is_base64url(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 §5, without padding.
fn base64url(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let at = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (at(0) << 16) | (at(1) << 8) | at(2);
        for i in 0..=chunk.len() {
            let six = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(BASE64URL[six as usize]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(bytes: &[u8]) -> String {
        let mut s = String::new();
        base64url(bytes, &mut s);
        s
    }

    #[test]
    fn base64url_matches_rfc4648() {
        // RFC 4648 §10 vectors, padding dropped.
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg");
        assert_eq!(encode(b"fo"), "Zm8");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foob"), "Zm9vYg");
        assert_eq!(encode(b"fooba"), "Zm9vYmE");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(encode(&[0; 32]).len(), SECRET_CHARS);
    }

    #[test]
    fn generated_keys_parse_and_verify() {
        let rng = SystemRandom::new();
        let prefix = random_prefix(&rng).unwrap();
        let (secret, hashed) = generate(&rng, &prefix).unwrap();
        assert_eq!(secret.expose().len(), KEY_LEN);
        assert_eq!(parse(secret.expose()), Some(prefix.as_str()));
        assert_eq!(secret.prefix(), prefix);
        assert!(bool::from(hashed.verify(secret.expose())));
        let mut wrong = secret.expose().to_owned();
        wrong.pop();
        wrong.push(if secret.expose().ends_with('A') {
            'B'
        } else {
            'A'
        });
        assert!(!bool::from(hashed.verify(&wrong)));
    }

    #[test]
    fn secret_prints_only_its_prefix() {
        let rng = SystemRandom::new();
        let (secret, _) = generate(&rng, "ab12cd34").unwrap();
        assert_eq!(secret.to_string(), "nusa_ab12cd34_…");
        assert_eq!(format!("{secret:?}"), "Secret(nusa_ab12cd34_…)");
        let tail = &secret.expose()[14..];
        assert!(!format!("{secret} {secret:?} {secret:#?}").contains(tail));
    }

    #[test]
    fn parse_refuses_malformed() {
        let good = format!("nusa_0123abcd_{}", "A".repeat(SECRET_CHARS));
        assert_eq!(parse(&good), Some("0123abcd"));
        for bad in [
            String::new(),
            "nusa_".into(),
            good.replace("nusa_", "nusb_"),
            good.replace("0123abcd", "0123ABCD"),
            good.replace("0123abcd_", "0123abcd-"),
            format!("{good}A"),
            good[..KEY_LEN - 1].to_owned(),
            good.replacen('A', "+", 1),
            // A multi-byte character where the prefix should be.
            format!("nusa_0123abcé_{}", "A".repeat(SECRET_CHARS - 1)),
            format!("nusa_é123abc_{}", "A".repeat(SECRET_CHARS - 1)),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
    }
}
