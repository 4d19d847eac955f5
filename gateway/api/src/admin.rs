//! The admin surface: Triton's model repository extension (index, load,
//! unload) and ours under `/v2/nusa/` (status, pins, history, canary
//! rollouts). Served only
//! on the admin listener and socket, where the ingress has checked the
//! caller; the public port answers 404 for these paths.

use nusa_admin::{
    CanaryAbort, CanaryStart, ChangeReply, History, ModelStatus, PinRequest, PullBody, PullReply,
    Status, VersionStatus,
};
use nusa_canary::nusa_rollout::PlanSpec;
use nusa_canary::{Canaries, CanaryError, CanaryStatus};
use nusa_proto::{ErrorKind, ProtoError, Route};
use nusa_registry::{ChangeError, ChangeReport, Model, Repository, MAX_HISTORY_EVENTS};
use serde_json::{json, Value};

use crate::{method_not_allowed, ApiRequest, ApiResponse, Method};

/// The newest events a history answer holds.
const HISTORY_LIMIT: usize = 1000;

pub(crate) async fn handle(
    repo: &Repository,
    canaries: &Canaries,
    route: Route,
    req: ApiRequest,
) -> ApiResponse {
    let post = req.method == Method::Post;
    let get = req.method == Method::Get;
    let result = match route {
        Route::AdminCanary { model: None } if get => Ok(ApiResponse::json(
            200,
            to_json(&nusa_admin::Rollouts {
                rollouts: canaries.status(),
            }),
        )),
        Route::AdminCanary { model: Some(m) } if get => {
            if repo.model(&m).is_err() {
                Err(ProtoError::not_found(format!("unknown model '{m}'")))
            } else {
                Ok(ApiResponse::json(200, to_json(&canaries.status_of(&m))))
            }
        }
        Route::AdminCanary { model: Some(m) } if post => match parse::<CanaryStart>(&req) {
            Ok(body) => start_canary(canaries, &m, body).await,
            Err(e) => Err(e),
        },
        Route::AdminCanaryPromote { model } if post => canaries
            .promote(&model)
            .await
            .map(|ended| ApiResponse::json(200, to_json(&ended)))
            .map_err(canary_error),
        Route::AdminCanaryAbort { model } if post => match parse_or_default::<CanaryAbort>(&req) {
            Ok(body) => canaries
                .abort(&model, body.reason.as_deref())
                .await
                .map(|ended| ApiResponse::json(200, to_json(&ended)))
                .map_err(canary_error),
            Err(e) => Err(e),
        },
        Route::AdminCanary { model: None } => Err(method_not_allowed("GET", &req.path)),
        Route::AdminCanary { .. } => Err(method_not_allowed("GET or POST", &req.path)),
        Route::AdminCanaryPromote { .. } | Route::AdminCanaryAbort { .. } => {
            Err(method_not_allowed("POST", &req.path))
        }
        Route::RepositoryIndex if post || req.method == Method::Get => Ok(index(repo)),
        Route::RepositoryIndex => Err(method_not_allowed("POST", &req.path)),
        Route::RepositoryLoad { model } if post => match load_parameters(&req) {
            Ok(()) => reply(&model, repo.load_model(&model).await),
            Err(e) => Err(e),
        },
        Route::RepositoryUnload { model } if post => reply(&model, repo.unload_model(&model).await),
        Route::AdminPin { model } if post => match parse::<PinRequest>(&req) {
            Ok(pin) => reply(&model, repo.pin(&model, pin.version).await),
            Err(e) => Err(e),
        },
        Route::AdminPull { model } if post => match parse::<PullBody>(&req) {
            Ok(p) => match repo.request_pull(&model, p.version).await {
                Ok(detail) => Ok(ApiResponse::json(
                    200,
                    to_json(&PullReply {
                        model,
                        version: p.version,
                        detail,
                    }),
                )),
                Err(e) => Err(change_error(e)),
            },
            Err(e) => Err(e),
        },
        Route::RepositoryLoad { .. }
        | Route::RepositoryUnload { .. }
        | Route::AdminPin { .. }
        | Route::AdminPull { .. } => Err(method_not_allowed("POST", &req.path)),
        Route::AdminModels if req.method == Method::Get => status(repo).await,
        Route::AdminHistory { model } if req.method == Method::Get => {
            match repo
                .history(model.as_deref(), HISTORY_LIMIT.min(MAX_HISTORY_EVENTS))
                .await
            {
                Ok(events) => Ok(ApiResponse::json(200, to_json(&History { events }))),
                Err(e) => Err(change_error(e)),
            }
        }
        Route::AdminModels | Route::AdminHistory { .. } => {
            Err(method_not_allowed("GET", &req.path))
        }
        _ => Err(ProtoError::not_found(format!(
            "no admin endpoint at {}",
            req.path
        ))),
    };
    result.unwrap_or_else(|e| ApiResponse::error(&e))
}

/// Triton's index: one entry per loaded version, one per model that serves
/// none (with why).
fn index(repo: &Repository) -> ApiResponse {
    let mut out = Vec::new();
    for m in repo.models() {
        if m.versions.is_empty() {
            let reason = if m.unloaded {
                "unloaded".to_string()
            } else {
                m.error.clone().unwrap_or_default()
            };
            out.push(json!({"name": m.name, "state": "UNAVAILABLE", "reason": reason}));
        }
        for (v, mv) in &m.versions {
            // Ready on some engine; the reason says which and why, e.g.
            // ONNX Runtime while a TensorRT plan builds.
            let e = mv.engine();
            out.push(
                json!({"name": m.name, "version": v.to_string(), "state": "READY",
                "reason": format!("{}: {}", e.engine, e.detail)}),
            );
        }
    }
    ApiResponse::json(200, Value::Array(out).to_string())
}

async fn status(repo: &Repository) -> Result<ApiResponse, ProtoError> {
    let marks = repo.marks().await.map_err(change_error)?;
    let models = repo
        .models()
        .iter()
        .map(|m| model_status(m, marks.bad.get(&m.name).cloned().unwrap_or_default()))
        .collect();
    let status = Status {
        mode: repo.mode().into(),
        models,
    };
    Ok(ApiResponse::json(200, to_json(&status)))
}

async fn start_canary(
    canaries: &Canaries,
    model: &str,
    body: CanaryStart,
) -> Result<ApiResponse, ProtoError> {
    let spec: PlanSpec = serde_json::from_value(Value::Object(body.plan))
        .map_err(|e| ProtoError::bad_request(format!("rollout plan: {e}")))?;
    let report = canaries
        .start(model, body.version, &spec)
        .await
        .map_err(canary_error)?;
    Ok(ApiResponse::json(
        200,
        to_json(&CanaryStatus {
            model: model.to_string(),
            running: Some(report),
            last: None,
        }),
    ))
}

fn canary_error(e: CanaryError) -> ProtoError {
    match e {
        CanaryError::Change(c) => change_error(c),
        CanaryError::NoRollout(_) => ProtoError::not_found(e.to_string()),
        CanaryError::Plan(_) | CanaryError::NoStable { .. } => {
            ProtoError::bad_request(e.to_string())
        }
        CanaryError::State(_) => ProtoError::new(ErrorKind::Internal, e.to_string()),
    }
}

fn model_status(m: &Model, rolled_back: std::collections::BTreeMap<u64, String>) -> ModelStatus {
    let state = if m.unloaded {
        "UNLOADED"
    } else if m.ready() {
        "READY"
    } else {
        "UNAVAILABLE"
    };
    ModelStatus {
        name: m.name.clone(),
        state: state.into(),
        serving: m.serving().map(|v| v.version),
        pinned: m.pinned,
        canary: m.canary,
        rolled_back,
        engine: m.engine.into(),
        error: m.error.clone(),
        versions: m
            .versions
            .values()
            .map(|mv| {
                let e = mv.engine();
                VersionStatus {
                    version: mv.version,
                    digest: mv.digest.to_string(),
                    engine: e.engine.into(),
                    engine_detail: e.detail,
                    provenance: mv.provenance.clone(),
                }
            })
            .collect(),
    }
}

fn reply(model: &str, r: Result<ChangeReport, ChangeError>) -> Result<ApiResponse, ProtoError> {
    let r = r.map_err(change_error)?;
    Ok(ApiResponse::json(
        200,
        to_json(&ChangeReply {
            model: model.to_string(),
            loaded: r.loaded,
            kept: r.kept,
            dropped: r.dropped,
            serving_before: r.serving_before,
            serving: r.serving,
        }),
    ))
}

fn change_error(e: ChangeError) -> ProtoError {
    let kind = match &e {
        ChangeError::UnknownModel(_) | ChangeError::UnknownVersion { .. } => ErrorKind::NotFound,
        ChangeError::BadName(_) | ChangeError::Refused { .. } => ErrorKind::BadRequest,
        ChangeError::State(_) => ErrorKind::Internal,
    };
    ProtoError::new(kind, e.to_string())
}

/// Triton's load takes `{"parameters": {...}}`; a config override or
/// uploaded files are not served here (models come from the repository
/// folder), and saying so beats ignoring them.
fn load_parameters(req: &ApiRequest) -> Result<(), ProtoError> {
    if req.body.is_empty() {
        return Ok(());
    }
    let v: Value = parse(req)?;
    if let Some(params) = v.get("parameters").and_then(Value::as_object) {
        if let Some(k) = params
            .keys()
            .find(|k| *k == "config" || k.starts_with("file:"))
        {
            return Err(ProtoError::bad_request(format!(
                "load parameter '{k}' is not supported: nusad loads models from its repository folder as they are"
            )));
        }
    }
    Ok(())
}

/// An empty body is the type's default.
fn parse_or_default<T: serde::de::DeserializeOwned + Default>(
    req: &ApiRequest,
) -> Result<T, ProtoError> {
    if req.body.is_empty() {
        return Ok(T::default());
    }
    parse(req)
}

fn parse<T: serde::de::DeserializeOwned>(req: &ApiRequest) -> Result<T, ProtoError> {
    let body = req.body.clone().into_contiguous();
    serde_json::from_slice(&body).map_err(|e| ProtoError::bad_request(format!("request body: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Our own plain structs always serialise.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}
