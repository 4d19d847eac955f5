//! The thin driver around `nusa-ota-core`'s [`Updater`]: it carries out
//! the commands (TUF, ranged downloads, slot writes, the bootloader, the
//! health gate) in order and feeds back what happened. All decisions are
//! the core's; this file only does I/O.
//!
//! Every state change is persisted before the commands after it run
//! ([`Command::Persist`] comes first), so a power cut anywhere leaves a
//! state that [`Runner::open`] resumes: the core's `resume` reconciles it
//! with what the bootloader reports.

mod brake;
mod exec;
mod write;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nusa_ota_core::{
    BootFacts, BootVerdict, ChunkIndex, Command, Event, History, Progress, Running, State, Step,
    UnixSecs, Updater, UpdaterConfig, Variant, Version,
};
use nusa_ota_slots::{SlotBackend, SlotError};
use nusa_ota_tuf::{Client, Url};
use serde::Deserialize;

use crate::fetch::HttpFetcher;
use crate::health::HealthGate;
use crate::store::{Store, StoreError};

/// Where releases come from.
#[derive(Clone)]
pub enum Repository {
    /// An update server: `<base>/metadata/` and `<base>/targets/`.
    Http {
        base: String,
        fetcher: Box<HttpFetcher>,
    },
    /// The same signed repository in a folder (a USB stick).
    Dir(PathBuf),
}

/// Everything the runner needs, made by the caller (nusactl) from the
/// update config.
pub struct Setup {
    pub variant: Variant,
    /// The version of the running system (from its image).
    pub running: Version,
    pub store: Store,
    /// The root of trust shipped in the image.
    pub trusted_root: PathBuf,
    pub repository: Repository,
    /// The storage of slot A and of slot B.
    pub slots: [PathBuf; 2],
    pub backend: Box<dyn SlotBackend>,
    pub gate: Box<dyn HealthGate>,
    pub config: UpdaterConfig,
    /// Sleep through a retry's backoff when it is at most this long,
    /// instead of stopping (an operator waiting on `apply`).
    pub max_wait: Duration,
    /// Called as bytes move, for the CLI's progress bar.
    pub on_progress: Option<ProgressFn>,
    /// Where progress goes in Prometheus text for the gateway to export.
    pub metrics_file: Option<PathBuf>,
    /// Release files written to the boot partition for a slot before it is
    /// armed (systemd-boot loads the slot's kernel from there).
    pub boot_files: Option<BootFiles>,
    /// Tests: stop dead (as at a power cut) when this many bytes of the
    /// slot have been written.
    pub cut_write_at: Option<u64>,
    /// nusad's admin socket: each update step that changes the box
    /// (downloaded and written, applied, marked good, failed or rolled
    /// back) is recorded in nusad's audit log through it, as this
    /// process's uid. Best effort: nusad down, the update goes on.
    pub audit_socket: Option<PathBuf>,
    /// Tests: stop dead before carrying out the n-th command (1-based).
    pub cut_after_commands: Option<u64>,
    /// Downloaded bytes between two records of what is on disk: a kill
    /// loses at most this much (`download_checkpoint_bytes`).
    pub checkpoint_bytes: u64,
}

/// Release files that go to the boot partition for a slot (the kernel and
/// initrd systemd-boot loads); `boot_files` in `update.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFiles {
    /// Where a slot's files go; `{slot}` is `a` or `b`.
    pub dir: String,
    /// Release files (as published with `--boot-file`).
    pub files: Vec<String>,
}

/// Receives progress reports.
pub type ProgressFn = Box<dyn Fn(&Report) + Send + Sync>;

/// Progress of the current transfer.
#[derive(Clone, Debug)]
pub struct Report {
    pub step: &'static str,
    pub done: u64,
    pub total: u64,
    /// Bytes per second, once known.
    pub rate: Option<f64>,
    pub eta: Option<Duration>,
}

/// Why the runner stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    /// Nothing left to do in this state.
    Settled,
    /// The boot target is set: reboot to continue.
    Reboot,
    /// The core wants to be woken at this time (a retry, the next wave).
    WakeAt(UnixSecs),
    /// `download` only: the image is downloaded, writing is next.
    Downloaded,
    /// The boot events only: the core's verdict on this boot.
    BootJudged(BootVerdict),
}

/// What makes a run stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Settled,
    Downloaded,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bootloader ({backend}): {source}")]
    Slots {
        backend: &'static str,
        source: SlotError,
    },
    #[error("{0}")]
    Event(#[from] nusa_ota_core::EventError),
    /// Tests: the injected power cut.
    #[error("power cut (injected) after {0} bytes of the slot were written")]
    PowerCut(u64),
    #[error("power cut (injected) before command {0}")]
    CutAfterCommands(u64),
}

/// A failed command, in words: the core decides what follows.
pub(crate) type Fail = String;

pub struct Runner {
    setup: Setup,
    updater: Updater,
    queue: VecDeque<Command>,
    tuf: Option<Client>,
    index: Option<ChunkIndex>,
    progress: Option<(Progress, Instant, &'static str)>,
    started: Instant,
    /// Image bytes fetched over the network (or read from the folder) by
    /// this runner: what a delta saved shows here.
    fetched: u64,
    commands: u64,
}

pub fn unix_now() -> UnixSecs {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Runner {
    /// Reads the persisted state and the bootloader's view, and resumes.
    pub fn open(setup: Setup) -> Result<Runner, RunError> {
        let facts = boot_facts(&setup)?;
        let history = setup.store.history()?;
        let (updater, cmds) = match setup.store.state()? {
            Some(state) => Updater::resume(setup.config.clone(), state, facts, history, unix_now()),
            None => (
                Updater::new(setup.config.clone(), facts, history),
                Vec::new(),
            ),
        };
        Ok(Runner {
            setup,
            updater,
            queue: cmds.into(),
            tuf: None,
            index: None,
            progress: None,
            started: Instant::now(),
            fetched: 0,
            commands: 0,
        })
    }

    pub fn state(&self) -> &State {
        self.updater.state()
    }

    pub fn history(&self) -> &History {
        self.updater.history()
    }

    pub fn facts(&self) -> &BootFacts {
        self.updater.facts()
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// What runs at every boot (`nusactl update boot`): the core's boot
    /// acceptance ([`nusa_ota_core::BootVerdict`]) around what the resume
    /// queued. Returns why the resumed work stopped, and the verdict.
    pub async fn boot(&mut self) -> Result<(Stopped, BootVerdict), RunError> {
        // The boot's first question comes before what the resume queued: an
        // interrupted transfer is not this boot's to run.
        let resumed = std::mem::take(&mut self.queue);
        if let Stopped::BootJudged(verdict) =
            self.drive(Some(Event::BootStarted), Until::Settled).await?
        {
            return Ok((Stopped::Settled, verdict));
        }
        self.queue = resumed;
        let stop = self.drive(None, Until::Settled).await?;
        if stop == Stopped::Reboot {
            return Ok((stop, BootVerdict::Settled));
        }
        let verdict = match self.drive(Some(Event::BootSettled), Until::Settled).await? {
            Stopped::BootJudged(verdict) => verdict,
            _ => BootVerdict::Settled,
        };
        Ok((stop, verdict))
    }

    /// An operator's mark-good or rollback decides instead of the health
    /// gate that resuming after the boot queued: drop it.
    pub fn skip_health_gate(&mut self) {
        self.queue
            .retain(|c| !matches!(c, Command::RunHealthGate { .. }));
    }

    /// The newest release in the repository for this variant, freshly
    /// verified (for `nusactl update check`; changes no state).
    pub async fn latest_release(&mut self) -> Result<Option<nusa_ota_core::ReleaseInfo>, String> {
        self.tuf = None;
        self.latest().await
    }

    /// The fleet brake in the repository's verified metadata (after
    /// [`Runner::latest_release`], from the same metadata).
    pub async fn brake(&mut self) -> Result<nusa_ota_core::Brake, String> {
        self.read_brake().await.map_err(|e| e.to_string())?
    }

    /// Image bytes fetched by this runner.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched
    }

    /// Feeds `event` (if any) and carries out commands until the core has
    /// nothing left, a reboot is needed, or `until` says stop.
    pub async fn drive(&mut self, event: Option<Event>, until: Until) -> Result<Stopped, RunError> {
        use tracing::Instrument;
        if let Some(e) = event {
            self.feed(e)?;
        }
        // With traces on (nusactl's `[tracing]`): one span per step, for as
        // long as its commands run back to back, under the run's span.
        let mut traced: Option<(&'static str, tracing::Span)> = None;
        while let Some(cmd) = self.queue.pop_front() {
            let writes = matches!(
                cmd,
                Command::InvalidateSlot { .. } | Command::WriteSlot { .. }
            );
            if until == Until::Downloaded
                && writes
                && matches!(self.updater.state(), State::Writing { .. })
            {
                // Persisted as Writing: `apply` resumes from here.
                self.queue.clear();
                return Ok(Stopped::Downloaded);
            }
            match cmd {
                Command::Reboot => {
                    self.queue.clear();
                    return Ok(Stopped::Reboot);
                }
                Command::EndBoot(verdict) => {
                    self.queue.clear();
                    return Ok(Stopped::BootJudged(verdict));
                }
                Command::WakeAt(at) => {
                    self.setup.store.save_wake_at(Some(at))?;
                    if !self.queue.is_empty() {
                        continue;
                    }
                    let wait = Duration::from_secs(at.saturating_sub(unix_now()));
                    if wait > self.setup.max_wait {
                        return Ok(Stopped::WakeAt(at));
                    }
                    tokio::time::sleep(wait).await;
                    self.setup.store.save_wake_at(None)?;
                    self.feed(Event::Wake)?;
                }
                cmd => {
                    self.commands += 1;
                    if self.setup.cut_after_commands == Some(self.commands) {
                        return Err(RunError::CutAfterCommands(self.commands));
                    }
                    let step = step_of(&cmd);
                    // Bookkeeping (persisting, refusals) stays in the step
                    // it follows.
                    if let Some(name) = traced_step(&cmd) {
                        if traced.as_ref().map(|(s, _)| *s) != Some(name) {
                            traced = Some((name, nusa_trace::update_step(name)));
                        }
                    }
                    let span = traced
                        .as_ref()
                        .map_or_else(tracing::Span::none, |(_, s)| s.clone());
                    if let Err(reason) = self.exec(cmd).instrument(span.clone()).await? {
                        nusa_trace::record_failure(&span, &reason);
                        tracing::warn!(?step, %reason, "update step failed");
                        self.queue.clear();
                        self.feed(Event::Error { step, reason })?;
                    }
                }
            }
        }
        Ok(Stopped::Settled)
    }

    /// One event into the core; its commands join the queue.
    pub(crate) fn feed(&mut self, event: Event) -> Result<(), RunError> {
        tracing::debug!(
            event = event.name(),
            state = self.updater.state().name(),
            "update event"
        );
        let before = self.updater.state().name();
        let cmds = self.updater.handle(event, unix_now())?;
        let after = self.updater.state().name();
        if before != after {
            // Each step of an update in the journal, for whoever reads a
            // box's log after the fact (the units run with NUSA_LOG=info).
            tracing::info!(from = %before, to = %after, "update state");
        }
        self.queue.extend(cmds);
        Ok(())
    }

    pub(crate) fn report(&mut self, step: &'static str, done: u64, total: u64) {
        let now = self.started.elapsed();
        let fresh = !matches!(&self.progress, Some((p, _, s)) if *s == step && p.total() == total);
        if fresh {
            self.progress = Some((
                Progress::new(total, done, Duration::from_secs(5)),
                Instant::now(),
                step,
            ));
        }
        let Some((p, last, _)) = self.progress.as_mut() else {
            return;
        };
        p.sample(now, done);
        let report = Report {
            step,
            done,
            total,
            rate: p.rate(now),
            eta: p.eta(now),
        };
        // Metrics and the progress bar at most every 250 ms, and at the end.
        if last.elapsed() >= Duration::from_millis(250) || done == total || fresh {
            *last = Instant::now();
            if let Some(f) = &self.setup.on_progress {
                f(&report);
            }
            self.write_metrics(&metrics_text(&report, self.updater.state()));
        }
    }

    /// The Prometheus text the gateway passes on (`metrics_file`); a
    /// failure to write it never fails the update.
    pub(crate) fn write_metrics(&self, text: &str) {
        if let Some(path) = &self.setup.metrics_file {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // World-readable: nusad (another user) exports it on its
            // metrics port.
            if let Err(e) = crate::store::write_atomic_mode(path, text.as_bytes(), 0o644) {
                tracing::debug!(error = %e, "writing the update metrics");
            }
        }
    }

    pub(crate) async fn tuf(&mut self) -> Result<&Client, Fail> {
        if self.tuf.is_none() {
            let (metadata, targets, transport) = self.urls()?;
            let client = Client::open(
                &self.setup.trusted_root,
                &self.setup.store.tuf_dir(),
                metadata,
                targets,
                transport,
                nusa_ota_tuf::Limits {
                    // Chunk indexes of large images and initrds are read whole.
                    max_read_target: 256 << 20,
                    ..nusa_ota_tuf::Limits::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            self.tuf = Some(client);
        }
        self.tuf.as_ref().ok_or_else(|| "no TUF client".to_string())
    }

    fn urls(&self) -> Result<(Url, Url, crate::transport::HttpTransport), Fail> {
        let bad = |e: &dyn std::fmt::Display| e.to_string();
        match &self.setup.repository {
            Repository::Http { base, fetcher } => {
                let base = base.trim_end_matches('/');
                let m = Url::parse(&format!("{base}/metadata/")).map_err(|e| bad(&e))?;
                let t = Url::parse(&format!("{base}/targets/")).map_err(|e| bad(&e))?;
                Ok((
                    m,
                    t,
                    crate::transport::HttpTransport::new((**fetcher).clone()),
                ))
            }
            Repository::Dir(dir) => {
                let (m, t) = nusa_ota_tuf::local_urls(dir).map_err(|e| bad(&e))?;
                let fetcher = HttpFetcher::new("http://localhost", Default::default())
                    .map_err(|e| bad(&e))?;
                Ok((m, t, crate::transport::HttpTransport::new(fetcher)))
            }
        }
    }
}

/// What the bootloader says, in the core's terms.
pub fn boot_facts(setup: &Setup) -> Result<BootFacts, RunError> {
    let status = setup.backend.status().map_err(|source| RunError::Slots {
        backend: setup.backend.name(),
        source,
    })?;
    let booted = core_slot(status.booted);
    let other = status.slot(status.booted.other());
    let armed = other.bootable && !other.successful;
    Ok(BootFacts {
        booted,
        running: Running {
            version: setup.running,
            variant: setup.variant.clone(),
        },
        next_boot: core_slot(status.next),
        booted_good: status.slot(status.booted).successful,
        inactive_tries_left: other
            .tries_left
            .filter(|_| armed)
            .map(|t| u8::try_from(t).unwrap_or(u8::MAX)),
        inactive_bootable: other.bootable,
    })
}

pub(crate) fn core_slot(s: nusa_ota_slots::Slot) -> nusa_ota_core::Slot {
    match s {
        nusa_ota_slots::Slot::A => nusa_ota_core::Slot::A,
        nusa_ota_slots::Slot::B => nusa_ota_core::Slot::B,
    }
}

pub(crate) fn slots_slot(s: nusa_ota_core::Slot) -> nusa_ota_slots::Slot {
    match s {
        nusa_ota_core::Slot::A => nusa_ota_slots::Slot::A,
        nusa_ota_core::Slot::B => nusa_ota_slots::Slot::B,
    }
}

fn step_of(cmd: &Command) -> Step {
    match cmd {
        Command::FetchMetadata => Step::Check,
        Command::PrepareDownload { .. } | Command::Download { .. } => Step::Download,
        Command::InvalidateSlot { .. } | Command::WriteSlot { .. } => Step::Write,
        Command::VerifyImage { .. } => Step::Verify,
        Command::ArmSlot { .. } => Step::Arm,
        Command::SwitchBootTarget { .. } => Step::SwitchBoot,
        Command::Reboot => Step::Reboot,
        Command::RunHealthGate { .. } => Step::Health,
        Command::MarkSlotGood { .. } => Step::MarkGood,
        _ => Step::Check,
    }
}

/// The step a command's span is named after; `None` for bookkeeping.
fn traced_step(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::FetchMetadata => Step::Check.name(),
        Command::CheckBrake => "brake_check",
        Command::PrepareDownload { .. } | Command::Download { .. } => Step::Download.name(),
        Command::InvalidateSlot { .. } | Command::WriteSlot { .. } => Step::Write.name(),
        Command::VerifyImage { .. } => Step::Verify.name(),
        Command::ArmSlot { .. } => Step::Arm.name(),
        Command::SwitchBootTarget { .. } => Step::SwitchBoot.name(),
        Command::RunHealthGate { .. } => Step::Health.name(),
        Command::MarkSlotGood { .. } | Command::ConfirmBoot { .. } => Step::MarkGood.name(),
        _ => return None,
    })
}

/// Prometheus text for the gateway's metrics port to pass on.
fn metrics_text(r: &Report, state: &State) -> String {
    format!(
        "# HELP nusa_update_bytes Bytes of the current update step done and in total.\n\
         # TYPE nusa_update_bytes gauge\n\
         nusa_update_bytes{{step=\"{step}\",kind=\"done\"}} {done}\n\
         nusa_update_bytes{{step=\"{step}\",kind=\"total\"}} {total}\n\
         # HELP nusa_update_rate_bytes_per_second Transfer rate of the current update step.\n\
         # TYPE nusa_update_rate_bytes_per_second gauge\n\
         nusa_update_rate_bytes_per_second {rate}\n\
         # HELP nusa_update_eta_seconds Time left in the current update step.\n\
         # TYPE nusa_update_eta_seconds gauge\n\
         nusa_update_eta_seconds {eta}\n\
         # HELP nusa_update_state The updater's state (1 for the current one).\n\
         # TYPE nusa_update_state gauge\n\
         nusa_update_state{{state=\"{name}\"}} 1\n",
        step = r.step,
        done = r.done,
        total = r.total,
        rate = r.rate.unwrap_or(0.0),
        eta = r.eta.map_or(0.0, |d| d.as_secs_f64()),
        name = state.name(),
    )
}
