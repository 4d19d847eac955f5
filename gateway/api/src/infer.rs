//! `POST /v2/models/{m}[/versions/{v}]/infer`.

use nusa_dispatch::Job;
use nusa_engine::ModelMetadata;
use nusa_proto::SoleInput;
use nusa_proto::{
    decode_infer_request, encode_infer_response, InferRequest, ProtoError, ResponseOutput,
};

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
    let (inputs, rows) = meta
        .order_inputs(std::mem::take(&mut request.inputs), batching)
        .map_err(ProtoError::bad_request)?;
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
