//! The v2 JSON infer request decoder: the whole body is the JSON request.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nusa_proto::{decode_infer_request, Frames};

fuzz_target!(|data: &[u8]| {
    let body = Frames::new([Bytes::copy_from_slice(data)]);
    if let Ok(request) = decode_infer_request(None, body, None) {
        for t in &request.inputs {
            let _ = t.data.len();
        }
    }
});
