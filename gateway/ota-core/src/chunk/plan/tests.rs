use super::*;
use crate::chunk::{ChunkError, ChunkVerifier, IndexBuilder};
use crate::testutil::{image, index_of};

const CS: u32 = 65536;
const CSU: usize = CS as usize;

/// The new image from the plan: local copies from `active`, the rest
/// from `published` by the planned ranges, every chunk verified.
fn assemble(plan: &Plan, index: &ChunkIndex, active: &[u8], published: &[u8]) -> Vec<u8> {
    let verifier = ChunkVerifier::new(index);
    let mut out = vec![0u8; index.image_len() as usize];
    for &(dst, src) in plan.copy_local() {
        let r = index.chunk_range(dst).unwrap();
        let piece = &active[src as usize..src as usize + r.len() as usize];
        verifier.verify(dst, piece).unwrap();
        out[r.start as usize..r.end as usize].copy_from_slice(piece);
    }
    for r in plan.fetch() {
        let piece = &published[r.start as usize..r.end as usize];
        verifier.verify_range(*r, piece).unwrap();
        out[r.start as usize..r.end as usize].copy_from_slice(piece);
    }
    out
}

#[test]
fn a_small_change_fetches_only_its_chunks() {
    let old = image(2 << 20, 1);
    let local = LocalChunks::from_index(&index_of(&old, CS));
    for (start, len) in [
        (1_000_000usize, 10_000usize),
        (1_040_000, 60_000),
        (0, 1),
        (2_097_151, 1),
    ] {
        let mut new = old.clone();
        for b in &mut new[start..start + len] {
            *b = !*b;
        }
        let index = index_of(&new, CS);
        let p = plan(&index, &local, 8 << 20);
        let first = start / CSU;
        let last = (start + len - 1) / CSU;
        let changed_chunks = (last - first + 1) as u64;
        assert_eq!(
            p.bytes_to_fetch(),
            changed_chunks * u64::from(CS),
            "change at {start}+{len}"
        );
        // Changed bytes rounded out to whole chunks.
        assert!(
            p.bytes_to_fetch() >= len as u64 && p.bytes_to_fetch() < len as u64 + 2 * u64::from(CS)
        );
        let range = ByteRange {
            start: (first * CSU) as u64,
            end: ((last + 1) * CSU) as u64,
        };
        assert_eq!(p.fetch(), &[range]);
        assert_eq!(p.copy_local().len(), 32 - changed_chunks as usize);
        assert_eq!(p.bytes_local() + p.bytes_to_fetch(), 2 << 20);
        // Unchanged chunks are copied from the same place.
        assert!(p
            .copy_local()
            .iter()
            .all(|&(d, s)| u64::from(d) * u64::from(CS) == s));
        assert_eq!(assemble(&p, &index, &old, &new), new);
    }
}

#[test]
fn chunks_that_moved_are_found_in_the_active_slot() {
    let old = image(64 * CSU, 2);
    let mut new = old.clone();
    // Swap chunks 3 and 40, and put a copy of chunk 10 at 20.
    new[3 * CSU..4 * CSU].copy_from_slice(&old[40 * CSU..41 * CSU]);
    new[40 * CSU..41 * CSU].copy_from_slice(&old[3 * CSU..4 * CSU]);
    new[20 * CSU..21 * CSU].copy_from_slice(&old[10 * CSU..11 * CSU]);
    let index = index_of(&new, CS);
    let p = plan(
        &index,
        &LocalChunks::from_index(&index_of(&old, CS)),
        8 << 20,
    );
    assert_eq!(p.bytes_to_fetch(), 0);
    assert!(p.fetch().is_empty());
    let src = |dst: u32| p.copy_local().iter().find(|c| c.0 == dst).map(|c| c.1);
    assert_eq!(src(3), Some(40 * CS as u64));
    assert_eq!(src(40), Some(3 * CS as u64));
    assert_eq!(src(20), Some(10 * CS as u64));
    assert_eq!(src(21), Some(21 * CS as u64));
    assert_eq!(assemble(&p, &index, &old, &new), new);
}

#[test]
fn a_chunk_at_an_unaligned_offset_is_found_through_an_inserted_hash() {
    let old = image(8 * CSU, 3);
    let mut new = image(8 * CSU, 4);
    // Chunk 5 of the new image sits at offset 12345 of the active slot.
    new[5 * CSU..6 * CSU].copy_from_slice(&old[12_345..12_345 + CSU]);
    let index = index_of(&new, CS);
    let mut local = LocalChunks::from_index(&index_of(&old, CS));
    assert_eq!(plan(&index, &local, 1 << 30).copy_local(), &[]);
    local.insert(Sha256Digest::of(&old[12_345..12_345 + CSU]), 12_345);
    let p = plan(&index, &local, 1 << 30);
    assert_eq!(p.copy_local(), &[(5, 12_345)]);
    assert_eq!(
        p.fetch(),
        &[
            ByteRange {
                start: 0,
                end: 5 * CS as u64
            },
            ByteRange {
                start: 6 * CS as u64,
                end: 8 * CS as u64
            }
        ]
    );
    assert_eq!(assemble(&p, &index, &old, &new), new);
}

#[test]
fn a_full_download_when_nothing_is_local_in_ranges_of_at_most_max() {
    let new = image(10 * CSU + 5000, 5);
    let index = index_of(&new, CS);
    let p = plan(&index, &LocalChunks::new(), 4 * u64::from(CS));
    assert_eq!(p.bytes_to_fetch(), new.len() as u64);
    let lens: Vec<u64> = p.fetch().iter().map(|r| r.len()).collect();
    assert_eq!(lens, vec![4 * 65536, 4 * 65536, 2 * 65536 + 5000]);
    assert_eq!(p.fetch().last().unwrap().end, new.len() as u64);
    // An index hashed with another chunk size matches nothing (the tails
    // differ too: 5000 bytes here, 904 there).
    let other = LocalChunks::from_index(&index_of(&new, 4096));
    assert_eq!(
        plan(&index, &other, 1 << 30).bytes_to_fetch(),
        new.len() as u64
    );
}

#[test]
fn coalescing_joins_neighbours_up_to_the_maximum() {
    let r = |a: u64, b: u64| ByteRange {
        start: a * 4096,
        end: b * 4096,
    };
    let len = 10 * 4096 - 5;
    assert_eq!(
        coalesce([1, 2, 3, 5, 6, 9], 4096, len, 2 * 4096),
        vec![
            r(1, 3),
            r(3, 4),
            r(5, 7),
            ByteRange {
                start: 9 * 4096,
                end: len
            }
        ]
    );
    assert_eq!(
        coalesce([1, 2, 3, 5, 6, 9], 4096, len, 1 << 20)[..2],
        [r(1, 4), r(5, 7)]
    );
    // A maximum below one chunk still fetches whole chunks, one each.
    assert_eq!(coalesce([0, 1], 4096, len, 100), vec![r(0, 1), r(1, 2)]);
    // Chunks past the image are ignored.
    assert_eq!(coalesce([10, 11], 4096, len, 1 << 20), vec![]);
}

#[test]
fn a_corrupt_local_chunk_is_demoted_to_a_fetch() {
    let old = image(16 * CSU, 6);
    let mut new = old.clone();
    new[8 * CSU] ^= 1;
    let index = index_of(&new, CS);
    let mut p = plan(
        &index,
        &LocalChunks::from_index(&index_of(&old, CS)),
        8 << 20,
    );
    assert_eq!(
        p.fetch(),
        &[ByteRange {
            start: 8 * CS as u64,
            end: 9 * CS as u64
        }]
    );

    // The active slot's chunk 7 rotted after it was hashed.
    let mut active = old.clone();
    active[7 * CSU + 3] ^= 0x80;
    let verifier = ChunkVerifier::new(&index);
    let (dst, src) = p.copy_local()[7];
    assert_eq!(dst, 7);
    let err = verifier
        .verify(dst, &active[src as usize..src as usize + CSU])
        .unwrap_err();
    assert!(
        matches!(err, ChunkError::Mismatch { chunk: 7, .. }),
        "{err}"
    );
    assert_eq!(
        p.demote(7),
        Some(ByteRange {
            start: 7 * CS as u64,
            end: 8 * CS as u64
        })
    );
    assert!(p.copy_local().iter().all(|&(d, _)| d != 7));
    assert!(p.fetch_chunks().get(7));
    assert_eq!(p.bytes_to_fetch(), 2 * u64::from(CS));
    // Coalesced with its fetched neighbour.
    assert_eq!(
        p.fetch(),
        &[ByteRange {
            start: 7 * CS as u64,
            end: 9 * CS as u64
        }]
    );
    assert_eq!(p.demote(7), None, "already a fetch");
    assert_eq!(p.demote(99), None, "not in the image");
    assert_eq!(assemble(&p, &index, &active, &new), new);
}

#[test]
fn after_a_power_cut_only_missing_chunks_are_fetched() {
    let new = image(20 * 4096, 7);
    let index = index_of(&new, 4096);
    let p = plan(&index, &LocalChunks::new(), 1 << 20);
    let mut have = ChunkBitmap::for_index(&index);
    for i in (0..8).chain([12, 13]) {
        have.set(i).unwrap();
    }
    // The bitmap survives the persisted state.
    let have: ChunkBitmap = serde_json::from_str(&serde_json::to_string(&have).unwrap()).unwrap();
    let r = |a: u64, b: u64| ByteRange {
        start: a * 4096,
        end: b * 4096,
    };
    assert_eq!(p.remaining(&have).unwrap(), vec![r(8, 12), r(14, 20)]);
    let all = ChunkBitmap::for_index(&index);
    assert_eq!(p.remaining(&all).unwrap(), vec![r(0, 20)]);
    let other = ChunkBitmap::new(19).unwrap();
    let err = p.remaining(&other).unwrap_err();
    assert_eq!(
        err,
        BitmapError::LenMismatch {
            found: 19,
            expected: 20
        }
    );
    assert!(err.to_string().contains("19 chunks, the image has 20"));
}

#[test]
fn the_plan_carries_the_index_identity() {
    let new = image(3 * 4096, 8);
    let mut b = IndexBuilder::new(4096).unwrap();
    b.update(&new);
    let index = b.finish().unwrap();
    let p = plan(&index, &LocalChunks::new(), 1 << 20);
    assert_eq!(
        (p.chunk_size(), p.image_len(), p.chunk_count()),
        (4096, 3 * 4096, 3)
    );
    assert_eq!(p.image_sha256(), Sha256Digest::of(&new));
    assert_eq!(p.max_range(), 1 << 20);
}
