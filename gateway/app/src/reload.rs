//! Reading the config file again while serving (`SIGHUP`, `nusactl config
//! reload`, `POST /v2/nusa/config/reload`), as nginx and Prometheus do: a
//! file that does not parse or check is refused whole and nothing changes;
//! of a good one, the sections that can change while nusad runs are
//! applied, and the others are named as needing a restart. Every reload,
//! applied or refused, is recorded in the audit log (`config.reload`) with
//! its caller and what it changed.
//!
//! Applied while running: `[pricing]` and `[budgets]` (later requests are
//! priced anew; today's spend is held against the new budgets), and
//! `auth.bootstrap_keys` (keys the file has and the store lacks are
//! added). Everything else is read once at start.

use std::path::PathBuf;
use std::sync::Arc;

use nusa_admin::ReloadReply;
use nusa_audit::{Actor, Auditor, Entry, Outcome};
use nusa_config::Config;
use nusa_cost::Costs;
use nusa_dispatch::Dispatcher;

/// Reads and checks the config as nusad started it: the file, then the
/// command line's overrides.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Where a running nusad reads its configuration again, and the reload
/// requests of its `SIGHUP` handler.
pub struct ReloadFrom {
    pub file: PathBuf,
    pub source: ConfigSource,
    pub requests: tokio::sync::mpsc::Receiver<()>,
}

pub(crate) struct Reloader {
    file: String,
    source: ConfigSource,
    /// What is in effect: the start's configuration with the sections
    /// reloads applied.
    running: parking_lot::Mutex<Config>,
    costs: Arc<Costs>,
    keys: Option<Arc<nusa_auth::KeyStore>>,
    dispatch: Arc<Dispatcher>,
    audit: Arc<Auditor>,
}

impl Reloader {
    pub(crate) fn new(
        file: PathBuf,
        source: ConfigSource,
        running: Config,
        costs: Arc<Costs>,
        keys: Option<Arc<nusa_auth::KeyStore>>,
        dispatch: Arc<Dispatcher>,
        audit: Arc<Auditor>,
    ) -> Reloader {
        Reloader {
            file: file.display().to_string(),
            source,
            running: parking_lot::Mutex::new(running),
            costs,
            keys,
            dispatch,
            audit,
        }
    }

    /// Reloads on behalf of `actor`, logs and records the outcome.
    /// Blocking: reads files and appends to the audit log.
    pub(crate) fn reload(&self, actor: Actor) -> Result<ReloadReply, String> {
        let result = self.apply();
        let entry = Entry::new(actor, "config.reload", &self.file);
        let entry = match &result {
            Ok(r) => {
                tracing::info!(
                    file = %self.file,
                    applied = ?r.applied,
                    restart_needed = ?r.restart_needed,
                    "configuration reloaded"
                );
                if !r.restart_needed.is_empty() {
                    tracing::warn!(
                        sections = ?r.restart_needed,
                        "configuration changed where it is read only at start: restart nusad to apply"
                    );
                }
                entry.detail(serde_json::json!({
                    "applied": r.applied,
                    "restart_needed": r.restart_needed,
                }))
            }
            Err(e) => {
                tracing::error!(file = %self.file, error = %e, "configuration not reloaded: the running one stays");
                entry.outcome(Outcome::Error(e.clone()))
            }
        };
        self.audit.record(entry);
        result
    }

    fn apply(&self) -> Result<ReloadReply, String> {
        let new = (self.source)()?;
        let mut running = self.running.lock();
        // Checked before anything is applied: a refused reload changes
        // nothing.
        if new.pricing.currency != running.pricing.currency {
            return Err(format!(
                "pricing.currency: cannot change from {} to {} while running: restart nusad",
                running.pricing.currency, new.pricing.currency
            ));
        }
        let mut reply = ReloadReply {
            file: self.file.clone(),
            ..ReloadReply::default()
        };
        // Keys the provisioning file has and the store lacks (the file may
        // have grown under the same name).
        if let (Some(store), Some(file)) = (&self.keys, &new.auth.bootstrap_keys) {
            let added = crate::bootstrap_keys(store, file)
                .map_err(|e| format!("auth.bootstrap_keys: {e}"))?;
            if added > 0 || running.auth.bootstrap_keys.as_ref() != Some(file) {
                reply.applied.push("auth.bootstrap_keys".into());
            }
            running.auth.bootstrap_keys = Some(file.clone());
        }
        let pricing = new.pricing != running.pricing;
        let budgets = new.budgets != running.budgets;
        if pricing || budgets {
            self.costs
                .reconfigure(new.pricing.clone(), new.budgets.clone())
                .map_err(|e| format!("{}: {}", e.key, e.message))?;
            crate::guard_spills(&self.dispatch, &self.costs, &new.budgets);
            if pricing {
                reply.applied.push("pricing".into());
            }
            if budgets {
                reply.applied.push("budgets".into());
            }
            running.pricing = new.pricing.clone();
            running.budgets = new.budgets.clone();
        }
        reply.restart_needed = restart_needed(&running, &new);
        Ok(reply)
    }
}

/// The sections of `new` that differ from what runs and are read only at
/// start.
fn restart_needed(running: &Config, new: &Config) -> Vec<String> {
    let mut auth = new.auth.clone();
    auth.bootstrap_keys = running.auth.bootstrap_keys.clone();
    [
        ("server", running.server != new.server),
        ("tls", running.tls != new.tls),
        ("limits", running.limits != new.limits),
        ("onnxruntime", running.onnxruntime != new.onnxruntime),
        ("tensorrt", running.tensorrt != new.tensorrt),
        ("cache", running.cache != new.cache),
        ("spill", running.spill != new.spill),
        ("regions", running.regions != new.regions),
        ("models", running.models != new.models),
        ("auth", running.auth != auth),
        ("cost", running.cost != new.cost),
        ("rollout", running.rollout != new.rollout),
        ("tracing", running.tracing != new.tracing),
        ("drift", running.drift != new.drift),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name.to_string())
    .collect()
}
