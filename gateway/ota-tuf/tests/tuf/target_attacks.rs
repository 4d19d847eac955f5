//! The attack table, target half: the metadata is good, the target bytes
//! served are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nusa_ota_tuf::{
    FilesystemTransport, Limits, Transport, TransportError, TransportStream, TufError, Url,
};

use crate::Fixture;

const INDEX: &str = "stable/1.0.0/index.json";
const INDEX_BYTES: &[u8] = b"{\"chunk_size\":4096,\"chunks\":[\"aa\",\"bb\"]}";

async fn published() -> Fixture {
    let fx = Fixture::new().await;
    fx.release(
        "stable",
        "1.0.0",
        &[("index.json", INDEX_BYTES), ("image.img", &[7; 10_000])],
    )
    .await;
    fx
}

/// (g) A target file longer than its signed length is refused.
#[tokio::test]
async fn g_target_longer_than_signed_is_refused() {
    let fx = published().await;
    let stored = fx.stored_target(INDEX).await;
    let mut longer = INDEX_BYTES.to_vec();
    longer.extend_from_slice(&[b' '; 1000]);
    std::fs::write(&stored, longer).expect("append");

    let client = fx.client().await.expect("metadata is fine");
    let err = client.read_target(INDEX).await.expect_err("too long");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::TargetTooLong { ref name, length } if name == INDEX && length == INDEX_BYTES.len() as u64),
        "{err}"
    );
}

/// A transport that answers one file with endless zeros and counts what it
/// sent: the endless-data attack.
#[derive(Debug, Clone)]
struct Endless {
    suffix: &'static str,
    sent: Arc<AtomicU64>,
}

#[tough::async_trait]
impl Transport for Endless {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if !url.path().ends_with(self.suffix) {
            return FilesystemTransport.fetch(url).await;
        }
        let sent = Arc::clone(&self.sent);
        let chunk = tough::Bytes::from(vec![0u8; 64 * 1024]);
        Ok(Box::pin(futures::stream::repeat_with(move || {
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok(chunk.clone())
        })))
    }
}

/// (g) Endless data: the read stops within one chunk of the signed length
/// instead of reading forever.
#[tokio::test]
async fn g_endless_target_read_is_bounded() {
    let fx = published().await;
    let sent = Arc::new(AtomicU64::new(0));
    let transport = Endless {
        suffix: "index.json",
        sent: Arc::clone(&sent),
    };
    let client = fx
        .client_via(transport, Limits::default())
        .await
        .expect("metadata is fine");
    let err = client.read_target(INDEX).await.expect_err("endless");
    eprintln!("refused: {err}");
    assert!(matches!(err, TufError::TargetTooLong { .. }), "{err}");
    assert!(
        sent.load(Ordering::Relaxed) <= 2 * 64 * 1024,
        "read {} bytes",
        sent.load(Ordering::Relaxed)
    );
}

/// (h) A target whose bytes were changed (same length) is refused.
#[tokio::test]
async fn h_changed_target_bytes_are_refused() {
    let fx = published().await;
    let stored = fx.stored_target(INDEX).await;
    let mut changed = INDEX_BYTES.to_vec();
    changed[5] ^= 0x20;
    std::fs::write(&stored, changed).expect("tamper");

    let client = fx.client().await.expect("metadata is fine");
    let err = client.read_target(INDEX).await.expect_err("tampered");
    eprintln!("refused: {err}");
    assert!(
        matches!(err, TufError::HashMismatch { ref name, ref expected, .. } if name == INDEX && expected.len() == 64),
        "{err}"
    );
}

/// `read_target` is for small targets: one over the limit is refused before
/// any byte is fetched (the image goes through `target_info` and ranges).
#[tokio::test]
async fn big_target_is_not_read_into_memory() {
    let fx = published().await;
    let limits = Limits {
        max_read_target: 4096,
        ..Limits::default()
    };
    let client = fx
        .client_via(FilesystemTransport, limits)
        .await
        .expect("open");
    let err = client
        .read_target("stable/1.0.0/image.img")
        .await
        .expect_err("too big");
    eprintln!("refused: {err}");
    assert!(
        matches!(
            err,
            TufError::TargetTooLarge {
                length: 10_000,
                max: 4096,
                ..
            }
        ),
        "{err}"
    );
    let info = client.target_info("stable/1.0.0/image.img").expect("info");
    assert_eq!(info.length, 10_000);
    assert!(matches!(
        client.target_info("../etc/passwd"),
        Err(TufError::PathTraversal { .. })
    ));
}
