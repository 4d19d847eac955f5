//! `nusad`: the Nusa inference gateway. Parses flags, reads the config,
//! sets up logging and request traces (`nusa-trace`), takes the sockets
//! systemd passed and hands over to `nusa-app`, telling systemd how it
//! goes (`nusa-systemd`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nusa_config::Config;
use nusa_systemd::{notify, Activated};
use tokio::sync::watch;

/// Exit code for a bad configuration (EX_USAGE in sysexits.h).
const EXIT_CONFIG: u8 = 64;

/// How long the exit waits for the collector to take the last spans.
const TRACE_FLUSH: Duration = Duration::from_secs(2);

/// Serve models over the Open Inference Protocol on HTTP/1.1, HTTP/2 and HTTP/3.
#[derive(Parser, Debug)]
#[command(name = "nusad", version)]
struct Args {
    /// Configuration file (TOML); see the README for every key.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for TCP (HTTP/1.1, HTTP/2) and UDP (HTTP/3); overrides server.listen.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Model repository; overrides server.models. Unset: the bundled demo model.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Data directory; overrides server.data_dir.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Prometheus metrics address; overrides server.metrics_listen.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Admin listener address, or "off"; overrides server.admin_listen.
    #[arg(long, value_name = "ADDR:PORT")]
    admin_listen: Option<String>,
    /// Admin Unix socket; overrides server.admin_socket.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
}

impl Args {
    /// The config file (or the defaults) with the flags on top, checked:
    /// at start, and again at every reload.
    fn config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.server.listen = v;
        }
        if let Some(v) = &self.models {
            config.server.models = Some(v.clone());
        }
        if let Some(v) = &self.data {
            config.server.data_dir = v.clone();
        }
        if let Some(v) = self.metrics_listen {
            config.server.metrics_listen = v;
        }
        if let Some(v) = &self.admin_listen {
            config.server.admin_listen = v.clone();
        }
        if let Some(v) = &self.admin_socket {
            config.server.admin_socket = Some(v.clone());
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let args = std::sync::Arc::new(Args::parse());
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nusad: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let traces = match logging(&config.tracing) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nusad: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    // Before the runtime starts its threads: taking the sockets edits the
    // environment.
    let activated = match Activated::from_env() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nusad: {e}");
            notify::status(&format!("failed: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nusad: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(serve(config, args, activated));
    if let Some(t) = traces {
        t.shutdown(TRACE_FLUSH);
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("nusad: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            notify::status(&format!("failed: {msg}"));
            ExitCode::FAILURE
        }
    }
}

/// The log on stderr (`RUST_LOG`, default `info`) and, with
/// `[tracing] otlp_endpoint`, request traces to the collector. The request
/// spans are the collector's only: the log never shows them, and with
/// tracing off no layer takes them, so they cost a cached check each.
fn logging(
    config: &nusa_config::Tracing,
) -> Result<Option<nusa_trace::Tracing>, nusa_trace::InstallError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Ok(off) = format!("{}=off", nusa_trace::TARGET).parse() {
        filter = filter.add_directive(off);
    }
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // The last warnings and errors, for the status page and `nusactl status`.
    let recent = nusa_telemetry::recent::layer();
    let Some(endpoint) = &config.otlp_endpoint else {
        tracing_subscriber::registry().with(log).with(recent).init();
        return Ok(None);
    };
    let settings = nusa_trace::Settings {
        endpoint: endpoint.clone(),
        headers: config
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        service_name: config.service_name.clone(),
        sample_ratio: config.sample_ratio,
        ca: config.ca.clone(),
        export_timeout: Duration::from_millis(config.export_timeout_ms),
        queue_spans: config.queue_spans,
        buffer_spans: config.buffer_spans,
    };
    let (traces, handle) = nusa_trace::layer(&settings)?;
    tracing_subscriber::registry()
        .with(log)
        .with(recent)
        .with(traces)
        .init();
    tracing::info!(
        endpoint = %endpoint,
        sample_ratio = config.sample_ratio,
        "request traces to the OTLP collector (slow and failed requests always, others at sample_ratio)"
    );
    Ok(Some(handle))
}

async fn serve(
    config: Config,
    args: std::sync::Arc<Args>,
    activated: Activated,
) -> Result<(), nusa_app::AppError> {
    if let Some(every) = notify::watchdog_interval() {
        tracing::info!(
            every_ms = every.as_millis() as u64,
            "pinging the systemd watchdog"
        );
        tokio::spawn(notify::watchdog(every));
    }
    log_activated(&activated);
    notify::status("loading models");
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining open requests");
        notify::stopping("draining open requests");
        let _ = tx.send(true);
    });
    let listeners = nusa_app::Listeners {
        https: activated.https,
        quic: activated.quic,
        metrics: activated.metrics,
    };
    // SIGHUP: read the config file again (its default action would end
    // the process, so it is handled even without a file).
    let (hup_tx, hup_rx) = tokio::sync::mpsc::channel(1);
    let has_file = args.config.is_some();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if has_file {
                // One queued reload is enough: it reads the file as it is then.
                let _ = hup_tx.try_send(());
            } else {
                tracing::warn!(
                    "SIGHUP: nusad was started without --config, there is no file to reload"
                );
            }
        }
    });
    let reload = args.config.clone().map(|file| nusa_app::ReloadFrom {
        file,
        source: std::sync::Arc::new(move || args.config()),
        requests: hup_rx,
    });
    nusa_app::run_with(config, listeners, reload, rx, |b| {
        let h3 = match b.quic {
            Some(a) => format!("HTTP/3 on UDP {a}"),
            None => "HTTP/3 off".to_string(),
        };
        tracing::info!(
            listen = %b.listen,
            metrics = %b.metrics,
            "serving the Open Inference Protocol on https://{} (HTTP/1.1, HTTP/2 on TCP; {h3})",
            b.listen
        );
        match b.admin {
            Some(a) => tracing::info!(admin = %a, socket = %b.admin_socket.display(), "admin API (model repository, pins, history) on https://{a} (bearer token) and the socket"),
            None => tracing::info!(socket = %b.admin_socket.display(), "admin API on the socket only (server.admin_listen = \"off\")"),
        }
        if let Some(ca) = &b.ca_cert {
            tracing::info!(ca = %ca.display(), "TLS: generated local CA; clients trust it with e.g. curl --cacert {}", ca.display());
        }
        notify::ready(&ready_status(b, &h3));
    })
    .await
}

/// The `systemctl status` line once serving.
fn ready_status(b: &nusa_app::Bound, h3: &str) -> String {
    let noun = if b.models == 1 { "model" } else { "models" };
    let models = if b.models_ready == b.models {
        format!("{} {noun}", b.models)
    } else {
        format!(
            "{} of {} {noun} ({} failed to load)",
            b.models_ready,
            b.models,
            b.models - b.models_ready
        )
    };
    format!(
        "serving {models} on https://{} ({h3}); metrics on {}",
        b.listen, b.metrics
    )
}

fn log_activated(a: &Activated) {
    let addr = |r: std::io::Result<SocketAddr>| r.map_or_else(|e| e.to_string(), |a| a.to_string());
    if let Some(l) = &a.https {
        tracing::info!(addr = %addr(l.local_addr()), "socket activation: HTTPS on the passed TCP listener");
    }
    if let Some(s) = &a.quic {
        tracing::info!(addr = %addr(s.local_addr()), "socket activation: HTTP/3 on the passed UDP socket");
    }
    if let Some(l) = &a.metrics {
        tracing::info!(addr = %addr(l.local_addr()), "socket activation: metrics on the passed TCP listener");
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
