//! The edge cache's stored-record codec as the disk tier reads a record
//! from redb (checksum under the key, then the parser): the first 32 bytes
//! are the key, the rest the record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((key, record)) = data.split_first_chunk::<32>() else {
        return;
    };
    let _ = nusa_cache::fuzz_decode_record(*key, record);
});
