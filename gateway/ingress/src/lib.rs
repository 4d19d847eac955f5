//! The only crate that knows HTTP: TLS (rustls), HTTP/1.1 and HTTP/2 on TCP
//! (hyper), HTTP/3 on QUIC (quinn + h3) on the same port number, the
//! metrics listener, limits and timeouts. Requests become
//! [`nusa_api::ApiRequest`]s; answers come back as [`nusa_api::ApiResponse`]s.

mod admin;
mod metrics_http;
mod quic;
mod request;
mod tcp;
mod tls;
mod track;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nusa_api::Api;
use tokio::sync::watch;

pub use admin::{load_or_generate_token, AdminConfig, AdminIngress};
pub use metrics_http::{serve_metrics, MAX_METRICS_CONNECTIONS};
pub use tls::{load_or_generate, TlsError, TlsMaterial};

/// Limits and timeouts for every connection.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_header_bytes: u32,
    pub max_concurrent_streams: u32,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub handshake_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct IngressConfig {
    pub listen: SocketAddr,
    pub limits: Limits,
    /// Serve HTTP/3 and advertise it with `Alt-Svc`.
    pub http3: bool,
    pub alt_svc_max_age_s: u64,
    /// Accept 0-RTT on QUIC (idempotent requests only).
    pub early_data: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("binding TCP {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("binding the admin socket {path}: {source}")]
    BindUnix {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("binding UDP {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("passed socket: {0}")]
    Passed(std::io::Error),
}

/// A TCP listener someone else bound (socket activation), for tokio.
pub(crate) fn from_std(
    listener: std::net::TcpListener,
) -> Result<tokio::net::TcpListener, IngressError> {
    // tokio requires non-blocking sockets; systemd passes blocking ones.
    listener
        .set_nonblocking(true)
        .map_err(IngressError::Passed)?;
    tokio::net::TcpListener::from_std(listener).map_err(IngressError::Passed)
}

/// Bound listeners, ready to serve.
pub struct Ingress {
    tcp: tcp::TcpIngress,
    quic: Option<quic::QuicIngress>,
}

impl Ingress {
    /// Binds TCP and (with HTTP/3 on) UDP on the same address, or takes the
    /// sockets passed in `https` and `quic` (socket activation). With port 0,
    /// or a passed TCP listener and no passed UDP socket, the UDP socket
    /// takes the address the TCP listener got. `Alt-Svc` advertises the
    /// UDP port.
    pub async fn bind(
        config: IngressConfig,
        tls: &TlsMaterial,
        api: Arc<Api>,
        https: Option<std::net::TcpListener>,
        quic: Option<std::net::UdpSocket>,
    ) -> Result<Ingress, IngressError> {
        let addr = config.listen;
        let listener = match https {
            Some(passed) => from_std(passed)?,
            None => tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| IngressError::BindTcp { addr, source })?,
        };
        let tcp_addr = listener
            .local_addr()
            .map_err(|source| IngressError::BindTcp { addr, source })?;
        let udp = match (config.http3, quic) {
            (true, Some(passed)) => Some(passed),
            (true, None) => Some(std::net::UdpSocket::bind(tcp_addr).map_err(|source| {
                IngressError::BindUdp {
                    addr: tcp_addr,
                    source,
                }
            })?),
            (false, Some(_)) => {
                tracing::warn!(
                    "a QUIC socket was passed but server.http3 is off: not serving HTTP/3"
                );
                None
            }
            (false, None) => None,
        };
        let mut shared = request::Shared::new(&config, api);
        if let Some(udp) = &udp {
            let port = udp
                .local_addr()
                .map_err(|source| IngressError::BindUdp {
                    addr: tcp_addr,
                    source,
                })?
                .port();
            shared.alt_svc = Some(format!("h3=\":{port}\"; ma={}", config.alt_svc_max_age_s));
        }
        let shared = Arc::new(shared);
        let tcp = tcp::TcpIngress::bind(&config, tls, listener, Arc::clone(&shared)).await?;
        let quic = match udp {
            Some(udp) => Some(quic::QuicIngress::bind(udp, &config, tls, shared)?),
            None => None,
        };
        Ok(Ingress { tcp, quic })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }

    /// Where HTTP/3 is served; `None` with it off.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().and_then(|q| q.local_addr())
    }

    /// Serves until `shutdown` turns true, then drains: open requests finish
    /// (up to `drain`), new ones are refused.
    pub async fn serve(self, shutdown: watch::Receiver<bool>, drain: Duration) {
        let tcp = self.tcp.serve(shutdown.clone(), drain);
        match self.quic {
            Some(q) => {
                tokio::join!(tcp, q.serve(shutdown, drain));
            }
            None => tcp.await,
        }
    }
}
