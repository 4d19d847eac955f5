//! A model version's golden files (`tests/*.json`): the JSON, then the
//! request and expected answer through the protocol decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nusa_goldens::parse("fuzz.json", data);
});
