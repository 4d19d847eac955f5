//! tough's `Transport` over our HTTP client, for TUF metadata and small
//! targets (the chunk index): a 404 reported as `FileNotFound` (tough needs
//! it to know that no newer root exists). `file://` URLs go to tough's
//! `FilesystemTransport`, so one transport serves an update server and a
//! USB stick alike.
//!
//! Bodies are handed to tough chunk by chunk as they arrive, never
//! buffered here: tough bounds every file as it streams in (a metadata file
//! by its role's `Limits` or the length the role above it signed, a target
//! by its signed length), so an endless or oversized answer is cut at that
//! bound. A metadata file must also arrive whole within the fetcher's
//! `metadata_timeout`: a server trickling bytes forever ends the check with
//! a timeout error.

use std::fmt;

use async_trait::async_trait;
use futures_util::StreamExt;
use nusa_ota_tuf::{
    FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream, Url,
};

use crate::fetch::{FetchError, HttpFetcher};

#[derive(Clone)]
pub struct HttpTransport {
    fetcher: HttpFetcher,
}

impl HttpTransport {
    pub fn new(fetcher: HttpFetcher) -> Self {
        Self { fetcher }
    }
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport").finish_non_exhaustive()
    }
}

fn transport_error(url: &Url, e: FetchError) -> TransportError {
    let kind = match e {
        FetchError::NotFound { .. } => TransportErrorKind::FileNotFound,
        _ => TransportErrorKind::Other,
    };
    TransportError::new_with_cause(kind, url.clone(), e)
}

#[async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "file" => return FilesystemTransport.fetch(url).await,
            "http" | "https" => {}
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url,
                ))
            }
        }
        let chunks = self
            .fetcher
            .fetch_chunks(url.as_str())
            .await
            .map_err(|e| transport_error(&url, e))?;
        Ok(Box::pin(chunks.map(move |chunk| {
            chunk.map_err(|e| transport_error(&url, e))
        })))
    }
}

#[cfg(test)]
mod tests {
    //! A real repository (published with nusa-ota-tuf's API and real keys)
    //! served over plain HTTP on loopback by a hand-written server that can
    //! misbehave on one file.

    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use nusa_ota_tuf::{Client, Expiries, KeyCounts, Limits, Thresholds, TufError};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::HttpTransport;
    use crate::fetch::{FetchConfig, HttpFetcher};

    #[derive(Clone, Copy)]
    enum Misbehave {
        None,
        /// One byte every 50 ms, forever, under a large Content-Length.
        Trickle,
        /// 64 KiB chunks as fast as the socket takes them, forever.
        Endless,
    }

    /// Serves `dir`; the file whose path ends with `suffix` misbehaves.
    /// Returns the base URL and a count of body bytes written for that file.
    async fn serve(dir: &Path, suffix: &'static str, how: Misbehave) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sent = Arc::new(AtomicU64::new(0));
        let (dir, count) = (dir.to_owned(), Arc::clone(&sent));
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (dir, count) = (dir.clone(), Arc::clone(&count));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    if path.ends_with(suffix) && !matches!(how, Misbehave::None) {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
                            .await;
                        let chunk = match how {
                            Misbehave::Trickle => vec![b' '; 1],
                            _ => vec![b' '; 64 << 10],
                        };
                        loop {
                            if tcp.write_all(&chunk).await.is_err() {
                                return;
                            }
                            count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            if matches!(how, Misbehave::Trickle) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    let file = dir.join(path.trim_start_matches('/'));
                    let answer = match std::fs::read(&file) {
                        Ok(body) => {
                            let mut a = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            a.extend_from_slice(&body);
                            a
                        }
                        Err(_) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = tcp.write_all(&answer).await;
                });
            }
        });
        (format!("http://127.0.0.1:{port}"), sent)
    }

    /// A published repository with one release; returns (temp dir, repo,
    /// shipped root).
    async fn repository() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let keys = nusa_ota_tuf::create_keys(&dir.path().join("keys"), KeyCounts::default())
            .expect("keys");
        let repo = dir.path().join("repo");
        nusa_ota_tuf::init_repo(&repo, &keys, &Thresholds::default(), &Expiries::standard())
            .await
            .expect("init");
        let image = dir.path().join("image.img");
        std::fs::write(&image, b"image").expect("image");
        nusa_ota_tuf::add_release(
            &repo,
            &keys,
            "stable",
            "1.0.0",
            &[("image.img", image.as_path())],
            &serde_json::Map::new(),
            &Expiries::standard(),
        )
        .await
        .expect("release");
        let root = dir.path().join("shipped-root.json");
        std::fs::copy(repo.join("metadata/1.root.json"), &root).expect("root");
        (dir, repo, root)
    }

    async fn open(
        base: &str,
        dir: &Path,
        root: &Path,
        config: FetchConfig,
    ) -> Result<Client, TufError> {
        let fetcher = HttpFetcher::new(base, config).expect("fetcher");
        let url = |sub: &str| nusa_ota_tuf::Url::parse(&format!("{base}/{sub}/")).expect("url");
        Client::open(
            root,
            &dir.join("datastore"),
            url("metadata"),
            url("targets"),
            HttpTransport::new(fetcher),
            Limits::default(),
        )
        .await
    }

    fn quick() -> FetchConfig {
        FetchConfig {
            stall: Duration::from_millis(500),
            metadata_timeout: Duration::from_secs(1),
            ..FetchConfig::default()
        }
    }

    #[tokio::test]
    async fn a_repository_over_loopback_http_verifies() {
        let (dir, repo, root) = repository().await;
        let (base, _) = serve(&repo, "-", Misbehave::None).await;
        let client = open(&base, dir.path(), &root, quick()).await.expect("open");
        let release = client.latest_release("stable").expect("release");
        assert_eq!(release.version.major, 1);
        let bytes = client
            .read_target("stable/1.0.0/image.img")
            .await
            .expect("target");
        assert_eq!(bytes, b"image");
    }

    /// A server that trickles timestamp.json (a byte every 50 ms, never a
    /// stall) forever: the check ends with a timeout error after about
    /// `metadata_timeout`, not never.
    #[tokio::test]
    async fn trickling_metadata_ends_with_a_timeout() {
        let (dir, repo, root) = repository().await;
        let (base, sent) = serve(&repo, "/timestamp.json", Misbehave::Trickle).await;
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            open(&base, dir.path(), &root, quick()),
        )
        .await;
        let elapsed = started.elapsed();
        let err = outcome
            .expect("the check must end in bounded time")
            .expect_err("trickled metadata");
        eprintln!("refused after {elapsed:?}: {err}");
        assert!(
            matches!(err, TufError::Fetch { ref url, ref detail }
                if url.ends_with("timestamp.json") && detail.contains("timed out")),
            "{err}"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert!(sent.load(Ordering::Relaxed) > 0, "it did trickle");
    }

    /// A server that answers timestamp.json with endless data: tough's
    /// `max_timestamp_size` (16 KiB) cuts it as it streams in, instead of
    /// the transport buffering it first.
    #[tokio::test]
    async fn endless_metadata_is_cut_at_its_role_limit() {
        let (dir, repo, root) = repository().await;
        let (base, sent) = serve(&repo, "/timestamp.json", Misbehave::Endless).await;
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            open(&base, dir.path(), &root, quick()),
        )
        .await
        .expect("bounded time")
        .expect_err("endless metadata");
        eprintln!("refused: {err}");
        assert!(
            matches!(err, TufError::MetadataTooLarge { ref detail } if detail.contains("over 16384 bytes")),
            "{err}"
        );
        // Written into socket buffers at most, never 64 MiB.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < 16 << 20, "the server got {sent} bytes out");
    }
}
