//! Ranged downloads against a fault-injecting HTTPS server (a test double of
//! an update server: real TLS, a hand-written HTTP/1.1 responder so that a
//! fault can land at an exact byte): 503s with Retry-After, resets before
//! the answer, stalls and cuts mid-body, a server that ignores Range, one
//! that sends more than asked. Every download must finish with exactly the
//! file's bytes, resuming at the first byte not yet delivered.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::sync::Arc;

use common::{Content, Fault, FaultServer};
use nusa_ota::fetch::{FetchConfig, FetchError, HttpFetcher, Source};

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
    let s = FaultServer::start(Content::Blob(data.clone())).await;
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
    let s = FaultServer::start(Content::Blob(data.clone())).await;
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
    let s = FaultServer::start(Content::Blob(data.clone())).await;
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
    let s = FaultServer::start(Content::Blob(data)).await;
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
    let s = FaultServer::start(Content::Blob(data)).await;
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
    let s = FaultServer::start(Content::Blob(image(10))).await;
    let other = FaultServer::start(Content::Blob(image(10))).await;
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

/// The bandwidth cap over a real transfer: 320 KiB at 64 KiB/s with a
/// 16 KiB burst cannot arrive in under 4.75 s; both downloads of one
/// fetcher share the cap. (A lower bound only: a slow machine takes longer
/// and still passes.)
#[tokio::test]
async fn the_bandwidth_cap_holds_across_downloads() {
    let data = image(320 << 10);
    let s = FaultServer::start(Content::Blob(data.clone())).await;
    let f = HttpFetcher::new(
        &s.url,
        FetchConfig {
            ca_bundle: Some(s.ca.clone()),
            max_bytes_per_second: 64 << 10,
            ..FetchConfig::default()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let half = (160 << 10) as u64;
    let g = f.clone();
    let (a, b) = tokio::join!(fetch(&f, 0..half), fetch(&g, half..(320 << 10)));
    let elapsed = started.elapsed();
    let (got_a, got_b) = (a.1, b.1);
    a.0.unwrap();
    b.0.unwrap();
    assert_eq!([got_a, got_b].concat(), *data);
    assert!(
        elapsed >= std::time::Duration::from_millis(4_750),
        "320 KiB at 64 KiB/s took {elapsed:?}"
    );
}
