//! tough's `Transport` over our HTTP client, for TUF metadata and small
//! targets (the chunk index): whole files, bounded, a 404 reported as
//! `FileNotFound` (tough needs it to know that no newer root exists).
//! `file://` URLs go to tough's `FilesystemTransport`, so one transport
//! serves an update server and a USB stick alike.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use nusa_ota_tuf::{
    FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream, Url,
};

use crate::fetch::{FetchError, HttpFetcher};

/// Metadata files are small; tough bounds each role further.
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Clone)]
pub struct HttpTransport {
    fetcher: HttpFetcher,
}

impl HttpTransport {
    pub fn new(fetcher: HttpFetcher) -> Self {
        Self { fetcher }
    }
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport").finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "file" => return FilesystemTransport.fetch(url).await,
            "http" | "https" => {}
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url,
                ))
            }
        }
        let body = self
            .fetcher
            .fetch_all(url.as_str(), MAX_FILE_BYTES)
            .await
            .map_err(|e| {
                let kind = match e {
                    FetchError::NotFound { .. } => TransportErrorKind::FileNotFound,
                    _ => TransportErrorKind::Other,
                };
                TransportError::new_with_cause(kind, url.clone(), e)
            })?;
        let once = futures_util::stream::once(async move { Ok(Bytes::from(body)) });
        Ok(Box::pin(once))
    }
}
