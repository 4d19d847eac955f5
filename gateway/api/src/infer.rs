//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use nusa_dispatch::Job;
use nusa_engine::ModelMetadata;
use nusa_proto::SoleInput;
use nusa_proto::{
    decode_infer_request, encode_infer_response, InferRequest, ProtoError, ResponseOutput,
};
use nusa_tensor::Tensor;

use crate::meta::lookup_error;
use crate::{Api, ApiRequest, ApiResponse};

pub(crate) async fn handle(
    api: &Api,
    model: &str,
    version: Option<&str>,
    req: ApiRequest,
) -> ApiResponse {
    let protocol = req.protocol.label();
    let received = req.received;
    let (outcome, resp) = match infer(api, model, version, req).await {
        Ok(resp) => ("ok", resp),
        Err(e) => (e.kind.label(), ApiResponse::error(&e)),
    };
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

async fn infer(
    api: &Api,
    model: &str,
    version: Option<&str>,
    req: ApiRequest,
) -> Result<ApiResponse, ProtoError> {
    let mv = api.repo.resolve(model, version).map_err(lookup_error)?;
    let meta = &mv.metadata;
    let sole = match meta.inputs.as_slice() {
        [one] => Some(SoleInput {
            name: &one.name,
            datatype: one.datatype,
            shape: &one.shape,
        }),
        _ => None,
    };
    let mut request = decode_infer_request(req.header_length.as_deref(), req.body, sole)?;
    let wanted = requested_outputs(meta, &request)?;
    let batching = mv.scheduler.batching();
    let (inputs, rows) = check_inputs(meta, std::mem::take(&mut request.inputs), batching)?;
    let model_entry = api.repo.model(model).map_err(lookup_error)?;

    let job = Job {
        model,
        version: &mv,
        config: &model_entry.config,
        inputs,
        rows,
        outputs: request
            .outputs
            .is_some()
            .then(|| wanted.iter().map(|(n, _)| n.to_string()).collect()),
        priority: request.priority,
        timeout_us: request.timeout_us,
        pinned: request.local_only,
        peer: req.peer,
        traceparent: req.traceparent,
        cache_control: req.cache_control,
    };
    let (tensors, served_by) = api.dispatch.infer(job).await?;

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
    let version_str = mv.version.to_string();
    let encoded = encode_infer_response(model, Some(&version_str), request.id.as_deref(), &outputs)
        .map_err(|e| ProtoError::bad_request(format!("encoding the response: {e}")))?;
    let mut headers = Vec::with_capacity(4);
    match encoded.header_length {
        Some(n) => {
            headers.push(("content-type", "application/octet-stream".to_string()));
            headers.push((nusa_proto::HEADER_LENGTH, n.to_string()));
        }
        None => headers.push(("content-type", "application/json".to_string())),
    }
    if served_by == nusa_dispatch::ServedBy::Local {
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

/// Puts the inputs in the model's order and checks names, datatypes,
/// shapes and the elements of BYTES inputs against what the engine takes.
/// Returns the inputs and the request's rows.
fn check_inputs(
    meta: &ModelMetadata,
    mut given: Vec<Tensor>,
    batching: bool,
) -> Result<(Vec<Tensor>, usize), ProtoError> {
    let names = || {
        meta.inputs
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(extra) = given.iter().find(|t| meta.input(&t.name).is_none()) {
        return Err(ProtoError::bad_request(format!(
            "unknown input '{}': the model takes {}",
            extra.name,
            names()
        )));
    }
    let mut ordered = Vec::with_capacity(meta.inputs.len());
    let mut rows: Option<usize> = None;
    for spec in &meta.inputs {
        let Some(pos) = given.iter().position(|t| t.name == spec.name) else {
            return Err(ProtoError::bad_request(format!(
                "missing input '{}' ({} {:?}): the model takes {}",
                spec.name,
                spec.datatype,
                spec.shape,
                names()
            )));
        };
        let t = given.swap_remove(pos);
        if t.datatype != spec.datatype {
            return Err(ProtoError::bad_request(format!(
                "input '{}': datatype {} does not match the model's {}",
                t.name, t.datatype, spec.datatype
            )));
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape
                .iter()
                .zip(&spec.shape)
                .all(|(&got, &want)| want < 0 || got == want);
        if !fits {
            return Err(ProtoError::bad_request(format!(
                "input '{}': shape {:?} does not match the model's {:?} (-1 is any size)",
                t.name, t.shape, spec.shape
            )));
        }
        // What the engine cannot take fails here, alone, with a 400: in a
        // batch it would fail every other request with it.
        meta.bytes_elements
            .check(&t)
            .map_err(ProtoError::bad_request)?;
        if batching {
            let r = t.shape[0] as usize;
            if r == 0 {
                return Err(ProtoError::bad_request(format!(
                    "input '{}': the batch dimension is 0",
                    t.name
                )));
            }
            match rows {
                None => rows = Some(r),
                Some(prev) if prev != r => {
                    return Err(ProtoError::bad_request(format!(
                        "input '{}' has {r} rows but another input has {prev}: all inputs need the same batch size",
                        t.name
                    )))
                }
                Some(_) => {}
            }
        }
        ordered.push(t);
    }
    Ok((ordered, rows.unwrap_or(1)))
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
