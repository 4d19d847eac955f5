//! The check for a GPU machine without a TensorRT install: loads the shim,
//! the lean TensorRT runtime and the CUDA runtime from given paths, prints
//! the versions and the GPU's compute capability, creates a runtime, checks
//! that a garbage plan is refused cleanly, and does a CUDA memory round
//! trip. `scripts/check-tensorrt-lean` prepares the libraries and runs it.
//!
//! Usage: check_lean SHIM LIBNVINFER_LEAN LIBCUDART
//!        check_lean --print-shim   (the shim this build compiled)

use std::process::ExitCode;

use trt_sys::{DeviceBuffer, Engine, LibraryPaths, Runtime, Stream, Trt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print-shim") {
        return match trt_sys::built_shim() {
            Some(p) => {
                println!("{}", p.display());
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("this build has no shim: TensorRT headers were not found");
                ExitCode::FAILURE
            }
        };
    }
    let [shim, nvinfer, cudart] = args.as_slice() else {
        eprintln!("usage: check_lean SHIM LIBNVINFER_LEAN LIBCUDART");
        return ExitCode::from(64);
    };
    match run(shim, nvinfer, cudart) {
        Ok(()) => {
            println!("check_lean: all checks passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("check_lean: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(shim: &str, nvinfer: &str, cudart: &str) -> Result<(), Box<dyn std::error::Error>> {
    let paths = LibraryPaths {
        shim: vec![shim.into()],
        nvinfer: vec![nvinfer.into()],
        onnx_parser: vec![],
        cudart: vec![cudart.into()],
    };
    let trt = Trt::load(&paths)?;
    println!(
        "loaded: shim {} tensorrt {}",
        trt.shim_path(),
        trt.tensorrt_path()
    );
    println!("versions: {:?}", trt.version()?);
    println!(
        "compute capability of GPU 0: {:?}",
        trt.compute_capability(0)?
    );
    // cudaGetDeviceProperties read through a buffer larger than any
    // cudaDeviceProp: the plan cache key's GPU name.
    println!("name of GPU 0: {:?}", trt.device_name(0));
    let runtime = Runtime::new(&trt)?;
    println!(
        "runtime created; TensorRT logged {} messages so far",
        trt.log_messages()
    );
    match Engine::deserialize(&runtime, b"this is not a TensorRT plan") {
        Ok(_) => return Err("a garbage plan deserialized".into()),
        Err(e) => println!("garbage plan refused: {e}"),
    }
    let stream = Stream::new(&trt)?;
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut buf = DeviceBuffer::new(&trt, data.len())?;
    let back = buf.round_trip(&stream, &data)?;
    if back != data {
        return Err("the CUDA round trip changed the bytes".into());
    }
    println!("CUDA round trip of {} bytes: identical", data.len());
    Ok(())
}
