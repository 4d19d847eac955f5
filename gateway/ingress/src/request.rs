//! What TCP and QUIC share: turning a request head and body into an
//! [`ApiRequest`] within the limits, and decorating the answer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method as HttpMethod, StatusCode};
use nusa_api::{Api, ApiRequest, ApiResponse, Credentials, Method, Protocol};
use nusa_proto::{ErrorKind, Frames, ProtoError, HEADER_LENGTH};
use nusa_trace::{TraceContext, TraceParent};
use tracing::Span;

use crate::{IngressConfig, Limits};

pub(crate) struct Shared {
    pub api: Arc<Api>,
    pub limits: Limits,
    /// `Alt-Svc` value for TCP responses, when HTTP/3 is on.
    pub alt_svc: Option<String>,
    /// The admin surface (with its caller check) instead of the public one.
    pub admin: Option<AdminCheck>,
}

/// How callers of the admin surface are checked over TCP.
pub(crate) enum AdminCheck {
    /// `Authorization: Bearer <token>`: the token's SHA-256 (compared as
    /// digests, so the comparison's time says nothing of the token).
    Token([u8; 32]),
    /// Checked before the connection was served (the Unix socket's peer
    /// credentials).
    Checked,
}

impl Shared {
    pub fn new(config: &IngressConfig, api: Arc<Api>) -> Shared {
        Shared {
            api,
            limits: config.limits.clone(),
            alt_svc: None,
            admin: None,
        }
    }

    /// The API for a request whose head passed the checks.
    pub async fn serve(&self, req: ApiRequest) -> ApiResponse {
        match self.admin {
            None => self.api.handle(req).await,
            Some(_) => self.api.handle_admin(req).await,
        }
    }

    /// On the admin TCP listener: 401 unless the request carries the token.
    pub fn refuse_caller(&self, headers: &HeaderMap) -> Option<ApiResponse> {
        let Some(AdminCheck::Token(want)) = &self.admin else {
            return None;
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| ring::digest::digest(&ring::digest::SHA256, t.trim().as_bytes()));
        if given.is_some_and(|d| d.as_ref() == want) {
            return None;
        }
        let e = ProtoError::new(
            ErrorKind::Unauthorized,
            "the admin listener needs 'Authorization: Bearer <token>' with the token in server.admin_token_file",
        );
        let mut r = ApiResponse::error(&e);
        r.headers
            .push(("www-authenticate", "Bearer realm=\"nusad-admin\"".into()));
        Some(r)
    }
}

pub(crate) fn method(m: &HttpMethod) -> Method {
    match *m {
        HttpMethod::GET => Method::Get,
        HttpMethod::HEAD => Method::Head,
        HttpMethod::POST => Method::Post,
        _ => Method::Other,
    }
}

/// Refuses a body whose declared length is over the limit, before reading.
pub(crate) fn check_declared_length(
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<(), ProtoError> {
    let Some(v) = headers.get(http::header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let n: u64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ProtoError::bad_request("Content-Length is not a number"))?;
    if n > limits.max_body_bytes {
        return Err(too_large(limits));
    }
    Ok(())
}

pub(crate) fn too_large(limits: &Limits) -> ProtoError {
    ProtoError::new(
        ErrorKind::TooLarge,
        format!(
            "request body is larger than the limit of {} bytes (limits.max_body_bytes)",
            limits.max_body_bytes
        ),
    )
}

pub(crate) fn too_early() -> ApiResponse {
    let e = ProtoError::bad_request(
        "only GET and HEAD are served from TLS early data (0-RTT); retry after the handshake",
    );
    let mut r = ApiResponse::json(425, e.body());
    r.headers.clear();
    r.headers.push(("content-type", "application/json".into()));
    r
}

pub(crate) fn timed_out_reading(limits: &Limits) -> ApiResponse {
    ApiResponse::json(
        StatusCode::REQUEST_TIMEOUT.as_u16(),
        ProtoError::bad_request(format!(
            "the request body did not arrive within {} ms (limits.request_timeout_ms)",
            limits.request_timeout.as_millis()
        ))
        .body(),
    )
}

pub(crate) fn timed_out_serving(limits: &Limits) -> ApiResponse {
    ApiResponse::error(&ProtoError::new(
        ErrorKind::Unavailable,
        format!(
            "the request was not answered within {} ms (limits.request_timeout_ms)",
            limits.request_timeout.as_millis()
        ),
    ))
}

/// What a connection tells of its caller: the address, the admin socket's
/// uid, a verified client certificate's subject.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub peer: std::net::IpAddr,
    pub uid: Option<u32>,
    pub cert_subject: Option<Arc<str>>,
}

/// The request's root span (see `nusa_trace::request_span`), continuing
/// the caller's trace context when it sent a valid one, and that context.
pub(crate) fn root_span(
    method: &HttpMethod,
    uri: &http::Uri,
    headers: &HeaderMap,
    protocol: Protocol,
) -> (Span, Option<TraceContext>) {
    let trace = trace_context(headers);
    if !nusa_trace::enabled() {
        return (Span::none(), trace);
    }
    let version = match protocol {
        Protocol::Http1 => "1.1",
        Protocol::Http2 => "2",
        Protocol::Http3 => "3",
    };
    let span = nusa_trace::request_span(version, method.as_str(), uri.path(), trace.as_ref());
    (span, trace)
}

/// Every answer's last touches: `Server-Timing` with the total where the
/// API gave none (refusals, health, metadata), and the status on the
/// request's span.
pub(crate) fn finish(shared: &Shared, resp: &mut ApiResponse, received: Instant, root: &Span) {
    if shared.api.server_timing()
        && !resp
            .headers
            .iter()
            .any(|(k, _)| *k == nusa_api::SERVER_TIMING)
    {
        let value = nusa_trace::server_timing(&nusa_trace::Phases::default(), received.elapsed());
        resp.headers.push((nusa_api::SERVER_TIMING, value));
    }
    nusa_trace::record_outcome(root, resp.status);
}

// The request's parts as TCP and QUIC hold them: grouping them would only
// move the same values into a struct each caller fills.
#[allow(clippy::too_many_arguments)]
pub(crate) fn api_request(
    method: &HttpMethod,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Vec<Bytes>,
    protocol: Protocol,
    received: Instant,
    conn: &ConnInfo,
    admin_token: bool,
    trace: Option<TraceContext>,
) -> ApiRequest {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // Already bounded by the header limits.
            .map(|v| v.trim().to_string())
    };
    ApiRequest {
        peer: Some(conn.peer),
        credentials: Credentials {
            authorization: text("authorization"),
            x_api_key: text("x-api-key"),
            cert_subject: conn.cert_subject.clone(),
            uid: conn.uid,
            admin_token,
        },
        trace,
        cache_control: text("cache-control"),
        method: self::method(method),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        header_length: headers
            .get(HEADER_LENGTH)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        body: Frames::new(body),
        protocol,
        received,
    }
}

/// The request's W3C trace context, when it has exactly one valid
/// `traceparent` (W3C Trace Context, section 3.2; [`TraceParent::parse`]):
/// an invalid one, or two of them (which the recommendation calls
/// invalid), is dropped, as if none had come, and `tracestate` with it. A
/// `tracestate` list with any invalid member is dropped whole.
fn trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let mut all = headers.get_all("traceparent").iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return None;
    };
    let parent = TraceParent::parse(value.to_str().ok()?)?;
    let mut states = headers.get_all("tracestate").iter().peekable();
    let state = match states.peek() {
        None => None,
        Some(_) => states
            .map(|v| v.to_str().ok())
            .collect::<Option<Vec<&str>>>()
            .and_then(nusa_trace::tracestate),
    };
    Some(TraceContext { parent, state })
}

/// Turns an API answer into an `http::Response` head (the body goes
/// separately: hyper and h3 send it differently).
pub(crate) fn response_head(resp: &ApiResponse, alt_svc: Option<&str>) -> http::response::Builder {
    let mut b = http::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        b = b.header(*k, v.as_str());
    }
    if let Some(a) = alt_svc {
        b = b.header(http::header::ALT_SVC, a);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(parents: &[&str], states: &[&str]) -> Option<(String, Option<String>)> {
        let mut headers = HeaderMap::new();
        for v in parents {
            headers.append("traceparent", v.parse().unwrap());
        }
        for v in states {
            headers.append("tracestate", v.parse().unwrap());
        }
        trace_context(&headers).map(|c| (c.parent.to_string(), c.state))
    }

    // The values themselves: nusa-trace's core tests.
    #[test]
    fn a_single_valid_traceparent_is_kept_with_its_tracestate() {
        assert_eq!(parse(&[GOOD], &[]), Some((GOOD.into(), None)));
        assert_eq!(
            parse(&[GOOD], &["a=1", "b=2"]),
            Some((GOOD.into(), Some("a=1,b=2".into())))
        );
        assert_eq!(parse(&[], &["a=1"]), None);
    }

    #[test]
    fn invalid_or_repeated_traceparents_and_broken_tracestates_are_dropped() {
        assert_eq!(parse(&["garbage"], &["a=1"]), None);
        assert_eq!(parse(&[GOOD, GOOD], &[]), None);
        // A broken list goes whole; the traceparent stays.
        assert_eq!(
            parse(&[GOOD], &["a=1", "Bad Key=2"]),
            Some((GOOD.into(), None))
        );
        let mut headers = HeaderMap::new();
        headers.append("traceparent", GOOD.parse().unwrap());
        headers.append(
            "tracestate",
            http::HeaderValue::from_bytes(b"a=\xff").unwrap(),
        );
        assert_eq!(trace_context(&headers).unwrap().state, None);
    }
}
