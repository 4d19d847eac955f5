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

/// The gateway's own endpoints: `/v2/health/ready` over HTTPS on the
/// public port, then the model's metadata and one inference of `model`
/// with zero inputs, pinned to the device. With `admin_socket` (nusad's
/// admin socket, where the caller's uid is the credential: the updater
/// runs as root) those two go over it, so the self-test works when the
/// public port wants API keys (`auth.mode = "keys"`, the default off
/// loopback); without it, or before nusad made it, over the public port.
pub struct GatewayGate {
    base: String,
    model: String,
    ca: Option<PathBuf>,
    admin_socket: Option<PathBuf>,
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
            admin_socket: None,
        })
    }

    /// Runs the metadata and inference checks over nusad's admin socket
    /// when it exists.
    pub fn with_admin_socket(mut self, socket: Option<PathBuf>) -> Self {
        self.admin_socket = socket;
        self
    }

    /// GET or POST over the admin socket: the status and the JSON answer.
    async fn call_socket(
        &self,
        socket: &std::path::Path,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let client = nusa_admin::Client::new(socket, Duration::from_secs(10));
        let r = match body {
            None => client.get::<Value>(path).await,
            Some(b) => client.post::<Value, Value>(path, &b).await,
        };
        match r {
            Ok(v) => Ok((StatusCode::OK, v)),
            Err(nusa_admin::AdminError::Refused { status, message }) => Ok((
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                json!({ "error": message }),
            )),
            Err(e) => Err(format!("{path} over {}: {e}", socket.display())),
        }
    }

    /// A model call: over the admin socket when there is one, else the
    /// public port.
    async fn call_model(
        &self,
        client: &HttpsClient,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        match self.admin_socket.as_deref().filter(|s| s.exists()) {
            Some(socket) => self.call_socket(socket, path, body).await,
            None => self.call(client, method, path, body).await,
        }
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
        let (s, meta) = self
            .call_model(&client, Method::GET, &meta_path, None)
            .await?;
        if s != StatusCode::OK {
            return Err(format!("{meta_path} answered {s}"));
        }
        let inputs =
            zero_inputs(&meta).ok_or_else(|| format!("{meta_path}: no usable input metadata"))?;
        let body = json!({"inputs": inputs, "parameters": {"residency": "local"}});
        let infer = format!("/v2/models/{}/infer", self.model);
        let (s, out) = self
            .call_model(&client, Method::POST, &infer, Some(body))
            .await?;
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
