//! `nusad`: the Nusa inference gateway. Parses flags, reads the config,
//! sets up logging and hands over to `nusa-app`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nusa_config::Config;
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

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

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
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("nusad: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), nusa_app::AppError> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining open requests");
        let _ = tx.send(true);
    });
    nusa_app::run(config, rx, |b| {
        tracing::info!(
            listen = %b.listen,
            metrics = %b.metrics,
            "serving the Open Inference Protocol on https://{} (HTTP/1.1, HTTP/2 on TCP; HTTP/3 on UDP)",
            b.listen
        );
        if let Some(ca) = &b.ca_cert {
            tracing::info!(ca = %ca.display(), "TLS: generated local CA; clients trust it with e.g. curl --cacert {}", ca.display());
        }
    })
    .await
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
