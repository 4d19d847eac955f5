//! The delta plan: which chunks of the new image the active slot already
//! holds (copied locally) and which byte ranges of the published image are
//! fetched, adjacent ones coalesced into one HTTP range each.

use std::collections::HashMap;

use super::{chunk_range, BitmapError, ByteRange, ChunkBitmap, ChunkIndex};
use crate::Sha256Digest;

/// The chunks the active slot holds, found by hashing it with the new
/// index's chunk size (an [`super::IndexBuilder`] over the slot). Chunks
/// are looked up at the same position first (a file changed in place), then
/// by hash anywhere (a file that moved). Hashing the slot with another
/// chunk size finds next to nothing: the hashes cover different lengths
/// (a match is still a correct copy, equal hashes meaning equal bytes).
#[derive(Debug, Clone, Default)]
pub struct LocalChunks {
    chunk_size: u32,
    by_position: Vec<Sha256Digest>,
    by_hash: HashMap<Sha256Digest, u64>,
}

impl LocalChunks {
    /// Nothing local: a full download.
    pub fn new() -> Self {
        Self::default()
    }

    /// The active slot's chunks, from its index. The first offset of a
    /// repeated chunk (zeros, say) is the one remembered.
    pub fn from_index(active: &ChunkIndex) -> Self {
        let mut local = Self {
            chunk_size: active.chunk_size(),
            by_position: active.chunks().to_vec(),
            by_hash: HashMap::with_capacity(active.chunks().len()),
        };
        for (i, h) in active.chunks().iter().enumerate() {
            local
                .by_hash
                .entry(*h)
                .or_insert(i as u64 * u64::from(active.chunk_size()));
        }
        local
    }

    /// A chunk the driver found at `offset` of the active slot by other
    /// means (a hash -> offset map kept from an earlier scan, say).
    pub fn insert(&mut self, hash: Sha256Digest, offset: u64) {
        self.by_hash.entry(hash).or_insert(offset);
    }

    /// Where the active slot holds chunk `i` of an index with `chunk_size`
    /// whose hash is `hash`.
    pub fn find(&self, i: u32, chunk_size: u32, hash: &Sha256Digest) -> Option<u64> {
        let same_place =
            chunk_size == self.chunk_size && self.by_position.get(i as usize) == Some(hash);
        if same_place {
            return Some(u64::from(i) * u64::from(chunk_size));
        }
        self.by_hash.get(hash).copied()
    }
}

/// How to assemble the new image. Built by [`plan`] only, so its parts
/// agree with each other and with the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    chunk_size: u32,
    image_len: u64,
    image_sha256: Sha256Digest,
    max_range: u64,
    copy_local: Vec<(u32, u64)>,
    fetch_chunks: ChunkBitmap,
    fetch: Vec<ByteRange>,
    bytes_to_fetch: u64,
}

/// Plans the new image `index` against what the active slot holds. Ranges
/// are at most `max_range` bytes, and always at least one chunk.
pub fn plan(index: &ChunkIndex, local: &LocalChunks, max_range: u64) -> Plan {
    let cs = index.chunk_size();
    let mut copy_local = Vec::new();
    let mut fetch_chunks = ChunkBitmap::for_index(index);
    let mut bytes_to_fetch = 0;
    for (i, hash) in (0u32..).zip(index.chunks()) {
        match local.find(i, cs, hash) {
            Some(src) => copy_local.push((i, src)),
            None => {
                let _ = fetch_chunks.set(i);
                bytes_to_fetch += index.chunk_range(i).map_or(0, |r| r.len());
            }
        }
    }
    let fetch = coalesce(fetch_chunks.ones(), cs, index.image_len(), max_range);
    Plan {
        chunk_size: cs,
        image_len: index.image_len(),
        image_sha256: index.image_sha256(),
        max_range,
        copy_local,
        fetch_chunks,
        fetch,
        bytes_to_fetch,
    }
}

/// Byte ranges covering `chunks` (ascending), adjacent chunks joined while
/// the range stays within `max_range` bytes (and at least one chunk).
pub fn coalesce(
    chunks: impl IntoIterator<Item = u32>,
    chunk_size: u32,
    image_len: u64,
    max_range: u64,
) -> Vec<ByteRange> {
    let mut out: Vec<ByteRange> = Vec::new();
    for r in chunks
        .into_iter()
        .filter_map(|i| chunk_range(i, chunk_size, image_len))
    {
        match out.last_mut() {
            Some(last) if last.end == r.start && r.end - last.start <= max_range => {
                last.end = r.end
            }
            _ => out.push(r),
        }
    }
    out
}

impl Plan {
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    pub fn image_sha256(&self) -> Sha256Digest {
        self.image_sha256
    }

    pub fn chunk_count(&self) -> u32 {
        self.fetch_chunks.len()
    }

    pub fn max_range(&self) -> u64 {
        self.max_range
    }

    /// `(chunk of the new image, offset in the active slot)`, ascending.
    pub fn copy_local(&self) -> &[(u32, u64)] {
        &self.copy_local
    }

    /// The chunks to fetch, one bit each.
    pub fn fetch_chunks(&self) -> &ChunkBitmap {
        &self.fetch_chunks
    }

    /// The ranges to fetch, coalesced.
    pub fn fetch(&self) -> &[ByteRange] {
        &self.fetch
    }

    pub fn bytes_to_fetch(&self) -> u64 {
        self.bytes_to_fetch
    }

    pub fn bytes_local(&self) -> u64 {
        self.image_len - self.bytes_to_fetch
    }

    /// The ranges still to fetch when the chunks in `have` are already
    /// fetched and verified (after a power cut, say). A bitmap of another
    /// length is refused: it belongs to another image.
    pub fn remaining(&self, have: &ChunkBitmap) -> Result<Vec<ByteRange>, BitmapError> {
        if have.len() != self.chunk_count() {
            return Err(BitmapError::LenMismatch {
                found: have.len(),
                expected: self.chunk_count(),
            });
        }
        let missing = have.missing(&self.fetch_chunks);
        Ok(coalesce(
            missing,
            self.chunk_size,
            self.image_len,
            self.max_range,
        ))
    }

    /// The local copy of `chunk` failed verification (the active slot's
    /// bytes changed or were misread): fetch it instead. Returns the range
    /// to fetch, or `None` if `chunk` was not planned as a local copy.
    pub fn demote(&mut self, chunk: u32) -> Option<ByteRange> {
        let at = self.copy_local.iter().position(|&(dst, _)| dst == chunk)?;
        self.copy_local.remove(at);
        let range = chunk_range(chunk, self.chunk_size, self.image_len)?;
        // `chunk` came from the index, so it is within the bitmap.
        let _ = self.fetch_chunks.set(chunk);
        self.bytes_to_fetch += range.len();
        self.fetch = coalesce(
            self.fetch_chunks.ones(),
            self.chunk_size,
            self.image_len,
            self.max_range,
        );
        Some(range)
    }
}

#[cfg(test)]
mod tests;
