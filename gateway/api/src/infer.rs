//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use nusa_canary::Ticket;
use nusa_cost::{Place, Usage};
use nusa_dispatch::{Answer, Job, ServedBy};
use nusa_engine::ModelMetadata;
use nusa_proto::SoleInput;
use nusa_proto::{
    decode_infer_request, encode_infer_response, InferRequest, ProtoError, ResponseOutput,
};
use nusa_sched::SchedError;
use nusa_tensor::Tensor;
use nusa_trace::Phases;

use crate::meta::lookup_error;
use crate::{Api, ApiRequest, ApiResponse, Caller};

pub(crate) async fn handle(
    api: &Api,
    model: &str,
    version: Option<&str>,
    req: ApiRequest,
    caller: &Caller,
) -> ApiResponse {
    let protocol = req.protocol.label();
    let received = req.received;
    // The key's limits (rate, concurrency, daily requests); the permit
    // holds its concurrency slot until the answer is made.
    let now_s = crate::access::now_s();
    let permit = match (&api.access, caller.key()) {
        (Some(access), Some(key)) => access.admit(key, model, now_s).map(Some),
        _ => Ok(None),
    };
    let mut phases = Phases::default();
    let (outcome, mut resp) = match permit {
        Err(refused) => (OVER_LIMIT, refused),
        Ok(_permit) => match infer(api, model, version, req, caller, &mut phases).await {
            Ok(resp) => ("ok", resp),
            Err(Refused::Proto(e)) => (e.kind.label(), ApiResponse::error(&e)),
            Err(Refused::Limit(d)) => (OVER_LIMIT, crate::access::over_limit(&d, now_s)),
        },
    };
    if api.server_timing {
        let value = nusa_trace::server_timing(&phases, received.elapsed());
        resp.headers.push((crate::SERVER_TIMING, value));
    }
    // Label by the model name only when it names a model we serve, so that
    // clients cannot grow the label set with made-up names.
    let label = if api.repo.model(model).is_ok() {
        model
    } else {
        ""
    };
    api.metrics.request(label, outcome, protocol);
    if outcome == "ok" {
        api.metrics
            .total_latency(model, received.elapsed().as_secs_f64());
    }
    resp
}

/// `nusa_requests_total`'s outcome for a 429 naming a key's limit.
const OVER_LIMIT: &str = "over_limit";

/// Why a request got no answer: an error of the protocol's kinds, or a
/// key's limit (429).
enum Refused {
    Proto(ProtoError),
    Limit(nusa_auth::Denied),
}

impl From<ProtoError> for Refused {
    fn from(e: ProtoError) -> Refused {
        Refused::Proto(e)
    }
}

async fn infer(
    api: &Api,
    model: &str,
    version: Option<&str>,
    req: ApiRequest,
    caller: &Caller,
    phases: &mut Phases,
) -> Result<ApiResponse, Refused> {
    // A request that names no version gets the rollout's pick while the
    // model is in a canary rollout; one that names a version bypasses it.
    // The split's key: the API key's name, else the client's address.
    let peer = req.peer.map(|ip| match ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    });
    let split_key = match caller.key() {
        Some(k) => Some(k.name.as_bytes()),
        None => peer.as_ref().map(|p| &p[..]),
    };
    let mut ticket = match version {
        None | Some("") => api.canaries.route(model, split_key),
        Some(_) => None,
    };
    let picked = ticket.as_ref().map(|t| t.version.to_string());
    let mv = match api.repo.resolve(model, picked.as_deref().or(version)) {
        Ok(mv) => mv,
        // The rollout ended between the pick and here: serve as usual.
        Err(_) if ticket.is_some() => {
            ticket = None;
            api.repo.resolve(model, version).map_err(lookup_error)?
        }
        Err(e) => return Err(lookup_error(e).into()),
    };
    let meta = &mv.metadata;
    let model_entry = api.repo.model(model).map_err(lookup_error)?;
    nusa_trace::record_model(model, model_entry.config.slo_ms);
    let sole = match meta.inputs.as_slice() {
        [one] => Some(SoleInput {
            name: &one.name,
            datatype: one.datatype,
            shape: &one.shape,
        }),
        _ => None,
    };
    let bytes_in = req.body.len() as u64;
    let decoding =
        tracing::info_span!(target: nusa_trace::TARGET, "decode", nusa.bytes = bytes_in as i64);
    let mut request =
        decoding.in_scope(|| decode_infer_request(req.header_length.as_deref(), req.body, sole))?;
    let wanted = requested_outputs(meta, &request)?;
    let batching = mv.scheduler.batching();
    let (inputs, rows) = meta
        .order_inputs(std::mem::take(&mut request.inputs), batching)
        .map_err(ProtoError::bad_request)?;
    // The key's residency and spill permission, and its daily quota of
    // bytes spilled to regions (checked here, counted below when a region
    // answered).
    let request_bytes: u64 = inputs.iter().map(|t| t.data.len() as u64).sum();
    let day = nusa_auth::utc_day(crate::access::now_s());
    // A key whose spill quota is spent stays here; if here cannot take
    // the request either, the answer is the quota's 429, not a 503.
    let (caller_residency, spill_spent) = match (caller.key(), &api.access) {
        (Some(k), Some(access)) => (
            Some(k.residency.as_slice()),
            k.spill
                .then(|| {
                    access
                        .limiter()
                        .check_spill(k, model, request_bytes, day)
                        .err()
                })
                .flatten(),
        ),
        _ => (None, None),
    };
    let caller_may_spill = caller.key().is_none_or(|k| k.spill) && spill_spent.is_none();

    // Naming every output asks for what naming none does (tritonclient
    // names them all when given outputs): the same computation, the same
    // cache entry.
    let names_every_output = meta
        .outputs
        .iter()
        .all(|o| wanted.iter().any(|(n, _)| *n == o.name));
    let job = Job {
        model,
        version: &mv,
        config: &model_entry.config,
        inputs,
        rows,
        outputs: (request.outputs.is_some() && !names_every_output)
            .then(|| wanted.iter().map(|(n, _)| n.to_string()).collect()),
        priority: request.priority,
        timeout_us: request.timeout_us,
        pinned: request.local_only,
        caller_residency,
        caller_may_spill,
        caller: caller.key().map(|k| k.name.as_str()),
        peer: req.peer,
        trace: req.trace,
        cache_control: req.cache_control,
    };
    // Drift: a sampled request keeps its inputs (refcounted bytes) until
    // its answer is there; the others pay one atomic add.
    let drift_inputs = api
        .drift
        .as_ref()
        .filter(|d| d.sample())
        .map(|_| job.inputs.clone());
    let shadow_copy = ticket
        .as_ref()
        .and_then(|t| t.shadow)
        .map(|_| (job.inputs.clone(), job.rows));
    let result = api.dispatch.infer(job).await;
    if let Some(t) = &ticket {
        match result.as_ref().map(|a| &a.served_by) {
            Ok(ServedBy::Local { compute_us, .. }) => t.record(false, Some(*compute_us)),
            Ok(ServedBy::Cache) => t.record(false, None),
            // A region's answer says nothing of this box's versions.
            Ok(ServedBy::Cloud(_)) => {}
            // A 5xx, or the engine refusing a request the API's checks
            // passed (a 400 from the version itself): a failure of the
            // version that served it. A request the API refuses never gets
            // here, on either version.
            Err(_) => t.record(true, None),
        }
    }
    let Answer {
        outputs: tensors,
        served_by,
        phases: spent,
    } = match (result, spill_spent) {
        (Ok(answer), _) => answer,
        (Err(e), Some(spent)) if e.kind.status() == 503 => return Err(Refused::Limit(spent)),
        (Err(e), _) => return Err(e.into()),
    };
    if let (ServedBy::Cloud(_), Some(k), Some(access)) = (&served_by, caller.key(), &api.access) {
        access.limiter().spilled(k, model, request_bytes, day);
    }
    if let (Some(drift), Some(inputs)) = (&api.drift, &drift_inputs) {
        drift.observe_sampled(model, mv.version, inputs, &tensors);
    }
    if let (Some(t), Some((inputs, rows))) = (ticket, shadow_copy) {
        shadow(api, model, t, inputs, rows, &tensors);
    }

    let outputs: Vec<ResponseOutput> = tensors
        .into_iter()
        .filter_map(|t| {
            let binary = wanted.iter().find(|(name, _)| *name == t.name)?.1;
            Some(ResponseOutput {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
                data: t.data,
                binary,
            })
        })
        .collect();
    *phases = spent;
    if nusa_trace::enabled() {
        tracing::Span::current().record("nusa.served_by", served_by.header());
    }
    let version_str = mv.version.to_string();
    let encoding = tracing::info_span!(target: nusa_trace::TARGET, "encode", nusa.bytes = tracing::field::Empty);
    let encoded = encoding
        .in_scope(|| {
            encode_infer_response(model, Some(&version_str), request.id.as_deref(), &outputs)
        })
        .map_err(|e| ProtoError::bad_request(format!("encoding the response: {e}")))?;
    let bytes_out: u64 = encoded.frames.iter().map(|f| f.len() as u64).sum();
    encoding.record("nusa.bytes", bytes_out as i64);
    if let Some(costs) = &api.costs {
        let place = match &served_by {
            ServedBy::Cache => Place::Cache,
            ServedBy::Local { .. } => Place::Local,
            ServedBy::Cloud(name) => Place::Region {
                name,
                country: api.dispatch.region_country(name),
            },
        };
        let compute_s = match served_by {
            ServedBy::Local {
                compute_us,
                batch_rows,
            } => nusa_cost::share(compute_us as f64 / 1e6, rows, batch_rows),
            _ => 0.0,
        };
        costs.record(&Usage {
            model,
            version: mv.version,
            key: caller.key().map(|k| k.name.as_str()),
            place,
            compute_s,
            bytes_in,
            bytes_out,
        });
    }
    let mut headers = Vec::with_capacity(4);
    match encoded.header_length {
        Some(n) => {
            headers.push(("content-type", "application/octet-stream".to_string()));
            headers.push((nusa_proto::HEADER_LENGTH, n.to_string()));
        }
        None => headers.push(("content-type", "application/json".to_string())),
    }
    if matches!(served_by, ServedBy::Local { .. }) {
        // The engine serving the version as the answer left (a TensorRT
        // plan may replace ONNX Runtime between two requests).
        headers.push(("nusa-engine", mv.engine_name().to_string()));
    }
    headers.push(("nusa-served-by", served_by.header()));
    Ok(ApiResponse {
        status: 200,
        headers,
        body: encoded.frames,
    })
}

/// Shadow mode: the candidate computes a copy of this stable request in
/// the background; its answer is compared with the stable one and never
/// returned. Skipped when the candidate's queue is full, so that a copy
/// never takes a place a real request needs.
fn shadow(
    api: &Api,
    model: &str,
    ticket: Ticket,
    inputs: Vec<Tensor>,
    rows: usize,
    stable: &[Tensor],
) {
    let Some(sh) = ticket.shadow else { return };
    let Ok(candidate) = api.repo.resolve(model, Some(&sh.candidate.to_string())) else {
        return;
    };
    if candidate.scheduler.queue_full() {
        return;
    }
    let stable = stable.to_vec();
    tokio::spawn(async move {
        match candidate.scheduler.infer(inputs, rows, 0, 0).await {
            Ok(out) => {
                let compute_us = out.timing.compute.as_micros() as u64;
                let outputs: Vec<Tensor> = out
                    .outputs
                    .into_iter()
                    .filter(|t| stable.iter().any(|s| s.name == t.name))
                    .collect();
                let r = nusa_canary::nusa_rollout::compare(&stable, &outputs, sh.atol, sh.rtol);
                ticket.record_shadow(Some(&r), Some(compute_us));
            }
            Err(SchedError::Engine(_)) => ticket.record_shadow(None, None),
            // Queue full, timed out, stopped: says nothing of the model.
            Err(_) => {}
        }
    });
}

/// The outputs to send and whether each goes in the binary section.
fn requested_outputs<'m>(
    meta: &'m ModelMetadata,
    req: &InferRequest,
) -> Result<Vec<(&'m str, bool)>, ProtoError> {
    match &req.outputs {
        None => Ok(meta
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), req.binary_data_output))
            .collect()),
        Some(list) => list
            .iter()
            .map(|o| {
                let spec = meta.output(&o.name).ok_or_else(|| {
                    ProtoError::bad_request(format!(
                        "unknown output '{}': the model gives {}",
                        o.name,
                        meta.outputs
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                Ok((
                    spec.name.as_str(),
                    o.binary.unwrap_or(req.binary_data_output),
                ))
            })
            .collect(),
    }
}
