//! The negative control for the drop-order check in `double.rs`: the test
//! double does count a parent destroyed before its child. A binary of its
//! own, since the counter is process-wide.
#![allow(unsafe_code)] // trt-sys tests reach into the double directly
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::ptr;

use trt_sys::bindings;

#[test]
fn the_double_counts_a_runtime_destroyed_before_its_engine() {
    // SAFETY: the double implements nusa_trt.h; the entry points are the
    // double's own stand-ins, loaded from the same file; every out pointer is
    // a local.
    unsafe {
        let path = trt_sys::test_double();
        let shim = bindings::NusaTrtShim::new(path).unwrap();
        let lib = libloading::Library::new(path).unwrap();
        let violations: libloading::Symbol<unsafe extern "C" fn() -> std::os::raw::c_long> =
            lib.get(b"nusa_double_order_violations\0").unwrap();
        macro_rules! sym {
            ($name:literal) => {
                Some(*lib.get(concat!($name, "\0").as_bytes()).unwrap())
            };
        }
        let entry = bindings::nusa_trt_entry_points {
            create_infer_runtime: sym!("createInferRuntime_INTERNAL"),
            get_infer_lib_version: sym!("getInferLibVersion"),
            create_infer_builder: None,
            create_onnx_parser: None,
            get_onnx_parser_version: None,
            cuda_malloc: sym!("cudaMalloc"),
            cuda_free: sym!("cudaFree"),
            cuda_memcpy_async: sym!("cudaMemcpyAsync"),
            cuda_stream_create: sym!("cudaStreamCreate"),
            cuda_stream_synchronize: sym!("cudaStreamSynchronize"),
            cuda_stream_destroy: sym!("cudaStreamDestroy"),
            cuda_device_get_attribute: sym!("cudaDeviceGetAttribute"),
            cuda_runtime_get_version: sym!("cudaRuntimeGetVersion"),
            cuda_get_error_string: sym!("cudaGetErrorString"),
            cuda_get_device_properties: sym!("cudaGetDeviceProperties_v2"),
        };
        let mut err = bindings::nusa_trt_error {
            status: 0,
            message: [0; 512],
        };
        let mut h = ptr::null_mut();
        assert_eq!(
            shim.nusa_trt_open(&entry, None, ptr::null_mut(), &mut h, &mut err),
            0
        );
        let mut rt = ptr::null_mut();
        assert_eq!(shim.nusa_trt_runtime_create(h, &mut rt, &mut err), 0);
        let plan = b"NUSAPLAN1\ninput x FLOAT 1\noutput y FLOAT 1\n";
        let mut engine = ptr::null_mut();
        assert_eq!(
            shim.nusa_trt_engine_deserialize(
                rt,
                plan.as_ptr().cast(),
                plan.len(),
                &mut engine,
                &mut err
            ),
            0
        );
        assert_eq!(violations(), 0);
        shim.nusa_trt_runtime_destroy(rt); // wrong order, on purpose
        assert_eq!(violations(), 1);
        // The engine now points at a freed runtime; leak it rather than touch it.
        shim.nusa_trt_close(h);
    }
}
