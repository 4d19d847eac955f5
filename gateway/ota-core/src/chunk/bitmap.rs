//! One bit per chunk: which chunks of the new image are already fetched and
//! verified (or which are wanted). Part of the persisted state, so after a
//! power cut only the chunks still missing are fetched.
//!
//! Serialised as `{"len": n, "bits": "<hex>"}`: 1 MiB chunks of a 4 GiB
//! image (4096 chunks) take 1 KiB of text, 64 KiB chunks 16 KiB.

use serde::{Deserialize, Serialize};

use super::MAX_CHUNKS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBitmap", into = "RawBitmap")]
pub struct ChunkBitmap {
    len: u32,
    bits: Vec<u8>,
}

impl ChunkBitmap {
    /// All clear, for `len` chunks.
    pub fn new(len: u32) -> Result<Self, BitmapError> {
        if len > MAX_CHUNKS {
            return Err(BitmapError::TooLong { len });
        }
        Ok(Self {
            len,
            bits: vec![0; len.div_ceil(8) as usize],
        })
    }

    /// All clear, one bit per chunk of `index` (whose count is bounded).
    pub fn for_index(index: &super::ChunkIndex) -> Self {
        Self {
            len: index.chunk_count(),
            bits: vec![0; index.chunk_count().div_ceil(8) as usize],
        }
    }

    /// All clear, as long as `self`.
    pub fn cleared(&self) -> Self {
        Self {
            len: self.len,
            bits: vec![0; self.bits.len()],
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Sets bit `i`; true if it was clear.
    pub fn set(&mut self, i: u32) -> Result<bool, BitmapError> {
        self.check(i)?;
        let (byte, mask) = ((i / 8) as usize, 1u8 << (i % 8));
        let was_clear = self.bits[byte] & mask == 0;
        self.bits[byte] |= mask;
        Ok(was_clear)
    }

    /// Clears bit `i`; true if it was set.
    pub fn clear(&mut self, i: u32) -> Result<bool, BitmapError> {
        self.check(i)?;
        let (byte, mask) = ((i / 8) as usize, 1u8 << (i % 8));
        let was_set = self.bits[byte] & mask != 0;
        self.bits[byte] &= !mask;
        Ok(was_set)
    }

    pub fn count_ones(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// The chunks set in `want` and clear here, in order.
    pub fn missing<'a>(&'a self, want: &'a ChunkBitmap) -> impl Iterator<Item = u32> + 'a {
        want.ones().filter(|&i| !self.get(i))
    }

    fn check(&self, i: u32) -> Result<(), BitmapError> {
        if i < self.len {
            Ok(())
        } else {
            Err(BitmapError::OutOfRange {
                chunk: i,
                len: self.len,
            })
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("chunk bitmap of {len} chunks is above the limit of {MAX_CHUNKS}")]
    TooLong { len: u32 },
    #[error("chunk {chunk} is outside the bitmap's {len} chunks")]
    OutOfRange { chunk: u32, len: u32 },
    #[error("chunk bitmap has {found} chunks, the image has {expected}")]
    LenMismatch { found: u32, expected: u32 },
    #[error("chunk bitmap of {len} chunks needs {expected} hex digits, found {found}")]
    BitsLength {
        len: u32,
        expected: usize,
        found: usize,
    },
    #[error("chunk bitmap bits are not lowercase hex")]
    NotHex,
    #[error("chunk bitmap has bits set past its {len} chunks")]
    Padding { len: u32 },
}

#[derive(Serialize, Deserialize)]
struct RawBitmap {
    len: u32,
    bits: String,
}

impl From<ChunkBitmap> for RawBitmap {
    fn from(b: ChunkBitmap) -> Self {
        let bits = b.bits.iter().map(|x| format!("{x:02x}")).collect();
        Self { len: b.len, bits }
    }
}

impl TryFrom<RawBitmap> for ChunkBitmap {
    type Error = BitmapError;

    fn try_from(raw: RawBitmap) -> Result<Self, BitmapError> {
        let mut out = Self::new(raw.len)?;
        let expected = out.bits.len() * 2;
        if raw.bits.len() != expected {
            return Err(BitmapError::BitsLength {
                len: raw.len,
                expected,
                found: raw.bits.len(),
            });
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(BitmapError::NotHex),
        };
        for (byte, pair) in out.bits.iter_mut().zip(raw.bits.as_bytes().chunks_exact(2)) {
            *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        // One bitmap, one encoding: stray bits past `len` mean the state
        // was written by something else.
        let tail = raw.len % 8;
        if tail != 0 && out.bits.last().is_some_and(|&b| b >> tail != 0) {
            return Err(BitmapError::Padding { len: raw.len });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count_and_missing() {
        let mut b = ChunkBitmap::new(20).unwrap();
        assert_eq!(b.set(3), Ok(true));
        assert_eq!(b.set(3), Ok(false));
        b.set(19).unwrap();
        assert!(b.get(3) && b.get(19) && !b.get(4) && !b.get(20));
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.clear(3), Ok(true));
        assert_eq!(b.clear(3), Ok(false));
        assert_eq!(
            b.set(20),
            Err(BitmapError::OutOfRange { chunk: 20, len: 20 })
        );
        let mut want = ChunkBitmap::new(20).unwrap();
        for i in [1, 19, 5] {
            want.set(i).unwrap();
        }
        assert_eq!(b.missing(&want).collect::<Vec<_>>(), vec![1, 5]);
    }

    #[test]
    fn serde_round_trip_and_strict_reading() {
        let mut b = ChunkBitmap::new(12).unwrap();
        b.set(0).unwrap();
        b.set(11).unwrap();
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"len":12,"bits":"0108"}"#);
        assert_eq!(serde_json::from_str::<ChunkBitmap>(&json).unwrap(), b);
        for (bad, msg) in [
            (r#"{"len":12,"bits":"01"}"#, "needs 4 hex digits"),
            (r#"{"len":12,"bits":"01G8"}"#, "not lowercase hex"),
            (r#"{"len":12,"bits":"0118"}"#, "past its 12 chunks"),
            (r#"{"len":4294967295,"bits":""}"#, "above the limit"),
        ] {
            let err = serde_json::from_str::<ChunkBitmap>(bad).unwrap_err();
            assert!(err.to_string().contains(msg), "{bad}: {err}");
        }
    }
}
