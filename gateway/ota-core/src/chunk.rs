//! The chunk index of an image, and the delta plan built from it.
//!
//! # Why fixed-size chunks
//!
//! A slot holds a filesystem image (ext4 or erofs) written at fixed block
//! offsets. Changing a file rewrites its blocks in place, so an update
//! leaves most of the image byte-identical **at the same offset**. Fixed
//! chunks aligned to the filesystem block size therefore find nearly
//! everything content-defined chunking (casync) would, while keeping three
//! things simple: the installer compares chunk `i` of the new image with
//! chunk `i` of the active slot (no search), every missing chunk is one
//! HTTP `Range` of the published image (no separate chunk store), and
//! adjacent missing chunks coalesce into a single range. Content-defined
//! chunking wins only when data shifts by a non-block amount, which an
//! image builder writing whole blocks does not do; for the cases where a
//! file moved to other blocks, the planner also looks chunks up by hash
//! anywhere in the active slot ([`LocalChunks`]).
//!
//! The default chunk is 4 KiB, the filesystem block, as RAUC's
//! block-hash-index uses. Measured on a 512 MiB ext4 image rebuilt with
//! `mke2fs -d` after 1 % of its files changed size (bench/ota.py): every
//! later file moved by whole 4 KiB blocks, so 64 KiB chunks matched almost
//! nothing (80 % of the image fetched) while 4 KiB chunks, looked up by
//! hash, found the moved blocks (1.6 % fetched, about the changed bytes).
//! The cost is the index, 32 bytes a chunk (0.8 % of the image: 4 MiB for
//! 512 MiB), and more chunks to hash and track; adjacent missing chunks
//! still coalesce into one range. The size is a field of the index, so a
//! variant with a huge image can publish larger chunks.
//!
//! # Index format (version 1), little-endian
//!
//! ```text
//! 0   8   magic "NUSA-CIX"
//! 8   4   format version = 1
//! 12  4   chunk size: a power of two, 4 KiB ..= 16 MiB
//! 16  8   image length: 1 ..= MAX_IMAGE_LEN
//! 24  32  SHA-256 of the whole image
//! 56  4   chunk count = ceil(image length / chunk size)
//! 60  32 * count: SHA-256 of each chunk (the last one may be short)
//! ```
//!
//! Nothing may follow the last hash. The index is itself a TUF target, so
//! its integrity comes from the signed metadata; the checks here keep a bug
//! or a mismatched file from becoming a huge allocation or a wrong plan.

use crate::digest::Sha256Hasher;
use crate::Sha256Digest;

pub use self::bitmap::{BitmapError, ChunkBitmap};
pub use self::plan::{coalesce, plan, LocalChunks, Plan};
pub use self::verify::{ChunkError, ChunkVerifier};

mod bitmap;
mod plan;
mod verify;

pub const INDEX_MAGIC: [u8; 8] = *b"NUSA-CIX";
pub const INDEX_FORMAT_VERSION: u32 = 1;
pub const INDEX_HEADER_LEN: usize = 60;
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 10;
/// The largest image (a root filesystem slot) this updater installs.
pub const MAX_IMAGE_LEN: u64 = 64 << 30;
/// At most this many chunks (a 256 MiB index, the most the updater reads
/// whole): 32 GiB at 4 KiB chunks, 64 GiB at 8 KiB and up.
pub const MAX_CHUNKS: u32 = 1 << 23;

/// A half-open byte range `start..end` of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The value of an HTTP `Range` header for it (whose end is inclusive).
    pub fn http_range(&self) -> String {
        format!("bytes={}-{}", self.start, self.end.saturating_sub(1))
    }
}

/// The chunk index of one image. Built with [`IndexBuilder`] or read with
/// [`ChunkIndex::parse`]; both guarantee the count matches the length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    chunk_size: u32,
    image_len: u64,
    image_sha256: Sha256Digest,
    chunks: Vec<Sha256Digest>,
}

impl ChunkIndex {
    /// Reads an index, refusing anything that is not exactly one.
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(IndexError::TooShort { len: bytes.len() });
        }
        let (header, body) = bytes.split_at(INDEX_HEADER_LEN);
        if header[..8] != INDEX_MAGIC {
            return Err(IndexError::BadMagic);
        }
        let version = u32_at(header, 8);
        if version != INDEX_FORMAT_VERSION {
            return Err(IndexError::Version { found: version });
        }
        let chunk_size = check_chunk_size(u32_at(header, 12))?;
        let image_len = u64::from_le_bytes(array_at(header, 16));
        let expected = chunk_count(image_len, chunk_size)?;
        let image_sha256 = Sha256Digest::from_bytes(array_at(header, 24));
        let declared = u32_at(header, 56);
        if declared != expected {
            return Err(IndexError::CountMismatch {
                declared,
                expected,
                image_len,
                chunk_size,
            });
        }
        let want = expected as usize * Sha256Digest::LEN;
        if body.len() < want {
            return Err(IndexError::Truncated {
                expected: want,
                found: body.len(),
            });
        }
        if body.len() > want {
            return Err(IndexError::TrailingBytes {
                extra: body.len() - want,
            });
        }
        let chunks = body
            .chunks_exact(Sha256Digest::LEN)
            .map(|c| Sha256Digest::from_bytes(array_at(c, 0)))
            .collect();
        Ok(Self {
            chunk_size,
            image_len,
            image_sha256,
            chunks,
        })
    }

    /// The format [`ChunkIndex::parse`] reads.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_len(self.chunk_count()));
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.image_len.to_le_bytes());
        out.extend_from_slice(self.image_sha256.as_bytes());
        out.extend_from_slice(&self.chunk_count().to_le_bytes());
        for c in &self.chunks {
            out.extend_from_slice(c.as_bytes());
        }
        out
    }

    /// Bytes an index of `count` chunks takes; the driver bounds its read
    /// of the index by `encoded_len(MAX_CHUNKS)`.
    pub const fn encoded_len(count: u32) -> usize {
        INDEX_HEADER_LEN + count as usize * Sha256Digest::LEN
    }

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
        // Bounded by MAX_CHUNKS at construction, so it fits.
        self.chunks.len() as u32
    }

    pub fn chunks(&self) -> &[Sha256Digest] {
        &self.chunks
    }

    pub fn chunk(&self, i: u32) -> Option<Sha256Digest> {
        self.chunks.get(i as usize).copied()
    }

    /// Where chunk `i` lies in the image; the last chunk may be short.
    pub fn chunk_range(&self, i: u32) -> Option<ByteRange> {
        chunk_range(i, self.chunk_size, self.image_len)
    }
}

/// Chunk `i`'s range in an image of `image_len` bytes, `None` past the end.
pub fn chunk_range(i: u32, chunk_size: u32, image_len: u64) -> Option<ByteRange> {
    let start = u64::from(i) * u64::from(chunk_size);
    (start < image_len).then(|| ByteRange {
        start,
        end: (start + u64::from(chunk_size)).min(image_len),
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array_at(b, at))
}

/// `N` bytes at `at`; callers index within a slice whose length they
/// checked, so the conversion cannot fail.
fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn check_chunk_size(size: u32) -> Result<u32, IndexError> {
    if size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(IndexError::ChunkSize { size })
    }
}

fn chunk_count(image_len: u64, chunk_size: u32) -> Result<u32, IndexError> {
    if image_len == 0 {
        return Err(IndexError::EmptyImage);
    }
    if image_len > MAX_IMAGE_LEN {
        return Err(IndexError::ImageTooLarge {
            len: image_len,
            max: MAX_IMAGE_LEN,
        });
    }
    let count = image_len.div_ceil(u64::from(chunk_size));
    match u32::try_from(count) {
        Ok(c) if c <= MAX_CHUNKS => Ok(c),
        _ => Err(IndexError::TooManyChunks {
            count,
            max: MAX_CHUNKS,
        }),
    }
}

/// Builds an index from an image fed in pieces of any size, as the driver
/// reads or receives it. Also how the driver hashes the active slot.
#[derive(Clone)]
pub struct IndexBuilder {
    chunk_size: u32,
    image: Sha256Hasher,
    chunk: Sha256Hasher,
    in_chunk: u32,
    len: u64,
    chunks: Vec<Sha256Digest>,
}

impl IndexBuilder {
    pub fn new(chunk_size: u32) -> Result<Self, IndexError> {
        Ok(Self {
            chunk_size: check_chunk_size(chunk_size)?,
            image: Sha256Hasher::new(),
            chunk: Sha256Hasher::new(),
            in_chunk: 0,
            len: 0,
            chunks: Vec::new(),
        })
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.image.update(data);
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = (self.chunk_size - self.in_chunk) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.chunk.update(now);
            // `now` is at most `room`, itself at most chunk_size (a u32).
            self.in_chunk += now.len() as u32;
            if self.in_chunk == self.chunk_size {
                let full = std::mem::take(&mut self.chunk);
                self.chunks.push(full.finish());
                self.in_chunk = 0;
            }
            data = rest;
        }
    }

    pub fn finish(mut self) -> Result<ChunkIndex, IndexError> {
        chunk_count(self.len, self.chunk_size)?;
        if self.in_chunk > 0 {
            self.chunks.push(self.chunk.finish());
        }
        Ok(ChunkIndex {
            chunk_size: self.chunk_size,
            image_len: self.len,
            image_sha256: self.image.finish(),
            chunks: self.chunks,
        })
    }
}

/// Why a chunk index was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("chunk index is {len} bytes, shorter than its {INDEX_HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("chunk index does not start with the magic \"NUSA-CIX\"")]
    BadMagic,
    #[error("chunk index format version {found} is not supported (this build reads {INDEX_FORMAT_VERSION})")]
    Version { found: u32 },
    #[error("chunk size {size} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize { size: u32 },
    #[error("image is empty")]
    EmptyImage,
    #[error("image length {len} is above the limit of {max} bytes")]
    ImageTooLarge { len: u64, max: u64 },
    #[error("image needs {count} chunks, above the limit of {max}")]
    TooManyChunks { count: u64, max: u32 },
    #[error("chunk index declares {declared} chunks, but {image_len} bytes in {chunk_size}-byte chunks make {expected}")]
    CountMismatch {
        declared: u32,
        expected: u32,
        image_len: u64,
        chunk_size: u32,
    },
    #[error("chunk index is truncated: {found} bytes of chunk hashes, {expected} expected")]
    Truncated { expected: usize, found: usize },
    #[error("chunk index has {extra} bytes after the last chunk hash")]
    TrailingBytes { extra: usize },
}

#[cfg(test)]
mod tests;
