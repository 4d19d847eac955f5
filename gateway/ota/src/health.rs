//! The health gate after booting a new slot: the gateway must be ready and
//! answer a self-test inference, on this device, before the deadline. Only
//! then is the slot marked good; otherwise the updater rolls back.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub type GateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Whether the freshly booted system works.
pub trait HealthGate: Send + Sync {
    /// Ok once healthy; Err with what failed when `within` runs out.
    fn check(&self, within: Duration) -> GateFuture<'_>;
}

/// The gateway's own endpoints over HTTPS: `/v2/health/ready`, then one
/// inference of `model` with zero inputs, pinned to the device.
pub struct GatewayGate {
    base: String,
    model: String,
    ca: Option<PathBuf>,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

impl GatewayGate {
    /// `ca`: the gateway's CA (`data_dir/tls/ca.pem` when it made its own).
    /// It is read at each check: on a first boot the gateway makes it only
    /// once it runs.
    pub fn new(base: &str, ca: Option<PathBuf>, model: &str) -> Result<Self, String> {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("url {base:?}: expected https://host:port"));
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            model: model.to_string(),
            ca,
        })
    }

    fn client(&self) -> Result<HttpsClient, String> {
        let tls = crate::fetch::client_tls(self.ca.as_deref()).map_err(|e| e.to_string())?;
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    }

    async fn call(
        &self,
        client: &HttpsClient,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| format!("{path}: no answer in 10 s"))?
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("{path}: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// One self-test: ready, metadata, an inference answered locally.
    async fn once(&self) -> Result<(), String> {
        let client = self.client()?;
        let (s, _) = self
            .call(&client, Method::GET, "/v2/health/ready", None)
            .await?;
        if s != StatusCode::OK {
            return Err(format!("/v2/health/ready answered {s}"));
        }
        let meta_path = format!("/v2/models/{}", self.model);
        let (s, meta) = self.call(&client, Method::GET, &meta_path, None).await?;
        if s != StatusCode::OK {
            return Err(format!("{meta_path} answered {s}"));
        }
        let inputs =
            zero_inputs(&meta).ok_or_else(|| format!("{meta_path}: no usable input metadata"))?;
        let body = json!({"inputs": inputs, "parameters": {"residency": "local"}});
        let infer = format!("/v2/models/{}/infer", self.model);
        let (s, out) = self.call(&client, Method::POST, &infer, Some(body)).await?;
        let outputs = out
            .get("outputs")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if s != StatusCode::OK || outputs == 0 {
            return Err(format!(
                "{infer} answered {s} with {outputs} outputs: {out}"
            ));
        }
        Ok(())
    }
}

/// One row of zeros per input, from the model's metadata.
fn zero_inputs(meta: &Value) -> Option<Vec<Value>> {
    meta.get("inputs")?
        .as_array()?
        .iter()
        .map(|i| {
            let shape: Vec<i64> = i
                .get("shape")?
                .as_array()?
                .iter()
                .map(|d| d.as_i64().map(|d| if d < 0 { 1 } else { d }))
                .collect::<Option<_>>()?;
            let n: i64 = shape.iter().product();
            let datatype = i.get("datatype")?.as_str()?;
            let zero = match datatype {
                "BOOL" => json!(false),
                "BYTES" => json!(""),
                _ => json!(0),
            };
            Some(
                json!({"name": i.get("name")?, "shape": shape, "datatype": datatype,
                        "data": vec![zero; usize::try_from(n).ok().filter(|&n| n <= 1 << 24)?]}),
            )
        })
        .collect()
}

impl HealthGate for GatewayGate {
    fn check(&self, within: Duration) -> GateFuture<'_> {
        Box::pin(async move {
            let until = Instant::now() + within;
            loop {
                let why = match self.once().await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                };
                if Instant::now() + Duration::from_secs(1) >= until {
                    return Err(why);
                }
                tracing::debug!(error = %why, "health gate: not yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}
