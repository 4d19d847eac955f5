//! The only crate that knows HTTP: TLS (rustls), HTTP/1.1 and HTTP/2 on TCP
//! (hyper), HTTP/3 on QUIC (quinn + h3) on the same port number, the
//! metrics listener, limits and timeouts. Requests become
//! [`nusa_api::ApiRequest`]s; answers come back as [`nusa_api::ApiResponse`]s.

mod body;
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

pub use metrics_http::serve_metrics;
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
    #[error("binding UDP {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Bound listeners, ready to serve.
pub struct Ingress {
    tcp: tcp::TcpIngress,
    quic: Option<quic::QuicIngress>,
}

impl Ingress {
    /// Binds TCP and (with HTTP/3 on) UDP on the same address. With port 0
    /// the UDP socket takes the port the TCP listener got.
    pub async fn bind(
        config: IngressConfig,
        tls: &TlsMaterial,
        api: Arc<Api>,
    ) -> Result<Ingress, IngressError> {
        let addr = config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| IngressError::BindTcp { addr, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| IngressError::BindTcp { addr, source })?
            .port();
        let mut shared = request::Shared::new(&config, api);
        if config.http3 {
            shared.alt_svc = Some(format!("h3=\":{port}\"; ma={}", config.alt_svc_max_age_s));
        }
        let shared = Arc::new(shared);
        let tcp = tcp::TcpIngress::bind(&config, tls, listener, Arc::clone(&shared)).await?;
        let quic = if config.http3 {
            let mut udp = config.listen;
            udp.set_port(port);
            Some(quic::QuicIngress::bind(udp, &config, tls, shared)?)
        } else {
            None
        };
        Ok(Ingress { tcp, quic })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
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
