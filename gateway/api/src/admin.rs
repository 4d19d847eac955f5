//! The admin surface: Triton's model repository extension (index, load,
//! unload) and ours under `/v2/nusa/` (status, pins, history, canary
//! rollouts). Served only
//! on the admin listener and socket, where the ingress has checked the
//! caller; the public port answers 404 for these paths.

use nusa_admin::{
    AuditAppend, AuditCheckpoint, AuditList, AuditVerify, CanaryAbort, CanaryStart, ChangeReply,
    History, KeyList, KeySecret, ModelStatus, PinRequest, PullBody, PullReply, Status,
    VersionStatus,
};
use nusa_auth::{KeyRecord, KeySpec, Secret, StoreError};
use nusa_canary::nusa_rollout::PlanSpec;
use nusa_canary::{Canaries, CanaryError, CanaryStatus};
use nusa_proto::{ErrorKind, ProtoError, Route};
use nusa_registry::{ChangeError, ChangeReport, Model, Repository, MAX_HISTORY_EVENTS};
use serde_json::{json, Value};

use std::sync::Arc;

use nusa_audit::{Actor, Auditor, Entry, Outcome};

use crate::access::Access;
use crate::{method_not_allowed, ApiRequest, ApiResponse, Method};

/// The newest events a history answer holds.
const HISTORY_LIMIT: usize = 1000;

/// What an admin request works with, and who sent it.
pub(crate) struct Ctx<'a> {
    pub repo: &'a Repository,
    pub canaries: &'a Canaries,
    pub access: Option<&'a Access>,
    pub audit: Option<&'a Arc<Auditor>>,
    pub costs: Option<&'a nusa_cost::Costs>,
    pub dispatch: &'a nusa_dispatch::Dispatcher,
    pub reload: Option<&'a crate::Reload>,
    pub actor: Actor,
}

/// Serves an admin request; every action that changes something is
/// recorded in the audit log with its outcome (and in the journal).
pub(crate) async fn handle(ctx: &Ctx<'_>, route: Route, req: ApiRequest) -> ApiResponse {
    let action = audited(&route, &req);
    let resp = serve(ctx, route, req).await;
    if let (Some(audit), Some((action, target))) = (ctx.audit, action) {
        let outcome = if resp.status < 400 {
            Outcome::Ok
        } else {
            Outcome::Error(error_text(&resp))
        };
        let entry = Entry::new(ctx.actor.clone(), action, &target)
            .outcome(outcome)
            .detail(json!({"status": resp.status}));
        let audit = Arc::clone(audit);
        // One write and fsync: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || audit.record(entry)).await;
    }
    resp
}

/// The audit action and target of a request that changes something.
fn audited(route: &Route, req: &ApiRequest) -> Option<(&'static str, String)> {
    if req.method != Method::Post {
        return None;
    }
    Some(match route {
        Route::RepositoryLoad { model } => ("model.load", model.clone()),
        Route::RepositoryUnload { model } => ("model.unload", model.clone()),
        Route::AdminPin { model } => ("model.pin", model.clone()),
        Route::AdminPull { model } => ("model.pull", model.clone()),
        Route::AdminCanary { model: Some(m) } => ("model.canary.start", m.clone()),
        Route::AdminCanaryPromote { model } => ("model.canary.promote", model.clone()),
        Route::AdminCanaryAbort { model } => ("model.canary.abort", model.clone()),
        Route::AdminKeys => {
            let body = req.body.clone().into_contiguous();
            let name = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            ("key.create", format!("key {name}"))
        }
        Route::AdminKey { name } => ("key.update", format!("key {name}")),
        Route::AdminKeyRevoke { name } => ("key.revoke", format!("key {name}")),
        Route::AdminKeyRotate { name } => ("key.rotate", format!("key {name}")),
        Route::AdminAuditCheckpoint => ("audit.checkpoint", "audit log".into()),
        Route::AdminCachePurge => ("cache.purge", "edge cache".into()),
        _ => return None,
    })
}

/// The `error` of a JSON error body, for the audit record.
fn error_text(resp: &ApiResponse) -> String {
    let body: Vec<u8> = resp.body.iter().flat_map(|b| b.iter().copied()).collect();
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("status {}", resp.status))
}

async fn serve(ctx: &Ctx<'_>, route: Route, req: ApiRequest) -> ApiResponse {
    let (repo, canaries) = (ctx.repo, ctx.canaries);
    let post = req.method == Method::Post;
    let get = req.method == Method::Get;
    let result = match route {
        Route::AdminKeys
        | Route::AdminKey { .. }
        | Route::AdminKeyRevoke { .. }
        | Route::AdminKeyRotate { .. } => keys(ctx.access, route, &req),
        Route::AdminAudit if post => append(ctx, &req).await,
        Route::AdminAudit | Route::AdminAuditVerify | Route::AdminAuditCheckpoint => {
            audit(ctx.audit, route, &req).await
        }
        Route::AdminCachePurge if post => {
            if ctx.dispatch.purge_cache().await {
                Ok(ApiResponse::json(200, r#"{"purged":true}"#.into()))
            } else {
                Err(ProtoError::not_found(
                    "the edge cache is off (cache.memory_bytes = 0)",
                ))
            }
        }
        Route::AdminCachePurge => Err(method_not_allowed("POST", &req.path)),
        // Recorded in the audit log by the reloader, with what it applied.
        Route::AdminConfigReload if post => match ctx.reload {
            Some(reload) => {
                let (reload, actor) = (Arc::clone(reload), ctx.actor.clone());
                match tokio::task::spawn_blocking(move || reload(actor)).await {
                    Ok(Ok(reply)) => Ok(ApiResponse::json(200, to_json(&reply))),
                    Ok(Err(e)) => Err(ProtoError::bad_request(format!(
                        "configuration not reloaded (nothing changed): {e}"
                    ))),
                    Err(e) => Err(ProtoError::new(
                        ErrorKind::Internal,
                        format!("configuration reload failed: {e}"),
                    )),
                }
            }
            None => Err(ProtoError::not_found(
                "nusad was started without --config: there is no file to reload",
            )),
        },
        Route::AdminConfigReload => Err(method_not_allowed("POST", &req.path)),
        Route::AdminCost if get => cost(ctx.costs, &req),
        Route::AdminCost => Err(method_not_allowed("GET", &req.path)),
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

/// `/v2/nusa/keys...`: the API keys of `auth.mode = "keys"`.
fn keys(
    access: Option<&Access>,
    route: Route,
    req: &ApiRequest,
) -> Result<ApiResponse, ProtoError> {
    let Some(access) = access else {
        return Err(ProtoError::not_found(
            "API keys are off (auth.mode = \"none\"): set auth.mode = \"keys\" to manage keys",
        ));
    };
    let store = access.store();
    let now = crate::access::now_s();
    let store_error = |e: StoreError| {
        let kind = match &e {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Invalid { .. }
            | StoreError::NameTaken(_)
            | StoreError::Revoked(_)
            | StoreError::SubjectTaken { .. } => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        };
        ProtoError::new(kind, e.to_string())
    };
    let secret = |(key, secret): (KeyRecord, Secret)| {
        access.limiter().forget(&key.id);
        ApiResponse::json(
            200,
            to_json(&KeySecret {
                key,
                secret: secret.expose().to_string(),
            }),
        )
    };
    let (get, post) = (req.method == Method::Get, req.method == Method::Post);
    match route {
        Route::AdminKeys if get => Ok(ApiResponse::json(
            200,
            to_json(&KeyList { keys: store.list() }),
        )),
        Route::AdminKeys if post => {
            let spec: KeySpec = parse(req)?;
            store.create(spec, now).map(secret).map_err(store_error)
        }
        Route::AdminKey { name } if get => store
            .get(&name)
            .map(|k| ApiResponse::json(200, to_json(&k)))
            .ok_or_else(|| ProtoError::not_found(format!("no API key named '{name}'"))),
        Route::AdminKey { name } if post => {
            let spec: KeySpec = parse(req)?;
            let old = store.get(&name).map(|k| k.id);
            let k = store.update(&name, spec).map_err(store_error)?;
            if let Some(id) = old {
                access.limiter().forget(&id);
            }
            Ok(ApiResponse::json(200, to_json(&k)))
        }
        Route::AdminKeyRevoke { name } if post => {
            let k = store.revoke(&name, now).map_err(store_error)?;
            access.limiter().forget(&k.id);
            Ok(ApiResponse::json(200, to_json(&k)))
        }
        Route::AdminKeyRotate { name } if post => {
            let old = store.get(&name).map(|k| k.id);
            let rotated = store.rotate(&name, now).map_err(store_error)?;
            if let Some(id) = old {
                access.limiter().forget(&id);
            }
            Ok(secret(rotated))
        }
        Route::AdminKeys | Route::AdminKey { .. } => {
            Err(method_not_allowed("GET or POST", &req.path))
        }
        _ => Err(method_not_allowed("POST", &req.path)),
    }
}

/// `POST /v2/nusa/audit`: an action another process took (the updater),
/// recorded under the caller's identity.
async fn append(ctx: &Ctx<'_>, req: &ApiRequest) -> Result<ApiResponse, ProtoError> {
    let Some(audit) = ctx.audit.cloned() else {
        return Err(ProtoError::not_found("the audit log is off"));
    };
    let body: AuditAppend = parse(req)?;
    let outcome = match body.error {
        Some(e) => Outcome::Error(e),
        None => Outcome::Ok,
    };
    let entry = Entry::new(ctx.actor.clone(), &body.action, &body.target)
        .outcome(outcome)
        .detail(body.detail);
    let record = tokio::task::spawn_blocking(move || audit.try_record(entry))
        .await
        .map_err(|e| ProtoError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(|e| ProtoError::bad_request(format!("audit record: {e}")))?;
    Ok(ApiResponse::json(200, to_json(&record)))
}

/// `/v2/nusa/audit...`: list, verify, checkpoint.
async fn audit(
    audit: Option<&Arc<Auditor>>,
    route: Route,
    req: &ApiRequest,
) -> Result<ApiResponse, ProtoError> {
    let Some(audit) = audit.cloned() else {
        return Err(ProtoError::not_found("the audit log is off"));
    };
    let internal = |e: String| ProtoError::new(ErrorKind::Internal, e);
    let blocking = |f: Box<dyn FnOnce() -> Result<String, String> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    };
    let (get, post) = (req.method == Method::Get, req.method == Method::Post);
    let body = match route {
        Route::AdminAudit if get => {
            let q = Query::parse(req.query.as_deref())?;
            blocking(Box::new(move || {
                let records = audit
                    .log()
                    .list(q.since, q.limit.unwrap_or(1000).min(nusa_audit::MAX_LIST))
                    .map_err(|e| e.to_string())?;
                Ok(to_json(&AuditList {
                    records,
                    head: audit.log().head(),
                }))
            }))
            .await
            .map_err(internal)?
        }
        Route::AdminAuditVerify if get || post => {
            // Checkpoints the operator kept off the box, checked against
            // this box's checkpoint key first.
            let given: Vec<nusa_audit::Checkpoint> = if post {
                parse::<AuditVerify>(req)?.checkpoints
            } else {
                Vec::new()
            };
            blocking(Box::new(move || verify_log(&audit, given)))
                .await
                .map_err(|e| {
                    if e.starts_with("checkpoint") {
                        ProtoError::bad_request(e)
                    } else {
                        internal(e)
                    }
                })?
        }
        Route::AdminAuditCheckpoint if post => blocking(Box::new(move || {
            let (checkpoint, public_key) = audit.checkpoint().map_err(|e| e.to_string())?;
            Ok(to_json(&AuditCheckpoint {
                checkpoint,
                public_key,
            }))
        }))
        .await
        .map_err(internal)?,
        Route::AdminAuditCheckpoint => return Err(method_not_allowed("POST", &req.path)),
        _ => return Err(method_not_allowed("GET", &req.path)),
    };
    Ok(ApiResponse::json(200, body))
}

/// The chain, against the box's own checkpoints and the operator's
/// (`given`: each must carry this box's signature).
fn verify_log(audit: &Auditor, given: Vec<nusa_audit::Checkpoint>) -> Result<String, String> {
    let path = audit.log().path().to_path_buf();
    let mut checkpoints = given;
    if !checkpoints.is_empty() {
        let key = audit.checkpoint_public_key().map_err(|e| e.to_string())?;
        for cp in &checkpoints {
            nusa_audit::verify_checkpoint(cp, &key)
                .map_err(|e| format!("checkpoint of seq {}: {e}", cp.seq))?;
        }
    }
    let own = nusa_audit::checkpoints_path(&path);
    if own.exists() {
        checkpoints.extend(
            nusa_audit::read_checkpoints(&own)
                .map_err(|e| e.to_string())?
                .checkpoints,
        );
    }
    let report = nusa_audit::verify(&path, &checkpoints).map_err(|e| e.to_string())?;
    Ok(to_json(&report))
}

/// `/v2/nusa/cost?since=24h&by=key|model|version|region|place|jurisdiction`.
fn cost(costs: Option<&nusa_cost::Costs>, req: &ApiRequest) -> Result<ApiResponse, ProtoError> {
    let Some(costs) = costs else {
        return Err(ProtoError::not_found("cost accounting is off"));
    };
    let (mut since, mut by) = ("24h".to_string(), "model".to_string());
    for pair in req
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("since", v)) => since = v.to_string(),
            Some(("by", v)) => by = v.to_string(),
            _ => {
                return Err(ProtoError::bad_request(format!(
                    "unknown query parameter '{pair}' (since, by)"
                )))
            }
        }
    }
    let hours = nusa_cost::parse_since(&since).map_err(ProtoError::bad_request)?;
    let by: nusa_cost::By = by.parse().map_err(ProtoError::bad_request)?;
    Ok(ApiResponse::json(200, to_json(&costs.report(hours, by))))
}

/// `?since=UNIX_S&limit=N`.
struct Query {
    since: Option<u64>,
    limit: Option<usize>,
}

impl Query {
    fn parse(q: Option<&str>) -> Result<Query, ProtoError> {
        let mut out = Query {
            since: None,
            limit: None,
        };
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let num = || {
                v.parse::<u64>().map_err(|_| {
                    ProtoError::bad_request(format!(
                        "query parameter '{k}' must be a whole number, got '{v}'"
                    ))
                })
            };
            match k {
                "since" => out.since = Some(num()?),
                "limit" => out.limit = Some(num()? as usize),
                _ => {
                    return Err(ProtoError::bad_request(format!(
                        "unknown query parameter '{k}' (since, limit)"
                    )))
                }
            }
        }
        Ok(out)
    }
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
    Ok(ApiResponse::json(200, to_json(&models_status(repo).await?)))
}

/// Every model's state, versions and pin (also part of the overview).
pub(crate) async fn models_status(repo: &Repository) -> Result<Status, ProtoError> {
    let marks = repo.marks().await.map_err(change_error)?;
    let models = repo
        .models()
        .iter()
        .map(|m| model_status(m, marks.bad.get(&m.name).cloned().unwrap_or_default()))
        .collect();
    Ok(Status {
        mode: repo.mode().into(),
        models,
        pulling: repo.pull_progress(),
    })
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
