//! `nusactl`: the appliance's admin CLI. Argument parsing only; the work is
//! in `nusa-ota` (updates on the box) and `nusa-ota-publish` (publishing
//! releases).

mod access;
mod models;
mod release;
mod status;
mod update;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nusactl",
    version,
    about = "Nusa appliance admin: updates, releases and models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The appliance's OTA updates.
    Update(update::UpdateArgs),
    /// The models nusad serves (over its admin socket).
    Models(models::ModelsArgs),
    /// API keys of the public port (over nusad's admin socket).
    Keys(access::KeysArgs),
    /// The audit log: list, verify, checkpoint (over the admin socket).
    Audit(access::AuditArgs),
    /// What answers cost, by key, model, version, region or place.
    Cost(access::CostArgs),
    /// The edge cache (over the admin socket).
    Cache(access::CacheArgs),
    /// nusad's configuration: reload (over the admin socket).
    Config(access::ConfigArgs),
    /// The box at a glance: models, rollouts, cache, regions, spill share,
    /// the updater, recent errors (over the admin socket; `--json`).
    Status(status::StatusArgs),
    /// Publish signed releases (a release engineer's machine).
    Release {
        #[command(subcommand)]
        cmd: release::ReleaseCmd,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let traces = match &cli.cmd {
        Cmd::Update(args) => update::trace_settings(args),
        _ => None,
    };
    let traces = logging(traces.as_ref());
    let result = match cli.cmd {
        Cmd::Release { cmd } => release::run(cmd).await,
        Cmd::Update(args) => update::run(args, traces).await,
        Cmd::Models(args) => models::run(args).await,
        Cmd::Keys(args) => access::keys(args).await,
        Cmd::Audit(args) => access::audit(args).await,
        Cmd::Cost(args) => access::cost(args).await,
        Cmd::Cache(args) => access::cache(args).await,
        Cmd::Config(args) => access::config(args).await,
        Cmd::Status(args) => status::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nusactl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The log on stderr (`NUSA_LOG`, default `warn`) and, for `nusactl
/// update` with `[tracing]` in update.toml, the update's trace exporter
/// (handed to the update, which flushes it before a reboot or at its end).
fn logging(traces: Option<&nusa_trace::Settings>) -> Option<nusa_trace::Tracing> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let mut filter = tracing_subscriber::EnvFilter::try_from_env("NUSA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // The update's spans are the collector's only, never the log's.
    if let Ok(off) = format!("{}=off", nusa_trace::TARGET).parse() {
        filter = filter.add_directive(off);
    }
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Plain text in the journal (the units' stderr), colours on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let Some(settings) = traces else {
        tracing_subscriber::registry().with(log).init();
        return None;
    };
    match nusa_trace::layer(settings) {
        Ok((layer, handle)) => {
            tracing_subscriber::registry().with(log).with(layer).init();
            Some(handle)
        }
        Err(e) => {
            tracing_subscriber::registry().with(log).init();
            // The update runs untraced rather than not at all.
            tracing::warn!(error = %e, "update traces are off: [tracing] in update.toml");
            None
        }
    }
}
