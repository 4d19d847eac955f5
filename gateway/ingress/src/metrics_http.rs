//! The metrics listener: plain HTTP/1.1, with the public listener's header
//! and idle timeouts and a bound on connections. `GET /metrics` for
//! Prometheus; `GET /status`, the status page (a static HTML page that
//! reads `/status.json`, the API's overview, every 2 s). Both are read
//! only; the listener is on loopback unless the operator moves it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use nusa_api::Api;
use nusa_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::track::{Activity, LogLimit};
use crate::{IngressError, Limits};

/// At most this many metrics connections at once (a scraper needs one);
/// more are closed as they are accepted.
pub const MAX_METRICS_CONNECTIONS: usize = 64;

/// Binds the metrics address, or takes the `passed` listener (socket
/// activation); the returned future serves until shutdown. A connection
/// must send each request head within `limits.handshake_timeout` and is
/// closed after `limits.idle_timeout` without a request.
pub async fn serve_metrics(
    addr: SocketAddr,
    passed: Option<std::net::TcpListener>,
    metrics: Arc<Metrics>,
    status: Option<Arc<Api>>,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), IngressError> {
    let listener = match passed {
        Some(l) => crate::from_std(l)?,
        None => TcpListener::bind(addr)
            .await
            .map_err(|source| IngressError::BindTcp { addr, source })?,
    };
    let local = listener
        .local_addr()
        .map_err(|source| IngressError::BindTcp { addr, source })?;
    let timeouts = Timeouts {
        header: limits.handshake_timeout,
        idle: limits.idle_timeout,
    };
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    let serve = async move {
        let mut accept_errors = LogLimit::new();
        let mut refused = LogLimit::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // Out of descriptors: back off rather than spin.
                            crate::track::accept_failed(&mut accept_errors, "metrics", &e).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        if let Some(suppressed) = refused.hit(Instant::now()) {
                            tracing::warn!(
                                limit = MAX_METRICS_CONNECTIONS,
                                suppressed,
                                "metrics listener: too many connections; closing new ones"
                            );
                        }
                        continue;
                    };
                    tokio::spawn(serve_connection(stream, Arc::clone(&metrics), status.clone(), timeouts, slot));
                }
                _ = shutdown.changed() => break,
            }
        }
    };
    Ok((local, serve))
}

#[derive(Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    metrics: Arc<Metrics>,
    status: Option<Arc<Api>>,
    timeouts: Timeouts,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Activity::new();
    let act = activity.clone();
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let busy = act.busy();
        let (metrics, status) = (Arc::clone(&metrics), status.clone());
        async move {
            let resp = answer(&metrics, status.as_deref(), &req).await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    // hyper's header read timer runs whenever it waits for a head, the
    // first one or the next on a kept-alive connection: a silent or
    // trickling client is cut there. The idle check covers a client that
    // stops reading its answer.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(timeouts.idle));
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = tick.tick() => {
                if activity.idle_for() >= timeouts.idle {
                    break;
                }
            }
        }
    }
}

/// The status page: static, so it is compiled in.
const STATUS_PAGE: &str = include_str!("status.html");

async fn answer(
    metrics: &Metrics,
    status: Option<&Api>,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let get = matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD);
    let (code, ctype, body) = match (req.uri().path(), status) {
        (_, _) if !get => (
            405,
            "application/json",
            r#"{"error":"the metrics listener serves GET only"}"#.to_string(),
        ),
        ("/metrics", _) => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("/status", Some(_)) => (200, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
        ("/status.json", Some(api)) => (200, "application/json", api.overview_json().await),
        _ => (
            404,
            "text/plain",
            "not found; metrics are at /metrics, the status page at /status\n".to_string(),
        ),
    };
    let body = if *req.method() == hyper::Method::HEAD {
        String::new()
    } else {
        body
    };
    Response::builder()
        .status(code)
        .header("content-type", ctype)
        // The page and its data are read only and change every refresh.
        .header("cache-control", "no-store")
        // No framing by other sites, no scripts or assets from elsewhere.
        .header(
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
