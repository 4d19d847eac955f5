//! HTTP/3 over QUIC (quinn + h3), on the same port number as TCP.
//!
//! h3 is young ("still very experimental"); it is kept behind this module so
//! that another HTTP/3 stack could replace it without touching the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use nusa_api::{ApiResponse, Protocol};
use tokio::sync::watch;
use tracing::{Instrument, Span};

use crate::request::{self, ConnInfo, Shared};
use crate::tls::TlsMaterial;
use crate::track::Tracker;
use crate::{IngressConfig, IngressError};

pub(crate) struct QuicIngress {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    early_data: bool,
    max_header_bytes: u64,
}

impl QuicIngress {
    /// Serves QUIC on `socket`, bound here or passed by systemd.
    pub fn bind(
        socket: std::net::UdpSocket,
        config: &IngressConfig,
        tls: &TlsMaterial,
        shared: Arc<Shared>,
    ) -> Result<QuicIngress, IngressError> {
        let tls_err = |e: &dyn std::fmt::Display| IngressError::Tls(e.to_string());
        let mut crypto = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&e))?
        .with_client_cert_verifier(tls.client_verifier().map_err(|e| tls_err(&e))?)
        .with_single_cert(tls.certs.clone(), tls.key.clone_key())
        .map_err(|e| tls_err(&e))?;
        crypto.alpn_protocols = vec![b"h3".to_vec()];
        if config.early_data {
            // QUIC requires exactly this value when 0-RTT is on (RFC 9001 4.6.1).
            crypto.max_early_data_size = u32::MAX;
        }
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(crypto).map_err(|e| tls_err(&e))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let l = &config.limits;
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(l.max_concurrent_streams.into());
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(l.idle_timeout)
                .map_err(|e| IngressError::Tls(format!("idle timeout: {e}")))?,
        ));
        server.transport_config(Arc::new(transport));
        let addr = socket
            .local_addr()
            .map_err(|source| IngressError::BindUdp {
                addr: config.listen,
                source,
            })?;
        let udp_err = |source| IngressError::BindUdp { addr, source };
        socket.set_nonblocking(true).map_err(udp_err)?;
        // What quinn::Endpoint::server does after binding, on a socket that
        // may have been bound by someone else.
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(udp_err)?;
        Ok(QuicIngress {
            endpoint,
            shared,
            early_data: config.early_data,
            max_header_bytes: l.max_header_bytes.into(),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    pub async fn serve(self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let tracker = Tracker::default();
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let conn = Connection {
                        shared: Arc::clone(&self.shared),
                        shutdown: shutdown.clone(),
                        early_data: self.early_data,
                        max_header_bytes: self.max_header_bytes,
                        guard: tracker.guard(),
                    };
                    tokio::spawn(conn.run(incoming));
                }
                _ = shutdown.changed() => break,
            }
        }
        if tokio::time::timeout(drain, tracker.idle()).await.is_err() {
            tracing::warn!("QUIC connections still open after the drain period");
        }
        self.endpoint.close(0u32.into(), b"shutting down");
        self.endpoint.wait_idle().await;
    }
}

/// Whether a 0-RTT connection's handshake has completed.
///
/// quinn resolves `ZeroRttAccepted` from its connection driver when the
/// handshake completes, before the driver hands over stream data that came
/// after the client's Finished; polling it at the moment a request is read
/// (rather than from a task of its own, which could run late) therefore
/// counts a 1-RTT request as 1-RTT. A request read while the handshake is
/// still open came in early data. One read after a handshake that completed
/// meanwhile is served: it cannot be a replay, since a replayed flight never
/// completes its handshake (RFC 8470 section 3 allows such deferral).
#[derive(Default)]
struct Handshake {
    pending: parking_lot::Mutex<Option<quinn::ZeroRttAccepted>>,
}

impl Handshake {
    fn complete(&self) -> bool {
        let mut pending = self.pending.lock();
        let Some(fut) = pending.as_mut() else {
            return true;
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if std::pin::Pin::new(fut).poll(&mut cx).is_ready() {
            *pending = None;
            return true;
        }
        false
    }
}

struct Connection {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    early_data: bool,
    max_header_bytes: u64,
    guard: crate::track::Guard,
}

impl Connection {
    async fn run(mut self, incoming: quinn::Incoming) {
        let peer = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "refusing QUIC connection");
                return;
            }
        };
        // With 0-RTT on, the connection is usable before the handshake ends;
        // `handshake` tells requests that arrived in early data apart.
        let handshake = Arc::new(Handshake::default());
        let conn = if self.early_data {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => {
                    *handshake.pending.lock() = Some(accepted);
                    conn
                }
                Err(connecting) => match self.handshake(connecting, peer).await {
                    Some(c) => c,
                    None => return,
                },
            }
        } else {
            match self.handshake(connecting, peer).await {
                Some(c) => c,
                None => return,
            }
        };
        let quic = conn.clone();
        let built = h3::server::builder()
            .max_field_section_size(self.max_header_bytes)
            .build::<_, Bytes>(h3_quinn::Connection::new(conn))
            .await;
        let mut h3 = match built {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 setup failed");
                return;
            }
        };
        let mut closing = false;
        loop {
            tokio::select! {
                accepted = h3.accept() => match accepted {
                    Ok(Some(resolver)) => {
                        let shared = Arc::clone(&self.shared);
                        let handshake = Arc::clone(&handshake);
                        let quic = quic.clone();
                        tokio::spawn(async move {
                            match resolver.resolve_request().await {
                                Ok((req, stream)) => {
                                    let early = !handshake.complete();
                                    // A client certificate is known once the
                                    // handshake completed (never in 0-RTT).
                                    let certs = quic.peer_identity().and_then(|id| {
                                        id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()
                                    });
                                    let info = ConnInfo {
                                        peer: peer.ip(),
                                        uid: None,
                                        cert_subject: crate::tls::client_subject(certs.as_deref().map(|c| c.as_slice())),
                                    };
                                    serve_request(&shared, req, stream, early, &info).await;
                                }
                                Err(e) => tracing::debug!(error = %e, "bad HTTP/3 request"),
                            }
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                        break;
                    }
                },
                _ = self.shutdown.changed(), if !closing => {
                    closing = true;
                    // GOAWAY: requests already accepted finish.
                    let _ = h3.shutdown(0).await;
                }
            }
        }
        drop(self.guard);
    }

    async fn handshake(
        &self,
        connecting: quinn::Connecting,
        peer: SocketAddr,
    ) -> Option<quinn::Connection> {
        match tokio::time::timeout(self.shared.limits.handshake_timeout, connecting).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "QUIC handshake timed out");
                None
            }
        }
    }
}

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn serve_request(
    shared: &Shared,
    req: http::Request<()>,
    stream: Stream,
    early: bool,
    conn: &ConnInfo,
) {
    let received = Instant::now();
    let (root, trace) = request::root_span(req.method(), req.uri(), req.headers(), Protocol::Http3);
    serve_traced(shared, req, stream, early, conn, received, trace, &root)
        .instrument(root.clone())
        .await
}

// serve_request's parts, within the request's span.
#[allow(clippy::too_many_arguments)]
async fn serve_traced(
    shared: &Shared,
    req: http::Request<()>,
    mut stream: Stream,
    early: bool,
    conn: &ConnInfo,
    received: Instant,
    trace: Option<nusa_trace::TraceContext>,
    root: &Span,
) {
    let limits = &shared.limits;
    let declared = match declared_length(req.headers()) {
        Ok(n) => n,
        Err(why) => return refuse_malformed(&mut stream, &why),
    };
    let idempotent = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    let mut resp = if early && !idempotent {
        request::too_early()
    } else if let Err(e) = request::check_declared_length(req.headers(), limits) {
        ApiResponse::error(&e)
    } else {
        let receive = tracing::info_span!(
            target: nusa_trace::TARGET,
            "receive",
            network.protocol.version = "3",
            nusa.bytes = tracing::field::Empty,
        );
        match tokio::time::timeout(
            limits.request_timeout,
            read_body(&mut stream, limits.max_body_bytes, declared).instrument(receive.clone()),
        )
        .await
        {
            Err(_) => request::timed_out_reading(limits),
            Ok(Err(ReadError::TooLarge)) => ApiResponse::error(&request::too_large(limits)),
            Ok(Err(ReadError::Stream(e))) => {
                // The h3 layer may find the body malformed itself (its
                // length against content-length, depending on when the
                // frames arrive): the stream is reset either way, never
                // just finished without an answer.
                return refuse_malformed(&mut stream, &format!("reading the body: {e}"));
            }
            Ok(Err(ReadError::Length { declared, got })) => {
                let why =
                    format!("content-length {declared} disagrees with the body ({got} bytes read)");
                return refuse_malformed(&mut stream, &why);
            }
            Ok(Ok(frames)) => {
                let bytes: usize = frames.iter().map(Bytes::len).sum();
                receive.record("nusa.bytes", bytes as i64);
                drop(receive);
                let api_req = request::api_request(
                    req.method(),
                    req.uri(),
                    req.headers(),
                    frames,
                    Protocol::Http3,
                    received,
                    conn,
                    false,
                    trace,
                );
                let left = limits.request_timeout.saturating_sub(received.elapsed());
                match tokio::time::timeout(left, shared.serve(api_req)).await {
                    Ok(r) => r,
                    Err(_) => request::timed_out_serving(limits),
                }
            }
        }
    };
    request::finish(shared, &mut resp, received, root);
    let sending = nusa_trace::sending(root, resp.body_len());
    if let Err(e) = send(&mut stream, resp).await {
        tracing::debug!(error = %e, "sending an HTTP/3 response");
    }
    drop(sending);
}

/// Connection-specific fields: HTTP/3 carries none (RFC 9114 section 4.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Checks a request head against RFC 9114 section 4.1.2 and returns the
/// `content-length` it declares. A connection-specific field, a `te` other
/// than `trailers`, or a `content-length` that is not one decimal number
/// (repeats must agree) makes the request malformed.
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, String> {
    if let Some(name) = CONNECTION_SPECIFIC
        .iter()
        .find(|name| headers.contains_key(**name))
    {
        return Err(format!("connection-specific header '{name}'"));
    }
    if headers
        .get_all(http::header::TE)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        return Err("'te' other than 'trailers'".into());
    }
    let mut declared = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| "content-length is not a decimal number".to_string())?;
        if declared.is_some_and(|d| d != n) {
            return Err("content-length values disagree".into());
        }
        declared = Some(n);
    }
    Ok(declared)
}

/// A malformed request is reset with H3_MESSAGE_ERROR in both directions,
/// not answered with a 400: RFC 9114 section 4.1.2 makes it a stream error
/// of that type (a response first is only allowed), HTTP/2 here resets such
/// streams too (hyper and h2), and a request an intermediary might read
/// differently (its length above all) is better not served at all.
fn refuse_malformed(stream: &mut Stream, why: &str) {
    tracing::debug!(why, "malformed HTTP/3 request; resetting the stream");
    stream.stop_sending(h3::error::Code::H3_MESSAGE_ERROR);
    stream.stop_stream(h3::error::Code::H3_MESSAGE_ERROR);
}

async fn send(
    stream: &mut Stream,
    resp: ApiResponse,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let len = resp.body_len();
    let head = request::response_head(&resp, None)
        .header(http::header::CONTENT_LENGTH, len)
        .body(())?;
    stream.send_response(head).await?;
    for frame in resp.body {
        if !frame.is_empty() {
            stream.send_data(frame).await?;
        }
    }
    stream.finish().await?;
    Ok(())
}

enum ReadError {
    TooLarge,
    Stream(h3::error::StreamError),
    /// The body's length differs from the declared `content-length`.
    Length {
        declared: u64,
        got: u64,
    },
}

async fn read_body(
    stream: &mut Stream,
    max: u64,
    declared: Option<u64>,
) -> Result<Vec<Bytes>, ReadError> {
    let mut frames = Vec::new();
    let mut total: u64 = 0;
    while let Some(mut chunk) = stream.recv_data().await.map_err(ReadError::Stream)? {
        total += chunk.remaining() as u64;
        if total > max {
            return Err(ReadError::TooLarge);
        }
        // Past the declared length: no need to read the rest.
        if let Some(declared) = declared.filter(|&d| total > d) {
            return Err(ReadError::Length {
                declared,
                got: total,
            });
        }
        // h3-quinn hands out `Bytes`: taking them whole does not copy.
        frames.push(chunk.copy_to_bytes(chunk.remaining()));
    }
    match declared {
        Some(declared) if declared != total => Err(ReadError::Length {
            declared,
            got: total,
        }),
        _ => Ok(frames),
    }
}
