use super::*;
use crate::testutil::{image, index_of};

fn header(chunk_size: u32, image_len: u64, count: u32) -> Vec<u8> {
    let mut out = INDEX_MAGIC.to_vec();
    out.extend_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&chunk_size.to_le_bytes());
    out.extend_from_slice(&image_len.to_le_bytes());
    out.extend_from_slice(&[0xAB; 32]);
    out.extend_from_slice(&count.to_le_bytes());
    out
}

#[test]
fn builder_fed_in_any_pieces_gives_the_same_index() {
    let data = image(300_000, 1);
    let whole = index_of(&data, 65536);
    for piece in [1usize, 7, 4096, 65535, 65536, 65537, 200_000] {
        let mut b = IndexBuilder::new(65536).unwrap();
        for p in data.chunks(piece) {
            b.update(p);
        }
        b.update(&[]);
        assert_eq!(b.finish().unwrap(), whole, "pieces of {piece}");
    }
    assert_eq!(whole.chunk_count(), 5);
    assert_eq!(whole.image_len(), 300_000);
    assert_eq!(whole.image_sha256(), Sha256Digest::of(&data));
    assert_eq!(whole.chunk(0), Some(Sha256Digest::of(&data[..65536])));
    // The last chunk is short and hashed as such.
    assert_eq!(whole.chunk(4), Some(Sha256Digest::of(&data[262_144..])));
    assert_eq!(whole.chunk(5), None);
    assert_eq!(
        whole.chunk_range(4),
        Some(ByteRange {
            start: 262_144,
            end: 300_000
        })
    );
    assert_eq!(whole.chunk_range(5), None);
}

#[test]
fn an_image_of_whole_chunks_has_no_empty_last_chunk() {
    let data = image(8192, 2);
    let idx = index_of(&data, 4096);
    assert_eq!(idx.chunk_count(), 2);
    assert_eq!(
        idx.chunk_range(1),
        Some(ByteRange {
            start: 4096,
            end: 8192
        })
    );
}

#[test]
fn round_trip_through_bytes() {
    let data = image(100_000, 3);
    let idx = index_of(&data, 4096);
    let bytes = idx.to_bytes();
    assert_eq!(bytes.len(), ChunkIndex::encoded_len(idx.chunk_count()));
    assert_eq!(bytes.len(), 60 + 25 * 32);
    assert_eq!(&bytes[..8], b"NUSA-CIX");
    assert_eq!(ChunkIndex::parse(&bytes), Ok(idx));
}

#[test]
fn every_malformed_index_is_refused_with_its_reason() {
    let good = index_of(&image(10_000, 4), 4096).to_bytes();
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let too_big = MAX_IMAGE_LEN + 1;
    let cases: Vec<(Vec<u8>, IndexError, &str)> = vec![
        (
            good[..59].to_vec(),
            IndexError::TooShort { len: 59 },
            "60-byte header",
        ),
        (vec![], IndexError::TooShort { len: 0 }, "0 bytes"),
        (with(0, b"NUSA-CIY"), IndexError::BadMagic, "magic"),
        (
            with(8, &2u32.to_le_bytes()),
            IndexError::Version { found: 2 },
            "version 2",
        ),
        (
            with(12, &5000u32.to_le_bytes()),
            IndexError::ChunkSize { size: 5000 },
            "power of two",
        ),
        (
            with(12, &2048u32.to_le_bytes()),
            IndexError::ChunkSize { size: 2048 },
            "2048",
        ),
        (
            with(12, &(32u32 << 20).to_le_bytes()),
            IndexError::ChunkSize { size: 32 << 20 },
            "16777216",
        ),
        (
            with(16, &0u64.to_le_bytes()),
            IndexError::EmptyImage,
            "empty",
        ),
        (
            with(16, &too_big.to_le_bytes()),
            IndexError::ImageTooLarge {
                len: too_big,
                max: MAX_IMAGE_LEN,
            },
            "above the limit",
        ),
        (
            header(4096, 48 << 30, 12 << 20),
            IndexError::TooManyChunks {
                count: 12 << 20,
                max: MAX_CHUNKS,
            },
            "12582912 chunks",
        ),
        (
            with(56, &4u32.to_le_bytes()),
            IndexError::CountMismatch {
                declared: 4,
                expected: 3,
                image_len: 10_000,
                chunk_size: 4096,
            },
            "declares 4 chunks",
        ),
        (
            good[..good.len() - 1].to_vec(),
            IndexError::Truncated {
                expected: 96,
                found: 95,
            },
            "truncated",
        ),
        (
            [good.as_slice(), &[0]].concat(),
            IndexError::TrailingBytes { extra: 1 },
            "1 bytes after",
        ),
    ];
    for (bytes, want, msg) in cases {
        let err = ChunkIndex::parse(&bytes).unwrap_err();
        assert_eq!(err, want);
        assert!(err.to_string().contains(msg), "{err} lacks {msg:?}");
    }
}

#[test]
fn builder_refuses_bad_chunk_sizes_and_empty_images() {
    for size in [0, 1000, 2048, 4095, 32 << 20] {
        assert_eq!(
            IndexBuilder::new(size).err(),
            Some(IndexError::ChunkSize { size })
        );
    }
    assert_eq!(
        IndexBuilder::new(4096).unwrap().finish(),
        Err(IndexError::EmptyImage)
    );
}

#[test]
fn ranges_read_as_http_headers() {
    let r = ByteRange {
        start: 65536,
        end: 131_072,
    };
    assert_eq!(r.len(), 65536);
    assert_eq!(r.http_range(), "bytes=65536-131071");
    assert!(!r.is_empty());
    assert!(ByteRange { start: 5, end: 5 }.is_empty());
    assert_eq!(
        chunk_range(2, 4096, 9000),
        Some(ByteRange {
            start: 8192,
            end: 9000
        })
    );
    assert_eq!(chunk_range(3, 4096, 9000), None);
}
