//! The cache key: SHA-256 over everything that decides a model's answer.

use std::fmt;

use nusa_tensor::Tensor;
use ring::digest::{Context, SHA256};

#[cfg(test)]
mod tests;

/// Identifies one answer: model, resolved version, the digest of that
/// version's files, requested outputs and the inputs' datatype, shape and
/// bytes. The digest keeps apart the answers of two sets of weights served
/// under one version number (a retrained `1/model.onnx` put in place).
///
/// Every variable-length field is preceded by its length and every list by its
/// count, so the hashed byte stream decodes back to exactly one request: two
/// different requests cannot meet by shifting bytes from one field into the
/// next. A leading domain tag keeps these digests apart from any other SHA-256
/// the gateway may compute, and is the place to bump if the layout changes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

/// `/2`: the version's file digest joined the key. Records stored under
/// `/1` keys are never found again and age out of the disk tier.
const DOMAIN: &[u8] = b"nusa-cache-key/2";

impl CacheKey {
    /// `outputs: None` asks for every output and hashes differently from any
    /// explicit list, the empty list included. Output names are sorted, inputs
    /// are sorted by name: the order a client lists them in does not change
    /// the answer. A tensor's bytes are hashed segment by segment, so the
    /// same bytes split differently (JSON vs binary body frames) give the same
    /// key.
    pub fn compute(
        model: &str,
        version: u64,
        contents: &[u8; 32],
        outputs: Option<&[&str]>,
        inputs: &[Tensor],
    ) -> CacheKey {
        let mut h = Hasher(Context::new(&SHA256));
        h.bytes(DOMAIN);
        h.bytes(model.as_bytes());
        h.u64(version);
        h.0.update(contents);
        match outputs {
            None => h.0.update(&[0]),
            Some(names) => {
                h.0.update(&[1]);
                let mut names = names.to_vec();
                names.sort_unstable();
                h.u64(names.len() as u64);
                for n in names {
                    h.bytes(n.as_bytes());
                }
            }
        }
        let mut sorted: Vec<&Tensor> = inputs.iter().collect();
        // Stable, so that duplicate names (which the API rejects anyway) still
        // hash in a fixed order.
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        h.u64(sorted.len() as u64);
        for t in sorted {
            h.bytes(t.name.as_bytes());
            h.bytes(t.datatype.as_str().as_bytes());
            h.u64(t.shape.len() as u64);
            for d in &t.shape {
                h.0.update(&d.to_le_bytes());
            }
            h.u64(t.data.len() as u64);
            for s in t.data.segments() {
                h.0.update(s);
            }
        }
        let digest = h.0.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        CacheKey(out)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

struct Hasher(Context);

impl Hasher {
    fn u64(&mut self, v: u64) {
        self.0.update(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.update(b);
    }
}
