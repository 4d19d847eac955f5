//! The TensorRT engine through trt-sys's test double (host memory as
//! "device", y = 2x + 1 as the "model"): metadata, a batch gathered from
//! request parts, a batch split along the profile, error mapping, and the
//! missing-library path.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::path::PathBuf;

use nusa_engine::{BatchInput, EngineError, EngineFactory, TensorSpec};
use nusa_engine_trt::{TrtFactory, TrtOptions};
use nusa_tensor::{DataType, TensorData};
use trt_sys::LibraryPaths;

fn plan_file(tag: &str, plan: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("nusa-engine-trt-{tag}-{}", std::process::id()))
        .join("demo/1");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.plan");
    std::fs::write(&path, plan).unwrap();
    path
}

fn factory() -> TrtFactory {
    TrtFactory::new(options(LibraryPaths::all_from(trt_sys::test_double()))).unwrap()
}

fn options(libraries: LibraryPaths) -> TrtOptions {
    TrtOptions {
        libraries,
        plan_dir: std::env::temp_dir()
            .join(format!("nusa-engine-trt-plans-{}", std::process::id())),
        build: Default::default(),
        device: 0,
    }
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn from_floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn batch(rows: usize) -> (Vec<f32>, BatchInput) {
    let x: Vec<f32> = (0..rows * 4).map(|i| i as f32).collect();
    // Two request parts, as the scheduler hands them over.
    let cut = (rows / 2) * 16;
    let bytes = floats(&x);
    let parts = vec![
        TensorData::from(bytes[..cut].to_vec()),
        TensorData::from(bytes[cut..].to_vec()),
    ];
    (
        x,
        BatchInput {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![rows as i64, 4],
            parts,
        },
    )
}

#[tokio::test]
async fn serves_a_plan_with_metadata_and_batches() {
    let path = plan_file(
        "run",
        "NUSAPLAN1\ninput x FLOAT -1 4\noutput y FLOAT -1 4\nprofile 1 4 8\n",
    );
    let f = factory();
    assert_eq!(f.model_file(), "model.plan");
    let engine = f.load(&path).unwrap();
    let m = engine.metadata();
    assert_eq!(m.platform, "tensorrt_plan");
    assert_eq!(
        m.inputs,
        vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 4]
        }]
    );
    assert_eq!(m.outputs[0].name, "y");

    let (x, input) = batch(3);
    let out = engine.run(vec![input]).await.unwrap();
    assert_eq!(out[0].shape, vec![3, 4]);
    let want: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
    assert_eq!(from_floats(&out[0].data.contiguous()), want);
}

#[tokio::test]
async fn batches_beyond_the_profile_are_split_and_joined() {
    let path = plan_file(
        "split",
        "NUSAPLAN1\ninput x FLOAT -1 4\noutput y FLOAT -1 4\nprofile 1 2 2\n",
    );
    let engine = factory().load(&path).unwrap();
    let (x, input) = batch(5);
    let out = engine.run(vec![input]).await.unwrap();
    assert_eq!(out[0].shape, vec![5, 4]);
    let want: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
    assert_eq!(from_floats(&out[0].data.contiguous()), want);
}

#[tokio::test]
async fn refusals_map_to_engine_errors() {
    let path = plan_file(
        "errors",
        "NUSAPLAN1\ninput x FLOAT -1 4\noutput y FLOAT -1 4\nprofile 1 4 8\n",
    );
    let engine = factory().load(&path).unwrap();
    let (_, mut input) = batch(2);
    input.shape = vec![3, 4]; // bytes for 2 rows
    assert!(matches!(
        engine.run(vec![input]).await,
        Err(EngineError::Input(_))
    ));

    let garbage = plan_file("garbage", "not a plan");
    match factory().load(&garbage) {
        Err(EngineError::Load { message, .. }) => {
            assert!(message.contains("deserializeCudaEngine"), "{message}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a garbage plan loaded"),
    }
}

#[test]
fn without_tensorrt_the_factory_says_which_library_is_missing() {
    let paths = LibraryPaths {
        nvinfer: vec!["/nonexistent/libnvinfer.so.10".into()],
        ..LibraryPaths::all_from(trt_sys::test_double())
    };
    match TrtFactory::new(options(paths)) {
        Err(EngineError::Library(m)) => {
            assert!(m.contains("TensorRT (libnvinfer) library not found"), "{m}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded without libnvinfer"),
    }
}

#[test]
fn without_a_gpu_the_factory_says_so() {
    let mut o = options(LibraryPaths::all_from(trt_sys::test_double()));
    o.device = 3; // the double has device 0 only
    match TrtFactory::new(o) {
        Err(EngineError::Library(m)) => assert!(m.contains("no usable GPU"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded without a GPU"),
    }
}
