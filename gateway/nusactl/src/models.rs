//! `nusactl models ...`: the models nusad serves, over its admin socket
//! (nusad checks this process's uid; no credential is passed).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use nusa_admin::{CanaryStatus, ChangeReply, Client, History, PinRequest, Status};

/// The appliance's socket (`server.admin_socket`, by default in its
/// `data_dir`, /var/lib/nusa).
pub(crate) const DEFAULT_SOCKET: &str = "/var/lib/nusa/admin.sock";

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
    /// Loads, swaps, unloads, pins, rollouts and refusals, oldest first.
    History { model: Option<String> },
    /// Whether what a model receives and answers has moved away from its
    /// baseline: per version and tensor, the population stability index
    /// of the last window (above the threshold: drifted).
    Drift { model: String },
    /// Start a canary rollout of a version (`--version`), or show the
    /// rollout of MODEL (of every model without one): per-version
    /// requests, error rate, p99, shadow agreement, the step, the next
    /// decision.
    Canary(CanaryArgs),
    /// Promote a model's canary now, skipping its remaining steps.
    Promote { model: String },
    /// Roll a model's canary back now; the version is recorded bad on this
    /// box and never served again by itself.
    Abort {
        model: String,
        /// Recorded with the rollback.
        #[arg(long)]
        reason: Option<String>,
    },
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

#[derive(Debug, Args)]
struct CanaryArgs {
    model: Option<String>,
    /// The version to roll out; without it, show the rollout.
    #[arg(long, requires = "model")]
    version: Option<u64>,
    /// Percent of requests on the candidate per step, e.g. 1,5,25,50,100.
    #[arg(long, value_delimiter = ',', requires = "version")]
    steps: Option<Vec<u32>>,
    /// How long each step lasts at least, seconds.
    #[arg(long, requires = "version")]
    step_s: Option<u64>,
    /// Seconds between checks within a step.
    #[arg(long, requires = "version")]
    check_s: Option<u64>,
    /// Also compute a sample of stable requests on the candidate and
    /// compare the answers (never returned to clients).
    #[arg(long, requires = "version")]
    shadow: bool,
    /// `key`: one client sees one version for a whole step; `request`:
    /// each request drawn anew.
    #[arg(long, requires = "version")]
    split: Option<String>,
    /// Any other `[rollout]` key, e.g. `--set max_error_rate=0.02`
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "version")]
    set: Vec<String>,
}

impl CanaryArgs {
    /// The plan keys given, as `[rollout]`'s JSON.
    fn plan(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        use serde_json::Value;
        let mut plan = serde_json::Map::new();
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            // Numbers and booleans as themselves, anything else a string.
            let value =
                serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.into()));
            plan.insert(k.trim().to_string(), value);
        }
        if let Some(steps) = &self.steps {
            plan.insert("steps".into(), serde_json::json!(steps));
        }
        if let Some(s) = self.step_s {
            plan.insert("step_s".into(), s.into());
        }
        if let Some(s) = self.check_s {
            plan.insert("check_s".into(), s.into());
        }
        if self.shadow {
            plan.insert("shadow".into(), true.into());
        }
        if let Some(s) = &self.split {
            plan.insert("split".into(), s.clone().into());
        }
        Ok(plan)
    }
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
                "{:<24} {:<12} {:>8} {:>7} {:>7} {:<12} error",
                "MODEL", "STATE", "SERVING", "PINNED", "CANARY", "ENGINE"
            );
            for m in &s.models {
                println!(
                    "{:<24} {:<12} {:>8} {:>7} {:>7} {:<12} {}",
                    m.name,
                    m.state,
                    opt(m.serving),
                    opt(m.pinned),
                    opt(m.canary),
                    m.engine,
                    m.error.as_deref().unwrap_or("")
                );
                for (v, why) in &m.rolled_back {
                    println!("{:<24} version {v} rolled back: {why}", "");
                }
            }
            if let Some(p) = &s.pulling {
                println!("{}", pulling_line(p));
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
            // While nusad pulls: its progress, from the status, on stderr.
            let watcher = (!args.json).then(|| {
                tokio::spawn(show_pull_progress(
                    Client::new(&args.socket, Duration::from_secs(10)),
                    model.clone(),
                    version,
                ))
            });
            let reply = client
                .post(
                    &nusa_admin::pull_path(&model),
                    &nusa_admin::PullBody { version },
                )
                .await;
            if let Some(w) = watcher {
                w.abort();
                if std::io::stderr().is_terminal() {
                    eprintln!();
                }
            }
            let r: nusa_admin::PullReply =
                reply.with_context(|| format!("pulling version {version} of '{model}'"))?;
            if args.json {
                return print_json(&r);
            }
            println!("{} version {}: {}", r.model, r.version, r.detail);
        }
        ModelsCmd::Canary(c) => match (&c.model, c.version) {
            (Some(model), Some(version)) => {
                let body = nusa_admin::CanaryStart {
                    version,
                    plan: c.plan()?,
                };
                let r: CanaryStatus = client
                    .post(&nusa_admin::canary_path(model), &body)
                    .await
                    .with_context(|| {
                        format!("starting a canary of version {version} of '{model}'")
                    })?;
                if args.json {
                    return print_json(&r);
                }
                print_canary(&r);
            }
            (Some(model), None) => {
                let r: CanaryStatus = client.get(&nusa_admin::canary_path(model)).await?;
                if args.json {
                    return print_json(&r);
                }
                print_canary(&r);
            }
            (None, _) => {
                let r: nusa_admin::Rollouts = client.get(nusa_admin::CANARY).await?;
                if args.json {
                    return print_json(&r);
                }
                if r.rollouts.is_empty() {
                    println!("no canary rollout has run");
                }
                for s in &r.rollouts {
                    print_canary(s);
                }
            }
        },
        ModelsCmd::Promote { model } => {
            let r: nusa_admin::CanaryEnded = client
                .post(
                    &nusa_admin::canary_promote_path(&model),
                    &serde_json::json!({}),
                )
                .await
                .with_context(|| format!("promoting the canary of '{model}'"))?;
            if args.json {
                return print_json(&r);
            }
            print_ended(&model, &r);
        }
        ModelsCmd::Abort { model, reason } => {
            let r: nusa_admin::CanaryEnded = client
                .post(
                    &nusa_admin::canary_abort_path(&model),
                    &nusa_admin::CanaryAbort { reason },
                )
                .await
                .with_context(|| format!("aborting the canary of '{model}'"))?;
            if args.json {
                return print_json(&r);
            }
            print_ended(&model, &r);
        }
        ModelsCmd::Drift { model } => {
            let r: nusa_admin::DriftReply = client.get(&nusa_admin::drift_path(&model)).await?;
            if args.json {
                return print_json(&r);
            }
            print!("{}", drift_text(&r));
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
/// Polls nusad's status every second and shows the pull of `model`
/// `version` as `nusactl update` shows its steps: a bar on a terminal,
/// else a line per tenth.
async fn show_pull_progress(client: Client, model: String, version: u64) {
    let last = parking_lot::Mutex::new(None::<(&'static str, u64)>);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(status) = client.get::<Status>(nusa_admin::MODELS).await else {
            continue;
        };
        let Some(p) = status
            .pulling
            .filter(|p| p.model == model && p.version == version)
        else {
            continue;
        };
        let report = nusa_ota::runner::Report {
            step: "pull",
            done: p.done_bytes,
            total: p.total_bytes,
            rate: (p.bytes_per_second > 0).then_some(p.bytes_per_second as f64),
            eta: p.eta_s.map(Duration::from_secs),
        };
        if std::io::stderr().is_terminal() {
            crate::update::progress_bar(&report);
        } else {
            crate::update::progress_lines(&report, &last);
        }
    }
}

/// Pull progress in `nusactl models status`.
fn pulling_line(p: &nusa_admin::PullProgress) -> String {
    let percent = (p.done_bytes * 100)
        .checked_div(p.total_bytes)
        .unwrap_or(100);
    format!(
        "pulling {} version {}: {percent}% ({} of {} bytes, {} KiB/s, ETA {})",
        p.model,
        p.version,
        p.done_bytes,
        p.total_bytes,
        p.bytes_per_second / 1024,
        p.eta_s.map_or("unknown".into(), |s| format!("{s} s"))
    )
}

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

fn print_canary(s: &CanaryStatus) {
    match &s.running {
        Some(r) => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let next = r.next_check_ms.map_or_else(
                || "-".into(),
                |ms| format!("{:.1} s", ms.saturating_sub(now_ms) as f64 / 1000.0),
            );
            println!(
                "{}: version {} on {}% of requests (step {} of {:?}), stable {}; {} failed check(s); next check in {}",
                s.model,
                r.candidate,
                r.percent,
                r.step + 1,
                r.steps,
                r.stable,
                r.failed_checks,
                next
            );
            for (arm, f) in [("stable", &r.arms.stable), ("candidate", &r.arms.candidate)] {
                println!(
                    "  {:<10} requests {:>8}  errors {:>6} ({:.2}%)  p99 {}",
                    arm,
                    f.requests,
                    f.errors,
                    f.error_rate * 100.0,
                    f.p99_ms
                        .map_or_else(|| "-".into(), |ms| format!("{ms:.2} ms"))
                );
            }
            if let Some(sh) = &r.shadow {
                println!(
                    "  shadow     compared {:>8}  agreement {}  max abs diff {:.3e}  max rel diff {:.3e}",
                    sh.compared,
                    sh.agreement
                        .map_or_else(|| "-".into(), |a| format!("{:.2}%", a * 100.0)),
                    sh.max_abs,
                    sh.max_rel
                );
            }
            if let Some(last) = &r.last_check {
                println!("  last check: {last}");
            }
        }
        None => match &s.last {
            Some(e) => print_ended(&s.model, e),
            None => println!("{}: no canary rollout has run", s.model),
        },
    }
}

fn print_ended(model: &str, e: &nusa_admin::CanaryEnded) {
    println!(
        "{model}: canary of version {} {} at {}% (step {}), stable was {}{}",
        e.candidate,
        e.result.replace('_', " "),
        e.percent,
        e.step + 1,
        e.stable,
        e.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `nusactl models drift NAME` as text.
fn drift_text(r: &nusa_admin::DriftReply) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if !r.enabled {
        let _ = writeln!(out, "drift monitoring is off ([drift] enabled = false)");
        return out;
    }
    if r.versions.is_empty() {
        let _ = writeln!(
            out,
            "{}: no sampled requests yet (drift starts at a version's first sampled request)",
            r.model
        );
        return out;
    }
    let num = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.3}"));
    for v in &r.versions {
        let _ = writeln!(
            out,
            "{} version {}: {:?} (baseline {:?}, {} sampled, {} in the baseline, {} windows of {} s){}",
            v.model,
            v.version,
            v.phase,
            v.source,
            v.samples,
            v.baseline_samples,
            v.windows,
            v.window_s,
            if v.drifted() { "  DRIFTED" } else { "" }
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}  status",
            "tensor", "kind", "psi", "worst", "base mean", "base std", "now mean", "now std"
        );
        for t in &v.tensors {
            let _ = writeln!(
                out,
                "  {:<16} {:<7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}  {:?}{}",
                t.name,
                format!("{:?}", t.kind).to_lowercase(),
                num(t.psi),
                num(t.worst_psi),
                num(t.baseline_mean),
                num(t.baseline_std),
                num(t.current_mean),
                num(t.current_std),
                t.status,
                if t.drifted {
                    format!("  DRIFTED (psi > {})", t.threshold)
                } else {
                    String::new()
                }
            );
        }
    }
    out
}
