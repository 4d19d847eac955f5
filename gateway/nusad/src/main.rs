//! `nusad`: the Nusa inference gateway. Parses flags, reads the config,
//! sets up logging, takes the sockets systemd passed and hands over to
//! `nusa-app`, telling systemd how it goes (`nusa-systemd`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nusa_config::Config;
use nusa_systemd::{notify, Activated};
use tokio::sync::watch;

/// Exit code for a bad configuration (EX_USAGE in sysexits.h).
const EXIT_CONFIG: u8 = 64;

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

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("nusad: config error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        config.server.listen = v;
    }
    if let Some(v) = args.models {
        config.server.models = Some(v);
    }
    if let Some(v) = args.data {
        config.server.data_dir = v;
    }
    if let Some(v) = args.metrics_listen {
        config.server.metrics_listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.server.admin_listen = v;
    }
    if let Some(v) = args.admin_socket {
        config.server.admin_socket = Some(v);
    }
    if let Err(e) = config.validate() {
        eprintln!("nusad: config error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

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
    match runtime.block_on(serve(config, activated)) {
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

async fn serve(config: Config, activated: Activated) -> Result<(), nusa_app::AppError> {
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
    nusa_app::run_with(config, listeners, rx, |b| {
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
