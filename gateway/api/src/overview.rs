//! The box at a glance (`GET /v2/nusa/status`, the status page's data):
//! models, rollouts, queues, cache, regions, spill share, the updater and
//! the last warnings. Counters are read back from the metrics endpoint's
//! own text, so the page and Prometheus show the same numbers.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use nusa_admin::{
    CacheSummary, Overview, QueueDepth, RecentError, RegionSummary, RequestSummary, UpdateSummary,
};
use nusa_telemetry::recent::RecentEvents;
use nusa_telemetry::samples::{self, Sample};

use nusa_admin::DriftReply;
use nusa_proto::ProtoError;

use crate::{method_not_allowed, Api, ApiRequest, ApiResponse, Method};

/// Who this nusad is: its version and the root slot it booted.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub version: String,
    pub slot: Option<String>,
}

impl Api {
    /// `GET /v2/nusa/models/{m}/drift`: each version's drift monitor.
    pub(crate) fn drift_reply(&self, model: &str, req: &ApiRequest) -> ApiResponse {
        if !matches!(req.method, Method::Get | Method::Head) {
            return ApiResponse::error(&method_not_allowed("GET", &req.path));
        }
        if self.repo.model(model).is_err() {
            return ApiResponse::error(&ProtoError::not_found(format!("unknown model '{model}'")));
        }
        let reply = DriftReply {
            model: model.to_string(),
            enabled: self.drift.is_some(),
            versions: self
                .drift
                .as_ref()
                .and_then(|d| d.report(model))
                .unwrap_or_default(),
        };
        let body = serde_json::to_string(&reply)
            .unwrap_or_else(|e| format!(r#"{{"error":"encoding the drift report: {e}"}}"#));
        ApiResponse::json(200, body)
    }

    /// [`Api::overview`] as JSON: the admin route's and the status page's.
    pub async fn overview_json(&self) -> String {
        serde_json::to_string(&self.overview().await)
            .unwrap_or_else(|e| format!(r#"{{"error":"encoding the status: {e}"}}"#))
    }

    /// The box at a glance, now.
    pub async fn overview(&self) -> Overview {
        let samples = samples::parse(&self.metrics.encode());
        let models = crate::admin::models_status(&self.repo)
            .await
            .unwrap_or_default();
        let ready = !models.models.is_empty()
            && models
                .models
                .iter()
                .all(|m| m.state == "READY" || m.state == "UNLOADED");
        Overview {
            version: self.identity.version.clone(),
            slot: self.identity.slot.clone(),
            time_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            uptime_s: self.started.elapsed().as_secs(),
            ready,
            models,
            rollouts: self.canaries.status(),
            queues: queues(&samples),
            cache: cache(&samples, self.dispatch.has_cache()),
            regions: self.regions(&samples),
            requests: requests(&samples),
            update: update(&samples),
            errors: RecentEvents::global()
                .list()
                .into_iter()
                .map(|e| RecentError {
                    time_s: e.time_s,
                    level: e.level.to_string(),
                    target: e.target,
                    text: e.text,
                })
                .collect(),
            drift: self.drift.as_ref().map(|d| d.reports()).unwrap_or_default(),
        }
    }

    fn regions(&self, samples: &[Sample]) -> Vec<RegionSummary> {
        self.dispatch
            .region_states()
            .into_iter()
            .map(|r| {
                let of_region = |s: &&Sample| s.label("region") == Some(r.name.as_str());
                let rtt_ms = samples
                    .iter()
                    .filter(of_region)
                    .find(|s| s.name == "nusa_region_probe_rtt_seconds")
                    .map(|s| s.value * 1e3);
                let spilled = sum(samples.iter().filter(of_region), "nusa_spilled_total");
                RegionSummary {
                    probe: match r.probe {
                        None => "not probed yet".into(),
                        Some(Ok(())) => "ok".into(),
                        Some(Err(class)) => class.into(),
                    },
                    breaker: match r.breaker {
                        Some(0) => "closed",
                        Some(1) => "half-open",
                        Some(2) => "open",
                        _ => "closed",
                    }
                    .into(),
                    rtt_ms,
                    spilled,
                    name: r.name,
                }
            })
            .collect()
    }
}

fn sum<'a>(samples: impl Iterator<Item = &'a Sample>, name: &str) -> u64 {
    samples
        .filter(|s| s.name == name)
        .map(|s| s.value.max(0.0))
        .sum::<f64>() as u64
}

fn queues(samples: &[Sample]) -> Vec<QueueDepth> {
    samples
        .iter()
        .filter(|s| s.name == "nusa_queue_depth")
        .filter_map(|s| {
            Some(QueueDepth {
                model: s.label("model")?.to_string(),
                depth: s.value.max(0.0) as u64,
            })
        })
        .collect()
}

fn cache(samples: &[Sample], enabled: bool) -> CacheSummary {
    let hits = sum(samples.iter(), "nusa_cache_hits_total");
    let misses = sum(samples.iter(), "nusa_cache_misses_total");
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "nusa_cache_bytes") {
        let tier = s.label("tier").unwrap_or("all").to_string();
        *bytes.entry(tier).or_default() += s.value.max(0.0) as u64;
    }
    CacheSummary {
        enabled,
        hits,
        misses,
        coalesced: sum(samples.iter(), "nusa_cache_coalesced_total"),
        hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        bytes: bytes.into_iter().collect(),
    }
}

fn requests(samples: &[Sample]) -> RequestSummary {
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "nusa_requests_total") {
        let outcome = s.label("outcome").unwrap_or("").to_string();
        *by_outcome.entry(outcome).or_default() += s.value.max(0.0) as u64;
    }
    let ok = by_outcome.get("ok").copied().unwrap_or(0);
    let spilled = sum(samples.iter(), "nusa_spilled_total");
    RequestSummary {
        by_outcome: by_outcome.into_iter().collect(),
        spilled,
        spill_share: (ok > 0).then(|| spilled as f64 / ok as f64),
    }
}

fn update(samples: &[Sample]) -> UpdateSummary {
    let state = samples
        .iter()
        .find(|s| s.name == "nusa_update_state" && s.value >= 1.0)
        .and_then(|s| s.label("state"))
        .map(str::to_string);
    let bytes = |kind: &str| {
        samples
            .iter()
            .find(|s| s.name == "nusa_update_bytes" && s.label("kind") == Some(kind))
    };
    UpdateSummary {
        state,
        step: bytes("done")
            .and_then(|s| s.label("step"))
            .map(str::to_string),
        done_bytes: bytes("done").map(|s| s.value.max(0.0) as u64),
        total_bytes: bytes("total").map(|s| s.value.max(0.0) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_labels_and_ratios_wait_for_data() {
        let text = "nusa_requests_total{model=\"a\",outcome=\"ok\",protocol=\"http1\"} 8\n\
            nusa_requests_total{model=\"a\",outcome=\"ok\",protocol=\"http2\"} 2\n\
            nusa_requests_total{model=\"a\",outcome=\"bad_request\",protocol=\"http2\"} 1\n\
            nusa_spilled_total{model=\"a\",region=\"sg\",reason=\"slo\"} 4\n\
            nusa_cache_hits_total{model=\"a\"} 3\n\
            nusa_cache_misses_total{model=\"a\"} 1\n\
            nusa_update_state{state=\"downloading\"} 1\n\
            nusa_update_bytes{step=\"download\",kind=\"done\"} 10\n\
            nusa_update_bytes{step=\"download\",kind=\"total\"} 40\n";
        let s = samples::parse(text);
        let r = requests(&s);
        assert_eq!(
            r.by_outcome,
            vec![("bad_request".into(), 1), ("ok".into(), 10)]
        );
        assert_eq!((r.spilled, r.spill_share), (4, Some(0.4)));
        let c = cache(&s, true);
        assert_eq!((c.hits, c.misses, c.hit_ratio), (3, 1, Some(0.75)));
        let u = update(&s);
        assert_eq!(u.state.as_deref(), Some("downloading"));
        assert_eq!((u.done_bytes, u.total_bytes), (Some(10), Some(40)));
        let empty = samples::parse("");
        assert_eq!(requests(&empty).spill_share, None);
        assert_eq!(cache(&empty, false).hit_ratio, None);
        assert_eq!(update(&empty).state, None);
    }
}
