//! The metrics listener: plain HTTP/1.1, `GET /metrics` only, with the
//! public listener's header and idle timeouts and a bound on connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
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
                    tokio::spawn(serve_connection(stream, Arc::clone(&metrics), timeouts, slot));
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
    timeouts: Timeouts,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Activity::new();
    let act = activity.clone();
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let _busy = act.busy();
        let resp = answer(&metrics, &req);
        async move { Ok::<_, Infallible>(resp) }
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

fn answer(metrics: &Metrics, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = if req.uri().path() == "/metrics" {
        (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    } else {
        (
            404,
            "text/plain",
            "not found; metrics are at /metrics\n".to_string(),
        )
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
