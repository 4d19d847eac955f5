//! The binary-extension decoder: `Inference-Header-Content-Length` (a
//! number, or any string), `binary_data_size` sections after the JSON, the
//! body in fuzzer-chosen frames, and the sole-input form (header length 0)
//! when flags bit 3 is set.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use nusa_proto::{decode_infer_request, SoleInput};
use nusa_tensor::DataType;

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::split(data) else {
        return;
    };
    let datatype = DataType::ALL[usize::from(input.flags >> 4) % DataType::ALL.len()];
    let shape = [i64::from(input.flags >> 4) - 1, 2];
    let sole = (input.flags & 8 != 0).then_some(SoleInput {
        name: "x",
        datatype,
        shape: &shape[..usize::from(input.flags >> 7) + 1],
    });
    let _ = decode_infer_request(Some(&input.header), input.body, sole);
});
