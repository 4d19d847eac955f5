use std::path::PathBuf;
use std::time::Duration;

/// One region: where it is, how to trust it and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionConfig {
    /// Names the region in logs and errors.
    pub name: String,
    /// `https://host:port`, optionally followed by a path prefix under which
    /// the server's `/v2/...` routes sit.
    pub url: String,
    /// PEM bundle of the CA certificates that may sign the region's
    /// certificate. Required: the machines this runs on have no system
    /// roots, and a region's certificate is usually a private CA's anyway.
    pub ca_bundle: PathBuf,
    /// PEM certificate chain presented to the region (mutual TLS); with
    /// `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Limit for one try, covering connecting, sending the request and
    /// reading the whole answer.
    pub timeout: Duration,
    /// Largest answer body accepted; a larger one is
    /// [`RegionError::TooLarge`](crate::RegionError::TooLarge).
    pub max_response_bytes: u64,
}
