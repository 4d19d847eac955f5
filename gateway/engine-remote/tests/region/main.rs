#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing
//! The region client against a real gateway started in this process (the
//! bundled tiny-cnn on ONNX Runtime) and against small misbehaving HTTP/2
//! servers. One test binary: ONNX Runtime is initialised once per process.

mod certs;
mod fake;
mod local;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nusa_engine::{BatchInput, Engine};
use nusa_engine_remote::{check_outputs, RegionClient, RegionConfig, RegionError, RemoteEngine};
use nusa_tensor::{DataType, Tensor, TensorData};

use certs::Ca;
use fake::{Behaviour, Fake};
use local::{floats, image, local_engine, region};

fn config(name: &str, url: String, ca: std::path::PathBuf) -> RegionConfig {
    RegionConfig {
        name: name.into(),
        url,
        ca_bundle: ca,
        client_cert: None,
        client_key: None,
        timeout: Duration::from_secs(10),
        max_response_bytes: 1 << 20,
    }
}

fn region_client() -> RegionClient {
    let r = region();
    RegionClient::new(config("test-region", r.url(), r.ca.clone())).unwrap()
}

fn images(seeds: &[u32]) -> Tensor {
    let bytes: Vec<u8> = seeds.iter().flat_map(|&s| image(s)).collect();
    Tensor {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![seeds.len() as i64, 3, 32, 32],
        data: bytes.into(),
    }
}

/// tiny-cnn's answer for these rows, run locally.
async fn local_probs(seeds: &[u32]) -> Vec<f32> {
    let engine = local_engine();
    let t = images(seeds);
    let out = engine
        .run(vec![BatchInput {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
            parts: vec![t.data],
        }])
        .await
        .unwrap();
    floats(&out[0].data.contiguous())
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-5, "element {i}: {g} vs {w}");
    }
}

#[tokio::test]
async fn infer_gives_what_the_local_engine_gives() {
    let client = region_client();
    let seeds = [1, 2, 3];
    let answer = client
        .infer("tiny-cnn", None, &[images(&seeds)], None, None)
        .await
        .unwrap();
    assert_eq!(answer.outputs.len(), 1);
    let probs = &answer.outputs[0];
    assert_eq!(probs.name, "probs");
    assert_eq!(probs.datatype, DataType::Fp32);
    assert_eq!(probs.shape, vec![3, 10]);
    let got = floats(&probs.data.contiguous());
    assert_close(&got, &local_probs(&seeds).await);
    for row in got.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    assert!(answer.elapsed > Duration::ZERO);
    check_outputs(local_engine().metadata(), &answer.outputs, Some(3)).unwrap();
    assert!(check_outputs(local_engine().metadata(), &answer.outputs, Some(2)).is_err());
}

#[tokio::test]
async fn versioned_request_for_named_outputs() {
    let client = region_client();
    let answer = client
        .infer("tiny-cnn", Some(1), &[images(&[7])], Some(&["probs"]), None)
        .await
        .unwrap();
    assert_eq!(answer.outputs[0].shape, vec![1, 10]);
    assert_close(
        &floats(&answer.outputs[0].data.contiguous()),
        &local_probs(&[7]).await,
    );

    let e = client
        .infer("tiny-cnn", Some(9), &[images(&[7])], None, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test]
async fn unknown_model_is_a_404_that_is_not_the_regions_fault() {
    let e = region_client()
        .infer("no-such-model", None, &[images(&[1])], None, None)
        .await
        .unwrap_err();
    let RegionError::Status {
        status, message, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*status, 404);
    assert!(message.contains("no-such-model"), "{message}");
    assert!(!e.retryable());
    assert!(!e.counts_against_region());
}

#[tokio::test]
async fn bad_input_is_a_400_the_engine_seam_reports_as_input() {
    let client = Arc::new(region_client());
    let mut t = images(&[1]);
    t.shape = vec![1, 3, 32, 16];
    t.data = TensorData::from(image(1)[..3 * 32 * 16 * 4].to_vec());
    let e = client
        .infer("tiny-cnn", None, &[t], None, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(!e.counts_against_region());
}

#[tokio::test]
async fn health_measures_the_round_trip() {
    let client = region_client();
    let first = client.health().await.unwrap();
    let second = client.health().await.unwrap();
    assert!(first > Duration::ZERO && second > Duration::ZERO);
    assert!(second < Duration::from_secs(5));
}

#[tokio::test]
async fn remote_engine_holds_the_engine_seam() {
    let local = local_engine();
    let engine = RemoteEngine::new(
        Arc::new(region_client()),
        "tiny-cnn",
        None,
        local.metadata().clone(),
    );
    assert_eq!(engine.metadata(), local.metadata());
    assert_eq!(engine.health(), nusa_engine::Health::Ready);
    // Three requests' rows, the middle one split over two segments.
    let (a, b, c) = (image(4), image(5), image(6));
    let batch = BatchInput {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![3, 3, 32, 32],
        parts: vec![
            TensorData::from(a),
            TensorData::new(vec![
                Bytes::from(b[..1000].to_vec()),
                Bytes::from(b[1000..].to_vec()),
            ]),
            TensorData::from(c),
        ],
    };
    let out = engine.run(vec![batch]).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape, vec![3, 10]);
    assert_close(
        &floats(&out[0].data.contiguous()),
        &local_probs(&[4, 5, 6]).await,
    );
}

#[tokio::test]
async fn answer_over_the_limit_is_too_large() {
    let r = region();
    let mut c = config("small", r.url(), r.ca.clone());
    // Four rows of ten floats and the JSON header do not fit.
    c.max_response_bytes = 100;
    let e = RegionClient::new(c)
        .unwrap()
        .infer("tiny-cnn", None, &[images(&[1, 2, 3, 4])], None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegionError::TooLarge { limit: 100, .. }),
        "{e:?}"
    );

    for declared in [true, false] {
        let fake = Fake::start(
            Behaviour::Big {
                bytes: 64 << 10,
                declared,
            },
            None,
        )
        .await;
        let mut c = config("big", fake.url(), fake.ca.pem.clone());
        c.max_response_bytes = 16 << 10;
        let e = RegionClient::new(c)
            .unwrap()
            .infer("m", None, &[images(&[1])], None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, RegionError::TooLarge { .. }), "{e:?}");
        assert!(e.counts_against_region() && !e.retryable());
    }
}

#[tokio::test]
async fn wrong_ca_is_a_connect_error() {
    let r = region();
    let other = Ca::new("not the region's CA");
    let e = RegionClient::new(config("r", r.url(), other.pem.clone()))
        .unwrap()
        .infer("tiny-cnn", None, &[images(&[1])], None, None)
        .await
        .unwrap_err();
    let RegionError::Connect { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(e.class(), "tls");
    assert!(e.retryable() && e.counts_against_region());
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ca = Ca::new("any");
    let client = RegionClient::new(config(
        "r",
        format!("https://127.0.0.1:{port}"),
        ca.pem.clone(),
    ))
    .unwrap();
    let e = client.health().await.unwrap_err();
    assert!(matches!(e, RegionError::Connect { .. }), "{e:?}");
    assert_eq!(e.class(), "connect");
    assert!(e.retryable() && e.counts_against_region());
}

#[tokio::test]
async fn silent_server_times_out_in_the_configured_time() {
    let addr = fake::silent().await;
    let ca = Ca::new("any");
    let mut c = config(
        "slow",
        format!("https://127.0.0.1:{}", addr.port()),
        ca.pem.clone(),
    );
    c.timeout = Duration::from_millis(300);
    let client = RegionClient::new(c).unwrap();
    let started = Instant::now();
    let e = client
        .infer("m", None, &[images(&[1])], None, None)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, RegionError::Timeout { timeout, .. } if timeout == Duration::from_millis(300)),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(e.retryable() && e.counts_against_region());
}

#[tokio::test]
async fn body_cut_midway_is_a_reset() {
    let fake = Fake::start(Behaviour::CutBody, None).await;
    let e = RegionClient::new(config("cut", fake.url(), fake.ca.pem.clone()))
        .unwrap()
        .infer("m", None, &[images(&[1])], None, None)
        .await
        .unwrap_err();
    // The headers and part of the body arrived before the stream reset.
    let RegionError::Reset { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(message.contains("stream error"), "{message}");
    assert!(!message.contains("SendRequest"), "{message}");
    assert!(e.retryable() && e.counts_against_region());
}

#[tokio::test]
async fn undecodable_answer_and_error_statuses() {
    let fake = Fake::start(Behaviour::Garbage, None).await;
    let e = RegionClient::new(config("g", fake.url(), fake.ca.pem.clone()))
        .unwrap()
        .infer("m", None, &[images(&[1])], None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, RegionError::BadAnswer { .. }), "{e:?}");

    let fake = Fake::start(Behaviour::Status(503, r#"{"error":"queue full"}"#), None).await;
    let e = RegionClient::new(config("s", fake.url(), fake.ca.pem.clone()))
        .unwrap()
        .infer("m", None, &[images(&[1])], None, None)
        .await
        .unwrap_err();
    let RegionError::Status {
        status, message, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*status, message.as_str()), (503, "queue full"));
    assert!(e.retryable() && e.counts_against_region());

    let fake = Fake::start(Behaviour::Status(500, "engine exploded"), None).await;
    let e = RegionClient::new(config("s", fake.url(), fake.ca.pem.clone()))
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "region s answered 500: engine exploded");
    assert!(!e.retryable() && e.counts_against_region());
}

#[tokio::test]
async fn request_reaches_the_region_as_sent_with_its_traceparent() {
    let mut fake = Fake::start(Behaviour::Echo, None).await;
    let client = RegionClient::new(config("echo", fake.url(), fake.ca.pem.clone())).unwrap();
    let words = Tensor {
        name: "words".into(),
        datatype: DataType::Bytes,
        shape: vec![2],
        data: nusa_tensor::encode_bytes_elements([&b"kopi"[..], &[0xff, 0][..]]).into(),
    };
    let inputs = [images(&[1, 2]), words];
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = client
        .infer("my model/x", Some(3), &inputs, None, Some(tp))
        .await
        .unwrap();
    let seen = fake.recorded.recv().await.unwrap();
    assert_eq!(seen.path, "/v2/models/my%20model%2Fx/versions/3/infer");
    assert_eq!(seen.headers["traceparent"], tp);
    assert_eq!(seen.headers["content-type"], "application/octet-stream");
    let header_length: usize = seen.headers[nusa_proto::HEADER_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        seen.headers["content-length"],
        seen.body.len().to_string().as_str()
    );
    assert_eq!(
        seen.body.len(),
        header_length + 2 * 3 * 32 * 32 * 4 + inputs[1].data.len()
    );
    // The region got the tensors as they were; the echo sends them back.
    for (out, sent) in answer.outputs.iter().zip(&inputs) {
        assert_eq!(out.name, format!("out_{}", sent.name));
        assert_eq!((out.datatype, &out.shape), (sent.datatype, &sent.shape));
        assert_eq!(out.data.contiguous(), sent.data.contiguous());
    }

    // No traceparent given, none sent; an invalid one is dropped.
    client.infer("m", None, &inputs, None, None).await.unwrap();
    assert!(!fake
        .recorded
        .recv()
        .await
        .unwrap()
        .headers
        .contains_key("traceparent"));
    client
        .infer("m", None, &inputs, None, Some("bad\nvalue"))
        .await
        .unwrap();
    assert!(!fake
        .recorded
        .recv()
        .await
        .unwrap()
        .headers
        .contains_key("traceparent"));
    // tracestate goes with a traceparent only.
    let state = "congo=t61rcWkgMzE";
    let with_state = |traceparent| nusa_engine_remote::TraceHeaders {
        traceparent,
        tracestate: Some(state),
    };
    client
        .infer_traced("m", None, &inputs, None, with_state(Some(tp)))
        .await
        .unwrap();
    let seen = fake.recorded.recv().await.unwrap();
    assert_eq!(seen.headers["traceparent"], tp);
    assert_eq!(seen.headers["tracestate"], state);
    client
        .infer_traced("m", None, &inputs, None, with_state(None))
        .await
        .unwrap();
    assert!(!fake
        .recorded
        .recv()
        .await
        .unwrap()
        .headers
        .contains_key("tracestate"));
}

#[tokio::test]
async fn one_connection_carries_concurrent_requests() {
    let fake = Fake::start(Behaviour::Echo, None).await;
    let client = RegionClient::new(config("pool", fake.url(), fake.ca.pem.clone())).unwrap();
    client.health().await.unwrap();
    let inputs = [images(&[1])];
    let calls = (0..8).map(|_| client.infer("m", None, &inputs, None, None));
    for r in futures_join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(fake.connections.load(Ordering::SeqCst), 1);
}

/// Polls the futures together on this task (no extra dependency for it).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let clients = Ca::new("client CA");
    let fake = Fake::start(Behaviour::Echo, Some(&clients)).await;
    let leaf = clients.client();
    let mut c = config("mtls", fake.url(), fake.ca.pem.clone());
    c.client_cert = Some(leaf.cert_pem.clone());
    c.client_key = Some(leaf.key_pem.clone());
    let answer = RegionClient::new(c.clone())
        .unwrap()
        .infer("m", None, &[images(&[1])], None, None)
        .await
        .unwrap();
    assert_eq!(answer.outputs[0].name, "out_input");

    // Without a certificate, or with one from another CA, the region
    // refuses the handshake.
    let stranger = Ca::new("stranger").client();
    let mut foreign = c.clone();
    foreign.client_cert = Some(stranger.cert_pem.clone());
    foreign.client_key = Some(stranger.key_pem.clone());
    let mut anonymous = c;
    anonymous.client_cert = None;
    anonymous.client_key = None;
    for c in [anonymous, foreign] {
        let e = RegionClient::new(c)
            .unwrap()
            .infer("m", None, &[images(&[1])], None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, RegionError::Connect { .. }), "{e:?}");
        assert!(!e
            .to_string()
            .contains(leaf.key_text.lines().nth(1).unwrap()));
    }
}

#[test]
fn configuration_errors_name_the_problem_never_the_key() {
    let ca = Ca::new("any");
    let leaf = ca.client();
    let base = config("cfg", "https://127.0.0.1:1".into(), ca.pem.clone());
    let err = |c: RegionConfig| match RegionClient::new(c) {
        Err(e @ RegionError::Config { .. }) => {
            assert!(!e.counts_against_region() && !e.retryable());
            e.to_string()
        }
        other => panic!("{other:?}"),
    };

    let mut c = base.clone();
    c.url = "http://127.0.0.1:1".into();
    assert!(err(c).contains("https://"));
    let mut c = base.clone();
    c.ca_bundle = "/nonexistent/ca.pem".into();
    assert!(err(c).contains("/nonexistent/ca.pem"));
    let mut c = base.clone();
    c.ca_bundle = leaf.key_pem.clone();
    assert!(err(c).contains("no certificate"));
    let mut c = base.clone();
    c.client_key = Some(leaf.key_pem.clone());
    assert!(err(c).contains("client_cert"));
    let mut c = base.clone();
    c.timeout = Duration::ZERO;
    assert!(err(c).contains("timeout"));

    // A key file that is not a key: the message says so without quoting it.
    let garbled = certs::scratch("key").join("key.pem");
    let mut text = leaf
        .key_text
        .replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!!");
    text.push('\n');
    std::fs::write(&garbled, &text).unwrap();
    let mut c = base.clone();
    c.client_cert = Some(leaf.cert_pem.clone());
    c.client_key = Some(garbled);
    let message = err(c);
    for line in leaf.key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!message.contains(line), "{message}");
    }
    // A key that does not belong to the certificate.
    let mut c = base;
    c.client_cert = Some(leaf.cert_pem.clone());
    c.client_key = Some(ca.client().key_pem.clone());
    err(c);
}
