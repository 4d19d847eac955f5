//! Ranged downloads against a fault-injecting HTTPS server (a test double of
//! an update server: real TLS, a hand-written HTTP/1.1 responder so that a
//! fault can land at an exact byte): 503s with Retry-After, resets before
//! the answer, stalls and cuts mid-body, a server that ignores Range, one
//! that sends more than asked. Every download must finish with exactly the
//! file's bytes, resuming at the first byte not yet delivered.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use nusa_ota::fetch::{FetchConfig, FetchError, HttpFetcher, Source};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Clone, Copy, Debug)]
enum Fault {
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

struct FaultServer {
    url: String,
    ca: PathBuf,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    ranges: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl FaultServer {
    async fn start(data: Arc<Vec<u8>>) -> FaultServer {
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
                let (acceptor, data, f, r) = (acceptor.clone(), data.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve(stream, &data, &f, &r).await;
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

    fn inject(&self, faults: &[Fault]) {
        self.faults.lock().extend(faults.iter().copied());
    }

    fn fetcher(&self) -> HttpFetcher {
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
    data: &[u8],
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
    let range = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("range: ")
                .or_else(|| l.strip_prefix("Range: "))
        })
        .unwrap_or("")
        .to_string();
    ranges.lock().push(range.clone());
    let (start, end) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap() + 1))
        .unwrap_or((0, data.len()));
    let fault = faults.lock().pop_front();
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
            let _ = s.write_all(&body[..n]).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Some(Fault::Cut(n)) => {
            let _ = s.write_all(partial("").as_bytes()).await;
            let _ = s.write_all(&body[..n]).await;
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

fn image(len: usize) -> Arc<Vec<u8>> {
    Arc::new((0..len).map(|i| (i * 31 % 251) as u8).collect())
}

async fn fetch(
    f: &HttpFetcher,
    range: std::ops::Range<u64>,
) -> (Result<nusa_ota::fetch::FetchStats, FetchError>, Vec<u8>) {
    let mut got = Vec::new();
    let r = f
        .fetch_range(&f.url("image"), range, &mut |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(())
        })
        .await;
    (r, got)
}

#[tokio::test]
async fn a_clean_range_is_one_request() {
    let data = image(300_000);
    let s = FaultServer::start(data.clone()).await;
    let (r, got) = fetch(&s.fetcher(), 1000..250_000).await;
    let stats = r.unwrap();
    assert_eq!(got, data[1000..250_000]);
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.delivered, 249_000);
    assert_eq!(*s.ranges.lock(), vec!["bytes=1000-249999"]);
}

#[tokio::test]
async fn every_fault_is_survived_and_resumes_where_it_broke() {
    let data = image(400_000);
    let s = FaultServer::start(data.clone()).await;
    s.inject(&[
        Fault::Status(503),
        Fault::Reset,
        Fault::Cut(70_000),
        Fault::Stall(50_000),
        Fault::Status(429),
        Fault::Cut(1),
    ]);
    let (r, got) = fetch(&s.fetcher(), 0..400_000).await;
    let stats = r.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == *data, "the bytes differ from the file");
    assert_eq!(stats.requests, 7);
    let ranges = s.ranges.lock().clone();
    // After the cut at 70 000 and the stall 50 000 later, each request
    // starts at the first byte not delivered (the stall's bytes count, as
    // they were delivered before it stalled).
    assert_eq!(
        ranges,
        vec![
            "bytes=0-399999",
            "bytes=0-399999",
            "bytes=0-399999",
            "bytes=70000-399999",
            "bytes=120000-399999",
            "bytes=120000-399999",
            "bytes=120001-399999",
        ]
    );
}

#[tokio::test]
async fn a_server_that_ignores_range_or_sends_too_much_is_handled() {
    let data = image(100_000);
    let s = FaultServer::start(data.clone()).await;
    s.inject(&[Fault::IgnoreRange]);
    let (r, got) = fetch(&s.fetcher(), 40_000..60_000).await;
    r.unwrap();
    assert_eq!(got, data[40_000..60_000], "the head of a 200 was skipped");
    s.inject(&[Fault::TooLong]);
    let (r, got) = fetch(&s.fetcher(), 10..20).await;
    r.unwrap();
    assert_eq!(got, data[10..20], "nothing past the range is taken");
}

#[tokio::test]
async fn a_dead_server_gives_up_with_the_reason_and_a_404_at_once() {
    let data = image(1000);
    let s = FaultServer::start(data).await;
    s.inject(&[Fault::Status(503); 10]);
    let (r, _) = fetch(&s.fetcher(), 0..1000).await;
    match r {
        Err(FetchError::GaveUp { attempts, last, .. }) => {
            assert_eq!(attempts, 4);
            assert!(last.contains("503"), "{last}");
        }
        other => panic!("{other:?}"),
    }
    s.faults.lock().clear();
    s.inject(&[Fault::Status(404)]);
    let before = s.ranges.lock().len();
    let (r, _) = fetch(&s.fetcher(), 0..1000).await;
    assert!(matches!(r, Err(FetchError::NotFound { .. })), "{r:?}");
    assert_eq!(s.ranges.lock().len(), before + 1, "a 404 is not retried");
}

#[tokio::test]
async fn a_sink_refusal_stops_the_download() {
    let data = image(10_000);
    let s = FaultServer::start(data).await;
    let f = s.fetcher();
    let r = f
        .fetch_range(&f.url("image"), 0..10_000, &mut |_b: &[u8]| {
            Err("chunk 0 does not match the signed index".into())
        })
        .await;
    match r {
        Err(FetchError::Sink(e)) => assert!(e.to_string().contains("signed index")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let s = FaultServer::start(image(10)).await;
    let other = FaultServer::start(image(10)).await;
    let f = HttpFetcher::new(
        &s.url,
        FetchConfig {
            ca_bundle: Some(other.ca.clone()),
            max_attempts: 1,
            ..FetchConfig::default()
        },
    )
    .unwrap();
    let (r, got) = fetch(&f, 0..10).await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(got.is_empty());
}

#[tokio::test]
async fn a_folder_source_reads_the_same_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let data = image(5000);
    std::fs::create_dir_all(dir.path().join("targets")).unwrap();
    std::fs::write(dir.path().join("targets/image"), &*data).unwrap();
    let src = Source::Dir(dir.path().to_path_buf());
    let mut got = Vec::new();
    src.fetch_range("targets/image", 100..4100, &mut |b: &[u8]| {
        got.extend_from_slice(b);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(got, data[100..4100]);
    let e = src
        .fetch_range("targets/image", 4000..6000, &mut |_b: &[u8]| Ok(()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("before the range does"), "{e}");
}
