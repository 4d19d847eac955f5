//! A real gateway started in this process as the region, and the ONNX
//! Runtime engine run locally on the same model to compare with.
//!
//! ONNX Runtime can be initialised once per process, so every test shares
//! one region, started on first use on a runtime thread of its own (each
//! `#[tokio::test]` has its own runtime, which ends with the test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nusa_engine::{Engine, EngineFactory};

pub struct Region {
    pub addr: SocketAddr,
    /// The CA the region generated for itself.
    pub ca: PathBuf,
}

impl Region {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo().join(format!(
                ".cache/onnxruntime/1.31.1-{}/libonnxruntime.so",
                std::env::consts::ARCH
            ))
        })
}

pub fn region() -> &'static Region {
    static REGION: OnceLock<Region> = OnceLock::new();
    REGION.get_or_init(|| {
        let mut config = nusa_config::Config::default();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.metrics_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.data_dir = crate::certs::scratch("region");
        config.server.models = None;
        config.server.http3 = false;
        config.onnxruntime.library = Some(ort_library());

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("region".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    // Held for as long as the region serves: the process.
                    let (_stop, shutdown) = tokio::sync::watch::channel(false);
                    let bound_tx = tx.clone();
                    let result = nusa_app::run(config, shutdown, move |b| {
                        let _ = bound_tx.send(Ok(b.clone()));
                    })
                    .await;
                    let _ = tx.send(Err(format!("the region stopped: {result:?}")));
                });
            })
            .unwrap();
        let bound = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the region did not start in time")
            .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-onnxruntime first?)"));
        Region {
            addr: bound.listen,
            ca: bound.ca_cert.expect("a generated CA"),
        }
    })
}

/// tiny-cnn loaded locally. The region initialised the library already.
pub fn local_engine() -> Box<dyn Engine> {
    region();
    let factory = nusa_engine_ort::OrtFactory::new(nusa_engine_ort::OrtOptions::default()).unwrap();
    factory
        .load(&repo().join("gateway/registry/demo/tiny-cnn/1/model.onnx"))
        .unwrap()
}

/// A deterministic pseudo-random image in [0, 1), one row of tiny-cnn.
pub fn image(seed: u32) -> Vec<u8> {
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

pub fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
