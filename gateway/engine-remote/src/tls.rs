//! The rustls client configuration of a region: its CA bundle as the only
//! roots, an optional client certificate (built by `nusa-tls-config`).

use nusa_tls_config::{ClientAuth, Roots, TlsError};
use rustls::ClientConfig;

use crate::RegionConfig;

/// Builds the TLS configuration; errors are messages naming the file.
/// ALPN is left empty: the connector sets it to `h2`.
pub(crate) fn client_config(config: &RegionConfig) -> Result<ClientConfig, String> {
    let auth = match (&config.client_cert, &config.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientAuth { cert, key }),
        (Some(_), None) => return Err("client_cert is set but client_key is not".into()),
        (None, Some(_)) => return Err("client_key is set but client_cert is not".into()),
    };
    nusa_tls_config::client_config(Roots::Bundle(&config.ca_bundle), auth).map_err(|e| match e {
        TlsError::File { ref path, .. } if *path == config.ca_bundle => format!("CA bundle {e}"),
        other => other.to_string(),
    })
}
