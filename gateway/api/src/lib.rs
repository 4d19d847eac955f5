//! The Open Inference Protocol's endpoints over plain request and response
//! types: routing, checking requests against the model, calling the
//! scheduler, encoding answers. HTTP itself is the ingress's business.

mod admin;
mod infer;
mod meta;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
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
    /// `Inference-Header-Content-Length`, as sent.
    pub header_length: Option<String>,
    pub body: Frames,
    pub protocol: Protocol,
    /// When the request's head arrived, for the total latency.
    pub received: Instant,
    /// The client's address (residency policy by client).
    pub peer: Option<std::net::IpAddr>,
    /// W3C trace context, passed on to a region.
    pub traceparent: Option<String>,
    /// `Cache-Control`, for `no-cache` and `no-store`.
    pub cache_control: Option<String>,
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
}

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
        }
    }

    pub fn ready(&self) -> bool {
        self.repo.ready()
    }

    /// A request on the public port: inference, health and metadata. The
    /// admin paths answer 404 here.
    pub async fn handle(&self, req: ApiRequest) -> ApiResponse {
        self.handle_on(req, false).await
    }

    /// A request on the admin listener or socket, whose caller the ingress
    /// has checked: the admin paths, and everything the public port serves.
    pub async fn handle_admin(&self, req: ApiRequest) -> ApiResponse {
        self.handle_on(req, true).await
    }

    async fn handle_on(&self, req: ApiRequest, admin: bool) -> ApiResponse {
        let Some(route) = parse_route(&req.path) else {
            return ApiResponse::error(&ProtoError::not_found(format!(
                "no endpoint at {}",
                req.path
            )));
        };
        if route.is_admin() {
            if !admin {
                return ApiResponse::error(&ProtoError::not_found(format!(
                    "{} is an admin endpoint: it is served on the admin listener (server.admin_listen) and socket (server.admin_socket), not here",
                    req.path
                )));
            }
            return admin::handle(&self.repo, &self.canaries, route, req).await;
        }
        let read_only = matches!(req.method, Method::Get | Method::Head);
        let result = match route {
            Route::Infer { model, version } => {
                if req.method != Method::Post {
                    Err(method_not_allowed("POST", &req.path))
                } else {
                    return infer::handle(self, &model, version.as_deref(), req).await;
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

pub(crate) fn method_not_allowed(allowed: &str, path: &str) -> ProtoError {
    ProtoError::new(
        ErrorKind::MethodNotAllowed,
        format!("{path} accepts {allowed} only"),
    )
}
