use std::error::Error as StdError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use nusa_proto::{decode_infer_response, encode_infer_request, Frames, HEADER_LENGTH};
use nusa_tensor::Tensor;
use serde_json::Map;

use crate::{RegionConfig, RegionError};
use nusa_frames_body::FramesBody;

/// Error bodies are read only this far: enough for `{"error": ...}`.
const MAX_ERROR_BODY: u64 = 4 << 10;
/// A connection to a region is pinged when quiet, so that one a middlebox
/// dropped is found before a request is sent on it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A client of one region: one pool of HTTP/2 connections (in practice one
/// connection, multiplexed), shared by every caller.
pub struct RegionClient {
    name: String,
    /// `https://authority[/prefix]`, without a trailing slash.
    base: String,
    timeout: Duration,
    max_response_bytes: u64,
    http: Client<HttpsConnector<HttpConnector>, FramesBody>,
}

/// The W3C trace context sent with a request (`traceparent`, and
/// `tracestate` only with a `traceparent`), as header values; a value that
/// is not a valid header is dropped, never a failed request.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceHeaders<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

/// A region's answer to an inference request.
#[derive(Clone, Debug)]
pub struct RemoteAnswer {
    /// The outputs as the region sent them (binary outputs are slices of
    /// the body's frames); check them with [`crate::check_outputs`].
    pub outputs: Vec<Tensor>,
    /// From sending the request to the decoded answer.
    pub elapsed: Duration,
}

impl RegionClient {
    /// Reads the CA bundle and client certificate and builds the pool. No
    /// connection is made until the first call.
    pub fn new(config: RegionConfig) -> Result<RegionClient, RegionError> {
        let config_error = |message: String| RegionError::Config {
            region: config.name.clone(),
            message,
        };
        let base = base_url(&config.url).map_err(config_error)?;
        if config.timeout.is_zero() {
            return Err(config_error("timeout must be more than 0".into()));
        }
        if config.max_response_bytes == 0 {
            return Err(config_error(
                "max_response_bytes must be more than 0".into(),
            ));
        }
        let tls = crate::tls::client_config(&config).map_err(config_error)?;

        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http2()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Regions are far away: grow the windows with the measured
            // bandwidth-delay product instead of stalling on 64 KiB.
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .build(connector);
        Ok(RegionClient {
            name: config.name,
            base,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            http,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `model` (at `version`, or the region's default) on `inputs`.
    /// `outputs`: the outputs to ask for, `None` for all of them; all come
    /// back in binary. `traceparent` is passed on as it is when given.
    pub async fn infer(
        &self,
        model: &str,
        version: Option<u64>,
        inputs: &[Tensor],
        outputs: Option<&[&str]>,
        traceparent: Option<&str>,
    ) -> Result<RemoteAnswer, RegionError> {
        let trace = TraceHeaders {
            traceparent,
            tracestate: None,
        };
        self.infer_traced(model, version, inputs, outputs, trace)
            .await
    }

    /// [`RegionClient::infer`] with the whole trace context.
    pub async fn infer_traced(
        &self,
        model: &str,
        version: Option<u64>,
        inputs: &[Tensor],
        outputs: Option<&[&str]>,
        trace: TraceHeaders<'_>,
    ) -> Result<RemoteAnswer, RegionError> {
        let started = Instant::now();
        let mut path = format!("/v2/models/{}", path_segment(model));
        if let Some(v) = version {
            path.push_str(&format!("/versions/{v}"));
        }
        path.push_str("/infer");
        let encoded = encode_infer_request(None, inputs, outputs, &Map::new());
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri(&path)?)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(HEADER_LENGTH, encoded.header_length)
            .header(CONTENT_LENGTH, encoded.len());
        if let Some(tp) = trace.traceparent {
            match HeaderValue::from_str(tp) {
                Ok(v) => {
                    request = request.header("traceparent", v);
                    if let Some(Ok(ts)) = trace.tracestate.map(HeaderValue::from_str) {
                        request = request.header("tracestate", ts);
                    }
                }
                // A malformed trace context is dropped, not a failed request.
                Err(_) => {
                    tracing::debug!(region = %self.name, "traceparent is not a valid header value; not sent")
                }
            }
        }
        let request = request
            .body(FramesBody::new(encoded.frames))
            .map_err(|e| self.config_error(format!("building the request: {e}")))?;

        let (headers, frames) = self.exchange(request, self.max_response_bytes).await?;
        let header_length = match headers.get(HEADER_LENGTH).map(HeaderValue::to_str) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Err(self.bad_answer(format!("{HEADER_LENGTH} is not ASCII")));
            }
        };
        let answer = decode_infer_response(header_length, Frames::new(frames))
            .map_err(|e| self.bad_answer(e.message))?;
        Ok(RemoteAnswer {
            outputs: answer.outputs,
            elapsed: started.elapsed(),
        })
    }

    /// `GET /v2/health/ready`: the round trip when the region is ready.
    /// On a warm connection this is the network's RTT plus the region's
    /// handling, which is what a probe wants to know.
    pub async fn health(&self) -> Result<Duration, RegionError> {
        let started = Instant::now();
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri("/v2/health/ready")?)
            .body(FramesBody::empty())
            .map_err(|e| self.config_error(format!("building the request: {e}")))?;
        self.exchange(request, MAX_ERROR_BODY).await?;
        Ok(started.elapsed())
    }

    fn uri(&self, path: &str) -> Result<Uri, RegionError> {
        format!("{}{path}", self.base)
            .parse()
            .map_err(|e| self.config_error(format!("URL {}{path}: {e}", self.base)))
    }

    /// Sends `request` and reads a successful answer's body, at most `limit`
    /// bytes, all within the per-try timeout.
    async fn exchange(
        &self,
        request: Request<FramesBody>,
        limit: u64,
    ) -> Result<(HeaderMap, Vec<Bytes>), RegionError> {
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| self.transport_error(&e))?;
            let (parts, body) = response.into_parts();
            if !parts.status.is_success() {
                let message = error_message(body, parts.status).await;
                return Err(RegionError::Status {
                    region: self.name.clone(),
                    status: parts.status.as_u16(),
                    message,
                });
            }
            let declared = parts
                .headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(self.too_large(limit));
            }
            let frames = self.read_body(body, limit).await?;
            Ok((parts.headers, frames))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result.inspect_err(
                |e| tracing::debug!(region = %self.name, error = %e, "region call failed"),
            ),
            Err(_) => Err(RegionError::Timeout {
                region: self.name.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// Reads the body as its frames; more than `limit` bytes is an error
    /// (dropping the body then resets the stream, so the rest is not sent).
    async fn read_body(&self, mut body: Incoming, limit: u64) -> Result<Vec<Bytes>, RegionError> {
        let mut frames = Vec::new();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.transport_error(&e))?;
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                if total > limit {
                    return Err(self.too_large(limit));
                }
                frames.push(data);
            }
        }
        Ok(frames)
    }

    fn transport_error(&self, error: &(dyn StdError + 'static)) -> RegionError {
        let (kind, message) = classify(error);
        let region = self.name.clone();
        match kind {
            Transport::Connect { tls } => RegionError::Connect {
                region,
                message,
                tls,
            },
            Transport::Reset => RegionError::Reset { region, message },
            Transport::Protocol => RegionError::Protocol { region, message },
        }
    }

    fn config_error(&self, message: String) -> RegionError {
        RegionError::Config {
            region: self.name.clone(),
            message,
        }
    }

    fn bad_answer(&self, message: String) -> RegionError {
        RegionError::BadAnswer {
            region: self.name.clone(),
            message,
        }
    }

    fn too_large(&self, limit: u64) -> RegionError {
        RegionError::TooLarge {
            region: self.name.clone(),
            limit,
        }
    }
}

impl std::fmt::Debug for RegionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionClient")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Checks the configured URL and returns it without a trailing slash.
fn base_url(url: &str) -> Result<String, String> {
    let uri: Uri = url
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("url '{url}': {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("url '{url}': must start with https://"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("url '{url}': no host"));
    };
    if uri.query().is_some() {
        return Err(format!("url '{url}': a query has no place in a base URL"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(format!("https://{authority}{path}"))
}

/// Percent-encodes a model name for one path segment: everything but the
/// unreserved characters, and the dots of `.` and `..`, which a server
/// would otherwise take as a relative path.
fn path_segment(name: &str) -> String {
    let dots_only = name == "." || name == "..";
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.');
        if unreserved && !(dots_only && b == b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The region's `{"error": ...}` message, or its text, or the status' reason.
/// The body is read only as far as `MAX_ERROR_BODY`; a failure to read it
/// leaves the status to speak for itself.
async fn error_message(mut body: Incoming, status: http::StatusCode) -> String {
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let room = MAX_ERROR_BODY as usize - buf.len();
            buf.extend_from_slice(&data[..data.len().min(room)]);
            if buf.len() >= MAX_ERROR_BODY as usize {
                break;
            }
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&buf) {
        if let Some(serde_json::Value::String(e)) = map.get("error") {
            return e.clone();
        }
    }
    let text = String::from_utf8_lossy(&buf).trim().to_string();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        text
    }
}

enum Transport {
    /// `tls`: the handshake failed.
    Connect {
        tls: bool,
    },
    Reset,
    Protocol,
}

/// Sorts a hyper/h2/rustls/io error chain into what a caller acts on, and
/// renders the chain as one message.
fn classify(error: &(dyn StdError + 'static)) -> (Transport, String) {
    let mut kind = None;
    let mut parts: Vec<String> = Vec::new();
    let mut tls = false;
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        // io::Error's `source()` skips the error it wraps, so look inside.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn StdError + 'static));
        if inner.is_some_and(|i| i.is::<rustls::Error>()) || e.is::<rustls::Error>() {
            // A failed handshake: no usable connection, whatever the
            // layers above made of it.
            tls = true;
        }
        if kind.is_none() {
            kind = kind_of(e);
        }
        next = inner.or_else(|| e.source());
    }
    let kind = if tls {
        Transport::Connect { tls: true }
    } else {
        kind.unwrap_or(Transport::Protocol)
    };
    (kind, parts.join(": "))
}

fn kind_of(e: &(dyn StdError + 'static)) -> Option<Transport> {
    if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        return e.is_connect().then_some(Transport::Connect { tls: false });
    }
    if let Some(e) = e.downcast_ref::<h2::Error>() {
        if let Some(io) = e.get_io() {
            return io_kind(io.kind());
        }
        return Some(if e.is_reset() || e.is_go_away() {
            Transport::Reset
        } else {
            Transport::Protocol
        });
    }
    if let Some(e) = e.downcast_ref::<hyper::Error>() {
        if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
            return Some(Transport::Reset);
        }
        if e.is_parse() {
            return Some(Transport::Protocol);
        }
        return None;
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return io_kind(e.kind());
    }
    None
}

fn io_kind(kind: std::io::ErrorKind) -> Option<Transport> {
    use std::io::ErrorKind::*;
    match kind {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            Some(Transport::Reset)
        }
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable => {
            Some(Transport::Connect { tls: false })
        }
        // Below HTTP/2 only TLS reports invalid data: rustls' errors and the
        // region's alerts, e.g. refusing our client certificate after the
        // TLS 1.3 handshake. h2 keeps only their kind and text, not the
        // rustls error, so the kind is what is left to go by.
        InvalidData => Some(Transport::Connect { tls: false }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("https://region.example:8443/").unwrap(),
            "https://region.example:8443"
        );
        assert_eq!(
            base_url("https://10.0.0.1/triton/").unwrap(),
            "https://10.0.0.1/triton"
        );
        assert!(base_url("http://region.example").is_err());
        assert!(base_url("region.example:8443").is_err());
        assert!(base_url("https://region.example/?x=1").is_err());
        assert!(base_url("https://").is_err());
    }

    #[test]
    fn model_names_stay_one_segment() {
        assert_eq!(path_segment("tiny-cnn_v2.onnx~"), "tiny-cnn_v2.onnx~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
