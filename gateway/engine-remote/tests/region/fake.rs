//! Small HTTP/2-over-TLS servers that misbehave on purpose, for what a real
//! gateway does not do: cut a body midway, answer too much, stay silent,
//! require a client certificate, record the headers it was sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nusa_proto::{decode_infer_request, encode_infer_response, Frames, ResponseOutput};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::certs::Ca;

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Decodes the request and answers its inputs back as outputs named
    /// `out_<input>`, in binary.
    Echo,
    /// 200 and the start of a binary answer, then a stream error.
    CutBody,
    /// 200 with `bytes` of body; `declared`: with a Content-Length.
    Big { bytes: usize, declared: bool },
    /// This status with this body.
    Status(u16, &'static str),
    /// 200 whose body is not an inference answer.
    Garbage,
}

/// What the server was sent.
#[derive(Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Fake {
    pub addr: SocketAddr,
    /// The CA that signed the server's certificate.
    pub ca: Ca,
    pub recorded: mpsc::UnboundedReceiver<Recorded>,
    pub connections: Arc<AtomicUsize>,
}

impl Fake {
    /// Starts a server on the current runtime. `client_ca`: require a client
    /// certificate from it.
    pub async fn start(behaviour: Behaviour, client_ca: Option<&Ca>) -> Fake {
        let ca = Ca::new("fake region CA");
        let leaf = ca.server();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(client_ca) => builder.with_client_cert_verifier(client_ca.client_verifier()),
            None => builder.with_no_client_auth(),
        };
        let mut tls = builder.with_single_cert(leaf.chain, leaf.key).unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, recorded) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let behaviour = behaviour.clone();
                let tx = tx.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    // A refused client certificate ends here.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let service = hyper::service::service_fn(move |req| {
                        answer(behaviour.clone(), tx.clone(), req)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake {
            addr,
            ca,
            recorded,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

async fn answer(
    behaviour: Behaviour,
    tx: mpsc::UnboundedSender<Recorded>,
    req: Request<Incoming>,
) -> Result<Response<ScriptBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let _ = tx.send(Recorded {
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let ok = |b: ScriptBody| Response::builder().status(200).body(b).unwrap();
    if parts.method == http::Method::GET && matches!(behaviour, Behaviour::Echo) {
        // Readiness.
        return Ok(ok(ScriptBody::ok(vec![], None)));
    }
    Ok(match behaviour {
        Behaviour::Echo => {
            let header = parts
                .headers
                .get(nusa_proto::HEADER_LENGTH)
                .and_then(|v| v.to_str().ok());
            let request = match decode_infer_request(header, Frames::new([body]), None) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Response::builder()
                        .status(400)
                        .body(ScriptBody::ok(vec![Bytes::from(e.body())], None))
                        .unwrap())
                }
            };
            let outputs: Vec<ResponseOutput> = request
                .inputs
                .into_iter()
                .map(|t| ResponseOutput {
                    name: format!("out_{}", t.name),
                    datatype: t.datatype,
                    shape: t.shape,
                    data: t.data,
                    binary: true,
                })
                .collect();
            let enc = encode_infer_response("echo", Some("1"), None, &outputs).unwrap();
            let mut resp = ok(ScriptBody::ok(enc.frames, None));
            if let Some(n) = enc.header_length {
                resp.headers_mut()
                    .insert(nusa_proto::HEADER_LENGTH, n.into());
            }
            resp
        }
        Behaviour::CutBody => {
            let header = br#"{"model_name":"m","outputs":[{"name":"y","shape":[1024],"datatype":"FP32","parameters":{"binary_data_size":4096}}]}"#;
            let mut resp = ok(ScriptBody::steps(
                vec![
                    Step::Data(Bytes::from_static(header)),
                    Step::Data(Bytes::from(vec![0u8; 1000])),
                    Step::Wait(Duration::from_millis(50)),
                    Step::Fail("the region's engine died midway"),
                ],
                None,
            ));
            resp.headers_mut()
                .insert(nusa_proto::HEADER_LENGTH, header.len().into());
            resp
        }
        Behaviour::Big { bytes, declared } => {
            let chunks = vec![
                Bytes::from(vec![b' '; bytes / 2]),
                Bytes::from(vec![b' '; bytes - bytes / 2]),
            ];
            ok(ScriptBody::ok(chunks, declared.then_some(bytes as u64)))
        }
        Behaviour::Status(status, text) => Response::builder()
            .status(status)
            .body(ScriptBody::ok(
                vec![Bytes::from_static(text.as_bytes())],
                None,
            ))
            .unwrap(),
        Behaviour::Garbage => ok(ScriptBody::ok(
            vec![Bytes::from_static(
                b"{\"model_name\":\"m\",\"outputs\":[{\"name\":\"y\"}]}",
            )],
            None,
        )),
    })
}

/// One step of a scripted response body.
pub enum Step {
    Data(Bytes),
    /// Let the client read what came before.
    Wait(Duration),
    /// A stream error: the server resets the stream.
    Fail(&'static str),
}

/// A response body that plays its steps in order.
pub struct ScriptBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An exact size to announce (Content-Length); `None` announces none.
    declared: Option<u64>,
}

impl ScriptBody {
    fn ok(chunks: Vec<Bytes>, declared: Option<u64>) -> ScriptBody {
        ScriptBody::steps(chunks.into_iter().map(Step::Data).collect(), declared)
    }

    fn steps(steps: Vec<Step>, declared: Option<u64>) -> ScriptBody {
        ScriptBody {
            steps: steps.into(),
            sleep: None,
            declared,
        }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(b)) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                Some(Step::Fail(why)) => return Poll::Ready(Some(Err(std::io::Error::other(why)))),
                Some(Step::Wait(d)) => {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        this.steps.push_front(Step::Wait(d));
                        return Poll::Pending;
                    }
                    this.sleep = None;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A TCP listener that accepts connections and never says anything.
pub async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    addr
}
