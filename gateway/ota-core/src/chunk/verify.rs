//! Checking each chunk against the index before it is written to the slot,
//! whether it was fetched or copied from the active slot.

use std::ops::Range;

use super::{ByteRange, ChunkIndex};
use crate::Sha256Digest;

/// Checks chunks of the image `index` describes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkVerifier<'a> {
    index: &'a ChunkIndex,
}

impl<'a> ChunkVerifier<'a> {
    pub fn new(index: &'a ChunkIndex) -> Self {
        Self { index }
    }

    /// Whether `data` is chunk `chunk`: its length and its hash.
    pub fn verify(&self, chunk: u32, data: &[u8]) -> Result<(), ChunkError> {
        let range = self
            .index
            .chunk_range(chunk)
            .ok_or(ChunkError::OutOfRange {
                chunk,
                count: self.index.chunk_count(),
            })?;
        if data.len() as u64 != range.len() {
            return Err(ChunkError::Length {
                chunk,
                expected: range.len(),
                found: data.len() as u64,
            });
        }
        let found = Sha256Digest::of(data);
        match self.index.chunk(chunk) {
            Some(expected) if expected == found => Ok(()),
            Some(expected) => Err(ChunkError::Mismatch {
                chunk,
                expected,
                found,
            }),
            None => Err(ChunkError::OutOfRange {
                chunk,
                count: self.index.chunk_count(),
            }),
        }
    }

    /// The chunks a fetched range covers; it must start on a chunk boundary
    /// and end on one or at the image's end.
    pub fn chunks_in(&self, range: ByteRange) -> Result<Range<u32>, ChunkError> {
        let cs = u64::from(self.index.chunk_size());
        let len = self.index.image_len();
        let aligned_end = range.end % cs == 0 || range.end == len;
        if range.is_empty() || range.start % cs != 0 || !aligned_end || range.end > len {
            return Err(ChunkError::Misaligned { range });
        }
        // Both ends are within the image, whose chunk count is a u32.
        let first = (range.start / cs) as u32;
        let end = range.end.div_ceil(cs) as u32;
        Ok(first..end)
    }

    /// Verifies every chunk of a fetched range; the error names the first
    /// chunk that is wrong. On success, the chunks it covered.
    pub fn verify_range(&self, range: ByteRange, data: &[u8]) -> Result<Range<u32>, ChunkError> {
        let chunks = self.chunks_in(range)?;
        if data.len() as u64 != range.len() {
            return Err(ChunkError::RangeLength {
                range,
                found: data.len() as u64,
            });
        }
        let cs = self.index.chunk_size() as usize;
        for (chunk, piece) in chunks.clone().zip(data.chunks(cs)) {
            self.verify(chunk, piece)?;
        }
        Ok(chunks)
    }
}

/// A chunk that is not what the index says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {chunk} is past the image's {count} chunks")]
    OutOfRange { chunk: u32, count: u32 },
    #[error("chunk {chunk} is {found} bytes, the index says {expected}")]
    Length {
        chunk: u32,
        expected: u64,
        found: u64,
    },
    #[error("chunk {chunk} hashes to {found}, the index says {expected}")]
    Mismatch {
        chunk: u32,
        expected: Sha256Digest,
        found: Sha256Digest,
    },
    #[error("range {}..{} does not fall on chunk boundaries of the image", range.start, range.end)]
    Misaligned { range: ByteRange },
    #[error("range {}..{} came back with {found} bytes", range.start, range.end)]
    RangeLength { range: ByteRange, found: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::IndexBuilder;

    fn index(data: &[u8]) -> ChunkIndex {
        let mut b = IndexBuilder::new(4096).unwrap();
        b.update(data);
        b.finish().unwrap()
    }

    #[test]
    fn accepts_the_right_bytes_and_names_the_wrong_chunk() {
        let image: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let idx = index(&image);
        let v = ChunkVerifier::new(&idx);
        assert_eq!(v.verify(0, &image[..4096]), Ok(()));
        assert_eq!(v.verify(2, &image[8192..]), Ok(()));
        let mut bad = image[4096..8192].to_vec();
        bad[100] ^= 1;
        assert!(matches!(
            v.verify(1, &bad),
            Err(ChunkError::Mismatch { chunk: 1, .. })
        ));
        assert_eq!(
            v.verify(2, &image[8192..9000]),
            Err(ChunkError::Length {
                chunk: 2,
                expected: 1808,
                found: 808
            })
        );
        assert_eq!(
            v.verify(3, &[]),
            Err(ChunkError::OutOfRange { chunk: 3, count: 3 })
        );
    }

    #[test]
    fn ranges_split_into_chunks_and_must_be_aligned() {
        let image = vec![9u8; 10_000];
        let idx = index(&image);
        let v = ChunkVerifier::new(&idx);
        let whole = ByteRange {
            start: 4096,
            end: 10_000,
        };
        assert_eq!(v.verify_range(whole, &image[4096..]), Ok(1..3));
        let mut data = image[4096..].to_vec();
        data[5000] = 0;
        assert!(matches!(
            v.verify_range(whole, &data),
            Err(ChunkError::Mismatch { chunk: 2, .. })
        ));
        assert!(matches!(
            v.verify_range(whole, &data[..10]),
            Err(ChunkError::RangeLength { found: 10, .. })
        ));
        for range in [
            ByteRange {
                start: 1,
                end: 4096,
            },
            ByteRange {
                start: 0,
                end: 5000,
            },
            ByteRange {
                start: 0,
                end: 12_288,
            },
            ByteRange {
                start: 4096,
                end: 4096,
            },
        ] {
            assert_eq!(v.chunks_in(range), Err(ChunkError::Misaligned { range }));
        }
    }
}
