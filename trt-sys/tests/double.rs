//! trt-sys end to end against the test double of our C ABI
//! (`testdouble/nusa_trt_double.c`): the same loading path, handles and
//! instance thread as with TensorRT, with host memory as "device" and
//! y = 2x + 1 as the "model".
#![allow(unsafe_code)] // trt-sys tests reach into the double directly
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::collections::HashMap;
use std::path::PathBuf;

use trt_sys::{
    BuildOptions, Context, DataType, DeviceBuffer, Engine, HostTensor, Instance, IoMode,
    LibraryPaths, LoadError, ProfileRange, Runtime, Status, Stream, Trt,
};

const PLAN: &str = "NUSAPLAN1\n\
input x FLOAT -1 4\n\
input ids INT64 -1 2\n\
output y FLOAT -1 4\n\
output ids_out INT64 -1 2\n\
profile 1 4 8\n";

fn trt() -> Trt {
    Trt::load(&LibraryPaths::all_from(trt_sys::test_double())).expect("load the test double")
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn from_floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn violations() -> i64 {
    // SAFETY: the double exports this function with this signature.
    unsafe {
        let lib = libloading::Library::new(trt_sys::test_double()).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn() -> std::os::raw::c_long> =
            lib.get(b"nusa_double_order_violations\0").unwrap();
        f()
    }
}

#[test]
fn loads_symbols_and_reports_versions() {
    let trt = trt();
    let v = trt.version().unwrap();
    assert_eq!(v.abi, 2);
    assert_eq!(v.tensorrt_library, 101600);
    assert_eq!(v.onnx_parser, 101600);
    assert_eq!(v.cuda_runtime, 12080);
    assert_eq!(trt.compute_capability(0).unwrap(), (8, 7));
    assert_eq!(
        trt.device_name(0).unwrap(),
        "Nusa test double (host memory)"
    );
    let before = trt.log_messages();
    let _rt = Runtime::new(&trt).unwrap();
    assert!(
        trt.log_messages() > before,
        "the logger callback reached Rust"
    );
}

#[test]
fn lists_io_with_datatypes_shapes_and_profile() {
    let inst = Instance::spawn(trt(), PLAN.as_bytes().to_vec(), "io").unwrap();
    let io = &inst.info().io;
    let summary: Vec<_> = io
        .iter()
        .map(|t| (t.name.as_str(), t.mode, t.data_type, t.shape.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("x", IoMode::Input, DataType::Float, vec![-1, 4]),
            ("ids", IoMode::Input, DataType::Int64, vec![-1, 2]),
            ("y", IoMode::Output, DataType::Float, vec![-1, 4]),
            ("ids_out", IoMode::Output, DataType::Int64, vec![-1, 2]),
        ]
    );
    assert_eq!(
        inst.info().profiles[0],
        (
            "x".to_owned(),
            ProfileRange {
                min: vec![1, 4],
                opt: vec![4, 4],
                max: vec![8, 4]
            }
        )
    );
}

fn inputs(batch: i64) -> Vec<HostTensor> {
    let n = usize::try_from(batch).unwrap();
    let x: Vec<f32> = (0..n * 4).map(|i| i as f32).collect();
    let ids: Vec<u8> = (0..n as i64 * 2)
        .flat_map(|i| (i * 1000).to_le_bytes())
        .collect();
    vec![
        HostTensor {
            name: "x".into(),
            data_type: DataType::Float,
            shape: vec![batch, 4],
            data: floats(&x),
        },
        HostTensor {
            name: "ids".into(),
            data_type: DataType::Int64,
            shape: vec![batch, 2],
            data: ids,
        },
    ]
}

#[test]
fn runs_batches_on_the_instance_thread() {
    let inst = Instance::spawn(trt(), PLAN.as_bytes().to_vec(), "run").unwrap();
    // Growing then shrinking batches reuse and regrow the device buffers.
    for batch in [2, 8, 1] {
        let input = inputs(batch);
        let out = inst.run_blocking(input.clone()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].name.as_str(), out[0].data_type, out[0].shape.clone()),
            ("y", DataType::Float, vec![batch, 4])
        );
        let want: Vec<f32> = from_floats(&input[0].data)
            .iter()
            .map(|x| 2.0 * x + 1.0)
            .collect();
        assert_eq!(from_floats(&out[0].data), want);
        assert_eq!(
            (out[1].name.as_str(), out[1].shape.clone()),
            ("ids_out", vec![batch, 2])
        );
        assert_eq!(out[1].data, input[1].data);
    }
}

#[test]
fn checks_buffers_shapes_and_datatypes() {
    let inst = Instance::spawn(trt(), PLAN.as_bytes().to_vec(), "checks").unwrap();

    let mut short = inputs(2);
    short[0].data.pop();
    let e = inst.run_blocking(short).unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument);
    assert!(e.message.contains("input x: 31 bytes"), "{e}");

    let mut missing = inputs(2);
    missing.remove(1);
    let e = inst.run_blocking(missing).unwrap_err();
    assert!(e.message.contains("input ids missing"), "{e}");

    let mut wrong_type = inputs(2);
    wrong_type[0].data_type = DataType::Half;
    let e = inst.run_blocking(wrong_type).unwrap_err();
    assert!(e.message.contains("Half, the engine takes Float"), "{e}");

    // Outside the profile: TensorRT's refusal comes back with its message.
    let e = inst.run_blocking(inputs(9)).unwrap_err();
    assert_eq!(e.status, Status::TensorRt);
    assert!(
        e.message.contains("outside the optimization profile"),
        "{e}"
    );

    // The instance still serves after every refusal.
    inst.run_blocking(inputs(3)).unwrap();
}

#[test]
fn a_garbage_plan_is_refused_with_tensorrts_reason() {
    let trt = trt();
    let before = trt.log_messages();
    let e = Instance::spawn(trt.clone(), b"not a plan".to_vec(), "garbage")
        .err()
        .unwrap();
    assert_eq!(e.status, Status::TensorRt);
    assert!(e.message.contains("deserializeCudaEngine failed"), "{e}");
    assert!(
        trt.log_messages() > before,
        "the error was logged through the callback"
    );
}

#[test]
fn cuda_errors_carry_cudas_message() {
    let trt = trt();
    let e = DeviceBuffer::new(&trt, 1 << 40).err().unwrap();
    assert_eq!(e.status, Status::Cuda);
    assert!(
        e.message.contains("cudaMalloc failed: out of memory (2)"),
        "{e}"
    );

    let stream = Stream::new(&trt).unwrap();
    let mut buf = DeviceBuffer::new(&trt, 16).unwrap();
    assert_eq!(
        buf.round_trip(&stream, b"0123456789abcdef").unwrap(),
        b"0123456789abcdef"
    );
    assert_eq!(
        buf.round_trip(&stream, &[0; 17]).unwrap_err().status,
        Status::InvalidArgument
    );
}

#[test]
fn handles_outlive_their_owners_in_any_drop_order() {
    let trt = trt();
    let runtime = Runtime::new(&trt).unwrap();
    let engine = Engine::deserialize(&runtime, PLAN.as_bytes()).unwrap();
    let mut context = Context::new(&engine).unwrap();
    let stream = Stream::new(&trt).unwrap();
    // Owners go first; the context must keep engine and runtime alive.
    drop(trt);
    drop(runtime);
    drop(engine);
    context.set_input_shape("x", &[2, 4]).unwrap();
    assert_eq!(context.tensor_shape("y").unwrap(), vec![2, 4]);
    let mut buffers = HashMap::new();
    let x = floats(&[1.0; 8]);
    let ids = vec![0u8; 32];
    let out = context
        .run(
            &stream,
            &mut buffers,
            &[("x", &[2, 4], &x), ("ids", &[2, 2], &ids)],
        )
        .unwrap();
    assert_eq!(from_floats(&out[0].2), vec![3.0; 8]);
    drop(context);
    drop(buffers);
    drop(stream);

    let inst = Instance::spawn(self::trt(), PLAN.as_bytes().to_vec(), "drop").unwrap();
    inst.run_blocking(inputs(1)).unwrap();
    drop(inst);
    assert_eq!(
        violations(),
        0,
        "a parent was destroyed before its children"
    );
}

/// The demo model, and ONNX Runtime for the double to run it with.
fn demo_model() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    ONCE.call_once(|| {
        if std::env::var_os("NUSA_TRT_DOUBLE_ONNXRUNTIME").is_none() {
            let lib = std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    root.join(format!(
                        ".cache/onnxruntime/1.31.1-{}/libonnxruntime.so",
                        std::env::consts::ARCH
                    ))
                });
            assert!(
                lib.is_file(),
                "ONNX Runtime not at {}: run scripts/fetch-onnxruntime",
                lib.display()
            );
            // Set once, before any test opens ONNX Runtime through the double.
            std::env::set_var("NUSA_TRT_DOUBLE_ONNXRUNTIME", lib);
        }
    });
    root.join("gateway/registry/demo/tiny-cnn/1/model.onnx")
}

#[test]
fn builds_a_plan_from_onnx_and_runs_the_model() {
    let trt = trt();
    let options = BuildOptions {
        onnx: demo_model(),
        profile: vec![],
        batch: (1, 4, 8),
        workspace_bytes: 1 << 30,
        fp16: true,
        timing_cache: None,
    };
    let built = trt.build_from_onnx(&options).unwrap();
    assert!(built.plan.starts_with(b"NUSAPLAN2\n"));
    let timing = built.timing_cache.clone().expect("a timing cache");
    assert_eq!(timing, b"NUSATIMING 1\n");
    // The timing cache goes back in and comes out fed by one more build.
    let again = trt
        .build_from_onnx(&BuildOptions {
            timing_cache: Some(timing),
            ..options.clone()
        })
        .unwrap();
    assert_eq!(again.timing_cache.unwrap(), b"NUSATIMING 2\n");
    assert_eq!(
        again.plan, built.plan,
        "same model, same settings, same plan"
    );

    let inst = Instance::spawn(trt.clone(), built.plan, "tiny-cnn").unwrap();
    let io = &inst.info().io;
    assert_eq!(io[0].name, "input");
    assert_eq!(io[0].shape, vec![-1, 3, 32, 32]);
    assert_eq!(io[1].name, "probs");
    assert_eq!(io[1].shape, vec![-1, 10]);
    assert_eq!(inst.info().profiles[0].1.max, vec![8, 3, 32, 32]);
    assert_eq!(inst.info().profiles[0].1.opt, vec![4, 3, 32, 32]);

    let x: Vec<f32> = (0..2 * 3 * 32 * 32)
        .map(|i| (i % 17) as f32 / 17.0)
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    inst.submit(
        vec![HostTensor {
            name: "input".into(),
            data_type: DataType::Float,
            shape: vec![2, 3, 32, 32],
            data: floats(&x),
        }],
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .map_err(|_| "instance stopped")
    .unwrap();
    let out = rx.recv().unwrap().unwrap();
    assert_eq!(out[0].name, "probs");
    assert_eq!(out[0].shape, vec![2, 10]);
    let p = from_floats(&out[0].data);
    for row in p.chunks(10) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "softmax row sums to {sum}");
    }
    assert_ne!(p[..10], p[10..], "rows differ with their inputs");
}

#[test]
fn builder_errors_are_clear() {
    let trt = trt();
    let options = BuildOptions {
        onnx: demo_model(),
        profile: vec![],
        batch: (1, 4, 8),
        workspace_bytes: 0,
        fp16: false,
        timing_cache: None,
    };
    let e = trt
        .build_from_onnx(&BuildOptions {
            onnx: PathBuf::from("/nonexistent.onnx"),
            ..options.clone()
        })
        .unwrap_err();
    assert_eq!(e.status, Status::TensorRt);
    assert!(e.message.contains("/nonexistent.onnx"), "{e}");

    let e = trt
        .build_from_onnx(&BuildOptions {
            batch: (4, 2, 8),
            ..options.clone()
        })
        .unwrap_err();
    assert_eq!(e.status, Status::InvalidArgument);
    assert!(e.message.contains("min <= opt <= max"), "{e}");

    let dir = std::env::temp_dir().join(format!("trt-sys-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("model.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    let e = trt
        .build_from_onnx(&BuildOptions {
            onnx: garbage,
            ..options.clone()
        })
        .unwrap_err();
    assert_eq!(e.status, Status::TensorRt);
    assert!(e.message.contains("parsing the ONNX model"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A runtime-only install (no parser): building says what is missing.
    let lean = LibraryPaths {
        onnx_parser: vec![],
        ..LibraryPaths::all_from(trt_sys::test_double())
    };
    let e = Trt::load(&lean)
        .unwrap()
        .build_from_onnx(&options)
        .unwrap_err();
    assert_eq!(e.status, Status::Unavailable);
    assert!(e.message.contains("create_onnx_parser"), "{e}");
}

#[test]
fn missing_libraries_and_symbols_are_clear_errors() {
    let double = LibraryPaths::all_from(trt_sys::test_double());

    let e = Trt::load(&LibraryPaths {
        nvinfer: vec!["/nonexistent/libnvinfer.so.10".into()],
        ..double.clone()
    })
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            LoadError::Library {
                what: "TensorRT (libnvinfer)",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("/nonexistent/libnvinfer.so.10"),
        "{e}"
    );

    let e = Trt::load(&LibraryPaths {
        cudart: vec![],
        ..double.clone()
    })
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("CUDA runtime (libcudart) library not found"),
        "{e}"
    );

    let e = Trt::load(&LibraryPaths {
        shim: vec!["/nonexistent/libnusa_trt_shim.so".into()],
        ..double.clone()
    })
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("nusa_trt shim library not found"),
        "{e}"
    );

    // Libraries that open but are not what they claim to be.
    let e = Trt::load(&LibraryPaths {
        shim: vec!["libm.so.6".into()],
        ..double.clone()
    })
    .err()
    .unwrap();
    assert!(matches!(e, LoadError::Shim { .. }), "{e}");
    assert!(e.to_string().contains("nusa_trt_"), "{e}");
    let e = Trt::load(&LibraryPaths {
        cudart: vec!["libm.so.6".into()],
        ..double
    })
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            LoadError::Symbol {
                symbol: "cudaMalloc",
                ..
            }
        ),
        "{e}"
    );
}
