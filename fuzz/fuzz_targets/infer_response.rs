//! The infer response decoder used on regional answers
//! (`nusa-engine-remote`): with or without `Inference-Header-Content-Length`
//! (flags bit 3 leaves it out), binary outputs, fuzzer-chosen frames.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use nusa_proto::decode_infer_response;

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::split(data) else {
        return;
    };
    let header = (input.flags & 8 == 0).then_some(input.header.as_str());
    if let Ok(response) = decode_infer_response(header, input.body) {
        for t in &response.outputs {
            let _ = t.data.len();
        }
    }
});
