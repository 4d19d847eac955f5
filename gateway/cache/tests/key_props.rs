//! Property tests of the cache key: the same tensors sent as JSON or with
//! the binary extension (split across any frames) give one key; the model,
//! the version and the version's file digest always give other keys.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use bytes::Bytes;
use nusa_cache::CacheKey;
use nusa_proto::{decode_infer_request, Frames};
use proptest::prelude::*;

fn json_body(values: &[f32], rows: usize) -> Vec<u8> {
    let cols = values.len() / rows;
    serde_json::json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, cols], "data": values}]})
        .to_string()
        .into_bytes()
}

/// The binary extension's body, cut into frames at `cuts`.
fn binary_frames(values: &[f32], rows: usize, cuts: &[usize]) -> (Vec<Bytes>, String) {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let cols = values.len() / rows;
    let header =
        serde_json::json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, cols],
        "parameters": {"binary_data_size": raw.len()}}]})
        .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        frames.push(Bytes::copy_from_slice(&body[at..c.max(at)]));
        at = c.max(at);
    }
    frames.push(Bytes::copy_from_slice(&body[at..]));
    (frames, header.len().to_string())
}

fn key(model: &str, version: u64, digest: &[u8; 32], req: &nusa_proto::InferRequest) -> CacheKey {
    CacheKey::compute(model, version, digest, None, &req.inputs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_and_binary_encodings_of_one_tensor_share_a_key(
        rows in 1usize..4,
        cols in 1usize..6,
        seed in proptest::collection::vec(-1.0e6f32..1.0e6, 24),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
    ) {
        let values: Vec<f32> = seed.iter().copied().take(rows * cols).collect();
        prop_assume!(values.len() == rows * cols);
        let json = decode_infer_request(None, Frames::new([Bytes::from(json_body(&values, rows))]), None).unwrap();
        let (frames, hlen) = binary_frames(&values, rows, &cuts);
        let binary = decode_infer_request(Some(&hlen), Frames::new(frames), None).unwrap();
        let d = [3u8; 32];
        prop_assert_eq!(key("m", 1, &d, &json), key("m", 1, &d, &binary));
    }

    #[test]
    fn model_version_and_files_never_share_a_key(
        a in ("[a-z]{1,6}", 1u64..1000, any::<[u8; 32]>()),
        b in ("[a-z]{1,6}", 1u64..1000, any::<[u8; 32]>()),
        values in proptest::collection::vec(-10.0f32..10.0, 4),
    ) {
        prop_assume!(a != b);
        let req = decode_infer_request(None, Frames::new([Bytes::from(json_body(&values, 1))]), None).unwrap();
        prop_assert_ne!(key(&a.0, a.1, &a.2, &req), key(&b.0, b.1, &b.2, &req));
    }
}
