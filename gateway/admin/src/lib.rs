//! The admin API that `nusad` serves on its admin listener and Unix socket
//! and `nusactl` calls: the paths, the JSON bodies both sides read and
//! write, and (feature `client`) the client over the socket.
//!
//! Triton's model repository extension is part of it unchanged
//! (`POST /v2/repository/index`, `.../models/{m}/load`, `.../unload`, as
//! `tritonclient` calls them); the rest is ours, under `/v2/nusa/`.

use serde::{Deserialize, Serialize};

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::{AdminError, Client};

/// Triton's repository index.
pub const REPOSITORY_INDEX: &str = "/v2/repository/index";
/// Every model's state, versions and pin ([`Status`]).
pub const MODELS: &str = "/v2/nusa/models";
/// Every model's history ([`History`]).
pub const HISTORY: &str = "/v2/nusa/history";

/// Triton's `POST /v2/repository/models/{m}/load`.
pub fn load_path(model: &str) -> String {
    format!("/v2/repository/models/{}/load", escape(model))
}

/// Triton's `POST /v2/repository/models/{m}/unload`.
pub fn unload_path(model: &str) -> String {
    format!("/v2/repository/models/{}/unload", escape(model))
}

/// `POST` a [`PinRequest`].
pub fn pin_path(model: &str) -> String {
    format!("{MODELS}/{}/pin", escape(model))
}

/// `POST` a [`PullBody`]: install a published version now (signed mode).
pub fn pull_path(model: &str) -> String {
    format!("{MODELS}/{}/pull", escape(model))
}

/// One model's history.
pub fn history_path(model: &str) -> String {
    format!("{MODELS}/{}/history", escape(model))
}

/// `GET`: one model's drift ([`DriftReply`]).
pub fn drift_path(model: &str) -> String {
    format!("{MODELS}/{}/drift", escape(model))
}

/// A model's drift: each version's monitor (`nusa_drift::Report`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriftReply {
    pub model: String,
    /// `false` with `[drift] enabled = false`: no reports.
    pub enabled: bool,
    pub versions: Vec<nusa_drift::Report>,
}

/// Every model's canary rollout, running or last ended.
pub const CANARY: &str = "/v2/nusa/canary";

/// `GET` one model's rollout; `POST` a [`CanaryStart`] starts one.
pub fn canary_path(model: &str) -> String {
    format!("{MODELS}/{}/canary", escape(model))
}

/// `POST`: promote the candidate now.
pub fn canary_promote_path(model: &str) -> String {
    format!("{MODELS}/{}/canary/promote", escape(model))
}

/// `POST` a [`CanaryAbort`]: roll back now.
pub fn canary_abort_path(model: &str) -> String {
    format!("{MODELS}/{}/canary/abort", escape(model))
}

/// `GET`: every API key ([`KeyList`]); `POST` a `nusa_auth::KeySpec`:
/// create one ([`KeySecret`], the only time the key is shown).
pub const KEYS: &str = "/v2/nusa/keys";

/// `GET`: one key's record; `POST` a `KeySpec`: change it (same secret).
pub fn key_path(name: &str) -> String {
    format!("{KEYS}/{}", escape(name))
}

/// `POST`: revoke a key now.
pub fn key_revoke_path(name: &str) -> String {
    format!("{KEYS}/{}/revoke", escape(name))
}

/// `POST`: a new secret for a key; the old one stops working at once.
pub fn key_rotate_path(name: &str) -> String {
    format!("{KEYS}/{}/rotate", escape(name))
}

/// `POST`: empty the edge cache (both tiers).
pub const CACHE_PURGE: &str = "/v2/nusa/cache/purge";

/// `POST`: read nusad's config file again and apply what can change while
/// it runs ([`ReloadReply`]); `SIGHUP` does the same.
pub const CONFIG_RELOAD: &str = "/v2/nusa/config/reload";

/// What a configuration reload did. Sections are the file's top-level
/// tables (`pricing`, `budgets`, `auth.bootstrap_keys`, `spill`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// The file read.
    pub file: String,
    /// Changed and now in effect.
    pub applied: Vec<String>,
    /// Changed in the file but read only at start: in effect after a
    /// restart (listed again at every reload until then).
    pub restart_needed: Vec<String>,
}

/// `GET ?since=24h&by=key|model|version|region|place`: what answers cost
/// (`nusa_cost::Report`).
pub const COST: &str = "/v2/nusa/cost";

/// `GET ?since=UNIX_S&limit=N`: the audit log's records ([`AuditList`]);
/// `POST` an [`AuditAppend`]: record an action another process took (the
/// OS updater), as its caller.
pub const AUDIT: &str = "/v2/nusa/audit";

/// An action done outside nusad, recorded in its audit log under the
/// caller's identity (the socket's uid).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAppend {
    /// Dotted lowercase: `update.apply`.
    pub action: String,
    pub target: String,
    /// Set when the action failed.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub detail: serde_json::Value,
}
/// `GET`: the chain checked against the box's checkpoints
/// (`nusa_audit::VerifyReport`).
pub const AUDIT_VERIFY: &str = "/v2/nusa/audit/verify";
/// `POST`: sign the head now ([`AuditCheckpoint`]).
pub const AUDIT_CHECKPOINT: &str = "/v2/nusa/audit/checkpoint";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<nusa_auth::KeyRecord>,
}

/// A created or rotated key: the record, and the key itself, shown once.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeySecret {
    pub key: nusa_auth::KeyRecord,
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditList {
    pub records: Vec<nusa_audit::Record>,
    /// The newest record's seq and hash.
    pub head: Option<(u64, String)>,
}

/// `POST /v2/nusa/audit/verify`: checkpoints kept off the box, checked
/// against this box's checkpoint key and then against the log (a log cut
/// short of one is found truncated).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerify {
    pub checkpoints: Vec<nusa_audit::Checkpoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub checkpoint: nusa_audit::Checkpoint,
    /// The box's checkpoint key (hex Ed25519), to verify it with.
    pub public_key: String,
}

/// Percent-escapes what is not unreserved (RFC 3986) in a path segment.
fn escape(s: &str) -> String {
    const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// `GET /v2/nusa/models`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Where models come from and whether they are verified: `directory`
    /// (a plain local folder, not verified: development and the demo).
    pub mode: String,
    pub models: Vec<ModelStatus>,
    /// Signed mode: the pull in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulling: Option<PullProgress>,
}

/// A model version being pulled: bytes in place of its files' total, the
/// rate so far and the seconds left at that rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    pub model: String,
    pub version: u64,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub bytes_per_second: u64,
    /// `None` until a rate is known.
    pub eta_s: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    /// `READY`, `UNAVAILABLE` (failed to load: see `error`) or `UNLOADED`.
    pub state: String,
    /// The version requests without one get now.
    pub serving: Option<u64>,
    /// Set when an operator pinned the serving version.
    pub pinned: Option<u64>,
    /// The version in a canary rollout beside the serving one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u64>,
    /// Versions rolled back on this box, with why: never served again by
    /// themselves.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rolled_back: std::collections::BTreeMap<u64, String>,
    /// `onnxruntime` or `tensorrt`.
    pub engine: String,
    pub error: Option<String>,
    pub versions: Vec<VersionStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStatus {
    pub version: u64,
    /// SHA-256 of the version's files, hex: what the cache keys by.
    pub digest: String,
    pub engine: String,
    /// Why this engine (e.g. ONNX Runtime while a TensorRT plan builds).
    pub engine_detail: String,
    /// Signed mode: the version's signed provenance (source revision,
    /// training run, data digest, publisher, notes) and `published_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
}

/// The answer to a load, an unload or a pin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReply {
    pub model: String,
    /// Versions loaded (new or changed) and warmed up.
    pub loaded: Vec<u64>,
    /// Versions that kept serving as they were.
    pub kept: Vec<u64>,
    /// Versions no longer served.
    pub dropped: Vec<u64>,
    pub serving_before: Option<u64>,
    pub serving: Option<u64>,
}

/// `POST /v2/nusa/models/{m}/pin`: `{"version": 3}`, or `{"version": null}`
/// to serve the latest again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    pub version: Option<u64>,
}

/// `POST /v2/nusa/models/{m}/canary`: `{"version": 4, "plan": {"steps":
/// [10, 100], "shadow": true}}`; `plan` holds any `[rollout]` keys, layered
/// over nusad's and the model's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStart {
    pub version: u64,
    #[serde(default)]
    pub plan: serde_json::Map<String, serde_json::Value>,
}

/// One model's canary rollout: the running one's figures, or how the last
/// one ended (`GET /v2/nusa/models/{m}/canary`; `GET /v2/nusa/canary`
/// answers `{"rollouts": [...]}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CanaryStatus {
    pub model: String,
    pub running: Option<nusa_rollout::Report>,
    pub last: Option<CanaryEnded>,
}

/// `GET /v2/nusa/canary`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rollouts {
    pub rollouts: Vec<CanaryStatus>,
}

/// How a model's last rollout ended (also the answer to promote and abort).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CanaryEnded {
    pub stable: u64,
    pub candidate: u64,
    /// `promoted`, `rolled_back` (by the judgement) or `aborted` (by an
    /// operator).
    pub result: String,
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The step it was on, and the candidate's share there.
    pub step: usize,
    pub percent: u32,
    /// The figures of its last step.
    pub report: Option<nusa_rollout::Report>,
}

/// `POST /v2/nusa/models/{m}/canary/abort`: `{"reason": "..."}` (optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryAbort {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v2/nusa/models/{m}/pull`: `{"version": 4}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullBody {
    pub version: u64,
}

/// What a pull did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReply {
    pub model: String,
    pub version: u64,
    pub detail: String,
}

/// One thing that happened to a model; also the line format of the history
/// file nusad keeps on the data partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `load`, `swap`, `unload`, `refused`, `pin`, `unpin`.
    pub event: String,
    /// What changed, or why it was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<HistoryEvent>,
}

/// `GET`: the box at a glance ([`Overview`]): what the status page
/// (`/status` on the metrics listener) and `nusactl status` show.
pub const STATUS: &str = "/v2/nusa/status";

/// The box at a glance. The counters are the metrics endpoint's own
/// series, read back, so the page and Prometheus agree.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Overview {
    /// nusad's version.
    pub version: String,
    /// The root slot the box booted (`a`, `b`), when the kernel command
    /// line names one.
    pub slot: Option<String>,
    /// Unix seconds now, and seconds since nusad started.
    pub time_s: u64,
    pub uptime_s: u64,
    /// Every model is ready or unloaded on purpose, and there is one.
    pub ready: bool,
    /// Every model's versions, engines and readiness.
    pub models: Status,
    /// Canary rollouts running or last ended.
    pub rollouts: Vec<CanaryStatus>,
    /// Requests waiting per model.
    pub queues: Vec<QueueDepth>,
    pub cache: CacheSummary,
    pub regions: Vec<RegionSummary>,
    pub requests: RequestSummary,
    /// The OS updater, from the progress file it writes.
    pub update: UpdateSummary,
    /// The last warnings and errors nusad logged, newest last.
    pub errors: Vec<RecentError>,
    /// Each model version's drift monitor.
    #[serde(default)]
    pub drift: Vec<nusa_drift::Report>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub model: String,
    pub depth: u64,
}

/// The edge cache since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSummary {
    /// `false`: no cache configured.
    pub enabled: bool,
    pub hits: u64,
    pub misses: u64,
    /// Requests that waited for an identical one in flight.
    pub coalesced: u64,
    /// `hits / (hits + misses)`; `None` before the first lookup.
    pub hit_ratio: Option<f64>,
    /// Bytes held, per tier (`memory`, `disk`).
    pub bytes: Vec<(String, u64)>,
}

/// One regional endpoint, as the last probe and the breaker left it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionSummary {
    pub name: String,
    /// `ok`, a failure class (`connect`, `tls`, `timeout`, `status_5xx`,
    /// ...), or `not probed yet`.
    pub probe: String,
    /// `closed`, `half-open`, `open`.
    pub breaker: String,
    /// The last good probe's round trip.
    pub rtt_ms: Option<f64>,
    /// Requests sent there since start.
    pub spilled: u64,
}

/// Inference requests since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// All answered, by outcome (`ok`, `bad_request`, `over_limit`, ...).
    pub by_outcome: Vec<(String, u64)>,
    /// Sent to a region.
    pub spilled: u64,
    /// `spilled / ok`; `None` before the first good answer.
    pub spill_share: Option<f64>,
}

/// What the OS updater last reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateSummary {
    /// The updater's state (`idle`, `downloading`, ...); `None` when it
    /// has not written its progress file (not an appliance, or not run).
    pub state: Option<String>,
    /// The step in progress and its bytes done and in total.
    pub step: Option<String>,
    pub done_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

/// One warning or error from nusad's log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentError {
    /// Unix seconds.
    pub time_s: u64,
    pub level: String,
    pub target: String,
    pub text: String,
}

/// Every error body: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_the_model_name() {
        assert_eq!(load_path("tiny-cnn"), "/v2/repository/models/tiny-cnn/load");
        assert_eq!(pin_path("a b/c"), "/v2/nusa/models/a%20b%2Fc/pin");
    }

    #[test]
    fn history_lines_round_trip_and_skip_empty_fields() {
        let e = HistoryEvent {
            at: 1,
            model: "m".into(),
            version: None,
            event: "unload".into(),
            detail: String::new(),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(line, r#"{"at":1,"model":"m","event":"unload"}"#);
        assert_eq!(serde_json::from_str::<HistoryEvent>(&line).unwrap(), e);
    }
}
