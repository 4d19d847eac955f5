//! The puller: a tokio task that reads the clock, the disk and the model
//! repository, asks [`crate::core::plan`] what to do, and does it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nusa_admin::HistoryEvent;
use nusa_model_dist::{ModelClient, MANIFEST_FILE};
use nusa_ota::fetch::{FetchConfig, HttpFetcher};
use nusa_ota_tuf::{Limits, Url};
use nusa_registry::{PullRequest, Repository};
use nusa_telemetry::prometheus_client::metrics::counter::Counter;
use nusa_telemetry::prometheus_client::metrics::gauge::Gauge;
use nusa_telemetry::Metrics;
use tokio::sync::{mpsc, watch};

use crate::core::{plan, Backoff, Facts, Policy, Published, Step};
use crate::SignedAdmission;

/// Where models come from and the rules for pulling them.
#[derive(Clone, Debug)]
pub struct PullConfig {
    /// `https://...` (any static server with Range), or a folder.
    pub repository: String,
    /// The model repository's root.json shipped in the image.
    pub trusted_root: PathBuf,
    /// PEM roots for an HTTPS repository; `None`: the fetcher's defaults.
    pub ca: Option<PathBuf>,
    /// Last accepted metadata (anti-rollback), on the data partition.
    pub datastore: PathBuf,
    /// Installed versions, `<store>/<model>/<version>/`: the registry's root.
    pub store: PathBuf,
    pub poll_interval: Duration,
    pub max_bytes_per_second: u64,
    pub policy: Policy,
    /// This box's fleet model key id (`models.decryption_key`): installed
    /// encrypted versions without a wrapping for it are fetched again when
    /// the repository has one (rotation by re-wrapping).
    pub key_id: Option<String>,
}

#[derive(Clone)]
struct PullMetrics {
    bytes: Counter,
    pulls: Counter,
    failures: Counter,
    waiting: Gauge,
    rate: Gauge,
    /// The pull in progress: bytes in place, of, seconds left.
    done: Gauge,
    size: Gauge,
    eta: Gauge,
}

impl PullMetrics {
    fn new(metrics: &Metrics) -> PullMetrics {
        let m = PullMetrics {
            bytes: Counter::default(),
            pulls: Counter::default(),
            failures: Counter::default(),
            waiting: Gauge::default(),
            rate: Gauge::default(),
            done: Gauge::default(),
            size: Gauge::default(),
            eta: Gauge::default(),
        };
        metrics.register_with(|r| {
            r.register(
                "model_pull_bytes",
                "Bytes of model files downloaded from the model repository",
                m.bytes.clone(),
            );
            r.register(
                "model_pulls",
                "Model versions installed from the model repository",
                m.pulls.clone(),
            );
            r.register(
                "model_pull_failures",
                "Polls or pulls of the model repository that failed (retried with backoff)",
                m.failures.clone(),
            );
            r.register(
                "model_pull_rate_bytes_per_second",
                "Download rate of the last model version pulled",
                m.rate.clone(),
            );
            r.register(
                "model_pull_progress_bytes",
                "Bytes of the version being pulled that are in place (0 when none is)",
                m.done.clone(),
            );
            r.register(
                "model_pull_size_bytes",
                "Bytes of the version being pulled (0 when none is)",
                m.size.clone(),
            );
            r.register(
                "model_pull_eta_seconds",
                "Seconds left of the pull in progress at its rate so far (-1: not known yet)",
                m.eta.clone(),
            );
            r.register(
                "model_pulls_waiting",
                "Model versions published but waiting (outside the pull window, or no room above the reserve)",
                m.waiting.clone(),
            );
        });
        m
    }
}

pub struct Puller {
    config: PullConfig,
    repo: Arc<Repository>,
    admission: Arc<SignedAdmission>,
    requests: mpsc::UnboundedReceiver<PullRequest>,
    metrics: PullMetrics,
    /// The last reason each waiting version gave (logged when it changes).
    waiting: BTreeMap<(String, u64), String>,
    /// Versions whose publication is in the history already.
    seen: BTreeSet<(String, u64)>,
    /// Bytes of the version being fetched that are in place.
    progress: Arc<std::sync::atomic::AtomicU64>,
}

impl Puller {
    /// A puller for `repo` (whose root is `config.store`); it takes the
    /// operators' requests from the repository.
    pub fn new(
        config: PullConfig,
        repo: Arc<Repository>,
        admission: Arc<SignedAdmission>,
        metrics: &Metrics,
    ) -> Puller {
        let (tx, requests) = mpsc::unbounded_channel();
        repo.attach_puller(tx);
        Puller {
            config,
            repo,
            admission,
            requests,
            metrics: PullMetrics::new(metrics),
            waiting: BTreeMap::new(),
            seen: BTreeSet::new(),
            progress: Arc::default(),
        }
    }

    /// Polls until `shutdown` turns true: at once, then every
    /// `poll_interval`, after a failure with backoff, and whenever an
    /// operator asks for a version.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(5, self.config.poll_interval.as_secs().max(5));
        // Publications recorded before a restart are not recorded again.
        if let Ok(events) = self
            .repo
            .history(None, nusa_registry::MAX_HISTORY_EVENTS)
            .await
        {
            self.seen = events
                .into_iter()
                .filter(|e| e.event == "published")
                .filter_map(|e| Some((e.model, e.version?)))
                .collect();
        }
        let mut asked: Vec<PullRequest> = Vec::new();
        loop {
            let wait = match self.cycle(&mut asked).await {
                Ok(()) => {
                    backoff.succeeded();
                    self.config.poll_interval
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    let s = backoff.failed();
                    tracing::warn!(error = %e, retry_in_s = s, failures = backoff.failures(), "model repository poll failed");
                    for r in asked.drain(..) {
                        let _ = r.reply.send(Err(e.clone()));
                    }
                    Duration::from_secs(s)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = self.requests.recv() => match r {
                    Some(r) => asked.push(r),
                    None => break,
                },
                _ = shutdown.changed() => break,
            }
            while let Ok(r) = self.requests.try_recv() {
                asked.push(r);
            }
        }
    }

    async fn open(&self) -> Result<ModelClient, String> {
        let c = &self.config;
        let e = |e: nusa_model_dist::ModelError| format!("model repository {}: {e}", c.repository);
        if c.repository.starts_with("https://") || c.repository.starts_with("http://") {
            let base = c.repository.trim_end_matches('/');
            let fetcher = HttpFetcher::new(
                base,
                FetchConfig {
                    ca_bundle: c.ca.clone(),
                    max_bytes_per_second: c.max_bytes_per_second,
                    ..FetchConfig::default()
                },
            )
            .map_err(|e| format!("model repository {base}: {e}"))?;
            let url = |p: &str| {
                Url::parse(&format!("{base}/{p}/")).map_err(|e| format!("model repository: {e}"))
            };
            ModelClient::open(
                &c.trusted_root,
                &c.datastore,
                url("metadata")?,
                url("targets")?,
                nusa_ota::transport::HttpTransport::new(fetcher.clone()),
                Some(fetcher),
                Limits::default(),
            )
            .await
            .map(|c| c.with_progress(Arc::clone(&self.progress)))
            .map_err(e)
        } else {
            let dir = c
                .repository
                .strip_prefix("file://")
                .unwrap_or(&c.repository);
            ModelClient::open_dir(Path::new(dir), &c.trusted_root, &c.datastore)
                .await
                .map(|c| c.with_progress(Arc::clone(&self.progress)))
                .map_err(e)
        }
    }

    async fn cycle(&mut self, asked: &mut Vec<PullRequest>) -> Result<(), String> {
        let client = self.open().await?;
        self.admission
            .update(client.signed_manifests().map_err(|e| e.to_string())?);
        let listed = client.list_versions().await.map_err(|e| e.to_string())?;
        for p in &listed {
            let m = &p.manifest;
            if self.seen.insert((m.model.clone(), m.version)) {
                let how = m
                    .provenance
                    .training_run
                    .as_deref()
                    .or(m.provenance.data_digest.as_deref())
                    .unwrap_or("");
                self.record(
                    &m.model,
                    Some(m.version),
                    "published",
                    format!(
                        "seen in the model repository: published {} by {} (source {}, {how})",
                        m.published_at, m.provenance.publisher, m.provenance.source_revision
                    ),
                )
                .await;
            }
        }
        // Versions the repository has a wrapping for this box's key of.
        let stale_candidates: Vec<(String, u64)> = match &self.config.key_id {
            Some(kid) => {
                let wrapping = format!("keys/{kid}/key.json");
                listed
                    .iter()
                    .filter(|p| p.targets.iter().any(|(path, _)| path.ends_with(&wrapping)))
                    .map(|p| (p.manifest.model.clone(), p.manifest.version))
                    .collect()
            }
            None => Vec::new(),
        };
        let published: Vec<Published> = listed
            .into_iter()
            .map(|p| Published {
                bytes: p.targets.iter().map(|(_, t)| t.length).sum(),
                model: p.manifest.model,
                version: p.manifest.version,
            })
            .collect();
        // Requests for what is not published are answered at once.
        asked.retain_mut(|r| {
            let known = published
                .iter()
                .any(|p| p.model == r.model && p.version == r.version);
            if !known {
                let (tx, _) = tokio::sync::oneshot::channel();
                let reply = std::mem::replace(&mut r.reply, tx);
                let _ = reply.send(Err(format!(
                    "version {} of '{}' is not published in the model repository",
                    r.version, r.model
                )));
            }
            known
        });
        let installed = installed(&self.config.store);
        let facts = Facts {
            minute: local_minute(),
            free_bytes: free_bytes(&self.config.store),
            stale_keys: self.stale_keys(&stale_candidates, &installed),
            installed,
            keep: self.keep(),
            requested: asked.iter().map(|r| (r.model.clone(), r.version)).collect(),
        };
        let steps = plan(&self.config.policy, &published, &facts);
        let mut waiting = BTreeMap::new();
        let mut reload = BTreeSet::new();
        for step in steps {
            match step {
                Step::Pull {
                    model,
                    version,
                    bytes,
                    ..
                } => {
                    let outcome = self.pull(&client, &model, version, bytes).await;
                    if outcome.is_ok() {
                        reload.insert(model.clone());
                    }
                    reply(asked, &model, version, outcome.clone());
                    outcome?;
                }
                Step::Wait {
                    model,
                    version,
                    why,
                } => {
                    reply(asked, &model, version, Err(why.clone()));
                    waiting.insert((model, version), why);
                }
                Step::Prune { model, version } => {
                    let dir = self.config.store.join(&model).join(version.to_string());
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {
                            self.record(
                                &model,
                                Some(version),
                                "prune",
                                format!(
                                    "removed: more than {} versions installed",
                                    self.config.policy.keep_versions
                                ),
                            )
                            .await;
                            reload.insert(model);
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "removing an old model version")
                        }
                    }
                }
            }
        }
        for ((m, v), why) in &waiting {
            if self.waiting.get(&(m.clone(), *v)) != Some(why) {
                tracing::info!(model = %m, version = v, why = %why, "model version waits");
            }
        }
        self.metrics.waiting.set(waiting.len() as i64);
        self.waiting = waiting;
        for model in reload {
            match self.repo.load_model(&model).await {
                Ok(r) => {
                    tracing::info!(%model, serving = ?r.serving, loaded = ?r.loaded, "model reloaded after a pull")
                }
                Err(e) => tracing::error!(%model, error = %e, "model not reloaded after a pull"),
            }
        }
        // Installed (or already there) and loaded: answer the rest.
        for r in asked.drain(..) {
            let _ = r.reply.send(Ok(format!(
                "version {} of '{}' is installed",
                r.version, r.model
            )));
        }
        Ok(())
    }

    async fn pull(
        &self,
        client: &ModelClient,
        model: &str,
        version: u64,
        bytes: u64,
    ) -> Result<String, String> {
        tracing::info!(%model, version, bytes, "pulling a model version");
        let started = std::time::Instant::now();
        self.progress.store(0, std::sync::atomic::Ordering::Relaxed);
        let ticker = tokio::spawn(report_progress(
            Arc::clone(&self.progress),
            self.metrics.clone(),
            Arc::clone(&self.repo),
            model.to_string(),
            version,
            bytes,
        ));
        let fetched = client
            .fetch_version(model, &version.to_string(), &self.config.store)
            .await;
        ticker.abort();
        self.repo.set_pull_progress(None);
        for g in [&self.metrics.done, &self.metrics.size, &self.metrics.eta] {
            g.set(0);
        }
        let report = fetched.map_err(|e| format!("pulling version {version} of '{model}': {e}"))?;
        let got = report.downloaded_bytes();
        self.metrics.bytes.inc_by(got);
        self.metrics.pulls.inc();
        let secs = started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.metrics.rate.set((got as f64 / secs) as i64);
        }
        let detail = format!(
            "installed: {got} of {bytes} bytes downloaded in {:.1} s (the rest kept, resumed or copied)",
            started.elapsed().as_secs_f64()
        );
        self.record(model, Some(version), "pull", detail.clone())
            .await;
        Ok(detail)
    }

    /// Of `candidates`, the installed versions whose folder lacks this
    /// box's wrapping.
    fn stale_keys(
        &self,
        candidates: &[(String, u64)],
        installed: &BTreeMap<String, BTreeSet<u64>>,
    ) -> BTreeSet<(String, u64)> {
        let Some(kid) = &self.config.key_id else {
            return BTreeSet::new();
        };
        candidates
            .iter()
            .filter(|(m, v)| installed.get(m).is_some_and(|s| s.contains(v)))
            .filter(|(m, v)| {
                !self
                    .config
                    .store
                    .join(m)
                    .join(v.to_string())
                    .join("keys")
                    .join(kid)
                    .join("key.json")
                    .is_file()
            })
            .cloned()
            .collect()
    }

    /// Serving and pinned versions, which are never pruned.
    fn keep(&self) -> BTreeMap<String, BTreeSet<u64>> {
        self.repo
            .models()
            .iter()
            .map(|m| {
                let mut keep: BTreeSet<u64> = m.pinned.into_iter().collect();
                keep.extend(m.serving().map(|v| v.version));
                (m.name.clone(), keep)
            })
            .collect()
    }

    async fn record(&self, model: &str, version: Option<u64>, event: &str, detail: String) {
        self.repo
            .record(HistoryEvent {
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                model: model.to_string(),
                version,
                event: event.to_string(),
                detail,
            })
            .await;
    }
}

/// Every second of a pull: the progress gauges and the status's `pulling`
/// (what `nusactl models pull` and `status` show); every 2 s a log line
/// with the percentage, rate and ETA.
async fn report_progress(
    done: Arc<std::sync::atomic::AtomicU64>,
    metrics: PullMetrics,
    repo: Arc<Repository>,
    model: String,
    version: u64,
    total: u64,
) {
    let started = std::time::Instant::now();
    metrics.size.set(total as i64);
    let report = |p: &crate::core::Progress, d: u64| {
        repo.set_pull_progress(Some(nusa_admin::PullProgress {
            model: model.clone(),
            version,
            done_bytes: d.min(total),
            total_bytes: total,
            bytes_per_second: p.rate as u64,
            eta_s: p.eta_s,
        }));
    };
    report(&crate::core::progress(0, total, 0), 0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for n in 1u64.. {
        tick.tick().await;
        let d = done.load(std::sync::atomic::Ordering::Relaxed);
        let p = crate::core::progress(d, total, started.elapsed().as_millis() as u64);
        metrics.done.set(d.min(total) as i64);
        metrics.eta.set(p.eta_s.map_or(-1, |s| s as i64));
        report(&p, d);
        if n % 2 == 0 {
            tracing::info!(
                %model,
                version,
                "pull: {:.0}% ({} of {} bytes, {:.0} KiB/s, ETA {})",
                p.percent,
                d.min(total),
                total,
                p.rate / 1024.0,
                p.eta_s.map_or_else(|| "unknown".to_string(), |s| format!("{s} s"))
            );
        }
    }
}

fn reply(asked: &mut Vec<PullRequest>, model: &str, version: u64, r: Result<String, String>) {
    let mut i = 0;
    while i < asked.len() {
        if asked[i].model == model && asked[i].version == version {
            let _ = asked.swap_remove(i).reply.send(r.clone());
        } else {
            i += 1;
        }
    }
}

/// Minutes since local midnight (the box's time zone: TZ, /etc/localtime).
fn local_minute() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}

fn free_bytes(dir: &Path) -> u64 {
    let _ = std::fs::create_dir_all(dir);
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statvfs::statvfs(dir)
        .map(|s| (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
        .unwrap_or(0)
}

/// `<store>/<model>/<version>/` folders holding a manifest.
fn installed(store: &Path) -> BTreeMap<String, BTreeSet<u64>> {
    let mut out = BTreeMap::new();
    let Ok(models) = std::fs::read_dir(store) else {
        return out;
    };
    for m in models.filter_map(Result::ok) {
        let Some(name) = m.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let versions: BTreeSet<u64> = std::fs::read_dir(m.path())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|v| v.path().join(MANIFEST_FILE).is_file())
                    .filter_map(|v| {
                        let s = v.file_name().to_str()?.to_string();
                        s.parse::<u64>().ok().filter(|n| n.to_string() == s)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, versions);
    }
    out
}
