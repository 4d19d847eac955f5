//! Plans built on the device from ONNX, through trt-sys's test double whose
//! builder wraps the ONNX model and whose executor runs it with ONNX
//! Runtime: the cache key, the timing cache, rebuild after a bad plan, and
//! outputs equal to the ONNX Runtime engine's on the same input.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::path::{Path, PathBuf};

use nusa_engine::{BatchInput, EngineFactory, LoadHints};
use nusa_engine_ort::{init_library, OrtFactory, OrtOptions};
use nusa_engine_trt::{TrtFactory, TrtOptions};
use nusa_tensor::{DataType, TensorData};
use trt_sys::LibraryPaths;

fn demo_onnx() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../registry/demo/tiny-cnn/1/model.onnx")
}

/// A repository version directory holding only the demo model's ONNX.
fn version_dir(root: &Path) -> PathBuf {
    let dir = root.join("models/tiny-cnn/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(demo_onnx(), dir.join("model.onnx")).unwrap();
    dir
}

/// ONNX Runtime for the gateway's engine and for the double's executor.
fn ort() -> OrtFactory {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let configured = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo.join(format!(
                ".cache/onnxruntime/1.31.1-{}/libonnxruntime.so",
                std::env::consts::ARCH
            ))
        });
    let lib = init_library(Some(&configured)).unwrap();
    if std::env::var_os("NUSA_TRT_DOUBLE_ONNXRUNTIME").is_none() {
        // Set before the double first opens ONNX Runtime; the value is the
        // same for every test in this binary.
        std::env::set_var("NUSA_TRT_DOUBLE_ONNXRUNTIME", &lib);
    }
    OrtFactory::new(OrtOptions {
        intra_op_threads: 1,
        inter_op_threads: 1,
    })
    .unwrap()
}

fn trt(plan_dir: &Path) -> TrtFactory {
    TrtFactory::new(TrtOptions {
        libraries: LibraryPaths::all_from(trt_sys::test_double()),
        plan_dir: plan_dir.to_path_buf(),
        build: Default::default(),
        device: 0,
    })
    .unwrap()
}

fn hints(max_batch_size: usize) -> LoadHints {
    LoadHints {
        model: "tiny-cnn".into(),
        version: 1,
        max_batch_size,
    }
}

fn input(rows: usize) -> BatchInput {
    let x: Vec<u8> = (0..rows * 3 * 32 * 32)
        .flat_map(|i| (((i * 7) % 23) as f32 / 23.0).to_le_bytes())
        .collect();
    BatchInput {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![rows as i64, 3, 32, 32],
        parts: vec![TensorData::from(x)],
    }
}

fn plans_in(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in walk(dir) {
        if e.extension().is_some_and(|x| x == "plan") {
            found.push(e);
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn builds_caches_and_serves_what_onnx_runtime_serves() {
    let ort = ort();
    let tmp = tempfile::tempdir().unwrap();
    let dir = version_dir(tmp.path());
    let plans = tmp.path().join("plans");
    let f = trt(&plans);
    assert!(f.has_model(&dir));

    // Nothing built yet: the caller must build (and serve from the CPU).
    assert!(f.load_version(&dir, &hints(8)).unwrap().is_none());
    f.build_version(&dir, &hints(8)).unwrap();
    let built = plans_in(&plans);
    assert_eq!(built.len(), 1, "{built:?}");
    let key = std::fs::read_to_string(built[0].with_extension("toml")).unwrap();
    for part in [
        "onnx_sha256",
        "tensorrt = \"101600\"",
        "gpu = \"Nusa test double (host memory)\"",
        "compute_capability = \"8.7\"",
        "batch = \"1/8/8\"",
        "fp16 = \"true\"",
        "shim_abi = \"2\"",
    ] {
        assert!(key.contains(part), "{part} missing from {key}");
    }
    assert_eq!(
        std::fs::read(
            plans.join(
                walk(&plans)
                    .iter()
                    .find(|p| p.to_string_lossy().contains("timing-"))
                    .unwrap()
            )
        )
        .unwrap(),
        b"NUSATIMING 1\n"
    );

    let engine = f
        .load_version(&dir, &hints(8))
        .unwrap()
        .expect("the cached plan loads");
    assert_eq!(engine.metadata().platform, "tensorrt_plan");
    let reference = ort.load(&dir.join("model.onnx")).unwrap();
    assert_eq!(engine.metadata().inputs, reference.metadata().inputs);
    assert_eq!(engine.metadata().outputs, reference.metadata().outputs);
    // 11 rows: split into runs of at most 8 by the plan's profile.
    let got = engine.run(vec![input(11)]).await.unwrap();
    let want = reference.run(vec![input(11)]).await.unwrap();
    assert_eq!(got[0].shape, vec![11, 10]);
    assert_eq!(got[0].data.contiguous(), want[0].data.contiguous());

    // Another batch range is another plan; the timing cache feeds it.
    assert!(f.load_version(&dir, &hints(4)).unwrap().is_none());
    f.build_version(&dir, &hints(4)).unwrap();
    assert_eq!(plans_in(&plans).len(), 2);
    let timing = walk(&plans)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("timing-"))
        .unwrap();
    assert_eq!(std::fs::read(timing).unwrap(), b"NUSATIMING 2\n");
}

#[tokio::test]
async fn a_plan_that_does_not_load_is_rebuilt_and_a_shipped_one_is_used() {
    let _ort = ort();
    let tmp = tempfile::tempdir().unwrap();
    let dir = version_dir(tmp.path());
    let plans = tmp.path().join("plans");
    let f = trt(&plans);
    f.build_version(&dir, &hints(2)).unwrap();
    let plan = plans_in(&plans).remove(0);
    let good = std::fs::read(&plan).unwrap();

    // A torn plan: removed on load, so the caller builds again.
    std::fs::write(&plan, &good[..good.len() / 2]).unwrap();
    assert!(f.load_version(&dir, &hints(2)).unwrap().is_none());
    assert!(!plan.exists(), "the bad plan was removed");
    f.build_version(&dir, &hints(2)).unwrap();
    assert!(f.load_version(&dir, &hints(2)).unwrap().is_some());

    // A prebuilt model.plan next to no ONNX is used as shipped...
    let shipped = tmp.path().join("models/shipped/1");
    std::fs::create_dir_all(&shipped).unwrap();
    std::fs::write(shipped.join("model.plan"), &good).unwrap();
    let h = LoadHints {
        model: "shipped".into(),
        ..hints(2)
    };
    assert!(f.load_version(&shipped, &h).unwrap().is_some());
    // ...and one that does not load is an error naming why, unless ONNX is
    // there to build from.
    std::fs::write(shipped.join("model.plan"), b"garbage").unwrap();
    let e = f.load_version(&shipped, &h).err().unwrap().to_string();
    assert!(e.contains("deserializeCudaEngine"), "{e}");
    std::fs::copy(demo_onnx(), shipped.join("model.onnx")).unwrap();
    assert!(f.load_version(&shipped, &h).unwrap().is_none());

    // A directory with neither is no model for TensorRT.
    let empty = tmp.path().join("models/empty/1");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(!f.has_model(&empty));
    let e = f.load_version(&empty, &h).err().unwrap().to_string();
    assert!(e.contains("no model.plan or model.onnx"), "{e}");
}

#[test]
fn a_runtime_without_a_builder_serves_plans_only() {
    let _ort = ort();
    let tmp = tempfile::tempdir().unwrap();
    let dir = version_dir(tmp.path());
    let f = TrtFactory::new(TrtOptions {
        libraries: LibraryPaths {
            onnx_parser: vec![],
            ..LibraryPaths::all_from(trt_sys::test_double())
        },
        plan_dir: tmp.path().join("plans"),
        build: Default::default(),
        device: 0,
    })
    .unwrap();
    assert!(!f.can_build());
    assert!(!f.has_model(&dir));
    let e = f.load_version(&dir, &hints(2)).err().unwrap().to_string();
    assert!(e.contains("no builder"), "{e}");
}
