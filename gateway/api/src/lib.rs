//! The Open Inference Protocol's endpoints over plain request and response
//! types: routing, checking requests against the model, calling the
//! scheduler, encoding answers. HTTP itself is the ingress's business.

mod access;
mod admin;
mod infer;
mod meta;
mod overview;

pub use access::{Access, Caller};
pub use overview::Identity;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nusa_audit::{Actor, Auditor};
use nusa_canary::Canaries;
use nusa_dispatch::Dispatcher;
use nusa_proto::{parse_route, ErrorKind, Frames, ProtoError, Route};
use nusa_registry::Repository;
use nusa_telemetry::Metrics;

/// Which HTTP version carried a request (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Http3,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Http3 => "http3",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

pub struct ApiRequest {
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    /// The query string, if any (admin listings: `?since=...`).
    pub query: Option<String>,
    /// `Inference-Header-Content-Length`, as sent.
    pub header_length: Option<String>,
    pub body: Frames,
    pub protocol: Protocol,
    /// When the request's head arrived, for the total latency.
    pub received: Instant,
    /// The client's address (residency policy by client).
    pub peer: Option<std::net::IpAddr>,
    /// The caller's W3C trace context (valid, or none), passed on to a
    /// region when tracing is off.
    pub trace: Option<nusa_trace::TraceContext>,
    /// `Cache-Control`, for `no-cache` and `no-store`.
    pub cache_control: Option<String>,
    /// What the caller presented: API key, client certificate, socket uid.
    pub credentials: Credentials,
}

/// Who is calling, as the ingress saw it. Never logged: the key is a
/// secret.
#[derive(Clone, Default)]
pub struct Credentials {
    /// `Authorization: Bearer <key>`, as sent (trimmed).
    pub authorization: Option<String>,
    /// `x-api-key`, which some clients send instead.
    pub x_api_key: Option<String>,
    /// The subject of a verified client certificate (mTLS).
    pub cert_subject: Option<std::sync::Arc<str>>,
    /// The admin socket's caller (`SO_PEERCRED`).
    pub uid: Option<u32>,
    /// The admin listener's token was checked.
    pub admin_token: bool,
}

pub struct ApiResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<Bytes>,
}

impl ApiResponse {
    pub fn json(status: u16, body: String) -> ApiResponse {
        ApiResponse {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: vec![Bytes::from(body)],
        }
    }

    /// `{"error": ...}` with the status the error's kind calls for, and
    /// `Retry-After` where waiting helps.
    pub fn error(e: &ProtoError) -> ApiResponse {
        let mut r = ApiResponse::json(e.kind.status(), e.body());
        if matches!(e.kind, ErrorKind::QueueFull | ErrorKind::Unavailable) {
            r.headers.push(("retry-after", "1".into()));
        }
        r
    }

    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }
}

/// The protocol's server side for one model repository.
pub struct Api {
    repo: Arc<Repository>,
    metrics: Arc<Metrics>,
    dispatch: Arc<Dispatcher>,
    canaries: Arc<Canaries>,
    /// `auth.mode = "keys"`: API keys on the public port.
    access: Option<Arc<Access>>,
    /// Every admin action, recorded.
    audit: Option<Arc<Auditor>>,
    /// What each answer cost, by model, version, key and place.
    costs: Option<Arc<nusa_cost::Costs>>,
    /// Reads the config file again (`nusa-app`'s reloader).
    reload: Option<Reload>,
    /// A `Server-Timing` header on every answer (`[tracing] server_timing`).
    server_timing: bool,
    /// The version and slot the overview shows.
    identity: Identity,
    /// When this nusad started (the overview's uptime).
    started: Instant,
    /// The drift monitor (`[drift]`), fed a sample of answered requests.
    drift: Option<Arc<nusa_drift::Drift>>,
}

/// W3C Server Timing's response header.
pub const SERVER_TIMING: &str = "server-timing";

/// A configuration reload on behalf of its caller: what it applied and
/// what needs a restart, or why the file was refused (nothing changed).
/// Blocking (reads files, writes the audit log).
pub type Reload = Arc<dyn Fn(Actor) -> Result<nusa_admin::ReloadReply, String> + Send + Sync>;

impl Api {
    pub fn new(
        repo: Arc<Repository>,
        metrics: Arc<Metrics>,
        dispatch: Arc<Dispatcher>,
        canaries: Arc<Canaries>,
    ) -> Api {
        Api {
            repo,
            metrics,
            dispatch,
            canaries,
            access: None,
            audit: None,
            costs: None,
            reload: None,
            server_timing: true,
            identity: Identity::default(),
            started: Instant::now(),
            drift: None,
        }
    }

    /// Feeds a sample of answered requests to the drift monitor.
    pub fn with_drift(mut self, drift: Arc<nusa_drift::Drift>) -> Api {
        self.drift = Some(drift);
        self
    }

    /// The version and booted slot the overview (`/v2/nusa/status`, the
    /// status page, `nusactl status`) shows.
    pub fn with_identity(mut self, identity: Identity) -> Api {
        self.identity = identity;
        self
    }

    /// Whether answers carry `Server-Timing` (on unless turned off).
    pub fn with_server_timing(mut self, on: bool) -> Api {
        self.server_timing = on;
        self
    }

    pub fn server_timing(&self) -> bool {
        self.server_timing
    }

    /// Counts what each answer costs (`nusactl cost`).
    pub fn with_costs(mut self, costs: Arc<nusa_cost::Costs>) -> Api {
        self.costs = Some(costs);
        self
    }

    /// Serves `POST /v2/nusa/config/reload` with `reload` (which records
    /// the reload in the audit log itself: `SIGHUP` takes the same path).
    pub fn with_reload(mut self, reload: Reload) -> Api {
        self.reload = Some(reload);
        self
    }

    /// Requires API keys on the public port (`auth.mode = "keys"`).
    pub fn with_access(mut self, access: Arc<Access>) -> Api {
        self.access = Some(access);
        self
    }

    /// Records every admin action in the audit log.
    pub fn with_audit(mut self, audit: Arc<Auditor>) -> Api {
        self.audit = Some(audit);
        self
    }

    pub fn ready(&self) -> bool {
        self.repo.ready()
    }

    /// A request on the public port: inference, health and metadata, for
    /// the key it presents when keys are required; the admin paths for
    /// `admin` keys only (404 without keys).
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        let Some(route) = parse_route(&req.path) else {
            return not_found(&req.path);
        };
        let open = matches!(route, Route::Live | Route::Ready);
        let caller = match &self.access {
            Some(access) if !open => match access.authenticate(&req.credentials, access::now_s()) {
                Ok(key) => Caller::Key(key),
                Err(refused) => return refused,
            },
            _ => Caller::Open,
        };
        if route.is_admin() {
            return match caller.key() {
                Some(k) if k.is_admin() => {
                    let actor = Actor::key(&k.name);
                    self.admin(route, req, actor).await
                }
                Some(k) => access::forbidden(format!(
                    "key '{}' has role infer: {} needs a key with role admin",
                    k.name, req.path
                )),
                None => ApiResponse::error(&ProtoError::not_found(format!(
                    "{} is an admin endpoint: it is served on the admin listener (server.admin_listen) and socket (server.admin_socket), not here",
                    req.path
                ))),
            };
        }
        self.serve(route, req, &caller).await
    }

    /// A request on the admin listener or socket, whose caller the ingress
    /// has checked: the admin paths, and everything the public port serves.
    pub async fn handle_admin(&self, req: ApiRequest) -> ApiResponse {
        let Some(route) = parse_route(&req.path) else {
            return not_found(&req.path);
        };
        if route.is_admin() {
            let c = &req.credentials;
            let actor = match (c.uid, c.admin_token) {
                (Some(uid), _) => Actor::uid(uid),
                (None, true) => Actor::token(),
                (None, false) => Actor::system(),
            };
            return self.admin(route, req, actor).await;
        }
        self.serve(route, req, &Caller::Open).await
    }

    async fn admin(&self, route: Route, req: ApiRequest, actor: Actor) -> ApiResponse {
        if let Route::AdminDrift { model } = &route {
            return self.drift_reply(model, &req);
        }
        if matches!(route, Route::AdminStatus) {
            return match req.method {
                Method::Get | Method::Head => {
                    let mut resp = ApiResponse::json(200, self.overview_json().await);
                    if req.method == Method::Head {
                        resp.body.clear();
                    }
                    resp
                }
                _ => ApiResponse::error(&method_not_allowed("GET", &req.path)),
            };
        }
        let ctx = admin::Ctx {
            repo: &self.repo,
            canaries: &self.canaries,
            access: self.access.as_deref(),
            audit: self.audit.as_ref(),
            costs: self.costs.as_deref(),
            dispatch: &self.dispatch,
            reload: self.reload.as_ref(),
            actor,
        };
        let unloading = match &route {
            Route::RepositoryUnload { model } => Some(model.clone()),
            _ => None,
        };
        let resp = admin::handle(&ctx, route, req).await;
        // An unloaded model's drift monitors and series go with it.
        if let (Some(model), Some(drift), 200) = (unloading, &self.drift, resp.status) {
            drift.forget(&model);
        }
        resp
    }

    async fn serve(&self, route: Route, req: ApiRequest, caller: &Caller) -> ApiResponse {
        let read_only = matches!(req.method, Method::Get | Method::Head);
        let result = match route {
            Route::Infer { model, version } => {
                if req.method != Method::Post {
                    Err(method_not_allowed("POST", &req.path))
                } else {
                    if let Err(refused) = access::may_call(caller, &model) {
                        return refused;
                    }
                    return infer::handle(self, &model, version.as_deref(), req, caller).await;
                }
            }
            _ if !read_only => Err(method_not_allowed("GET", &req.path)),
            Route::Live => Ok(ApiResponse::json(200, r#"{"live":true}"#.into())),
            Route::Ready => Ok(if self.ready() {
                ApiResponse::json(200, r#"{"ready":true}"#.into())
            } else {
                ApiResponse::json(503, r#"{"ready":false}"#.into())
            }),
            Route::ServerMetadata => Ok(meta::server(&self.repo)),
            Route::ModelMetadata { model, .. }
            | Route::ModelReady { model, .. }
            | Route::ModelConfig { model, .. }
                if access::may_call(caller, &model).is_err() =>
            {
                return access::may_call(caller, &model).err().unwrap_or_else(|| not_found(&req.path));
            }
            Route::ModelMetadata { model, version } => meta::model(&self.repo, &model, version.as_deref()),
            Route::ModelReady { model, version } => Ok(meta::model_ready(&self.repo, &model, version.as_deref())),
            Route::ModelConfig { model, version } => meta::model_config(&self.repo, &model, version.as_deref()),
            Route::ModelStats { .. } => Err(ProtoError::not_found(
                "the statistics extension is not served; per-model statistics are on the metrics endpoint",
            )),
            // Answered above.
            _ => Err(ProtoError::not_found(format!("no endpoint at {}", req.path))),
        };
        let mut resp = result.unwrap_or_else(|e| ApiResponse::error(&e));
        if req.method == Method::Head {
            resp.body.clear();
        }
        resp
    }
}

fn not_found(path: &str) -> ApiResponse {
    ApiResponse::error(&ProtoError::not_found(format!("no endpoint at {path}")))
}

pub(crate) fn method_not_allowed(allowed: &str, path: &str) -> ProtoError {
    ProtoError::new(
        ErrorKind::MethodNotAllowed,
        format!("{path} accepts {allowed} only"),
    )
}
