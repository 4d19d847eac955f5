//! Metrics in Prometheus text format. The families are fixed here so that
//! their names and labels are one list the docs can point to.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;
pub use prometheus_client;

pub mod recent;
pub mod samples;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    outcome: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    model: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    model: String,
    version: String,
    engine: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

fn latency_buckets() -> Histogram {
    // 50us .. ~26s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn batch_buckets() -> Histogram {
    Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<PhaseLabels, Histogram, Buckets>,
    batch_size: Family<ModelLabels, Histogram, Buckets>,
    queue_depth: Family<ModelLabels, Gauge>,
    isolation_runs: Family<ModelLabels, Counter>,
    engine: Family<EngineLabels, Gauge>,
    ready: Family<ModelLabels, Gauge>,
    slo: Family<ModelLabels, FloatGauge>,
    fs_avail: Family<PathLabels, Gauge>,
    fs_size: Family<PathLabels, Gauge>,
    certificates: Family<CertificateLabels, Gauge>,
    textfiles: Mutex<Vec<PathBuf>>,
    /// Folders whose filesystem's space is read at each scrape, one per
    /// filesystem (the first folder named on it).
    filesystems: Mutex<Vec<(PathBuf, u64)>>,
}

/// A textfile's samples and comments; anything that is not a metric or
/// comment line (or an `# EOF`) is left out. A file over 64 KiB is left
/// out whole: cut short, it could end in half a sample.
fn textfile(path: &Path) -> Option<String> {
    let text = nusa_fsutil::read_to_string_bounded(path, 64 << 10).ok()?;
    let mut out = String::new();
    for line in text.lines() {
        let metric = line
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if (metric || line.starts_with("# ")) && !line.starts_with("# EOF") {
            out.push_str(line);
            out.push('\n');
        }
    }
    Some(out)
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("nusa");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::new_with_constructor(Buckets(latency_buckets));
        let batch_size = Family::new_with_constructor(Buckets(batch_buckets));
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        let isolation_runs = Family::<ModelLabels, Counter>::default();
        let engine = Family::<EngineLabels, Gauge>::default();
        let ready = Family::<ModelLabels, Gauge>::default();
        let slo = Family::<ModelLabels, FloatGauge>::default();
        let fs_avail = Family::<PathLabels, Gauge>::default();
        let fs_size = Family::<PathLabels, Gauge>::default();
        let certificates = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "requests",
            "Inference requests by model, outcome and protocol (http1, http2, http3)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Inference request latency by phase: queue (waiting for a batch), compute (the batch on the engine), total (received to answered)",
            duration.clone(),
        );
        registry.register(
            "batch_size",
            "Rows per batch run on an engine",
            batch_size.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting in a model's batching queue",
            queue_depth.clone(),
        );
        registry.register(
            "batch_isolation_runs",
            "Engine runs made after a batch of several requests failed, to find the requests that fail alone and answer the others (the batch is halved until each failing request runs by itself)",
            isolation_runs.clone(),
        );
        registry.register(
            "model_engine",
            "1 for the engine each model version runs on now, with why: configured, auto_plan (TensorRT, a plan was there or built), auto_no_tensorrt, auto_no_plan, building (ONNX Runtime serves while the TensorRT plan builds), build_failed",
            engine.clone(),
        );
        registry.register(
            "model_ready",
            "1 when the model serves (a version loaded and no load error), 0 when it does not (/v2/health/ready answers 503 then); a model unloaded through the repository API has no series",
            ready.clone(),
        );
        registry.register(
            "model_slo_seconds",
            "The model's latency objective (slo_ms in its config.toml); a model without one has no series",
            slo.clone(),
        );
        registry.register(
            "filesystem_avail_bytes",
            "Bytes free for nusad on the filesystem of a folder it writes (the model store, the model state), read at each scrape; one series per filesystem",
            fs_avail.clone(),
        );
        registry.register(
            "filesystem_size_bytes",
            "Size in bytes of the filesystem of a folder nusad writes, read at each scrape",
            fs_size.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate nusad serves stops being valid (its notAfter), in seconds since the Unix epoch",
            certificates.clone(),
        );
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            requests,
            duration,
            batch_size,
            queue_depth,
            isolation_runs,
            engine,
            ready,
            slo,
            fs_avail,
            fs_size,
            certificates,
            textfiles: Mutex::new(Vec::new()),
            filesystems: Mutex::new(Vec::new()),
        })
    }

    /// Lets another crate register its own families (the cache's, the
    /// spill decision's) in the one registry this endpoint exposes. Names
    /// get the `nusa_` prefix.
    pub fn register_with(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock());
    }

    /// Also exports the families another process writes to `path` in
    /// Prometheus text (the updater's progress), read at each scrape.
    pub fn add_textfile(&self, path: PathBuf) {
        self.textfiles.lock().push(path);
    }

    /// Exports the free and total bytes of the filesystem `path` is on
    /// (`nusa_filesystem_avail_bytes`, `nusa_filesystem_size_bytes`), read
    /// at each scrape. A folder on a filesystem already watched adds
    /// nothing; one that does not exist (yet), or is on a read-only
    /// filesystem (a model folder on the root image: never "full"), is not
    /// watched.
    pub fn watch_filesystem(&self, path: &Path) {
        use nix::sys::statvfs::{statvfs, FsFlags};
        use std::os::unix::fs::MetadataExt;
        let Ok(dev) = std::fs::metadata(path).map(|m| m.dev()) else {
            return;
        };
        if statvfs(path).map_or(true, |st| st.flags().contains(FsFlags::ST_RDONLY)) {
            return;
        }
        let mut watched = self.filesystems.lock();
        if !watched.iter().any(|(_, d)| *d == dev) {
            watched.push((path.to_path_buf(), dev));
        }
    }

    /// Reads the watched filesystems' space into their gauges; a
    /// filesystem that cannot be read loses its series until it can.
    fn refresh_filesystems(&self) {
        for (path, _) in self.filesystems.lock().iter() {
            let labels = PathLabels {
                path: path.display().to_string(),
            };
            match nix::sys::statvfs::statvfs(path) {
                Ok(st) => {
                    let block = u128::from(st.fragment_size());
                    let bytes =
                        |blocks: u64| i64::try_from(u128::from(blocks) * block).unwrap_or(i64::MAX);
                    self.fs_avail
                        .get_or_create(&labels)
                        .set(bytes(st.blocks_available()));
                    self.fs_size.get_or_create(&labels).set(bytes(st.blocks()));
                }
                Err(_) => {
                    self.fs_avail.remove(&labels);
                    self.fs_size.remove(&labels);
                }
            }
        }
    }

    /// Records when the certificate `name` (`server`: the one the public
    /// and admin listeners serve) stops being valid, in Unix seconds.
    pub fn tls_certificate(&self, name: &str, not_after_unix: i64) {
        self.certificates
            .get_or_create(&CertificateLabels {
                certificate: name.to_string(),
            })
            .set(not_after_unix);
    }

    /// Records whether a model serves (`None`: unloaded on purpose, no
    /// series) and its latency objective (`None`: no series).
    pub fn model_state(&self, model: &str, ready: Option<bool>, slo_seconds: Option<f64>) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        match ready {
            Some(ready) => {
                self.ready.get_or_create(&labels).set(i64::from(ready));
            }
            None => {
                self.ready.remove(&labels);
            }
        }
        match slo_seconds {
            Some(s) => {
                self.slo.get_or_create(&labels).set(s);
            }
            None => {
                self.slo.remove(&labels);
            }
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        self.refresh_filesystems();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry.lock());
        let extra: String = self
            .textfiles
            .lock()
            .iter()
            .filter_map(|p| textfile(p))
            .collect();
        if !extra.is_empty() {
            // Before OpenMetrics' closing line, which must stay last.
            let at = out.rfind("# EOF").unwrap_or(out.len());
            out.insert_str(at, &extra);
        }
        out
    }

    /// Records the engine a model version now runs on; the series of the
    /// engine it ran on before goes.
    pub fn model_engine(
        &self,
        model: &str,
        version: u64,
        engine: &'static str,
        reason: &'static str,
        previous: Option<(&'static str, &'static str)>,
    ) {
        let labels = |engine, reason| EngineLabels {
            model: model.to_string(),
            version: version.to_string(),
            engine,
            reason,
        };
        if let Some((e, r)) = previous {
            self.engine.remove(&labels(e, r));
        }
        self.engine.get_or_create(&labels(engine, reason)).set(1);
    }

    /// Removes a version's engine series (the version was unloaded).
    pub fn forget_model_engine(
        &self,
        model: &str,
        version: u64,
        engine: &'static str,
        reason: &'static str,
    ) {
        self.engine.remove(&EngineLabels {
            model: model.to_string(),
            version: version.to_string(),
            engine,
            reason,
        });
    }

    pub fn request(&self, model: &str, outcome: &str, protocol: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_string(),
                outcome: outcome.to_string(),
                protocol: protocol.to_string(),
            })
            .inc();
    }

    pub fn total_latency(&self, model: &str, seconds: f64) {
        self.phase(model, "total", seconds);
    }

    /// Handles for one model, cheap to clone and to record into.
    pub fn model(&self, model: &str) -> ModelMetrics {
        let m = ModelLabels {
            model: model.to_string(),
        };
        let phase = |phase| {
            self.duration
                .get_or_create(&PhaseLabels {
                    model: model.to_string(),
                    phase,
                })
                .clone()
        };
        ModelMetrics {
            queue: phase("queue"),
            compute: phase("compute"),
            batch_size: self.batch_size.get_or_create(&m).clone(),
            queue_depth: self.queue_depth.get_or_create(&m).clone(),
            isolation_runs: self.isolation_runs.get_or_create(&m).clone(),
        }
    }

    fn phase(&self, model: &str, phase: &'static str, seconds: f64) {
        self.duration
            .get_or_create(&PhaseLabels {
                model: model.to_string(),
                phase,
            })
            .observe(seconds);
    }
}

/// Per-model metric handles for the scheduler.
#[derive(Clone)]
pub struct ModelMetrics {
    pub queue: Histogram,
    pub compute: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    /// Engine runs made to isolate the failing requests of a failed batch.
    pub isolation_runs: Counter,
}

impl ModelMetrics {
    /// Handles registered nowhere, for tests and tools.
    pub fn detached() -> ModelMetrics {
        ModelMetrics {
            queue: latency_buckets(),
            compute: latency_buckets(),
            batch_size: batch_buckets(),
            queue_depth: Gauge::default(),
            isolation_runs: Counter::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_appear_in_the_text() {
        let m = Metrics::new();
        m.request("tiny-cnn", "ok", "http2");
        let mm = m.model("tiny-cnn");
        mm.batch_size.observe(3.0);
        mm.queue_depth.set(2);
        m.total_latency("tiny-cnn", 0.001);
        let text = m.encode();
        assert!(
            text.contains(
                r#"nusa_requests_total{model="tiny-cnn",outcome="ok",protocol="http2"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"nusa_batch_size_sum{model="tiny-cnn"} 3.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"nusa_queue_depth{model="tiny-cnn"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"nusa_request_duration_seconds_count{model="tiny-cnn",phase="total"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn textfiles_join_the_text_before_eof_and_only_metric_lines_pass() {
        let dir = std::env::temp_dir().join(format!("nusa-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("update.prom");
        std::fs::write(
            &file,
            "# TYPE nusa_update_bytes gauge\nnusa_update_bytes{kind=\"done\"} 42\n<html>oops\n# EOF\n",
        )
        .unwrap();
        let m = Metrics::new();
        m.add_textfile(file.clone());
        m.add_textfile(dir.join("missing.prom"));
        let text = m.encode();
        let at = text
            .find(r#"nusa_update_bytes{kind="done"} 42"#)
            .expect(&text);
        assert!(!text.contains("<html>"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.rfind("# EOF").unwrap() > at, "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn model_state_and_certificate_series() {
        let m = Metrics::new();
        m.model_state("a", Some(true), Some(0.05));
        m.model_state("b", Some(false), None);
        m.tls_certificate("server", 1_900_000_000);
        let text = m.encode();
        for want in [
            r#"nusa_model_ready{model="a"} 1"#,
            r#"nusa_model_ready{model="b"} 0"#,
            r#"nusa_model_slo_seconds{model="a"} 0.05"#,
            r#"nusa_tls_certificate_expiry_timestamp_seconds{certificate="server"} 1900000000"#,
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        assert!(
            !text.contains(r#"nusa_model_slo_seconds{model="b"}"#),
            "{text}"
        );
        // Unloaded: neither series stays.
        m.model_state("a", None, None);
        let text = m.encode();
        assert!(!text.contains(r#"{model="a"}"#), "{text}");
    }

    #[test]
    fn a_filesystem_is_watched_once_and_read_at_each_scrape() {
        let m = Metrics::new();
        let dir = std::env::temp_dir();
        m.watch_filesystem(&dir);
        // The same filesystem again, and a folder that is not there.
        m.watch_filesystem(&dir.join("."));
        m.watch_filesystem(Path::new("/nonexistent/nusa-telemetry"));
        let text = m.encode();
        let avail: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("nusa_filesystem_avail_bytes{"))
            .collect();
        assert_eq!(avail.len(), 1, "{text}");
        let value = |line: &str| line.rsplit(' ').next().unwrap().parse::<i64>().unwrap();
        let size = text
            .lines()
            .find(|l| l.starts_with("nusa_filesystem_size_bytes{"))
            .expect(&text);
        assert!(value(size) > 0 && value(avail[0]) <= value(size), "{text}");
    }
}
