//! Health, server and model metadata, model config, repository index.

use nusa_engine::TensorSpec;
use nusa_proto::ProtoError;
use nusa_registry::{LookupError, Repository};
use serde_json::{json, Value};

use crate::ApiResponse;

pub(crate) fn lookup_error(e: LookupError) -> ProtoError {
    match e {
        LookupError::UnknownModel(_)
        | LookupError::UnknownVersion { .. }
        | LookupError::Unloaded(_) => ProtoError::not_found(e.to_string()),
        LookupError::NotReady { .. } => {
            ProtoError::new(nusa_proto::ErrorKind::Unavailable, e.to_string())
        }
    }
}

fn specs(list: &[TensorSpec]) -> Value {
    list.iter()
        .map(|t| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape}))
        .collect()
}

pub(crate) fn server(_repo: &Repository) -> ApiResponse {
    ApiResponse::json(
        200,
        json!({
            "name": "nusad",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": ["binary_tensor_data", "model_repository"],
        })
        .to_string(),
    )
}

pub(crate) fn model(
    repo: &Repository,
    name: &str,
    version: Option<&str>,
) -> Result<ApiResponse, ProtoError> {
    let mv = repo.resolve(name, version).map_err(lookup_error)?;
    let model = repo.model(name).map_err(lookup_error)?;
    let versions: Vec<String> = match version {
        Some(_) => vec![mv.version.to_string()],
        None => model.versions.keys().map(u64::to_string).collect(),
    };
    Ok(ApiResponse::json(
        200,
        json!({
            "name": name,
            "versions": versions,
            "platform": mv.metadata.platform,
            "inputs": specs(&mv.metadata.inputs),
            "outputs": specs(&mv.metadata.outputs),
        })
        .to_string(),
    ))
}

pub(crate) fn model_ready(repo: &Repository, name: &str, version: Option<&str>) -> ApiResponse {
    let ready =
        repo.resolve(name, version).is_ok() && repo.model(name).is_ok_and(|m| m.error.is_none());
    let body = json!({"name": name, "ready": ready}).to_string();
    match repo.resolve(name, version) {
        Err(
            e @ (LookupError::UnknownModel(_)
            | LookupError::UnknownVersion { .. }
            | LookupError::Unloaded(_)),
        ) => ApiResponse::error(&lookup_error(e)),
        _ => ApiResponse::json(if ready { 200 } else { 400 }, body),
    }
}

/// Triton's model configuration, as `tritonclient.get_model_config` reads it.
pub(crate) fn model_config(
    repo: &Repository,
    name: &str,
    version: Option<&str>,
) -> Result<ApiResponse, ProtoError> {
    let mv = repo.resolve(name, version).map_err(lookup_error)?;
    let model = repo.model(name).map_err(lookup_error)?;
    let batching = mv.max_batch_size > 0;
    let dims = |t: &TensorSpec| -> Vec<i64> {
        if batching {
            t.shape[1..].to_vec()
        } else {
            t.shape.clone()
        }
    };
    let io = |list: &[TensorSpec]| -> Value {
        list.iter()
            .map(|t| json!({"name": t.name, "data_type": format!("TYPE_{}", triton_type(t.datatype.as_str())), "dims": dims(t)}))
            .collect()
    };
    let b = &model.config.batching;
    let mut config = json!({
        "name": name,
        "platform": mv.metadata.platform,
        "backend": "onnxruntime",
        "max_batch_size": mv.max_batch_size,
        "input": io(&mv.metadata.inputs),
        "output": io(&mv.metadata.outputs),
        "instance_group": [{"count": model.config.instances.count, "kind": "KIND_CPU"}],
    });
    if batching {
        config["dynamic_batching"] = json!({
            "max_queue_delay_microseconds": b.max_queue_delay_us,
            "priority_levels": b.priority_levels,
            "default_priority_level": b.default_priority_level,
            "default_queue_policy": {
                "max_queue_size": b.max_queue_size,
                "default_timeout_microseconds": b.default_timeout_us,
                "allow_timeout_override": b.allow_timeout_override,
                "timeout_action": "REJECT",
            },
        });
    }
    Ok(ApiResponse::json(200, config.to_string()))
}

fn triton_type(dt: &str) -> &str {
    match dt {
        "BYTES" => "STRING",
        other => other,
    }
}
