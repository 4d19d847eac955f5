//! Wires the gateway's crates together from one [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nusa_api::{Access, Api};
use nusa_cache::{Cache, CacheConfig, CacheMetrics};
use nusa_canary::Canaries;
use nusa_config::{AuthMode, Config};
use nusa_dispatch::{DispatchConfig, DispatchMetrics, Dispatcher};
use nusa_engine_ort::{init_library, OrtFactory, OrtOptions};
use nusa_engine_remote::{RegionClient, RegionConfig};
use nusa_ingress::{load_or_generate, AdminConfig, AdminIngress, IngressConfig, Limits};
use nusa_registry::{materialize_demo, Engines, Repository};
use nusa_spill::{Region, RegionLimits, Spill};
use nusa_telemetry::Metrics;
use tokio::sync::watch;

mod reload;
pub use reload::{ConfigSource, ReloadFrom};

/// How long open requests may run on after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    OnnxRuntime(#[from] nusa_engine_ort::LibraryError),
    #[error("ONNX Runtime engine: {0}")]
    Engine(#[from] nusa_engine_ort::EngineErrorWrap),
    #[error(transparent)]
    Registry(#[from] nusa_registry::RegistryError),
    #[error(transparent)]
    Tls(#[from] nusa_ingress::TlsError),
    #[error(transparent)]
    Ingress(#[from] nusa_ingress::IngressError),
    #[error("admin API: {0}")]
    Admin(String),
    #[error("signed models: {0}")]
    Models(String),
    #[error("region {name}: {message}")]
    Region { name: String, message: String },
}

/// The cache, the regions and the spill decision from the config.
fn dispatcher(
    config: &Config,
    data: &std::path::Path,
    metrics: &Arc<Metrics>,
) -> Result<Dispatcher, AppError> {
    let cache = (config.cache.memory_bytes > 0).then(|| {
        Cache::open(
            CacheConfig {
                memory_bytes: config.cache.memory_bytes,
                disk_bytes: config.cache.disk_bytes,
                disk_path: (config.cache.disk_bytes > 0).then(|| data.join("cache.redb")),
            },
            CacheMetrics::new(metrics),
        )
    });
    let mut clients = Vec::new();
    let mut regions = Vec::new();
    for r in &config.regions {
        let client = RegionClient::new(RegionConfig {
            name: r.name.clone(),
            url: r.url.clone(),
            ca_bundle: r.ca.clone(),
            client_cert: r.client_cert.clone(),
            client_key: r.client_key.clone(),
            timeout: Duration::from_millis(r.timeout_ms),
            max_response_bytes: r.max_response_bytes,
        })
        .map_err(|e| AppError::Region {
            name: r.name.clone(),
            message: e.to_string(),
        })?;
        clients.push(Arc::new(client));
        regions.push(
            Region::new(
                r.name.clone(),
                RegionLimits {
                    requests_per_hour: r.requests_per_hour,
                    bytes_per_hour: r.bytes_per_hour,
                    ..RegionLimits::default()
                },
            )
            .in_country(r.country.clone()),
        );
    }
    let local_only_clients = config
        .spill
        .local_only_clients
        .iter()
        .filter_map(|c| nusa_config::parse_prefix(c))
        .collect();
    Ok(Dispatcher::new(
        cache,
        Spill::new(regions),
        clients,
        DispatchConfig {
            spill_enabled: config.spill.enabled,
            max_tries: config.spill.max_tries,
            local_only_clients,
        },
        DispatchMetrics::new(metrics),
    ))
}

/// Adds the keys provisioned with the box (`auth.bootstrap_keys`) that
/// the store lacks. The file holds keys in the clear: refused unless only
/// its owner may read it. Its key texts reach no log or error.
/// Returns how many were added.
fn bootstrap_keys(store: &nusa_auth::KeyStore, path: &std::path::Path) -> Result<usize, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} may be read by others (mode {:o}): it holds keys; chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = nusa_fsutil::read_to_string_bounded(path, 1 << 20).map_err(|e| e.to_string())?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        keys: Vec<toml::Table>,
    }
    // The parser's messages could quote a line: say only where.
    let file: File = toml::from_str(&text).map_err(|e| {
        format!(
            "{}: not a [[keys]] file ({})",
            path.display(),
            e.span()
                .map_or("?".into(), |s| format!("at byte {}", s.start))
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut added = 0;
    for (i, mut entry) in file.keys.into_iter().enumerate() {
        let key = match entry.remove("key") {
            Some(toml::Value::String(k)) => zeroize::Zeroizing::new(k),
            _ => return Err(format!("{}: keys[{i}] has no 'key' text", path.display())),
        };
        let spec: nusa_auth::KeySpec = toml::Value::Table(entry)
            .try_into()
            .map_err(|e| format!("{}: keys[{i}]: {}", path.display(), e.message()))?;
        if store.get(&spec.name).is_some() {
            continue;
        }
        let name = spec.name.clone();
        let record = store
            .import(spec, &key, now)
            .map_err(|e| format!("{}: keys[{i}]: {e}", path.display()))?;
        tracing::info!(key = %name, prefix = %record.id, file = %path.display(), "API key added from the provisioned keys");
        added += 1;
    }
    Ok(added)
}

/// With budgets configured, their `stop-spill` action guards the spill
/// decision. Only then: without any, the guard would take the ledger's
/// lock for every region of every request to answer "yes". Installed once
/// (at start, or by the first reload that brings budgets).
fn guard_spills(
    dispatch: &Dispatcher,
    costs: &Arc<nusa_cost::Costs>,
    budgets: &nusa_cost::Budgets,
) {
    if !budgets.keys.is_empty() || !budgets.regions.is_empty() {
        let c = Arc::clone(costs);
        dispatch.set_spill_guard(Arc::new(move |key, region| c.may_spill(key, region)));
    }
}

/// Signed mode's puller settings and admission, when `models.repository`
/// is set.
fn signed_models(
    config: &Config,
    data: &std::path::Path,
) -> Result<
    Option<(
        nusa_model_pull::PullConfig,
        Arc<nusa_model_pull::SignedAdmission>,
    )>,
    AppError,
> {
    let m = &config.models;
    let (Some(repository), Some(trusted_root)) = (&m.repository, &m.trusted_root) else {
        return Ok(None);
    };
    let window = m
        .pull_window
        .as_deref()
        .map(str::parse::<nusa_model_pull::core::Window>)
        .transpose()
        .map_err(|e| AppError::Models(format!("models.pull_window: {e}")))?;
    let pull = nusa_model_pull::PullConfig {
        repository: repository.clone(),
        trusted_root: trusted_root.clone(),
        ca: m.ca.clone(),
        datastore: data.join("model-state").join("tuf"),
        store: data.join("models"),
        poll_interval: Duration::from_secs(m.poll_interval_s),
        max_bytes_per_second: m.max_bytes_per_second,
        policy: nusa_model_pull::core::Policy {
            window,
            keep_versions: m.keep_versions,
            reserve_bytes: m.reserve_bytes,
            models: m.names.iter().cloned().collect(),
        },
        key_id: None,
    };
    Ok(Some((
        pull,
        Arc::new(nusa_model_pull::SignedAdmission::new()),
    )))
}

/// The TensorRT engine when its libraries and a GPU are here; otherwise why
/// not, for models whose `engine` is `auto` (they then use ONNX Runtime) or
/// `tensorrt` (they then do not load).
///
/// Library candidates come from trt-sys's defaults, each list overridable
/// with a colon-separated environment variable: `NUSA_TRT_SHIM`,
/// `NUSA_TRT_NVINFER`, `NUSA_TRT_ONNX_PARSER`, `NUSA_TRT_CUDART`.
fn tensorrt(
    config: &Config,
    data: &std::path::Path,
) -> Result<Arc<dyn nusa_engine::EngineFactory>, String> {
    let mut paths = trt_sys::LibraryPaths::default();
    for (var, list) in [
        ("NUSA_TRT_SHIM", &mut paths.shim),
        ("NUSA_TRT_NVINFER", &mut paths.nvinfer),
        ("NUSA_TRT_ONNX_PARSER", &mut paths.onnx_parser),
        ("NUSA_TRT_CUDART", &mut paths.cudart),
    ] {
        if let Some(v) = std::env::var_os(var) {
            *list = std::env::split_paths(&v).collect();
        }
    }
    let t = &config.tensorrt;
    let factory = nusa_engine_trt::TrtFactory::new(nusa_engine_trt::TrtOptions {
        libraries: paths,
        plan_dir: t.plan_dir.clone().unwrap_or_else(|| data.join("plans")),
        build: nusa_engine_trt::plans::BuildSettings {
            workspace_bytes: t.workspace_bytes,
            fp16: t.fp16,
        },
        device: t.device,
    })
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(factory))
}

/// Addresses the gateway ended up on (ports may have been 0), and what it
/// serves.
#[derive(Clone, Debug)]
pub struct Bound {
    pub listen: SocketAddr,
    /// HTTP/3; `None` with `server.http3` off.
    pub quic: Option<SocketAddr>,
    pub metrics: SocketAddr,
    /// The admin listener (`None`: off) and socket.
    pub admin: Option<SocketAddr>,
    pub admin_socket: PathBuf,
    pub ca_cert: Option<PathBuf>,
    /// Models found in the repository, and how many of them loaded.
    pub models: usize,
    pub models_ready: usize,
}

/// Sockets bound by someone else (systemd's socket activation); each one
/// replaces binding the address the config gives for it.
#[derive(Debug, Default)]
pub struct Listeners {
    /// HTTPS (HTTP/1.1, HTTP/2) instead of `server.listen` on TCP.
    pub https: Option<std::net::TcpListener>,
    /// HTTP/3 instead of `server.listen` on UDP.
    pub quic: Option<std::net::UdpSocket>,
    /// Instead of `server.metrics_listen`.
    pub metrics: Option<std::net::TcpListener>,
}

/// Starts everything on the addresses of the config, reports where it
/// listens through `on_bound` (once every listener is bound and the models
/// are loaded), and serves until `shutdown` turns true.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_bound: impl FnOnce(&Bound),
) -> Result<(), AppError> {
    run_with(config, Listeners::default(), None, shutdown, on_bound).await
}

/// [`run`], serving on the `listeners` passed and binding only the others.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    reload: Option<ReloadFrom>,
    shutdown: watch::Receiver<bool>,
    on_bound: impl FnOnce(&Bound),
) -> Result<(), AppError> {
    let data = config.server.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|source| AppError::DataDir {
        path: data.clone(),
        source,
    })?;

    let lib = init_library(config.onnxruntime.library.as_deref())?;
    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
    let factory = OrtFactory::new(OrtOptions {
        intra_op_threads: config.onnxruntime.intra_op_threads,
        inter_op_threads: config.onnxruntime.inter_op_threads,
    })
    .map_err(nusa_engine_ort::EngineErrorWrap)?;

    let signed = signed_models(&config, &data)?;
    let models = match (&signed, &config.server.models) {
        (Some((pull, _)), _) => {
            std::fs::create_dir_all(&pull.store).map_err(|source| AppError::DataDir {
                path: pull.store.clone(),
                source,
            })?;
            tracing::info!(repository = %pull.repository, store = %pull.store.display(), "signed models: serving only versions pulled from the model repository and verified");
            pull.store.clone()
        }
        (None, Some(dir)) => dir.clone(),
        (None, None) => {
            let dir = materialize_demo(&data).map_err(|source| AppError::DataDir {
                path: data.clone(),
                source,
            })?;
            tracing::info!(repository = %dir.display(), "no model repository configured: serving the bundled demo model");
            dir
        }
    };
    // The key that opens encrypted versions: its own file, owner-only,
    // outside the model store; refused otherwise, before anything serves.
    let decryptor = config
        .models
        .decryption_key
        .as_deref()
        .map(|path| nusa_model_pull::KeyFileDecryptor::open(path, &models))
        .transpose()
        .map_err(|e| AppError::Models(format!("models.decryption_key: {e}")))?;
    // The puller fetches new wrappings of installed versions for this key.
    let signed = signed.map(|(mut pull, admission)| {
        pull.key_id = decryptor.as_ref().map(|d| d.key_id());
        (pull, admission)
    });
    if let Some(d) = &decryptor {
        tracing::info!(key_id = %d.key_id(), "model decryption key loaded: encrypted versions are decrypted into memory at load");
    }
    let metrics = Metrics::new();
    nusa_trace::register_metrics(&metrics);
    for path in &config.server.metrics_textfiles {
        metrics.add_textfile(path.clone());
    }
    let engines = Engines {
        onnxruntime: Arc::new(factory),
        tensorrt: tensorrt(&config, &data),
    };
    // Pins and the model history live on the data partition, so they
    // survive restarts and OS updates.
    let repo = Arc::new(
        Repository::load(
            &models,
            Some(data.join("model-state")),
            signed
                .as_ref()
                .map(|(_, a)| Arc::clone(a) as Arc<dyn nusa_registry::Admission>),
            decryptor.map(|d| Arc::new(d) as Arc<dyn nusa_registry::Decryptor>),
            engines,
            &metrics,
        )
        .await?,
    );
    let puller = signed.map(|(pull, admission)| {
        nusa_model_pull::Puller::new(pull, Arc::clone(&repo), admission, &metrics)
            .run(shutdown.clone())
    });
    let models_found = repo.models().len();
    let models_ready = repo.models().iter().filter(|m| m.ready()).count();
    if !repo.ready() {
        tracing::warn!("not every model loaded: /v2/health/ready answers 503 until they do");
    }
    let dispatch = Arc::new(dispatcher(&config, &data, &metrics)?);
    // The first probe pays for the TLS handshake; the second measures the
    // round trip requests will see on the pooled connection.
    dispatch.warm_regions().await;
    dispatch.probe_regions().await;
    let probes = {
        let dispatch = Arc::clone(&dispatch);
        let mut stop = shutdown.clone();
        let every = Duration::from_millis(config.spill.probe_interval_ms.max(100));
        async move {
            if dispatch.region_count() == 0 {
                return;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => dispatch.probe_regions().await,
                    _ = stop.changed() => break,
                }
            }
        }
    };
    // Canary rollouts: resumed at their step after a restart, judged on
    // their own timer.
    let canaries = Arc::new(
        Canaries::new(
            Arc::clone(&repo),
            config.rollout.clone(),
            Some(data.join("model-state")),
            &metrics,
        )
        .map_err(|e| AppError::Models(format!("[rollout]: {e}")))?,
    );
    canaries
        .resume()
        .await
        .map_err(|e| AppError::Models(format!("resuming canary rollouts: {e}")))?;
    // Every admin action, and the rollouts' own decisions, in the audit
    // log on the data partition (and the journal).
    let audit = Arc::new(
        nusa_audit::Auditor::open(&data.join("audit"))
            .map_err(|e| AppError::Models(format!("audit log: {e}")))?,
    );
    canaries.set_audit(Arc::clone(&audit));
    let canary_loop = tokio::spawn(Arc::clone(&canaries).run());
    // What each answer costs, and the spend budgets (their stop-spill
    // action guards the spill decision).
    let costs = Arc::new(
        nusa_cost::Costs::open(
            nusa_cost::Config {
                pricing: config.pricing.clone(),
                budgets: config.budgets.clone(),
                bounds: config.cost.clone(),
            },
            &metrics,
            Some(data.join("cost").join("ledger.json")),
            nusa_cost::utc_clock(),
        )
        .map_err(|e| AppError::Models(format!("cost ledger: {e}")))?,
    );
    guard_spills(&dispatch, &costs, &config.budgets);
    let cost_ticks = {
        let c = Arc::clone(&costs);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                let c = Arc::clone(&c);
                match tokio::task::spawn_blocking(move || c.tick()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "saving the cost ledger"),
                    Err(e) => tracing::error!(error = %e, "saving the cost ledger"),
                    Ok(Ok(())) => {}
                }
            }
        })
    };
    let mut api = Api::new(repo, Arc::clone(&metrics), Arc::clone(&dispatch), canaries)
        .with_audit(Arc::clone(&audit))
        .with_costs(Arc::clone(&costs))
        .with_server_timing(config.tracing.server_timing);
    if config.drift.enabled {
        api = api.with_drift(nusa_drift::Drift::spawn(&config.drift, Some(&metrics)));
    }
    let mut keys = None;
    match config.auth_mode() {
        AuthMode::Keys => {
            let path = config.keys_path();
            let store = nusa_auth::KeyStore::open(&path)
                .map_err(|e| AppError::Models(format!("auth.keys: {e}")))?;
            if let Some(file) = &config.auth.bootstrap_keys {
                bootstrap_keys(&store, file)
                    .map_err(|e| AppError::Models(format!("auth.bootstrap_keys: {e}")))?;
            }
            tracing::info!(keys = %path.display(), count = store.list().len(), "API keys required on the public port (auth.mode = \"keys\")");
            let store = Arc::new(store);
            keys = Some(Arc::clone(&store));
            api = api.with_access(Arc::new(Access::new(store)));
        }
        AuthMode::None if config.auth.mode.is_some() => {
            tracing::warn!(listen = %config.server.listen, "auth.mode = \"none\": the public port answers anyone who reaches it")
        }
        AuthMode::None => {
            tracing::info!(listen = %config.server.listen, "public port on loopback: open without API keys (auth.mode unset)")
        }
    }
    // SIGHUP and the admin API read the config file again.
    let (reloader, reload_requests) = match reload {
        Some(from) => {
            let r = Arc::new(reload::Reloader::new(
                from.file,
                from.source,
                config.clone(),
                Arc::clone(&costs),
                keys,
                Arc::clone(&dispatch),
                audit,
            ));
            let for_api = Arc::clone(&r);
            api = api.with_reload(Arc::new(move |actor| for_api.reload(actor)));
            (Some(r), Some(from.requests))
        }
        None => (None, None),
    };
    let hangups = async move {
        let (Some(r), Some(mut requests)) = (reloader, reload_requests) else {
            return;
        };
        while requests.recv().await.is_some() {
            let r = Arc::clone(&r);
            let _ =
                tokio::task::spawn_blocking(move || r.reload(nusa_audit::Actor::signal("SIGHUP")))
                    .await;
        }
    };
    let hangups = tokio::spawn(hangups);
    let api = Arc::new(api.with_identity(nusa_api::Identity {
        version: env!("CARGO_PKG_VERSION").to_string(),
        slot: booted_slot(),
    }));

    let mut tls = load_or_generate(config.tls.cert.as_deref(), config.tls.key.as_deref(), &data)?;
    // nusa_tls_certificate_expiry_timestamp_seconds (ops/: NusaTlsCertificateExpiringSoon).
    if let Some(end) = tls.not_after() {
        metrics.tls_certificate("server", end);
    }
    if let Some(ca) = &config.auth.client_ca {
        tls = tls.with_client_ca(ca)?;
    }
    let l = &config.limits;
    let ingress_config = IngressConfig {
        listen: config.server.listen,
        limits: Limits {
            max_body_bytes: l.max_body_bytes,
            max_header_bytes: l.max_header_bytes,
            max_concurrent_streams: l.max_concurrent_streams,
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            request_timeout: Duration::from_millis(l.request_timeout_ms),
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
        },
        http3: config.server.http3,
        alt_svc_max_age_s: config.server.alt_svc_max_age_s,
        early_data: config.tls.early_data,
    };
    let admin_config = AdminConfig {
        listen: config
            .server
            .admin_addr()
            .map_err(|e| AppError::Admin(e.to_string()))?,
        socket: Some(config.server.admin_socket_path()),
        uids: config.server.admin_uids.clone(),
        token: nusa_ingress::load_or_generate_token(&config.server.admin_token_path())
            .map_err(|e| AppError::Admin(e.to_string()))?,
        limits: ingress_config.limits.clone(),
    };
    let metrics_limits = ingress_config.limits.clone();
    let admin = AdminIngress::bind(admin_config, &tls, Arc::clone(&api), None).await?;
    let ingress = nusa_ingress::Ingress::bind(
        ingress_config,
        &tls,
        Arc::clone(&api),
        listeners.https,
        listeners.quic,
    )
    .await?;
    let (metrics_addr, metrics_serve) = nusa_ingress::serve_metrics(
        config.server.metrics_listen,
        listeners.metrics,
        metrics,
        Some(Arc::clone(&api)),
        &metrics_limits,
        shutdown.clone(),
    )
    .await?;
    let bound = Bound {
        listen: ingress.local_addr(),
        quic: ingress.quic_addr(),
        metrics: metrics_addr,
        admin: admin.local_addr(),
        admin_socket: config.server.admin_socket_path(),
        ca_cert: tls.generated_ca.clone(),
        models: models_found,
        models_ready,
    };
    on_bound(&bound);
    let puller = async {
        if let Some(p) = puller {
            p.await;
        }
    };
    tokio::join!(
        ingress.serve(shutdown.clone(), DRAIN),
        admin.serve(shutdown, DRAIN),
        metrics_serve,
        probes,
        puller
    );
    canary_loop.abort();
    cost_ticks.abort();
    hangups.abort();
    if let Err(e) = costs.persist() {
        tracing::error!(error = %e, "saving the cost ledger at shutdown");
    }
    dispatch.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// The root slot the kernel booted, as the updater reads it (`None` off
/// an appliance).
fn booted_slot() -> Option<String> {
    let cmdline =
        nusa_fsutil::read_to_string_bounded(std::path::Path::new("/proc/cmdline"), 64 << 10)
            .ok()?;
    nusa_ota_slots::booted_from_cmdline(&cmdline).map(|s| s.to_string())
}
