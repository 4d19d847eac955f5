//! A test double of an update server: real TLS, a hand-written HTTP/1.1
//! responder so that a fault can land at an exact byte. It serves one blob
//! at any path, or the files of a folder (a published repository).
#![allow(dead_code)] // each test binary uses part of it

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nusa_ota::fetch::{FetchConfig, HttpFetcher};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
pub enum Content {
    Blob(Arc<Vec<u8>>),
    Dir(PathBuf),
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Status(u16),
    /// Close the connection without answering.
    Reset,
    /// Send this many body bytes, then nothing, with the connection open.
    Stall(usize),
    /// Send this many body bytes, then close.
    Cut(usize),
    /// Answer 200 with the whole file.
    IgnoreRange,
    /// Answer 206 with the range followed by garbage.
    TooLong,
}

pub struct FaultServer {
    pub url: String,
    pub ca: PathBuf,
    pub faults: Arc<Mutex<VecDeque<Fault>>>,
    pub ranges: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl FaultServer {
    pub async fn start(content: Content) -> FaultServer {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(VecDeque::new()));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (f, r) = (faults.clone(), ranges.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, content, f, r) =
                    (acceptor.clone(), content.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve(stream, &content, &f, &r).await;
                    }
                });
            }
        });
        FaultServer {
            url: format!("https://localhost:{port}"),
            ca,
            faults,
            ranges,
            _dir: dir,
        }
    }

    pub fn inject(&self, faults: &[Fault]) {
        self.faults.lock().extend(faults.iter().copied());
    }

    pub fn fetcher(&self) -> HttpFetcher {
        HttpFetcher::new(
            &self.url,
            FetchConfig {
                stall: Duration::from_millis(300),
                backoff: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                max_attempts: 4,
                ca_bundle: Some(self.ca.clone()),
                ..FetchConfig::default()
            },
        )
        .unwrap()
    }
}

async fn serve(
    mut s: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    content: &Content,
    faults: &Mutex<VecDeque<Fault>>,
    ranges: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        assert!(head.len() < 16 << 10, "request head too long");
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let owned;
    let data: &[u8] = match content {
        Content::Blob(b) => b,
        Content::Dir(root) => {
            let rel = path.trim_start_matches('/');
            match (!rel.contains("..")).then(|| std::fs::read(root.join(rel))) {
                Some(Ok(bytes)) => {
                    owned = bytes;
                    &owned
                }
                _ => {
                    let _ = s
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                    return;
                }
            }
        }
    };
    let range = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("range: ")
                .or_else(|| l.strip_prefix("Range: "))
        })
        .unwrap_or("")
        .to_string();
    if !range.is_empty() {
        ranges.lock().push(range.clone());
    }
    // Faults hit ranged requests only (the image), not metadata.
    let ranged = !range.is_empty();
    let (start, end) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap() + 1))
        .unwrap_or((0, data.len()));
    let fault = if ranged {
        faults.lock().pop_front()
    } else {
        None
    };
    let body = &data[start..end];
    let partial = |extra: &str| {
        format!(
            "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {}-{}/{}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
            start,
            end - 1,
            data.len(),
            body.len()
        )
    };
    let _ = match fault {
        None => {
            let _ = s.write_all(partial("").as_bytes()).await;
            s.write_all(body).await
        }
        Some(Fault::Status(code)) => {
            s.write_all(format!("HTTP/1.1 {code} Unavailable\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await
        }
        Some(Fault::Reset) => return,
        Some(Fault::Stall(n)) => {
            let _ = s.write_all(partial("").as_bytes()).await;
            let _ = s.write_all(&body[..n.min(body.len())]).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Some(Fault::Cut(n)) => {
            let _ = s.write_all(partial("").as_bytes()).await;
            let _ = s.write_all(&body[..n.min(body.len())]).await;
            let _ = s.flush().await;
            return;
        }
        Some(Fault::IgnoreRange) => {
            let _ = s
                .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", data.len()).as_bytes())
                .await;
            s.write_all(data).await
        }
        Some(Fault::TooLong) => {
            let _ = s
                .write_all(format!("HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {}-{}/{}\r\nconnection: close\r\n\r\n", start, end - 1, data.len()).as_bytes())
                .await;
            let _ = s.write_all(body).await;
            s.write_all(&[0xAA; 100_000]).await
        }
    };
    let _ = s.shutdown().await;
}

pub mod rig;
