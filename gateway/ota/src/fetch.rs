//! Ranged downloads that survive bad links: every byte range is fetched
//! with HTTP `Range`, a failure mid-body (503, reset, stall, a cut) resumes
//! at the first byte not yet handed over, and nothing beyond the range is
//! accepted. Offline updates read the same paths from a folder instead.
//!
//! Bytes go to a sink as they arrive; the sink (the installer) verifies
//! whole chunks against the signed chunk index before writing them, so a
//! resumed range never writes an unverified byte.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use nusa_tls_config::{Roots, TlsError};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Takes the bytes of a range in order; an error stops the download (not
/// retried: the bytes were wrong, or the disk failed).
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<(), SinkError> + Send + 'a;
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// How patient a download is.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// No byte for this long: the connection is given up and resumed.
    pub stall: Duration,
    pub connect_timeout: Duration,
    /// Attempts in a row that deliver nothing before the range fails.
    pub max_attempts: u32,
    /// First wait between attempts; doubles up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A whole TUF metadata file must arrive within this, however slowly
    /// the server trickles it (`stall` alone would let a byte every few
    /// seconds go on forever).
    pub metadata_timeout: Duration,
    /// PEM roots for the update server; `None`: the system's roots (the
    /// first bundle of [`SYSTEM_CA_BUNDLES`] there is; none: https fails).
    /// Plain http is the config's choice (loopback, or
    /// `allow_insecure_transport`); the bytes are verified against signed
    /// hashes either way.
    pub ca_bundle: Option<PathBuf>,
    /// Bandwidth cap over every download of this fetcher (and its clones),
    /// bytes per second; 0: none.
    pub max_bytes_per_second: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            stall: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            max_attempts: 8,
            metadata_timeout: Duration::from_secs(60),
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            ca_bundle: None,
            max_bytes_per_second: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: not found (404)")]
    NotFound { url: String },
    /// A metadata file did not arrive whole within `metadata_timeout`.
    #[error("{url}: timed out: not received whole within {after:?} (metadata_timeout_s)")]
    Timeout { url: String, after: Duration },
    #[error("{url}: gave up after {attempts} attempts without progress; last: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA bundle {path}: {message}")]
    Tls { path: PathBuf, message: String },
    /// The sink refused the bytes (a chunk did not verify, a write failed):
    /// not retried here.
    #[error(transparent)]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

/// What one range download cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Bytes handed to the sink (the range's length on success).
    pub delivered: u64,
    /// Requests made, including retries.
    pub requests: u32,
}

/// Where release files come from: an update server, or a folder (a USB
/// stick) holding the same signed repository.
#[derive(Clone)]
pub enum Source {
    Http(Box<HttpFetcher>),
    Dir(PathBuf),
}

impl Source {
    /// Streams `range` of the file at `path` (relative to the source's
    /// base) into `sink`.
    pub async fn fetch_range(
        &self,
        path: &str,
        range: Range<u64>,
        sink: &mut Sink<'_>,
    ) -> Result<FetchStats, FetchError> {
        match self {
            Source::Http(h) => h.fetch_range(&h.url(path), range, sink).await,
            Source::Dir(root) => read_range(&root.join(path), range, sink).await,
        }
    }
}

pub async fn read_range(
    path: &Path,
    range: Range<u64>,
    sink: &mut Sink<'_>,
) -> Result<FetchStats, FetchError> {
    let err = |source| FetchError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = tokio::fs::File::open(path).await.map_err(err)?;
    f.seek(std::io::SeekFrom::Start(range.start))
        .await
        .map_err(err)?;
    let mut left = range.end.saturating_sub(range.start);
    let mut buf = vec![0u8; 1 << 20];
    let mut stats = FetchStats {
        requests: 1,
        ..FetchStats::default()
    };
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f.read(&mut buf[..want]).await.map_err(err)?;
        if n == 0 {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file ends {left} bytes before the range does"),
            )));
        }
        sink(&buf[..n]).map_err(FetchError::Sink)?;
        left -= n as u64;
        stats.delivered += n as u64;
    }
    Ok(stats)
}

type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// A bandwidth cap: GCRA with one cell per byte, a burst of a tenth of a
/// second's bytes (at least 16 KiB).
pub struct Cap {
    limiter: Limiter,
    burst: u32,
}

impl Cap {
    pub fn new(bytes_per_second: u64) -> Option<Cap> {
        let rate = std::num::NonZeroU32::new(u32::try_from(bytes_per_second).unwrap_or(u32::MAX))?;
        let burst = (rate.get() / 10).max(16 << 10);
        let quota = governor::Quota::per_second(rate)
            .allow_burst(std::num::NonZeroU32::new(burst).unwrap_or(rate));
        Some(Cap {
            limiter: governor::RateLimiter::direct(quota),
            burst,
        })
    }

    /// Waits until `n` more bytes may pass.
    pub async fn take(&self, mut n: usize) {
        while n > 0 {
            let part = n.min(self.burst as usize);
            if let Some(cells) = std::num::NonZeroU32::new(part as u32) {
                // Never over the burst, so never InsufficientCapacity.
                let _ = self.limiter.until_n_ready(cells).await;
            }
            n -= part;
        }
    }
}

/// An HTTP(S) client for one update server.
#[derive(Clone)]
pub struct HttpFetcher {
    base: String,
    config: FetchConfig,
    cap: Option<std::sync::Arc<Cap>>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpFetcher {
    /// `base` is the server's URL prefix (`https://updates.example/nusa`).
    pub fn new(base: &str, config: FetchConfig) -> Result<Self, FetchError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(server_tls(config.ca_bundle.as_deref())?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            cap: Cap::new(config.max_bytes_per_second).map(std::sync::Arc::new),
            config,
            client,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// GETs `url`'s `range`, resuming after failures at the first byte not
    /// yet given to `sink`.
    pub async fn fetch_range(
        &self,
        url: &str,
        range: Range<u64>,
        sink: &mut Sink<'_>,
    ) -> Result<FetchStats, FetchError> {
        let uri: Uri = url.parse().map_err(|e| FetchError::Http {
            url: url.to_string(),
            message: format!("not a URL: {e}"),
        })?;
        let mut stats = FetchStats::default();
        let mut fruitless = 0u32;
        let mut wait = self.config.backoff;
        let total = range.end.saturating_sub(range.start);
        while stats.delivered < total {
            stats.requests += 1;
            let before = stats.delivered;
            let from = range.start + stats.delivered;
            let outcome = self
                .attempt(&uri, from..range.end, &mut stats.delivered, sink)
                .await;
            let retry_after = match outcome {
                Ok(()) => continue,
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry { message, after }) => {
                    tracing::info!(%url, from, error = %message, "download interrupted: resuming");
                    if stats.delivered > before {
                        fruitless = 0;
                        wait = self.config.backoff;
                    }
                    fruitless += 1;
                    if fruitless >= self.config.max_attempts {
                        return Err(FetchError::GaveUp {
                            url: url.to_string(),
                            attempts: fruitless,
                            last: message,
                        });
                    }
                    after
                }
            };
            tokio::time::sleep(retry_after.unwrap_or(wait).min(self.config.backoff_max)).await;
            wait = (wait * 2).min(self.config.backoff_max);
        }
        Ok(stats)
    }

    async fn attempt(
        &self,
        uri: &Uri,
        range: Range<u64>,
        delivered: &mut u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), Attempt> {
        let retry = |message: String| Attempt::Retry {
            message,
            after: None,
        };
        let req = Request::get(uri.clone())
            .header(RANGE, format!("bytes={}-{}", range.start, range.end - 1))
            .body(Empty::new())
            .map_err(|e| Attempt::Fatal(self.http_err(uri, e.to_string())))?;
        let resp = tokio::time::timeout(self.config.stall, self.client.request(req))
            .await
            .map_err(|_| retry("no response".into()))?
            .map_err(|e| retry(error_chain(&e)))?;
        let status = resp.status();
        // What the body's first byte is: the range's start, or 0 when a
        // server ignores Range and sends the whole file.
        let mut skip = match status {
            StatusCode::PARTIAL_CONTENT => {
                let want = format!("bytes {}-{}/", range.start, range.end - 1);
                let got = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !got.starts_with(&want) {
                    return Err(Attempt::Fatal(self.http_err(
                        uri,
                        format!("asked for {want}, the server sent Content-Range {got:?}"),
                    )));
                }
                0
            }
            StatusCode::OK => range.start,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                let after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Err(Attempt::Retry {
                    message: format!("HTTP {s}"),
                    after,
                });
            }
            StatusCode::NOT_FOUND => {
                return Err(Attempt::Fatal(FetchError::NotFound {
                    url: uri.to_string(),
                }))
            }
            s => return Err(Attempt::Fatal(self.http_err(uri, format!("HTTP {s}")))),
        };
        let mut left = range.end - range.start;
        let mut body = resp.into_body();
        while left > 0 {
            let frame = tokio::time::timeout(self.config.stall, body.frame())
                .await
                .map_err(|_| retry(format!("stalled: no byte for {:?}", self.config.stall)))?;
            let Some(frame) = frame else {
                return Err(retry(format!("the body ended {left} bytes early")));
            };
            let frame = frame.map_err(|e| retry(error_chain(&e)))?;
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            if skip > 0 {
                let n = skip.min(data.len() as u64) as usize;
                skip -= n as u64;
                data = data.slice(n..);
            }
            if data.is_empty() {
                continue;
            }
            // Never more than asked for: a server sending endless data is
            // cut at the range's end.
            let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(cap) = &self.cap {
                cap.take(n).await;
            }
            sink(&data[..n]).map_err(|e| Attempt::Fatal(FetchError::Sink(e)))?;
            *delivered += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    fn http_err(&self, uri: &Uri, message: String) -> FetchError {
        FetchError::Http {
            url: uri.to_string(),
            message,
        }
    }

    /// GETs a whole small file (TUF metadata), at most `max` bytes, within
    /// `metadata_timeout`.
    pub async fn fetch_all(&self, url: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        let mut chunks = self.fetch_chunks(url).await?;
        let mut out = Vec::new();
        while let Some(data) = chunks.next().await {
            let data = data?;
            if out.len() as u64 + data.len() as u64 > max {
                return Err(FetchError::Http {
                    url: url.to_string(),
                    message: format!("longer than {max} bytes"),
                });
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// GETs a TUF metadata file as its body's chunks, as they arrive, so
    /// that the reader (tough, with its per-role limits) bounds it before
    /// it is buffered. The whole file must arrive within
    /// `metadata_timeout` (headers included), and no gap may be longer
    /// than `stall`; either ends the body with an error. At most two
    /// chunks are read ahead of the reader.
    pub async fn fetch_chunks(&self, url: &str) -> Result<Chunks, FetchError> {
        let after = self.config.metadata_timeout;
        let stall = self.config.stall;
        let deadline = tokio::time::Instant::now() + after;
        let uri: Uri = url.parse().map_err(|e| FetchError::Http {
            url: url.to_string(),
            message: format!("not a URL: {e}"),
        })?;
        let req = Request::get(uri.clone())
            .body(Empty::new())
            .map_err(|e| self.http_err(&uri, e.to_string()))?;
        let owned_url = url.to_string();
        let timed_out = move |what: &str| {
            if tokio::time::Instant::now() >= deadline {
                FetchError::Timeout {
                    url: owned_url.clone(),
                    after,
                }
            } else {
                FetchError::Http {
                    url: owned_url.clone(),
                    message: format!("{what}: nothing for {stall:?}"),
                }
            }
        };
        let resp = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + stall),
            self.client.request(req),
        )
        .await
        .map_err(|_| timed_out("no response"))?
        .map_err(|e| self.http_err(&uri, error_chain(&e)))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound {
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(self.http_err(&uri, format!("HTTP {}", resp.status())));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut body = resp.into_body();
        let url = url.to_string();
        tokio::spawn(async move {
            loop {
                let next = deadline.min(tokio::time::Instant::now() + stall);
                let item = match tokio::time::timeout_at(next, body.frame()).await {
                    Err(_) => Err(timed_out("stalled")),
                    Ok(None) => return,
                    Ok(Some(Err(e))) => Err(FetchError::Http {
                        url: url.clone(),
                        message: error_chain(&e),
                    }),
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => Ok(data),
                        _ => continue,
                    },
                };
                let last = item.is_err();
                // The reader went away (it had enough, or too much): stop
                // reading, which drops the connection.
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Chunks { rx })
    }
}

/// A metadata body as it arrives ([`HttpFetcher::fetch_chunks`]): chunks
/// in order, then the end, or an error that ends it.
pub struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, FetchError>>,
}

impl Chunks {
    pub async fn next(&mut self) -> Option<Result<Bytes, FetchError>> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for Chunks {
    type Item = Result<Bytes, FetchError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

enum Attempt {
    Retry {
        message: String,
        after: Option<Duration>,
    },
    Fatal(FetchError),
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub use nusa_tls_config::{system_ca_bundle, SYSTEM_CA_BUNDLES};

/// TLS for an update server: trusting `ca` only, or without one the
/// system's roots (the first bundle of [`SYSTEM_CA_BUNDLES`] there is); no
/// bundle at all: no roots, so https fails rather than pass unverified.
pub(crate) fn server_tls(ca: Option<&Path>) -> Result<rustls::ClientConfig, FetchError> {
    tls_config(ca.map_or(Roots::System, Roots::Bundle))
}

/// TLS trusting `ca` only (no roots: https fails, plain http works).
pub(crate) fn client_tls(ca: Option<&Path>) -> Result<rustls::ClientConfig, FetchError> {
    tls_config(ca.map_or(Roots::Empty, Roots::Bundle))
}

fn tls_config(roots: Roots<'_>) -> Result<rustls::ClientConfig, FetchError> {
    nusa_tls_config::client_config(roots, None).map_err(|e| match e {
        TlsError::File { path, detail } => FetchError::Tls {
            path,
            message: detail,
        },
        other => FetchError::Tls {
            path: PathBuf::from("(none)"),
            message: other.to_string(),
        },
    })
}
