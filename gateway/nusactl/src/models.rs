//! `nusactl models ...`: the models nusad serves, over its admin socket
//! (nusad checks this process's uid; no credential is passed).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use nusa_admin::{ChangeReply, Client, History, PinRequest, Status};

/// The appliance's socket (`server.admin_socket`, by default in its
/// `data_dir`, /var/lib/nusa).
const DEFAULT_SOCKET: &str = "/var/lib/nusa/admin.sock";

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// nusad's admin socket.
    #[arg(long, global = true, env = "NUSA_ADMIN_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for nusad (a load waits for the new version's
    /// warm-up), seconds.
    #[arg(long, global = true, default_value_t = 300)]
    timeout: u64,
    #[command(subcommand)]
    cmd: ModelsCmd,
}

#[derive(Debug, Subcommand)]
enum ModelsCmd {
    /// Each model: state, the version serving, its pin, its engine.
    Status,
    /// Each loaded version with the digest of its files and its engine.
    List,
    /// Load a model or reload it: new and changed versions are loaded and
    /// warmed up beside the serving ones, then swapped in.
    Load { model: String },
    /// Stop serving a model (requests already queued are answered).
    Unload { model: String },
    /// Pin the version requests without one get (persisted), or unpin.
    Pin {
        model: String,
        /// The version to serve.
        #[arg(long, conflicts_with = "latest", required_unless_present = "latest")]
        version: Option<u64>,
        /// Serve the latest loaded version again.
        #[arg(long)]
        latest: bool,
    },
    /// Install a published version now, whatever the pull window, and load
    /// it (signed mode).
    Pull {
        model: String,
        #[arg(long)]
        version: u64,
    },
    /// Loads, swaps, unloads, pins and refusals, oldest first.
    History { model: Option<String> },
    /// Create a model repository and its signing keys (a release
    /// engineer's machine; a repository of its own, apart from the OS one).
    Init {
        /// The model repository folder to create.
        #[arg(long)]
        repo: PathBuf,
        /// Folder for the new signing keys (must hold none).
        #[arg(long)]
        keys: PathBuf,
    },
    /// Publish a model version, signed and immutable, with its provenance
    /// (`--encrypt-for FLEET_PUBLIC_KEY`: its model files encrypted).
    Publish(nusa_model_dist::PublishArgs),
    /// Make the fleet's model key pair for encrypted versions: the private
    /// key goes to the boxes (`models.decryption_key`), the public key to
    /// publishers (`publish --encrypt-for`).
    Keygen(nusa_model_dist::KeygenArgs),
    /// Wrap an encrypted version's data key for another fleet key (key
    /// rotation): one new signed target; files and manifest unchanged.
    Rewrap(nusa_model_dist::RewrapArgs),
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.socket, Duration::from_secs(args.timeout));
    match args.cmd {
        ModelsCmd::Init { repo, keys } => {
            nusa_model_dist::init_repo(&repo, &keys)
                .await
                .with_context(|| format!("creating the model repository {}", repo.display()))?;
            println!(
                "model repository {} created; keys in {} (keep them off the appliances); ship {}/metadata/root.json to the boxes",
                repo.display(),
                keys.display(),
                repo.display()
            );
        }
        ModelsCmd::Publish(p) => {
            let goldens = run_goldens(&p.dir).await.with_context(|| {
                format!(
                    "version {} of '{}' is not published: its golden tests do not pass on ONNX Runtime",
                    p.version, p.model
                )
            })?;
            if goldens > 0 {
                eprintln!("{goldens} golden test(s) passed on ONNX Runtime");
            }
            let report = nusa_model_dist::run_publish(&p).await?;
            if args.json {
                return print_json(&report.manifest);
            }
            print!("{report}");
        }
        ModelsCmd::Keygen(k) => {
            let report = nusa_model_dist::run_keygen(&k)?;
            if args.json {
                return print_json(&serde_json::json!({
                    "key_id": report.key_id,
                    "private_key": report.private_key,
                    "public_key": report.public_key,
                }));
            }
            println!(
                "fleet model key {}: private {} (0600: install it on the boxes as \
                 models.decryption_key, keep it off publishers' machines), public {} (for \
                 publish --encrypt-for)",
                report.key_id,
                report.private_key.display(),
                report.public_key.display()
            );
        }
        ModelsCmd::Rewrap(r) => {
            let target = nusa_model_dist::run_rewrap(&r).await?;
            if args.json {
                return print_json(&serde_json::json!({ "added": target }));
            }
            println!("added {target}");
        }
        ModelsCmd::Status => {
            let s: Status = client.get(nusa_admin::MODELS).await?;
            if args.json {
                return print_json(&s);
            }
            println!("mode: {}", describe_mode(&s.mode));
            println!(
                "{:<24} {:<12} {:>8} {:>7} {:<12} error",
                "MODEL", "STATE", "SERVING", "PINNED", "ENGINE"
            );
            for m in &s.models {
                println!(
                    "{:<24} {:<12} {:>8} {:>7} {:<12} {}",
                    m.name,
                    m.state,
                    opt(m.serving),
                    opt(m.pinned),
                    m.engine,
                    m.error.as_deref().unwrap_or("")
                );
            }
        }
        ModelsCmd::List => {
            let s: Status = client.get(nusa_admin::MODELS).await?;
            if args.json {
                return print_json(&s.models);
            }
            println!(
                "{:<24} {:>8} {:<16} {:<12} {:<40} ENGINE DETAIL",
                "MODEL", "VERSION", "DIGEST", "ENGINE", "PROVENANCE"
            );
            for m in &s.models {
                for v in &m.versions {
                    println!(
                        "{:<24} {:>8} {:<16} {:<12} {:<40} {}",
                        m.name,
                        v.version,
                        v.digest.get(..16).unwrap_or(&v.digest),
                        v.engine,
                        provenance(v.provenance.as_ref()),
                        v.engine_detail
                    );
                }
            }
        }
        ModelsCmd::Load { model } => {
            let r: ChangeReply = client
                .post(&nusa_admin::load_path(&model), &serde_json::json!({}))
                .await
                .with_context(|| format!("loading model '{model}'"))?;
            print_change(&r, args.json)?;
        }
        ModelsCmd::Unload { model } => {
            let r: ChangeReply = client
                .post(&nusa_admin::unload_path(&model), &serde_json::json!({}))
                .await
                .with_context(|| format!("unloading model '{model}'"))?;
            print_change(&r, args.json)?;
        }
        ModelsCmd::Pin {
            model,
            version,
            latest,
        } => {
            let version = if latest { None } else { version };
            let r: ChangeReply = client
                .post(&nusa_admin::pin_path(&model), &PinRequest { version })
                .await
                .with_context(|| format!("pinning model '{model}'"))?;
            print_change(&r, args.json)?;
        }
        ModelsCmd::Pull { model, version } => {
            let r: nusa_admin::PullReply = client
                .post(
                    &nusa_admin::pull_path(&model),
                    &nusa_admin::PullBody { version },
                )
                .await
                .with_context(|| format!("pulling version {version} of '{model}'"))?;
            if args.json {
                return print_json(&r);
            }
            println!("{} version {}: {}", r.model, r.version, r.detail);
        }
        ModelsCmd::History { model } => {
            let path = match &model {
                Some(m) => nusa_admin::history_path(m),
                None => nusa_admin::HISTORY.to_string(),
            };
            let h: History = client.get(&path).await?;
            if args.json {
                return print_json(&h);
            }
            for e in &h.events {
                println!(
                    "{} {:<24} {:>8} {:<8} {}",
                    e.at,
                    e.model,
                    opt(e.version),
                    e.event,
                    e.detail
                );
            }
        }
    }
    Ok(())
}

/// Runs the version's goldens (`tests/*.json`) on ONNX Runtime; how many.
async fn run_goldens(dir: &std::path::Path) -> anyhow::Result<usize> {
    let goldens = nusa_goldens::load(dir).map_err(anyhow::Error::msg)?;
    if goldens.is_empty() {
        return Ok(0);
    }
    let onnx = dir.join("model.onnx");
    anyhow::ensure!(
        onnx.is_file(),
        "golden tests run on ONNX Runtime and need {}",
        onnx.display()
    );
    nusa_engine_ort::init_library(None)?;
    let factory = nusa_engine_ort::OrtFactory::new(nusa_engine_ort::OrtOptions {
        intra_op_threads: 1,
        inter_op_threads: 1,
    })?;
    let engine = tokio::task::spawn_blocking(move || {
        use nusa_engine::EngineFactory;
        factory.load(&onnx)
    })
    .await??;
    for g in &goldens {
        g.run_on(engine.as_ref(), false)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    Ok(goldens.len())
}

/// One line of a version's signed provenance: who, from what, when.
fn provenance(p: Option<&serde_json::Value>) -> String {
    let Some(p) = p else {
        return "-".into();
    };
    let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let run = [field("training_run"), field("data_digest")]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("");
    format!(
        "{} rev {} {} {}",
        field("publisher"),
        field("source_revision"),
        run,
        field("published_at")
    )
}

fn describe_mode(mode: &str) -> String {
    match mode {
        "directory" => {
            "directory (a local model folder, not signature-checked: development and the demo)"
                .into()
        }
        "signed" => {
            "signed (only versions pulled from the model repository whose every file verifies)"
                .into()
        }
        other => other.into(),
    }
}

fn print_change(r: &ChangeReply, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    println!(
        "{}: serving version {} (was {}); loaded {:?}, kept {:?}, dropped {:?}",
        r.model,
        opt(r.serving),
        opt(r.serving_before),
        r.loaded,
        r.kept,
        r.dropped
    );
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}
