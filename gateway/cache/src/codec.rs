//! The stored form of an answer: one versioned, checksummed record.
//!
//! ```text
//! u8        format (1)
//! u64 LE    expires_at, unix milliseconds
//! [u8; 32]  SHA-256 over key || format || expires_at || body
//! body:     u32 LE tensor count, then per tensor:
//!           u32 LE name length, name (UTF-8), u8 datatype code,
//!           u8 rank, rank x i64 LE dims, u64 LE data length, data
//! ```
//!
//! The checksum covers the key the record was stored under, so a record that
//! comes back for a different key (a damaged B-tree page pointing elsewhere)
//! fails just like a flipped byte does. Parsing checks every length against
//! what is left of the buffer before using it: a damaged record is an error,
//! never a panic or an oversized allocation.

use bytes::Bytes;
use nusa_tensor::{DataType, Tensor, TensorData};
use ring::digest::{Context, SHA256};

use crate::CacheKey;

#[cfg(test)]
mod tests;

pub(crate) const FORMAT: u8 = 1;
const HEADER: usize = 1 + 8 + 32;
/// Fixed bytes per tensor besides its name, dims and data.
const TENSOR_FIXED: usize = 4 + 1 + 1 + 8;

/// A record's bytes and what they hold. The tensors are slices of `bytes`,
/// so the entry owns exactly one allocation of exactly its stored size.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub bytes: Bytes,
    pub expires_at: u64,
    pub tensors: std::sync::Arc<Vec<Tensor>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Short(usize),
    Format(u8),
    Checksum,
    Truncated(&'static str),
    Name,
    Datatype(u8),
    TooMany(u32),
    Trailing(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short(n) => write!(f, "{n} bytes is shorter than the header"),
            DecodeError::Format(v) => write!(f, "unknown record format {v}"),
            DecodeError::Checksum => f.write_str("checksum mismatch"),
            DecodeError::Truncated(what) => write!(f, "truncated at {what}"),
            DecodeError::Name => f.write_str("tensor name is not UTF-8"),
            DecodeError::Datatype(c) => write!(f, "unknown datatype code {c}"),
            DecodeError::TooMany(n) => write!(f, "{n} tensors cannot fit in the record"),
            DecodeError::Trailing(n) => write!(f, "{n} bytes after the last tensor"),
        }
    }
}

/// The record's length for these tensors, without building it: what the
/// entry-size limit and both tiers' byte budgets count.
pub(crate) fn encoded_len(tensors: &[Tensor]) -> u64 {
    let per: u64 = tensors
        .iter()
        .map(|t| (TENSOR_FIXED + t.name.len() + 8 * t.shape.len()) as u64 + t.data.len() as u64)
        .sum();
    (HEADER + 4) as u64 + per
}

/// Builds the record with its checksum left zero: the memory tier never
/// checks it, and the disk writer fills it in with [`seal`] off the async
/// runtime. `None` when a field does not fit its length prefix (a name over
/// 4 GiB, a rank over 255, more than 2^32 tensors): such an answer is simply
/// not cached.
pub(crate) fn encode(expires_at: u64, tensors: &[Tensor]) -> Option<Record> {
    let len = usize::try_from(encoded_len(tensors)).ok()?;
    let mut out = Vec::with_capacity(len);
    out.push(FORMAT);
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(&[0; 32]);
    out.extend_from_slice(&u32::try_from(tensors.len()).ok()?.to_le_bytes());
    for t in tensors {
        out.extend_from_slice(&u32::try_from(t.name.len()).ok()?.to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.push(datatype_code(t.datatype));
        out.push(u8::try_from(t.shape.len()).ok()?);
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        for s in t.data.segments() {
            out.extend_from_slice(s);
        }
    }
    debug_assert_eq!(out.len(), len);
    let bytes = Bytes::from(out);
    // Parsing what we just wrote re-slices the tensors out of the one buffer;
    // it cannot fail, but if it ever did the answer is just not cached.
    parse(bytes).ok()
}

/// Fills in the checksum of a record built by [`encode`].
pub(crate) fn seal(key: &CacheKey, record: &mut [u8]) {
    if record.len() >= HEADER {
        let sum = checksum(key, record);
        record[9..HEADER].copy_from_slice(&sum);
    }
}

/// Verifies the checksum against `key`, then parses.
pub(crate) fn decode(key: &CacheKey, bytes: Bytes) -> Result<Record, DecodeError> {
    if bytes.len() < HEADER {
        return Err(DecodeError::Short(bytes.len()));
    }
    if bytes[0] != FORMAT {
        return Err(DecodeError::Format(bytes[0]));
    }
    if checksum(key, &bytes)[..] != bytes[9..HEADER] {
        return Err(DecodeError::Checksum);
    }
    parse(bytes)
}

fn checksum(key: &CacheKey, record: &[u8]) -> [u8; 32] {
    let mut c = Context::new(&SHA256);
    c.update(key.as_bytes());
    c.update(&record[..9]);
    c.update(&record[HEADER..]);
    let mut out = [0; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

fn parse(bytes: Bytes) -> Result<Record, DecodeError> {
    if bytes.len() < HEADER {
        return Err(DecodeError::Short(bytes.len()));
    }
    if bytes[0] != FORMAT {
        return Err(DecodeError::Format(bytes[0]));
    }
    let mut r = Reader { buf: &bytes, at: 1 };
    let expires_at = r.u64("expiry")?;
    r.at = HEADER;
    let count = r.u32("tensor count")?;
    // Every tensor takes at least TENSOR_FIXED bytes, so a count larger than
    // that allows is damage; checking first bounds the Vec we allocate.
    if count as usize > r.left() / TENSOR_FIXED {
        return Err(DecodeError::TooMany(count));
    }
    let mut tensors = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = r.u32("name length")? as usize;
        let name = std::str::from_utf8(r.take(name_len, "name")?)
            .map_err(|_| DecodeError::Name)?
            .to_string();
        let code = r.u8("datatype")?;
        let datatype = datatype_from_code(code).ok_or(DecodeError::Datatype(code))?;
        let rank = r.u8("rank")? as usize;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u64("shape")? as i64);
        }
        let data_len =
            usize::try_from(r.u64("data length")?).map_err(|_| DecodeError::Truncated("data"))?;
        let start = r.at;
        r.take(data_len, "data")?;
        tensors.push(Tensor {
            name,
            datatype,
            shape,
            data: TensorData::from(bytes.slice(start..start + data_len)),
        });
    }
    if r.left() != 0 {
        return Err(DecodeError::Trailing(r.left()));
    }
    Ok(Record {
        bytes,
        expires_at,
        tensors: std::sync::Arc::new(tensors),
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(DecodeError::Truncated(what));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }
}

// Codes are part of the stored format: never renumber, only add.
fn datatype_code(d: DataType) -> u8 {
    match d {
        DataType::Bool => 1,
        DataType::Uint8 => 2,
        DataType::Uint16 => 3,
        DataType::Uint32 => 4,
        DataType::Uint64 => 5,
        DataType::Int8 => 6,
        DataType::Int16 => 7,
        DataType::Int32 => 8,
        DataType::Int64 => 9,
        DataType::Fp16 => 10,
        DataType::Fp32 => 11,
        DataType::Fp64 => 12,
        DataType::Bytes => 13,
    }
}

fn datatype_from_code(c: u8) -> Option<DataType> {
    DataType::ALL.into_iter().find(|&d| datatype_code(d) == c)
}
