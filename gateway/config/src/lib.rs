//! `nusad`'s configuration: one TOML file, every key documented in
//! `docs/config.md` and in the README, command-line flags on top.
//!
//! A bad file is one error naming the key (`limits.max_body_bytes: ...`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address: loopback only until an operator says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9465";
/// The largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub limits: Limits,
    pub onnxruntime: OnnxRuntime,
    pub tensorrt: TensorRt,
    pub cache: Cache,
    pub spill: Spill,
    /// Regional cloud endpoints that speak the Open Inference Protocol.
    pub regions: Vec<Region>,
    /// Signed models pulled from a model repository.
    pub models: Models,
    /// `[auth]`: who may call the public port.
    pub auth: Auth,
    /// `[pricing]`: what compute, regions and egress cost (`nusa-cost`).
    pub pricing: nusa_cost::Pricing,
    /// `[budgets]`: daily spend per key and per region, and what happens
    /// at 100% (`alert` or `stop-spill`).
    pub budgets: nusa_cost::Budgets,
    /// `[cost]`: the ledger's bounds (series, days kept).
    pub cost: nusa_cost::Bounds,
    /// `[rollout]`: the canary plan every rollout starts from (a model's
    /// `[rollout]`, a published policy and the operator's flags layer over
    /// it). Keys: see `nusa-rollout`'s README.
    pub rollout: nusa_rollout::PlanSpec,
    /// `[tracing]`: request traces to an OpenTelemetry collector, and
    /// the `Server-Timing` header.
    pub tracing: Tracing,
    /// `[drift]`: sampled summaries of inputs and outputs per model
    /// version, compared with a baseline (`nusa-drift`'s README).
    pub drift: nusa_drift::DriftConfig,
}

/// `[tracing]`: request traces exported over OTLP/HTTP (protobuf) to a
/// collector; off unless `otlp_endpoint` is set, and then every request
/// is recorded, a trace kept when sampled at the head (`sample_ratio`, or
/// the caller's `traceparent` flag), slower than its model's `slo_ms`, or
/// answered 5xx.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`;
    /// `/v1/traces` is added unless the URL has a path). Unset: off.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept at the head, 0 to 1, by trace id.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Headers sent with every export (a collector's API key).
    pub headers: BTreeMap<String, String>,
    /// PEM roots for an `https://` collector.
    pub ca: Option<PathBuf>,
    /// One export's limit.
    pub export_timeout_ms: u64,
    /// Kept spans waiting for the exporter, at most; more are dropped and
    /// counted (`nusa_trace_spans_dropped_total`).
    pub queue_spans: usize,
    /// Spans of unfinished requests held for the tail decision, at most
    /// (about 1 KiB each); the oldest traces are dropped past it.
    pub buffer_spans: usize,
    /// A `Server-Timing` header on every answer (cache, queue, compute,
    /// region, total).
    pub server_timing: bool,
}

impl Default for Tracing {
    fn default() -> Tracing {
        Tracing {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "nusad".into(),
            headers: BTreeMap::new(),
            ca: None,
            export_timeout_ms: 10_000,
            queue_spans: 8_192,
            buffer_spans: 16_384,
            server_timing: true,
        }
    }
}

/// `[models]`: with `repository` set, nusad serves only signed versions it
/// pulled from the model repository into `<data_dir>/models` (signed mode);
/// unset, it serves the folder `server.models` as it is (directory mode).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Models {
    /// `https://host/path` (a static server with Range, a mirror, a CDN) or
    /// a folder (`/media/usb/model-repo`, `file:///...`).
    pub repository: Option<String>,
    /// The model repository's root.json (shipped in the image).
    pub trusted_root: Option<PathBuf>,
    /// PEM roots for an HTTPS repository.
    pub ca: Option<PathBuf>,
    pub poll_interval_s: u64,
    /// Scheduled pulls only in this daily window, local time
    /// (`"01:00-05:00"`); unset: any time.
    pub pull_window: Option<String>,
    /// Download bandwidth cap, bytes per second; 0: none.
    pub max_bytes_per_second: u64,
    /// Installed versions kept per model.
    pub keep_versions: usize,
    /// Free bytes left on the data partition: a pull that would leave less waits.
    pub reserve_bytes: u64,
    /// Models to pull; empty: every published model.
    pub names: Vec<String>,
    /// The fleet's private model key (`nusactl models keygen`), which
    /// opens encrypted versions: a file of its own outside the model store,
    /// readable by its owner only (nusad refuses to start otherwise).
    /// Unset: encrypted versions are refused.
    pub decryption_key: Option<PathBuf>,
}

impl Default for Models {
    fn default() -> Models {
        Models {
            repository: None,
            trusted_root: None,
            ca: None,
            poll_interval_s: 300,
            pull_window: None,
            max_bytes_per_second: 0,
            keep_versions: 2,
            reserve_bytes: 1 << 30,
            names: Vec::new(),
            decryption_key: None,
        }
    }
}

/// The edge response cache's sizes (which models use it is per model).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Memory tier, bytes; 0 turns the cache off.
    pub memory_bytes: u64,
    /// Persistent tier in `data_dir/cache.redb`, bytes; 0: memory only.
    pub disk_bytes: u64,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            memory_bytes: 256 << 20,
            disk_bytes: 1 << 30,
        }
    }
}

/// When and how requests go to regions.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Spill {
    pub enabled: bool,
    /// Regions tried for one request before it is served here (or 503).
    pub max_tries: usize,
    /// Clients (addresses or CIDR prefixes) whose requests never leave
    /// this box.
    pub local_only_clients: Vec<String>,
    /// Health probes of each region, for its round trip and liveness.
    pub probe_interval_ms: u64,
}

impl Default for Spill {
    fn default() -> Spill {
        Spill {
            enabled: true,
            max_tries: 2,
            local_only_clients: Vec::new(),
            probe_interval_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Shown in `nusa-served-by: cloud:<name>` and metrics.
    pub name: String,
    /// Where the region runs (ISO 3166-1 alpha-2, upper case: `"SG"`), for
    /// residency. Unset: only requests whose residency is "any" go there.
    #[serde(default)]
    pub country: Option<String>,
    /// `https://host:port` of the region's Open Inference Protocol endpoint.
    pub url: String,
    /// PEM CA bundle that the region's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key for mutual TLS (both or neither).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Per try, connect to last byte.
    #[serde(default = "default_region_timeout")]
    pub timeout_ms: u64,
    /// Spend cap; 0 is none.
    #[serde(default)]
    pub requests_per_hour: u64,
    /// Spend cap on bytes sent plus received; 0 is none.
    #[serde(default)]
    pub bytes_per_hour: u64,
    #[serde(default = "default_region_response")]
    pub max_response_bytes: u64,
}

/// `nusa_spill::RegionSet::CAPACITY`: more regions could never be chosen.
const MAX_REGIONS: usize = 64;

fn default_region_timeout() -> u64 {
    2_000
}

fn default_region_response() -> u64 {
    64 << 20
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// TCP (HTTP/1.1, HTTP/2) and UDP (HTTP/3) on this one address.
    pub listen: SocketAddr,
    /// Prometheus metrics, plain HTTP; keep it on loopback or a private net.
    pub metrics_listen: SocketAddr,
    /// State: generated TLS material, the unpacked demo model.
    pub data_dir: PathBuf,
    /// Model repository; unset serves the bundled demo model.
    pub models: Option<PathBuf>,
    /// Advertise HTTP/3 in `Alt-Svc` on TCP responses.
    pub http3: bool,
    /// `ma` of the Alt-Svc advertisement, seconds.
    pub alt_svc_max_age_s: u64,
    /// Prometheus text files other processes write (the updater's
    /// progress), exported on the metrics port with the gateway's own.
    pub metrics_textfiles: Vec<PathBuf>,
    /// The admin listener (model repository API, pins, history): TLS with
    /// the gateway's certificate, every request with the admin token.
    /// `"off"` turns it off.
    pub admin_listen: String,
    /// The admin Unix socket `nusactl` uses (caller checked by uid).
    /// Unset: `<data_dir>/admin.sock`.
    pub admin_socket: Option<PathBuf>,
    /// Uids allowed on the admin socket besides root and nusad's own.
    pub admin_uids: Vec<u32>,
    /// The admin listener's bearer token. Unset: `<data_dir>/admin.token`,
    /// generated (256 random bits, mode 0600) at the first start.
    pub admin_token_file: Option<PathBuf>,
}

impl Server {
    /// The admin listener's address; `None` when it is `"off"`.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin_listen.trim() {
            "off" => Ok(None),
            a => a.parse().map(Some).map_err(|_| ConfigError::Invalid {
                key: "server.admin_listen",
                message: format!("{a:?} is not an address (like \"127.0.0.1:9465\") or \"off\""),
            }),
        }
    }

    pub fn admin_socket_path(&self) -> PathBuf {
        self.admin_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.sock"))
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }
}

/// `[auth]`: API keys on the public port.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// `"keys"`: every request but the health checks needs an API key (or
    /// a client certificate mapped to one); `"none"`: no check (logged as a
    /// warning at start). Unset: `"keys"` unless `server.listen` is on
    /// loopback, so a box reachable from the network is never open by
    /// default, and the demo on 127.0.0.1 stays open.
    pub mode: Option<AuthMode>,
    /// The key store (redb); default `data_dir/keys.redb`.
    pub keys: Option<PathBuf>,
    /// PEM CA certificates: client certificates chaining to them are
    /// verified and their subject maps to a key (`cert_subject`).
    pub client_ca: Option<PathBuf>,
    /// Keys provisioned with the box (TOML `[[keys]]`, each a key spec
    /// plus its `key` text from `nusactl keys generate`; mode 0600): each
    /// one whose name the store lacks is added at start, hashed. A missing
    /// file is no error.
    pub bootstrap_keys: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Keys,
    None,
}

impl Config {
    /// The auth mode in force: as set, else keys off loopback.
    pub fn auth_mode(&self) -> AuthMode {
        self.auth
            .mode
            .unwrap_or(if self.server.listen.ip().is_loopback() {
                AuthMode::None
            } else {
                AuthMode::Keys
            })
    }

    pub fn keys_path(&self) -> PathBuf {
        self.auth
            .keys
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("keys.redb"))
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; with `key`. Unset: a local CA and server
    /// certificate are generated once under `data_dir/tls`.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Accept TLS 1.3 early data (0-RTT) on TCP and QUIC. Only GET and HEAD
    /// are served from early data; anything else gets 425 Too Early.
    pub early_data: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body; a larger declared or received body gets 413.
    pub max_body_bytes: u64,
    /// Largest request header block (HTTP/1.1 buffer, HTTP/2 and HTTP/3
    /// header list size).
    pub max_header_bytes: u32,
    /// Concurrent streams per HTTP/2 or HTTP/3 connection.
    pub max_concurrent_streams: u32,
    /// Close a connection idle this long.
    pub idle_timeout_ms: u64,
    /// Give up on a request (reading the body to sending the answer) after
    /// this long: 408 while reading, 503 after.
    pub request_timeout_ms: u64,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OnnxRuntime {
    /// Path of libonnxruntime.so; unset: `ORT_DYLIB_PATH`, then the usual
    /// places (see the README).
    pub library: Option<PathBuf>,
    /// Threads per instance inside an operator.
    pub intra_op_threads: usize,
    /// Threads per instance across operators.
    pub inter_op_threads: usize,
}

/// TensorRT's builder settings and plan cache (libraries: `NUSA_TRT_*`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRt {
    /// Where plans built on this device are kept; unset: `data_dir/plans`.
    pub plan_dir: Option<PathBuf>,
    /// The builder's workspace memory limit, bytes.
    pub workspace_bytes: u64,
    /// Let the builder pick FP16 kernels where the GPU has fast FP16.
    pub fp16: bool,
    /// The CUDA device to run on.
    pub device: i32,
}

impl Default for TensorRt {
    fn default() -> TensorRt {
        TensorRt {
            plan_dir: None,
            workspace_bytes: 1 << 30,
            fp16: true,
            device: 0,
        }
    }
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: parse_addr(DEFAULT_LISTEN),
            metrics_listen: parse_addr(DEFAULT_METRICS_LISTEN),
            data_dir: PathBuf::from("nusa-data"),
            models: None,
            http3: true,
            alt_svc_max_age_s: 86_400,
            metrics_textfiles: vec![PathBuf::from("/run/nusa-update/metrics.prom")],
            admin_listen: DEFAULT_ADMIN_LISTEN.into(),
            admin_socket: None,
            admin_uids: Vec::new(),
            admin_token_file: None,
        }
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    // The defaults above are literal addresses.
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 64 << 20,
            max_header_bytes: 16 << 10,
            max_concurrent_streams: 128,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for OnnxRuntime {
    fn default() -> OnnxRuntime {
        OnnxRuntime {
            library: None,
            intra_op_threads: 1,
            inter_op_threads: 1,
        }
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Config {
    fn default() -> Config {
        Config {
            server: Server::default(),
            tls: Tls::default(),
            limits: Limits::default(),
            onnxruntime: OnnxRuntime::default(),
            tensorrt: TensorRt::default(),
            cache: Cache::default(),
            spill: Spill::default(),
            regions: Vec::new(),
            models: Models::default(),
            rollout: nusa_rollout::PlanSpec::default(),
            auth: Auth::default(),
            pricing: nusa_cost::Pricing::default(),
            budgets: nusa_cost::Budgets::default(),
            cost: nusa_cost::Bounds::default(),
            tracing: Tracing::default(),
            drift: nusa_drift::DriftConfig::default(),
        }
    }
}

/// A configuration problem, naming the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// A key whose name is built (`pricing.regions.sg-1.per_gb`).
    #[error("{key}: {message}")]
    Named { key: String, message: String },
    #[error("regions[{index}] ({name}): {message}")]
    Region {
        index: usize,
        name: String,
        message: String,
    },
}

/// Parses `addr/prefix`, or one address (a prefix of its full length).
pub fn parse_prefix(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // Bounded like every other read: a config is a few KiB.
        let text = nusa_fsutil::read_to_string_bounded(path, MAX_CONFIG_BYTES).map_err(|e| {
            ConfigError::Read {
                path: path.to_path_buf(),
                source: match e {
                    nusa_fsutil::ReadError::Io { source, .. } => source,
                    nusa_fsutil::ReadError::TooLarge { .. } => std::io::Error::other(format!(
                        "larger than {} KiB: not a configuration file",
                        MAX_CONFIG_BYTES >> 10
                    )),
                },
            }
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and checks a config file's text, as [`Config::load`] does once
    /// it has read the file (and as the `config` fuzz target does); `path`
    /// only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse(text).map_err(|e| match e {
            Parsed::Key { key, message } => ConfigError::Key {
                path: path.to_path_buf(),
                key,
                message,
            },
            Parsed::Syntax(message) => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
        })?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str) -> Result<Config, Parsed> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| Parsed::Syntax(one_line(&e.to_string())))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = one_line(&e.inner().to_string());
            if key == "." || key.is_empty() {
                Parsed::Syntax(message)
            } else {
                Parsed::Key { key, message }
            }
        })
    }

    /// Checks that hold across keys or need more than a type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.admin_addr()?;
        let names: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        let cost_checks = [
            self.pricing.check(),
            self.pricing.check_regions(names.iter().copied()),
            self.budgets.check(),
            self.budgets.check_regions(names.iter().copied()),
            self.cost.check(),
        ];
        for r in cost_checks {
            if let Err(e) = r {
                return Err(ConfigError::Named {
                    key: e.key,
                    message: e.message,
                });
            }
        }
        if let Err(e) = self.drift.check() {
            return Err(ConfigError::Named {
                key: format!("drift.{}", e.key),
                message: e.reason.to_string(),
            });
        }
        if let Err(e) = nusa_rollout::Plan::default().with(&self.rollout) {
            return Err(ConfigError::Invalid {
                key: "rollout",
                message: e.to_string(),
            });
        }
        if self.models.repository.is_some() {
            if self.models.trusted_root.is_none() {
                return Err(ConfigError::Invalid {
                    key: "models.trusted_root",
                    message: "models.repository needs the model repository's root.json".into(),
                });
            }
            if self.server.models.is_some() {
                return Err(ConfigError::Invalid {
                    key: "models.repository",
                    message: "set either models.repository (signed models) or server.models (a local folder), not both".into(),
                });
            }
            if self.models.keep_versions == 0 || self.models.poll_interval_s == 0 {
                return Err(ConfigError::Invalid {
                    key: "models.keep_versions",
                    message:
                        "models.keep_versions and models.poll_interval_s must be greater than 0"
                            .into(),
                });
            }
        }
        let l = &self.limits;
        let positive = [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_header_bytes", l.max_header_bytes as u64),
            (
                "limits.max_concurrent_streams",
                l.max_concurrent_streams as u64,
            ),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.request_timeout_ms", l.request_timeout_ms),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            (
                "onnxruntime.intra_op_threads",
                self.onnxruntime.intra_op_threads as u64,
            ),
            (
                "onnxruntime.inter_op_threads",
                self.onnxruntime.inter_op_threads as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(ConfigError::Invalid {
                key: "regions",
                message: format!(
                    "{} regions; at most {MAX_REGIONS} (a request's allowed regions are a 64-bit set)",
                    self.regions.len()
                ),
            });
        }
        for (i, r) in self.regions.iter().enumerate() {
            let bad = |message: String| ConfigError::Region {
                index: i,
                name: r.name.clone(),
                message,
            };
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad("name must be letters, digits, '-' or '_'".into()));
            }
            if self.regions[..i].iter().any(|o| o.name == r.name) {
                return Err(bad("name is used twice".into()));
            }
            if !r.url.starts_with("https://") {
                return Err(bad(format!(
                    "url must start with https://, got '{}'",
                    r.url
                )));
            }
            if r.client_cert.is_some() != r.client_key.is_some() {
                return Err(bad("client_cert and client_key must be set together".into()));
            }
            if r.timeout_ms == 0 {
                return Err(bad("timeout_ms must be greater than 0".into()));
            }
            if let Some(c) = &r.country {
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(bad(format!(
                        "country must be an ISO 3166-1 alpha-2 code in upper case (\"SG\"), got '{c}'"
                    )));
                }
            }
        }
        for c in &self.spill.local_only_clients {
            if parse_prefix(c).is_none() {
                return Err(ConfigError::Invalid {
                    key: "spill.local_only_clients",
                    message: format!("'{c}' is not an address or an address/prefix"),
                });
            }
        }
        let t = &self.tracing;
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(ConfigError::Invalid {
                key: "tracing.sample_ratio",
                message: format!("{} is not between 0 and 1", t.sample_ratio),
            });
        }
        if t.otlp_endpoint
            .as_deref()
            .is_some_and(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Err(ConfigError::Invalid {
                key: "tracing.otlp_endpoint",
                message: "must be an http:// or https:// URL (OTLP over HTTP, like http://127.0.0.1:4318)".into(),
            });
        }
        if t.service_name.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "tracing.service_name",
                message: "must not be empty".into(),
            });
        }
        for (key, v) in [
            ("tracing.export_timeout_ms", t.export_timeout_ms),
            ("tracing.queue_spans", t.queue_spans as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert",
                message: "tls.cert and tls.key must be set together".into(),
            });
        }
        Ok(())
    }
}

enum Parsed {
    Key { key: String, message: String },
    Syntax(String),
}

/// toml's messages quote the offending line over several lines; the first
/// line says what is wrong.
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // Keep the first line and the final explanation (after the snippet).
    match (lines.first(), lines.last()) {
        (Some(first), Some(last))
            if first != last && !last.starts_with('|') && !last.starts_with('^') =>
        {
            format!("{first} {last}")
        }
        (Some(first), _) => first.to_string(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::parse(text) {
            Ok(c) => c
                .validate()
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string()),
            Err(Parsed::Key { key, message }) => format!("{key}: {message}"),
            Err(Parsed::Syntax(m)) => format!("syntax: {m}"),
        }
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_parsed() {
        let dir = std::env::temp_dir().join(format!("nusa-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.toml");
        // A valid file, padded with a comment past the bound.
        let text = format!("[server]\n#{}\n", "x".repeat(MAX_CONFIG_BYTES as usize));
        std::fs::write(&path, text).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        std::fs::write(&path, "[server]\n# small\n").unwrap();
        Config::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn regions_and_prefixes() {
        let c = Config::parse(
            "[spill]\nlocal_only_clients = [\"10.0.0.0/8\", \"::1\"]\n[[regions]]\nname = \"sg-1\"\nurl = \"https://sg1:8443\"\nca = \"/ca.pem\"\n",
        )
        .ok()
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.regions[0].timeout_ms, 2_000);
        assert_eq!(
            parse_prefix("10.0.0.0/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(parse_prefix(" ::1 "), Some("::1/128".parse().unwrap()));
        assert!(parse_prefix("10.0.0.0/33").is_none());
        assert!(parse_prefix("10.0.0.0/").is_none());
        let e = err("[[regions]]\nname = \"a\"\nurl = \"http://x\"\nca = \"/c\"\n");
        assert!(e.starts_with("regions[0] (a): url"), "{e}");
        let e = err("[[regions]]\nname = \"a\"\nurl = \"https://x\"\n");
        assert!(e.contains("ca"), "{e}");
        let e = err("[spill]\nlocal_only_clients = [\"nope\"]\n");
        assert!(e.starts_with("spill.local_only_clients"), "{e}");
    }

    #[test]
    fn region_countries() {
        let region = |name: &str, country: &str| {
            format!("[[regions]]\nname = \"{name}\"\nurl = \"https://{name}:8443\"\nca = \"/ca.pem\"\n{country}")
        };
        let c = Config::parse(&(region("sg-1", "country = \"SG\"\n") + &region("any-1", "")))
            .ok()
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.regions[0].country.as_deref(), Some("SG"));
        assert_eq!(c.regions[1].country, None, "optional");
        for bad in ["sg", "SGP", "S", "", "S1"] {
            let e = err(&(region("id-1", "country = \"ID\"\n")
                + &region("sg-1", &format!("country = \"{bad}\"\n"))));
            assert!(e.starts_with("regions[1] (sg-1): country "), "{bad}: {e}");
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        let e = err(&region("sg-1", "country = 65\n"));
        assert!(e.contains("country"), "{e}");
        let many: String = (0..65).map(|i| region(&format!("r{i}"), "")).collect();
        let e = err(&many);
        assert!(e.starts_with("regions: 65 regions; at most 64"), "{e}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").ok(), Some(Config::default()));
    }

    #[test]
    fn keys_are_read() {
        let c = Config::parse(
            "[server]\nlisten = \"0.0.0.0:443\"\nmodels = \"/m\"\n[limits]\nmax_body_bytes = 10\n[tls]\nearly_data = true\n",
        )
        .ok()
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(c.server.models.as_deref(), Some(Path::new("/m")));
        assert_eq!(c.limits.max_body_bytes, 10);
        assert!(c.tls.early_data);
    }

    #[test]
    fn tracing_is_off_until_an_endpoint_is_set() {
        let c = Config::parse("").ok().unwrap();
        assert_eq!(c.tracing.otlp_endpoint, None);
        assert!(c.tracing.server_timing);
        let c = Config::parse(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.01\nservice_name = \"edge-7\"\nserver_timing = false\n[tracing.headers]\nx-api-key = \"k\"\n",
        )
        .ok()
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.tracing.sample_ratio, 0.01);
        assert_eq!(c.tracing.headers["x-api-key"], "k");
        assert!(!c.tracing.server_timing);
        for (text, key) in [
            ("sample_ratio = 1.5", "tracing.sample_ratio: "),
            ("sample_ratio = -0.1", "tracing.sample_ratio: "),
            (
                "otlp_endpoint = \"collector:4317\"",
                "tracing.otlp_endpoint: ",
            ),
            ("service_name = \" \"", "tracing.service_name: "),
            ("queue_spans = 0", "tracing.queue_spans: "),
            ("export_timeout_ms = 0", "tracing.export_timeout_ms: "),
            ("sample_rate = 1", "tracing.sample_rate: "),
        ] {
            let e = err(&format!("[tracing]\n{text}\n"));
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("[limits]\nmax_body_bytes = \"big\"\n");
        assert!(e.starts_with("limits.max_body_bytes: "), "{e}");
        assert!(!e.contains('\n'));
        let e = err("[limits]\nmax_body_byte = 1\n");
        assert!(
            e.contains("max_body_byte") && e.contains("unknown field"),
            "{e}"
        );
        let e = err("[server]\nlisten = \"nowhere\"\n");
        assert!(e.starts_with("server.listen: "), "{e}");
        let e = err("[limits]\nmax_body_bytes = 0\n");
        assert_eq!(e, "limits.max_body_bytes: must be greater than 0");
        let e = err("[tls]\ncert = \"/c.pem\"\n");
        assert!(e.starts_with("tls.cert: "), "{e}");
        let e = err("[server\n");
        assert!(e.starts_with("syntax: "), "{e}");
    }
}
