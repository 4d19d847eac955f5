#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing
//! The ONNX Runtime engine against the real library and the demo model.
//! `scripts/fetch-onnxruntime` puts the library where these tests look.

use std::path::{Path, PathBuf};

use nusa_engine::{BatchInput, EngineFactory};
use nusa_engine_ort::{init_library, OrtFactory, OrtOptions};
use nusa_tensor::{DataType, TensorData};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn factory() -> OrtFactory {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo().join(format!(
                ".cache/onnxruntime/1.31.1-{}/libonnxruntime.so",
                std::env::consts::ARCH
            ))
        });
    init_library(Some(&lib)).expect("run scripts/fetch-onnxruntime first");
    OrtFactory::new(OrtOptions::default()).unwrap()
}

fn image(seed: u32) -> Vec<u8> {
    // A deterministic pseudo-random image in [0, 1).
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..3 * 32 * 32)
        .flat_map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s % 10_000) as f32 / 10_000.0).to_le_bytes()
        })
        .collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn input(parts: Vec<Vec<u8>>) -> BatchInput {
    let rows = parts
        .iter()
        .map(|p| p.len() / (3 * 32 * 32 * 4))
        .sum::<usize>();
    BatchInput {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![rows as i64, 3, 32, 32],
        parts: parts.into_iter().map(TensorData::from).collect(),
    }
}

#[tokio::test]
async fn batched_rows_equal_single_rows() {
    let f = factory();
    let engine = f
        .load(&repo().join("gateway/registry/demo/tiny-cnn/1/model.onnx"))
        .unwrap();
    let meta = engine.metadata();
    assert_eq!(meta.platform, "onnxruntime_onnx");
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].shape, vec![-1, 3, 32, 32]);
    assert_eq!(meta.outputs[0].name, "probs");
    assert_eq!(meta.outputs[0].shape, vec![-1, 10]);
    assert!(meta.batchable());

    // Three requests' rows, the middle one split over two segments as a
    // body split over two frames would be.
    let (a, b, c) = (image(1), image(2), image(3));
    let split = TensorData::new(vec![b[..1000].to_vec().into(), b[1000..].to_vec().into()]);
    let mut batch = input(vec![a.clone(), vec![], c.clone()]);
    batch.parts[1] = split;
    batch.shape[0] = 3;
    let out = engine.run(vec![batch]).await.unwrap();
    assert_eq!(out[0].shape, vec![3, 10]);
    let all = floats(&out[0].data.contiguous());
    for (row, img) in [a, b, c].into_iter().enumerate() {
        let one = engine.run(vec![input(vec![img])]).await.unwrap();
        let want = floats(&one[0].data.contiguous());
        let got = &all[row * 10..row * 10 + 10];
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "row {row}: {got:?} vs {want:?}");
        }
        assert!(
            (want.iter().sum::<f32>() - 1.0).abs() < 1e-4,
            "softmax rows sum to 1"
        );
    }
}

#[tokio::test]
async fn engine_errors_are_reported_not_panics() {
    let f = factory();
    let engine = f
        .load(&repo().join("gateway/registry/demo/tiny-cnn/1/model.onnx"))
        .unwrap();
    let mut bad = input(vec![image(1)]);
    // Same element count, but 4 channels where the first Conv takes 3.
    bad.shape = vec![1, 4, 32, 24];
    let err = engine.run(vec![bad]).await.unwrap_err();
    assert!(err.to_string().contains("input"), "{err}");
    // The instance still serves.
    assert!(engine.run(vec![input(vec![image(4)])]).await.is_ok());

    let missing = f.load(Path::new("/nonexistent/model.onnx"));
    assert!(matches!(
        missing,
        Err(nusa_engine::EngineError::Load { .. })
    ));
}
