//! What TCP and QUIC share: turning a request head and body into an
//! [`ApiRequest`] within the limits, and decorating the answer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method as HttpMethod, StatusCode};
use nusa_api::{Api, ApiRequest, ApiResponse, Credentials, Method, Protocol};
use nusa_proto::{ErrorKind, Frames, ProtoError, HEADER_LENGTH};

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

// The request's parts as TCP and QUIC hold them: grouping them would only
// move the same eight values into a struct each caller fills.
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
        traceparent: traceparent(headers),
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
/// `traceparent` (W3C Trace Context, section 3.2): an invalid one, an
/// all-zero trace or parent id, or two of them (which the recommendation
/// calls invalid) is dropped, as if none had come. A future version's
/// known fields are passed on as version `00`, as the recommendation asks.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all("traceparent").iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return None;
    };
    let v = value.to_str().ok()?.trim();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let (version, rest) = v.split_at_checked(2)?;
    if !hex(version, 2) || version == "ff" {
        return None;
    }
    // version-trace_id-parent_id-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
    const LEN: usize = 55;
    let known = match version {
        "00" if v.len() == LEN => v,
        "00" => return None,
        _ if v.len() == LEN || v.as_bytes().get(LEN) == Some(&b'-') => v.get(..LEN)?,
        _ => return None,
    };
    let mut fields = known.split('-');
    let (_, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let valid = rest.starts_with('-')
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2)
        && fields.next().is_none();
    valid.then(|| format!("00-{trace}-{parent}-{flags}"))
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

    fn parse(values: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("traceparent", v.parse().unwrap());
        }
        traceparent(&headers)
    }

    #[test]
    fn a_single_valid_traceparent_is_kept() {
        assert_eq!(parse(&[GOOD]).as_deref(), Some(GOOD));
        assert_eq!(parse(&[&format!(" {GOOD} ")]).as_deref(), Some(GOOD));
        // A later version: its known fields, as version 00.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert_eq!(parse(&[future]).as_deref(), Some(GOOD));
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn invalid_or_repeated_traceparents_are_dropped() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "garbage",
            "",
        ] {
            assert_eq!(parse(&[bad]), None, "{bad:?}");
        }
        assert_eq!(parse(&[GOOD, GOOD]), None);
    }
}
