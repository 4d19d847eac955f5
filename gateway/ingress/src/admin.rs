//! The admin surface's listeners: TLS on TCP (loopback by default), where
//! every request carries the admin token, and a Unix socket, where the
//! caller's uid is checked with `SO_PEERCRED` (root, nusad's own user, or
//! a configured uid) before the connection is served. `nusactl` uses the
//! socket; `tritonclient`'s repository calls use the TCP listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use nusa_api::{Api, ApiResponse};
use nusa_proto::{ErrorKind, ProtoError};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::request::{AdminCheck, ConnInfo, Shared};
use crate::tcp::{self, TcpIngress};
use crate::tls::TlsMaterial;
use crate::track::{LogLimit, Tracker};
use crate::{IngressConfig, IngressError, Limits};

/// Where the admin surface listens and who may call it.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// TLS on TCP with the gateway's certificate; `None`: off.
    pub listen: Option<SocketAddr>,
    /// The Unix socket; `None`: off.
    pub socket: Option<PathBuf>,
    /// Uids allowed on the socket besides root and nusad's own.
    pub uids: Vec<u32>,
    /// The bearer token TCP callers present (its SHA-256 is kept).
    pub token: String,
    pub limits: Limits,
}

pub struct AdminIngress {
    tcp: Option<TcpIngress>,
    unix: Option<(UnixListener, PathBuf)>,
    shared_unix: Arc<Shared>,
    uids: Vec<u32>,
}

impl AdminIngress {
    pub async fn bind(
        config: AdminConfig,
        tls: &TlsMaterial,
        api: Arc<Api>,
        tcp_passed: Option<std::net::TcpListener>,
    ) -> Result<AdminIngress, IngressError> {
        let ingress_config = IngressConfig {
            listen: config
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            limits: config.limits.clone(),
            http3: false,
            alt_svc_max_age_s: 0,
            early_data: false,
        };
        let token = ring::digest::digest(&ring::digest::SHA256, config.token.trim().as_bytes());
        let mut want = [0u8; 32];
        want.copy_from_slice(token.as_ref());
        let tcp = match (config.listen, tcp_passed) {
            (_, Some(passed)) => Some(crate::from_std(passed)?),
            (Some(addr), None) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| IngressError::BindTcp { addr, source })?,
            ),
            (None, None) => None,
        };
        let tcp = match tcp {
            Some(listener) => {
                let mut shared = Shared::new(&ingress_config, Arc::clone(&api));
                shared.admin = Some(AdminCheck::Token(want));
                Some(TcpIngress::bind(&ingress_config, tls, listener, Arc::new(shared)).await?)
            }
            None => None,
        };
        let unix = match &config.socket {
            Some(path) => Some((bind_socket(path)?, path.clone())),
            None => None,
        };
        let mut shared_unix = Shared::new(&ingress_config, api);
        shared_unix.admin = Some(AdminCheck::Checked);
        Ok(AdminIngress {
            tcp,
            unix,
            shared_unix: Arc::new(shared_unix),
            uids: config.uids,
        })
    }

    /// The TCP listener's address, when it is on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(TcpIngress::local_addr)
    }

    pub async fn serve(self, shutdown: watch::Receiver<bool>, drain: Duration) {
        let tcp = async {
            if let Some(t) = self.tcp {
                t.serve(shutdown.clone(), drain).await;
            }
        };
        let unix = async {
            if let Some((listener, path)) = self.unix {
                serve_unix(
                    listener,
                    &path,
                    self.shared_unix,
                    &self.uids,
                    shutdown.clone(),
                    drain,
                )
                .await;
            }
        };
        tokio::join!(tcp, unix);
    }
}

/// The admin token from `path`, or a new one (256 random bits, hex) written
/// there with mode 0600 when there is no file yet.
pub fn load_or_generate_token(path: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match nusa_fsutil::read_to_string_bounded(path, 4096) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() < 32 {
                return Err(format!(
                    "{}: the admin token must be at least 32 characters",
                    path.display()
                ));
            }
            Ok(token)
        }
        Err(e) if e.is_not_found() => {
            let mut raw = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                .map_err(|_| "no randomness for the admin token".to_string())?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "generated the admin token");
            Ok(token)
        }
        Err(e) => Err(format!("reading {}: {}", path.display(), e.detail())),
    }
}

/// Binds the socket, replacing a stale socket file (never another kind of
/// file), with mode 0660: the uid check is the gate, the mode a second one.
fn bind_socket(path: &Path) -> Result<UnixListener, IngressError> {
    let err = |source| IngressError::BindUnix {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(err)?;
        } else {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

async fn serve_unix(
    listener: UnixListener,
    path: &Path,
    shared: Arc<Shared>,
    uids: &[u32],
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let own = nix::unistd::geteuid().as_raw();
    let tracker = Tracker::default();
    let mut accept_errors = LogLimit::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        crate::track::accept_failed(&mut accept_errors, "admin socket", &e).await;
                        continue;
                    }
                };
                let uid = stream.peer_cred().map(|c| c.uid()).ok();
                let allowed = uid.is_some_and(|u| u == 0 || u == own || uids.contains(&u));
                if !allowed {
                    tracing::warn!(uid = ?uid, "admin socket: caller refused (not root, nusad's user or server.admin_uids)");
                }
                let shared = Arc::clone(&shared);
                let guard = tracker.guard();
                let mut stop = shutdown.clone();
                let handshake = shared.limits.handshake_timeout;
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let shared = Arc::clone(&shared);
                        async move {
                            let resp = if allowed {
                                let info = ConnInfo {
                                    peer: std::net::IpAddr::from([127, 0, 0, 1]),
                                    uid,
                                    cert_subject: None,
                                };
                                tcp::handle(&shared, req, &info).await
                            } else {
                                let e = ProtoError::new(
                                    ErrorKind::Forbidden,
                                    format!(
                                        "uid {} may not use nusad's admin socket (root, nusad's user and server.admin_uids may)",
                                        uid.map_or_else(|| "unknown".into(), |u| u.to_string())
                                    ),
                                );
                                tcp::into_hyper(ApiResponse::error(&e), None, None)
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(handshake)
                        .serve_connection(TokioIo::new(stream), svc);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "admin socket connection ended with an error");
                            }
                        }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    drop(guard);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(path);
    if tokio::time::timeout(drain, tracker.idle()).await.is_err() {
        tracing::warn!("admin socket connections still open after the drain period");
    }
}
