//! HTTP/1.1 and HTTP/2 over TLS on TCP (hyper-util's auto builder).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use nusa_api::{ApiResponse, Protocol};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::request::{self, ConnInfo, Shared};
use crate::tls::TlsMaterial;
use crate::track::{Activity, LogLimit, Tracker};
use crate::{IngressConfig, IngressError};
use nusa_frames_body::FramesBody;

pub(crate) struct TcpIngress {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
}

impl TcpIngress {
    pub async fn bind(
        config: &IngressConfig,
        tls: &TlsMaterial,
        listener: TcpListener,
        shared: Arc<Shared>,
    ) -> Result<TcpIngress, IngressError> {
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| IngressError::Tls(e.to_string()))?
        .with_client_cert_verifier(tls.client_verifier().map_err(IngressError::Tls)?)
        .with_single_cert(tls.certs.clone(), tls.key.clone_key())
        .map_err(|e| IngressError::Tls(e.to_string()))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // TLS 1.3 early data is served on QUIC only, where the request's
        // arrival in 0-RTT can be told apart (see quic.rs).
        server.max_early_data_size = 0;

        let l = &config.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Slow-header (slowloris) protection.
            .header_read_timeout(l.handshake_timeout)
            // hyper's minimum buffer is 8 KiB; a head larger than the buffer is 431.
            .max_buf_size((l.max_header_bytes as usize).max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(l.max_concurrent_streams)
            .max_header_list_size(l.max_header_bytes)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        Ok(TcpIngress {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            shared,
            builder,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let tracker = Tracker::default();
        let mut accept_errors = LogLimit::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: back off, keep serving.
                            crate::track::accept_failed(&mut accept_errors, "tcp", &e).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = Connection {
                        acceptor: self.acceptor.clone(),
                        shared: Arc::clone(&self.shared),
                        builder: self.builder.clone(),
                        shutdown: shutdown.clone(),
                        guard: tracker.guard(),
                    };
                    tokio::spawn(conn.run(stream, peer));
                }
                _ = shutdown.changed() => break,
            }
        }
        drop(self.listener);
        if tokio::time::timeout(drain, tracker.idle()).await.is_err() {
            tracing::warn!("TCP connections still open after the drain period");
        }
    }
}

struct Connection {
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    shutdown: watch::Receiver<bool>,
    guard: crate::track::Guard,
}

impl Connection {
    async fn run(mut self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        let limits = &self.shared.limits;
        let tls = match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let activity = Activity::new();
        let shared = Arc::clone(&self.shared);
        let act = activity.clone();
        let info = Arc::new(ConnInfo {
            peer: peer.ip(),
            uid: None,
            cert_subject: crate::tls::client_subject(tls.get_ref().1.peer_certificates()),
        });
        let svc = service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let info = Arc::clone(&info);
            // Counted here, when hyper hands the head over, not when the
            // future first runs (hyper spawns HTTP/2 streams' futures).
            let busy = act.busy();
            async move {
                let _busy = busy;
                Ok::<_, Infallible>(handle(&shared, req, &info).await)
            }
        });
        let mut conn = pin!(self.builder.serve_connection(TokioIo::new(tls), svc));
        let idle_timeout = limits.idle_timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle_timeout));
        // The first request's head must arrive within the handshake timeout
        // of the TLS handshake's end. hyper bounds HTTP/1.1 heads itself
        // (header_read_timeout) but has no such bound for HTTP/2's preface
        // and first HEADERS, nor for the protocol sniffing before either:
        // without this a silent client holds the connection until the idle
        // timeout.
        let first_request = tokio::time::sleep(limits.handshake_timeout);
        let mut first_request = pin!(first_request);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = first_request.as_mut(), if !activity.any_request() => {
                    // A head may have come in the same wake-up.
                    if activity.any_request() {
                        continue;
                    }
                    // No request was started, so none is lost: drop the
                    // connection rather than wait on a graceful close the
                    // client has no reason to complete.
                    tracing::debug!(%peer, "no request head within the handshake timeout; closing");
                    break;
                }
                _ = self.shutdown.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick(), if !closing => {
                    if activity.idle_for() >= idle_timeout {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(self.guard);
    }
}

pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Response<FramesBody> {
    let received = Instant::now();
    let protocol = if req.version() == http::Version::HTTP_2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let (root, trace) = request::root_span(req.method(), req.uri(), req.headers(), protocol);
    let (mut resp, alt_svc) = respond(shared, req, conn, received, protocol, trace)
        .instrument(root.clone())
        .await;
    request::finish(shared, &mut resp, received, &root);
    let sending = nusa_trace::sending(&root, resp.body_len());
    let alt_svc = if alt_svc {
        shared.alt_svc.as_deref()
    } else {
        None
    };
    into_hyper(resp, alt_svc, sending)
}

/// The answer, and whether it may advertise HTTP/3 (not to a caller the
/// admin listener refused).
async fn respond(
    shared: &Shared,
    req: Request<Incoming>,
    conn: &ConnInfo,
    received: Instant,
    protocol: Protocol,
    trace: Option<nusa_trace::TraceContext>,
) -> (ApiResponse, bool) {
    let limits = &shared.limits;
    if let Some(refused) = shared.refuse_caller(req.headers()) {
        return (refused, false);
    }
    let resp = match request::check_declared_length(req.headers(), limits) {
        Err(e) => ApiResponse::error(&e),
        Ok(()) => {
            let (parts, body) = req.into_parts();
            let receive = tracing::info_span!(
                target: nusa_trace::TARGET,
                "receive",
                network.protocol.version = if protocol == Protocol::Http2 { "2" } else { "1.1" },
                nusa.bytes = tracing::field::Empty,
            );
            match tokio::time::timeout(
                limits.request_timeout,
                read_body(body, limits.max_body_bytes).instrument(receive.clone()),
            )
            .await
            {
                Err(_) => request::timed_out_reading(limits),
                Ok(Err(BodyError::TooLarge)) => ApiResponse::error(&request::too_large(limits)),
                Ok(Err(BodyError::Io(e))) => ApiResponse::error(
                    &nusa_proto::ProtoError::bad_request(format!("reading the request body: {e}")),
                ),
                Ok(Ok(frames)) => {
                    let bytes: usize = frames.iter().map(Bytes::len).sum();
                    receive.record("nusa.bytes", bytes as i64);
                    drop(receive);
                    let api_req = request::api_request(
                        &parts.method,
                        &parts.uri,
                        &parts.headers,
                        frames,
                        protocol,
                        received,
                        conn,
                        matches!(shared.admin, Some(request::AdminCheck::Token(_))),
                        trace,
                    );
                    let left = limits.request_timeout.saturating_sub(received.elapsed());
                    match tokio::time::timeout(left, shared.serve(api_req)).await {
                        Ok(r) => r,
                        Err(_) => request::timed_out_serving(limits),
                    }
                }
            }
        }
    };
    (resp, true)
}

/// The answer for hyper; `sending` (tracing on) ends when the body has
/// gone to the connection.
pub(crate) fn into_hyper(
    resp: ApiResponse,
    alt_svc: Option<&str>,
    sending: Option<nusa_trace::Sending>,
) -> Response<FramesBody> {
    let head = request::response_head(&resp, alt_svc);
    let body = FramesBody::new(resp.body);
    // The `send` span, and the request's with it, end when hyper drops the
    // body it has written.
    let body = match sending {
        Some(sending) => body.keeping(sending),
        None => body,
    };
    match head.body(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "building a response");
            let mut r = Response::new(FramesBody::new(vec![Bytes::from_static(
                br#"{"error":"internal error building the response"}"#,
            )]));
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

pub(crate) enum BodyError {
    TooLarge,
    Io(String),
}

/// Reads the body as its frames, stopping as soon as it passes `max`.
async fn read_body(mut body: Incoming, max: u64) -> Result<Vec<Bytes>, BodyError> {
    let mut frames = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Io(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > max {
                return Err(BodyError::TooLarge);
            }
            frames.push(data);
        }
    }
    Ok(frames)
}
