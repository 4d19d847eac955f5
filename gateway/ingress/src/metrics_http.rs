//! The metrics listener: plain HTTP/1.1, `GET /metrics` only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nusa_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::IngressError;

/// Binds the metrics address, or takes the `passed` listener (socket
/// activation); the returned future serves until shutdown.
pub async fn serve_metrics(
    addr: SocketAddr,
    passed: Option<std::net::TcpListener>,
    metrics: Arc<Metrics>,
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
    let serve = async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let metrics = Arc::clone(&metrics);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let metrics = Arc::clone(&metrics);
                            async move { Ok::<_, Infallible>(answer(&metrics, &req)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
    };
    Ok((local, serve))
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
