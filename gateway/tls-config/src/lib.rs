//! TLS material from PEM files, and the rustls configuration of every
//! HTTPS client of the gateway (regions, the update server, the trace
//! collector): one place that reads a CA bundle, a certificate chain or a
//! private key (bounded, [`MAX_PEM_BYTES`]) and names the file in each
//! error, and one builder of a `ClientConfig` on the ring provider.
//!
//! The provider is named, never the process default: builds that include
//! tough also compile in aws-lc-rs, and rustls refuses to guess between
//! two providers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nusa_fsutil::ReadError;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Certificate and key files are small; a larger file is not one.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Where the system's CA bundle may be (Debian's first), for a server
/// trusted without a CA bundle of its own ([`Roots::System`]).
pub const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be used. `detail` never quotes a key file.
    #[error("{}: {detail}", path.display())]
    File { path: PathBuf, detail: String },
    /// rustls refused the protocol versions (a provider without any).
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
    /// The client certificate and key do not go together.
    #[error("client certificate {}: {source}", cert.display())]
    ClientAuth {
        cert: PathBuf,
        source: rustls::Error,
    },
}

/// What a client trusts.
#[derive(Clone, Copy, Debug)]
pub enum Roots<'a> {
    /// The CA certificates of this PEM bundle, only.
    Bundle(&'a Path),
    /// The system's roots: the first bundle of [`SYSTEM_CA_BUNDLES`] there
    /// is; without one, no roots.
    System,
    /// No roots, for a client whose server speaks plain HTTP: an https URL
    /// then fails its certificate check rather than pass unverified.
    Empty,
}

/// The certificate chain and private key a client presents (mutual TLS).
#[derive(Clone, Copy, Debug)]
pub struct ClientAuth<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The ring provider every gateway TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client's TLS configuration: ring, rustls' safe default protocol
/// versions, `roots`, and `auth` when given. ALPN is left empty (hyper-rustls'
/// connector sets it).
pub fn client_config(
    roots: Roots<'_>,
    auth: Option<ClientAuth<'_>>,
) -> Result<ClientConfig, TlsError> {
    let roots = match roots {
        Roots::Bundle(path) => load_roots(path)?,
        Roots::System => match system_ca_bundle() {
            Some(path) => load_roots(path)?,
            None => RootCertStore::empty(),
        },
        Roots::Empty => RootCertStore::empty(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Versions)?
        .with_root_certificates(roots);
    match auth {
        None => Ok(builder.with_no_client_auth()),
        Some(ClientAuth { cert, key }) => {
            let chain = load_chain(cert)?;
            let key = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::ClientAuth {
                    cert: cert.to_path_buf(),
                    source,
                })
        }
    }
}

/// The first system CA bundle that exists.
pub fn system_ca_bundle() -> Option<&'static Path> {
    SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
}

/// The CA certificates of a PEM bundle; a bundle without any is an error.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let err = file_error(path);
    let pem = read_pem(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(format!("not a PEM certificate bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(roots)
}

/// A PEM certificate chain, leaf first; an empty one is an error.
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = file_error(path);
    let pem = read_pem(path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(chain)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        // PEM errors can quote a line or a decoding detail of the file;
        // for a key file only the kind of problem is said.
        let why = match e {
            pem::Error::NoItemsFound => "no PKCS#8, PKCS#1 or SEC1 private key in the file",
            pem::Error::Io(_) => "cannot be read",
            _ => "not a valid PEM private key",
        };
        file_error(path)(why.into())
    })
}

impl TlsError {
    /// The message without the file's path, for callers that name the
    /// file their own way (`tracing.ca <path>: ...`).
    pub fn detail(&self) -> String {
        match self {
            TlsError::File { detail, .. } => detail.clone(),
            other => other.to_string(),
        }
    }
}

fn file_error(path: &Path) -> impl Fn(String) -> TlsError + '_ {
    move |detail| TlsError::File {
        path: path.to_path_buf(),
        detail,
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    nusa_fsutil::read_bounded(path, MAX_PEM_BYTES).map_err(|e| {
        let detail = match &e {
            ReadError::TooLarge { .. } => "larger than 1 MiB: not a PEM file".to_string(),
            ReadError::Io { .. } => e.detail().to_string(),
        };
        file_error(path)(detail)
    })
}

#[cfg(test)]
mod tests;
