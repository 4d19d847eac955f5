//! Turning tracing on: the OTLP/HTTP exporter (protobuf) over hyper and
//! rustls, the tracer provider with the head sampler and the tail
//! processor, and the subscriber layer that only sees request spans.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use nusa_tls_config::{Roots, TlsError};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::export;
use super::sampling::{HeadSampler, TailProcessor};
use super::spans::{turn_off, turn_on, TARGET};

/// How traces leave the box (`[tracing]` in nusad's config).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`);
    /// `/v1/traces` is added unless the URL has a path of its own.
    pub endpoint: String,
    /// Sent with every export (a collector's API key).
    pub headers: Vec<(String, String)>,
    /// `service.name` of every span.
    pub service_name: String,
    /// Share of new traces sampled at the head, 0 to 1.
    pub sample_ratio: f64,
    /// PEM roots for an `https://` collector.
    pub ca: Option<PathBuf>,
    /// One export's limit.
    pub export_timeout: Duration,
    /// Spans waiting for the exporter, at most.
    pub queue_spans: usize,
    /// Spans of unfinished traces held for the tail decision, at most.
    pub buffer_spans: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("tracing.otlp_endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("tracing.ca {}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
    #[error("tracing.headers: {0}")]
    Header(String),
    #[error("starting the trace exporter: {0}")]
    Start(String),
}

/// Tracing, on: flush it at exit with [`Tracing::shutdown`].
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Stops recording and exports what is queued, waiting at most
    /// `timeout` for the collector.
    pub fn shutdown(self, timeout: Duration) {
        turn_off();
        let _ = self.provider.shutdown_with_timeout(timeout);
    }
}

/// The layer that makes request spans OpenTelemetry spans, exported to the
/// collector in `settings`, and the handle that flushes them at exit. It
/// sees the request spans only (target [`TARGET`]).
pub fn layer<S>(settings: &Settings) -> Result<(impl Layer<S>, Tracing), InstallError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let endpoint = traces_url(&settings.endpoint)?;
    let https = endpoint.scheme_str() == Some("https");
    let roots = match (&settings.ca, https) {
        (Some(ca), _) => Roots::Bundle(ca),
        (None, true) => {
            return Err(InstallError::Endpoint {
                endpoint: settings.endpoint.clone(),
                message: "an https:// collector needs tracing.ca (this box has no system roots)"
                    .into(),
            })
        }
        // Plain HTTP: the TLS settings are never used.
        (None, false) => Roots::Empty,
    };
    let mut tls = nusa_tls_config::client_config(roots, None).map_err(|e| match e {
        TlsError::File { path, detail } => InstallError::Ca {
            path,
            message: detail,
        },
        other => InstallError::Start(other.to_string()),
    })?;
    tls.alpn_protocols.clear();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    let client = HyperClient::new(connector, settings.export_timeout, None);

    let mut headers = HashMap::new();
    for (k, v) in &settings.headers {
        http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| InstallError::Header(format!("{k:?} is not a header name")))?;
        // The value is a secret (an API key): never quoted.
        http::HeaderValue::from_str(v).map_err(|_| {
            InstallError::Header(format!("the value of {k:?} is not a header value"))
        })?;
        headers.insert(k.clone(), v.clone());
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint.to_string())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(settings.export_timeout)
        .with_headers(headers)
        .build()
        .map_err(|e| InstallError::Endpoint {
            endpoint: settings.endpoint.clone(),
            message: e.to_string(),
        })?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    exporter.set_resource(&resource);
    let queue = export::start(exporter, settings.queue_spans, settings.export_timeout)
        .map_err(InstallError::Start)?;
    let provider = SdkTracerProvider::builder()
        .with_sampler(HeadSampler {
            ratio: settings.sample_ratio,
        })
        .with_span_processor(TailProcessor::new(settings.buffer_spans, queue))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("nusad");
    turn_on(tracer.clone());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Children find their parent through the registry's span stack;
        // nothing here reads OpenTelemetry's own current context.
        .with_context_activation(false)
        // INFO, the request spans' level: debug and trace callsites elsewhere
        // stay off at the level check.
        .with_filter(Targets::new().with_target(TARGET, LevelFilter::INFO));
    Ok((layer, Tracing { provider }))
}

/// The collector's URL for traces.
fn traces_url(endpoint: &str) -> Result<Uri, InstallError> {
    let err = |message: &str| InstallError::Endpoint {
        endpoint: endpoint.to_string(),
        message: message.to_string(),
    };
    let uri: Uri = endpoint
        .trim()
        .parse()
        .map_err(|_| err("not a URL like http://collector:4318"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(err("not an http:// or https:// URL with a host"));
    }
    if matches!(uri.path(), "" | "/") && uri.query().is_none() {
        let base = endpoint.trim().trim_end_matches('/');
        return format!("{base}/v1/traces")
            .parse()
            .map_err(|_| err("not a URL like http://collector:4318"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_base_url_only() {
        let url = |s: &str| traces_url(s).map(|u| u.to_string());
        assert_eq!(
            url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
        assert_eq!(
            url("https://c/otlp/v1/traces").unwrap(),
            "https://c/otlp/v1/traces"
        );
        for bad in ["", "collector:4318", "ftp://c/", "http://", "not a url"] {
            assert!(traces_url(bad).is_err(), "{bad:?}");
        }
    }
}
