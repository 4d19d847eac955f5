//! The rustls client configuration of a region: its CA bundle as the only
//! roots, an optional client certificate, the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::RegionConfig;

/// Certificate and key files are small; a larger file is not one.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Builds the TLS configuration; errors are messages naming the file.
/// ALPN is left empty: the connector sets it to `h2`.
pub(crate) fn client_config(config: &RegionConfig) -> Result<ClientConfig, String> {
    let ca_pem = read_bounded(&config.ca_bundle)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| {
            format!(
                "CA bundle {}: not a PEM certificate bundle: {e}",
                config.ca_bundle.display()
            )
        })?;
        roots.add(cert).map_err(|e| {
            format!(
                "CA bundle {}: unusable CA certificate: {e}",
                config.ca_bundle.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "CA bundle {}: no certificate in the file",
            config.ca_bundle.display()
        ));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    match (&config.client_cert, &config.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = load_chain(cert)?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))
        }
        (Some(_), None) => Err("client_cert is set but client_key is not".into()),
        (None, Some(_)) => Err("client_key is set but client_cert is not".into()),
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let err = |message: String| format!("{}: {message}", path.display());
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(err(format!("{len} bytes is too large for a PEM file")));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_bounded(path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_bounded(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        // PEM errors can quote a line or a decoding detail of the file;
        // for a key file only the kind of problem is said.
        let why = match e {
            pem::Error::NoItemsFound => "no PKCS#8, PKCS#1 or SEC1 private key in the file",
            pem::Error::Io(_) => "cannot be read",
            _ => "not a valid PEM private key",
        };
        format!("{}: {why}", path.display())
    })
}
