//! `nusactl update ...`: the appliance's updater, run by the operator or by
//! systemd (`auto` from nusa-update.timer, `boot` from nusa-health.service).
//! One updater at a time: a lock in the state folder.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use nusa_ota::config::UpdateConfig;
use nusa_ota::runner::{boot_facts, unix_now, Report, Runner, Stopped, Until};
use nusa_ota_core::{admit, eligible, BootVerdict, Eligibility, Event, Running, State};
use serde_json::json;

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Accepted before or after the subcommand (the units write it after).
    #[arg(long, global = true, default_value = "/etc/nusa/update.toml")]
    config: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: UpdateCmd,
}

#[derive(Debug, Subcommand)]
enum UpdateCmd {
    /// Which slot runs what, what is staged, how the last update ended.
    Status,
    /// Look for a release and say whether this appliance would take it.
    Check,
    /// Download the newest release (delta against the running slot).
    Download,
    /// Download if needed, write the other slot, verify, arm it and reboot.
    Apply {
        /// Leave the reboot to the operator.
        #[arg(long)]
        no_reboot: bool,
    },
    /// What the timer runs: check, then apply and reboot when there is one.
    Auto,
    /// What runs at every boot: resume, and run the health gate of a slot
    /// on trial (marking it good, or rolling back).
    Boot,
    /// Accept the running slot now, without waiting for the health gate.
    MarkGood,
    /// Go back to the other slot's system (records the current release bad).
    Rollback {
        /// Needed: the other slot holds the older system.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        no_reboot: bool,
    },
    /// Past attempts and releases recorded bad.
    History,
}

/// Where this run's trace goes (`[tracing]` in update.toml), for the
/// log's set-up before the run; `None` without it, for the read-only
/// commands, or when the file does not load (the run says why).
pub fn trace_settings(args: &UpdateArgs) -> Option<nusa_trace::Settings> {
    if matches!(args.cmd, UpdateCmd::Status | UpdateCmd::History) {
        return None;
    }
    let t = UpdateConfig::load(&args.config).ok()?.tracing?;
    Some(nusa_trace::Settings {
        endpoint: t.otlp_endpoint,
        headers: t.headers.into_iter().collect(),
        service_name: t.service_name,
        // An update is rare: every run's trace is kept.
        sample_ratio: 1.0,
        ca: t.ca,
        export_timeout: Duration::from_millis(t.export_timeout_ms),
        queue_spans: 1024,
        buffer_spans: 1024,
    })
}

/// The file that carries an update attempt's trace context from one run
/// to the next (downloaded by one, applied by another, its health gate
/// after the reboot), so that an attempt is one trace.
const TRACE_CONTEXT: &str = "trace-context";

/// This run's trace: its root span, and the exporter to flush.
struct Trace {
    root: tracing::Span,
    exporter: Option<nusa_trace::Tracing>,
    state_dir: PathBuf,
}

impl Trace {
    /// A new trace when no attempt is under way, else the attempt's
    /// trace continued from the context the previous run left.
    fn start(
        state_dir: &std::path::Path,
        command: &'static str,
        under_way: bool,
        exporter: Option<nusa_trace::Tracing>,
    ) -> Trace {
        let caller = under_way
            .then(|| {
                use std::io::Read;
                let mut text = String::new();
                std::fs::File::open(state_dir.join(TRACE_CONTEXT))
                    .ok()?
                    .take(256)
                    .read_to_string(&mut text)
                    .ok()?;
                Some(nusa_trace::TraceContext {
                    parent: nusa_trace::TraceParent::parse(&text)?,
                    state: None,
                })
            })
            .flatten();
        Trace {
            root: nusa_trace::update_span(command, caller.as_ref()),
            exporter,
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// Ends the run's trace: leaves the context for the next run while an
    /// update is under way (removes it once the attempt ended), ends the
    /// root span and sends what is queued. Before a reboot, which ends
    /// this process, and at the end of the run; the second call does
    /// nothing.
    fn end(&mut self, r: &Runner) {
        let Some(exporter) = self.exporter.take() else {
            return;
        };
        let path = self.state_dir.join(TRACE_CONTEXT);
        let under_way = !idle(r);
        self.root.record("nusa.update.state", r.state().name());
        if let State::Failed { reason, .. } = r.state() {
            nusa_trace::record_failure(&self.root, reason);
        }
        match nusa_trace::outgoing(&self.root) {
            Some(cx) if under_way => {
                let tmp = self.state_dir.join(format!("{TRACE_CONTEXT}.tmp"));
                if std::fs::write(&tmp, format!("{}\n", cx.parent)).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
        self.root = tracing::Span::none();
        exporter.shutdown(Duration::from_secs(5));
    }
}

pub async fn run(args: UpdateArgs, exporter: Option<nusa_trace::Tracing>) -> anyhow::Result<()> {
    use tracing::Instrument;
    let config = UpdateConfig::load(&args.config)?;
    let mut setup = config.setup(&args.config)?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let lock_path = config.state_dir.join("lock");
    let file = std::fs::File::create(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // Held until the process ends. Read-only commands need no lock: the
    // state files are replaced whole.
    let _lock = if matches!(args.cmd, UpdateCmd::Status | UpdateCmd::History) {
        None
    } else {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => Some(l),
            Err(_) => bail!(
                "another updater is running (lock {} is held)",
                lock_path.display()
            ),
        }
    };
    if std::io::stderr().is_terminal() && !args.json {
        setup.on_progress = Some(Box::new(progress_bar));
    } else {
        // Under systemd (nusa-update.service): a line per tenth of each
        // step in the journal instead of a redrawn bar.
        let last = parking_lot::Mutex::new(None::<(&'static str, u64)>);
        setup.on_progress = Some(Box::new(move |r: &Report| progress_lines(r, &last)));
    }
    let reboot = config.reboot_command.clone();
    let mut runner = Runner::open(setup)?;
    let command = match &args.cmd {
        UpdateCmd::Status => "status",
        UpdateCmd::Check => "check",
        UpdateCmd::Download => "download",
        UpdateCmd::Apply { .. } => "apply",
        UpdateCmd::Auto => "auto",
        UpdateCmd::Boot => "boot",
        UpdateCmd::MarkGood => "mark-good",
        UpdateCmd::Rollback { .. } => "rollback",
        UpdateCmd::History => "history",
    };
    let mut trace = Trace::start(&config.state_dir, command, !idle(&runner), exporter);
    let root = trace.root.clone();
    let result = commands(args, &mut runner, &reboot, &mut trace)
        .instrument(root)
        .await;
    trace.end(&runner);
    result
}

async fn commands(
    args: UpdateArgs,
    runner: &mut Runner,
    reboot: &Vec<String>,
    trace: &mut Trace,
) -> anyhow::Result<()> {
    match args.cmd {
        UpdateCmd::Status => status(runner, args.json),
        UpdateCmd::History => history(runner, args.json),
        UpdateCmd::Check => check(runner, args.json).await,
        UpdateCmd::Download => {
            let event = idle(runner).then_some(Event::CheckRequested);
            let stop = runner.drive(event, Until::Downloaded).await?;
            finish(runner, stop, None, args.json, trace)
        }
        UpdateCmd::Apply { no_reboot } => {
            let event = idle(runner).then_some(Event::CheckRequested);
            let stop = runner.drive(event, Until::Settled).await?;
            finish(
                runner,
                stop,
                (!no_reboot).then_some(reboot),
                args.json,
                trace,
            )
        }
        UpdateCmd::Auto => {
            let event = idle(runner).then_some(Event::CheckRequested);
            let stop = runner.drive(event, Until::Settled).await?;
            finish(runner, stop, Some(reboot), args.json, trace)
        }
        UpdateCmd::Boot => {
            // What this boot is (accepted, told to the bootloader, left to
            // the timer's run) is the core's verdict; see nusa-ota-core's
            // `state/accept.rs`.
            let (stop, verdict) = runner.boot().await?;
            match verdict {
                BootVerdict::TransferLeft => {
                    println!(
                        "{}: left to nusa-update.service (nusactl update auto); this boot is good",
                        describe(runner.state())
                    );
                    Ok(())
                }
                BootVerdict::GoodAfterFailure => {
                    let what = format!("{}; this boot is good", describe(runner.state()));
                    if args.json {
                        println!(
                            "{}",
                            json!({"stopped": what, "state": state_json(runner.state())})
                        );
                    } else {
                        println!("{what}");
                    }
                    Ok(())
                }
                BootVerdict::Settled => finish(runner, stop, Some(reboot), args.json, trace),
            }
        }
        UpdateCmd::MarkGood => {
            runner.skip_health_gate();
            let stop = runner.drive(Some(Event::MarkGood), Until::Settled).await?;
            finish(runner, stop, None, args.json, trace)
        }
        UpdateCmd::Rollback { force, no_reboot } => {
            runner.skip_health_gate();
            let stop = runner
                .drive(Some(Event::Rollback { force }), Until::Settled)
                .await?;
            finish(
                runner,
                stop,
                (!no_reboot).then_some(reboot),
                args.json,
                trace,
            )
        }
    }
}

/// States from which a new update may start.
fn idle(r: &Runner) -> bool {
    r.state().update_may_start()
}

fn finish(
    r: &Runner,
    stop: Stopped,
    reboot: Option<&Vec<String>>,
    json: bool,
    trace: &mut Trace,
) -> anyhow::Result<()> {
    if std::io::stderr().is_terminal() && !json {
        eprintln!();
    }
    let what = match &stop {
        Stopped::Settled | Stopped::BootJudged(_) => "settled".to_string(),
        Stopped::Downloaded => "downloaded; `nusactl update apply` writes and reboots".into(),
        Stopped::Reboot => "the boot target is set".into(),
        Stopped::WakeAt(t) => format!("next attempt at unix time {t}"),
    };
    if json {
        println!(
            "{}",
            json!({"stopped": what, "state": state_json(r.state())})
        );
    } else {
        println!("{}: {what}", describe(r.state()));
    }
    if stop == Stopped::Reboot {
        match reboot {
            Some(cmd) if !cmd.is_empty() => {
                // The reboot ends this process: its step and the run's
                // spans leave first.
                drop(nusa_trace::update_step("reboot"));
                trace.end(r);
                let status = std::process::Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .status()
                    .with_context(|| format!("running {cmd:?}"))?;
                if !status.success() {
                    bail!("{cmd:?} failed: {status}");
                }
            }
            _ => println!("reboot to continue"),
        }
    }
    if let State::Failed { reason, .. } = r.state() {
        if !matches!(stop, Stopped::Reboot) {
            bail!("update failed: {reason}");
        }
    }
    Ok(())
}

async fn check(r: &mut Runner, json: bool) -> anyhow::Result<()> {
    let facts = r.facts().clone();
    let running = Running {
        version: facts.running.version,
        variant: facts.running.variant.clone(),
    };
    let latest = r.latest_release().await.map_err(anyhow::Error::msg)?;
    let Some(release) = latest else {
        if json {
            println!("{}", json!({"release": null}));
        } else {
            println!(
                "no release for {} in the repository",
                running.variant.as_str()
            );
        }
        return Ok(());
    };
    // The brake from the same verified metadata.
    let brake = r.brake().await.map_err(anyhow::Error::msg)?;
    let held = brake.holds(release.version, &release.variant);
    let decision = match admit(&release, &running, r.history().bad_set(), false) {
        Err(refusal) => refusal.to_string(),
        Ok(()) if held.is_some() => held.map(|h| h.to_string()).unwrap_or_default(),
        Ok(()) => match eligible(r.setup().config.seed, &release.waves, unix_now()) {
            Eligibility::Now => "would install now".into(),
            Eligibility::NotBefore(t) => {
                format!("staged rollout: this appliance takes it from unix time {t}")
            }
            Eligibility::Never => "staged rollout: this appliance is outside every wave".into(),
        },
    };
    if json {
        println!(
            "{}",
            json!({"release": release.version.to_string(), "running": running.version.to_string(),
                   "image_bytes": release.image_len, "decision": decision})
        );
    } else {
        println!(
            "newest release {} ({} bytes); running {}: {decision}",
            release.version, release.image_len, running.version
        );
    }
    Ok(())
}

fn status(r: &Runner, json: bool) -> anyhow::Result<()> {
    let facts = boot_facts(r.setup())?;
    let boot = r.setup().backend.status()?;
    let store = &r.setup().store;
    let refusal = std::fs::read_to_string(store.dir().join("refusal.txt")).ok();
    let last = r.history().last_attempt().cloned();
    if json {
        println!(
            "{}",
            json!({
                "running": {"version": facts.running.version.to_string(), "slot": facts.booted.to_string(),
                            "good": facts.booted_good},
                "next_boot": facts.next_boot.to_string(),
                "slots": boot.slots,
                "state": state_json(r.state()),
                "last_attempt": last,
                "last_refusal": refusal,
                "wake_at": store.wake_at()?,
            })
        );
        return Ok(());
    }
    println!(
        "running   {} on slot {} ({})",
        facts.running.version,
        facts.booted,
        if facts.booted_good {
            "good"
        } else {
            "on trial"
        }
    );
    for info in &boot.slots {
        let what = match (info.bootable, info.successful, info.tries_left) {
            (false, _, _) => "not bootable".to_string(),
            (true, true, _) => "good".into(),
            (true, false, Some(t)) => format!("on trial, {t} boot tries left"),
            (true, false, None) => "bootable".into(),
        };
        println!(
            "slot {}    {} {what}",
            info.slot.as_str().to_uppercase(),
            info.version.as_deref().unwrap_or("-")
        );
    }
    println!("next boot slot {}", boot.next.as_str().to_uppercase());
    println!("update    {}", describe(r.state()));
    if let Some(a) = last {
        println!(
            "last      {} {:?}{}",
            a.version,
            a.outcome,
            a.reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    for b in r.history().bad_releases() {
        println!(
            "bad       {} ({}): not installed again automatically",
            b.version, b.reason
        );
    }
    if let Some(refusal) = refusal {
        println!("refused   {refusal}");
    }
    Ok(())
}

fn history(r: &Runner, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r.history())?);
        return Ok(());
    }
    for a in r.history().attempts() {
        println!(
            "{} started {} ended {} {:?}{}{}",
            a.version,
            a.started,
            a.ended.map_or("-".into(), |e| e.to_string()),
            a.outcome,
            if a.forced { " (forced)" } else { "" },
            a.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    for b in r.history().bad_releases() {
        println!("bad {}: {}", b.version, b.reason);
    }
    Ok(())
}

fn describe(state: &State) -> String {
    match state {
        State::Idle => "idle".into(),
        State::Checking => "checking".into(),
        State::Downloading {
            release,
            bytes_done,
            bytes_total,
            ..
        } => format!(
            "downloading {}: {} of {} bytes",
            release.version, bytes_done, bytes_total
        ),
        State::Writing { release, .. } => format!("writing {} to the other slot", release.version),
        State::Staged { release, slot } => format!("{} staged in slot {slot}", release.version),
        State::Rebooting { release, slot } => {
            format!("{} in slot {slot}, armed: reboot into it", release.version)
        }
        State::PendingHealth { release, slot, .. } => {
            format!(
                "{} booted from slot {slot}, health gate running",
                release.version
            )
        }
        State::Good { release, slot } => format!("{} good in slot {slot}", release.version),
        State::Failed {
            release,
            reason,
            step,
            rollback,
        } => format!(
            "{}failed at {step:?}: {reason}{}",
            release
                .as_ref()
                .map(|r| format!("{} ", r.version))
                .unwrap_or_default(),
            if rollback.is_some() {
                " (rolling back)"
            } else {
                ""
            }
        ),
    }
}

fn state_json(state: &State) -> serde_json::Value {
    serde_json::to_value(state).unwrap_or(serde_json::Value::Null)
}

/// "writing: 40% (..)" when a step starts, crosses a tenth, or ends.
pub(crate) fn progress_lines(r: &Report, last: &parking_lot::Mutex<Option<(&'static str, u64)>>) {
    let tenth = r.done.saturating_mul(10).checked_div(r.total).unwrap_or(10);
    let mut last = last.lock();
    if *last == Some((r.step, tenth)) {
        return;
    }
    *last = Some((r.step, tenth));
    let rate = r.rate.map_or(String::new(), |b| {
        format!(", {:.1} MiB/s", b / (1 << 20) as f64)
    });
    eprintln!(
        "{}: {}% ({} of {} bytes{rate})",
        r.step,
        tenth * 10,
        r.done,
        r.total
    );
}

pub(crate) fn progress_bar(r: &Report) {
    let frac = if r.total == 0 {
        1.0
    } else {
        r.done as f64 / r.total as f64
    };
    let filled = (frac * 30.0) as usize;
    let rate = r
        .rate
        .map_or("-".into(), |b| format!("{:.1} MiB/s", b / (1 << 20) as f64));
    let eta = r
        .eta
        .map_or("-".into(), |d: Duration| format!("{}s", d.as_secs()));
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{:<8} [{}{}] {:>5.1}% {:.1}/{:.1} MiB {rate} ETA {eta}   ",
        r.step,
        "#".repeat(filled.min(30)),
        " ".repeat(30 - filled.min(30)),
        frac * 100.0,
        r.done as f64 / (1 << 20) as f64,
        r.total as f64 / (1 << 20) as f64,
    );
    let _ = err.flush();
}
