//! The admin client: HTTP/1.1 over nusad's Unix socket, where nusad checks
//! the caller's uid (`SO_PEERCRED`), so no credential travels.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ErrorBody;

/// Admin answers are small; a longer one is not nusad's.
const MAX_REPLY_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("connecting to nusad's admin socket {path}: {source} (is nusad running, and may this user reach the socket?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to nusad: {0}")]
    Http(String),
    #[error("nusad answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("nusad's answer is not what this nusactl reads: {0}")]
    Decode(String),
    #[error("nusad did not answer within {0} s")]
    Timeout(u64),
}

/// A client of one admin socket.
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// `timeout` bounds each call (a load runs until the new version is
    /// warmed up).
    pub fn new(socket: &Path, timeout: Duration) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        self.call("GET", path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, AdminError> {
        let body = serde_json::to_vec(body).map_err(|e| AdminError::Decode(e.to_string()))?;
        self.call("POST", path, Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, AdminError> {
        let secs = self.timeout.as_secs();
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| AdminError::Timeout(secs))?
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, AdminError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| AdminError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AdminError::Http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "nusad")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AdminError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AdminError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| AdminError::Http(e.to_string()))?
            .to_bytes();
        driver.abort();
        if status >= 300 {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            return Err(AdminError::Refused { status, message });
        }
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| AdminError::Decode(e.to_string()))
    }
}
