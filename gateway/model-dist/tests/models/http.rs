//! A small HTTP/1.1 server over a repository folder, for the device's
//! HTTP path: serves files with `Range`, logs every request's path and
//! range, and can answer one file name with an endless body (the
//! endless-data attack), counting what it sent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use nusa_model_dist::{Limits, ModelClient, ModelError};
use nusa_ota::fetch::{FetchConfig, HttpFetcher};
use nusa_ota::transport::HttpTransport;
use nusa_ota_tuf::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Fixture;

pub struct Server {
    pub base: String,
    /// `(path, Range header)` of every request, in order.
    pub log: Arc<Mutex<Vec<(String, String)>>>,
    /// Bytes sent as endless bodies.
    pub endless_sent: Arc<AtomicU64>,
}

impl Server {
    /// Serves `root`; requests whose path ends with `endless` (if given)
    /// get zeros forever.
    pub async fn start(root: PathBuf, endless: Option<&'static str>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let endless_sent = Arc::new(AtomicU64::new(0));
        let (log2, sent2) = (Arc::clone(&log), Arc::clone(&endless_sent));
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (root, log, sent) = (root.clone(), Arc::clone(&log2), Arc::clone(&sent2));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let range = head
                        .lines()
                        .find_map(|l| l.strip_prefix("range: ").or(l.strip_prefix("Range: ")))
                        .unwrap_or("")
                        .to_owned();
                    log.lock().push((path.clone(), range.clone()));
                    if endless.is_some_and(|suffix| path.ends_with(suffix)) {
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                            .await;
                        let zeros = vec![0u8; 64 * 1024];
                        while socket.write_all(&zeros).await.is_ok() {
                            sent.fetch_add(zeros.len() as u64, Ordering::Relaxed);
                        }
                        return;
                    }
                    let file = root.join(path.trim_start_matches('/').replace("%2F", "/"));
                    let Ok(body) = std::fs::read(&file) else {
                        let _ = socket
                            .write_all(
                                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            )
                            .await;
                        return;
                    };
                    let (status, extra, part) =
                        match range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) {
                            Some((a, b)) => {
                                let a: usize = a.parse().unwrap();
                                let b: usize = b.parse().unwrap();
                                (
                                    "206 Partial Content",
                                    format!("Content-Range: bytes {a}-{b}/{}\r\n", body.len()),
                                    body[a..=b].to_vec(),
                                )
                            }
                            None => ("200 OK", String::new(), body),
                        };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        part.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.write_all(&part).await;
                });
            }
        });
        Server {
            base,
            log,
            endless_sent,
        }
    }

    /// The Range headers of the requests whose path ends with `suffix`.
    pub fn requests_for(&self, suffix: &str) -> Vec<String> {
        self.log
            .lock()
            .iter()
            .filter(|(p, _)| p.ends_with(suffix))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// A device client reading metadata and files over HTTP from `server`
/// (serving the fixture's repository folder).
pub async fn client(fx: &Fixture, server: &Server) -> Result<ModelClient, ModelError> {
    let config = FetchConfig {
        max_attempts: 2,
        backoff: std::time::Duration::from_millis(10),
        ..FetchConfig::default()
    };
    let fetcher = HttpFetcher::new(&server.base, config).unwrap();
    let metadata_url = Url::parse(&format!("{}/metadata/", server.base)).unwrap();
    let targets_url = Url::parse(&format!("{}/targets/", server.base)).unwrap();
    ModelClient::open(
        &fx.shipped_root,
        &fx.datastore,
        metadata_url,
        targets_url,
        HttpTransport::new(fetcher.clone()),
        Some(fetcher),
        Limits::default(),
    )
    .await
}
