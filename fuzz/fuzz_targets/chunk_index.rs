//! The OTA chunk index (NUSA-CIX) parser, and what the updater does next
//! with an index it accepted: the download plan and the ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nusa_ota_core::chunk::{plan, ChunkBitmap, ChunkIndex, LocalChunks};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = ChunkIndex::parse(data) else {
        return;
    };
    // Exactly one encoding per index: what parsed writes back the same.
    assert_eq!(index.to_bytes(), data);
    let last = index.chunk_count() - 1;
    assert!(index.chunk_range(last).is_some());
    assert!(index.chunk_range(last + 1).is_none());
    let p = plan(
        &index,
        &LocalChunks::from_index(&index),
        u64::from(index.chunk_size()) * 4,
    );
    let _ = p.remaining(&ChunkBitmap::for_index(&index));
});
