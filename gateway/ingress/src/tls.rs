//! Certificates: the configured ones, or a local CA and server certificate
//! generated and kept in the data directory (see `local_ca`).

mod local_ca;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct TlsMaterial {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The generated CA's certificate, for clients to trust; `None` when the
    /// certificate was configured.
    pub generated_ca: Option<PathBuf>,
    /// Client certificates chaining to these are verified and their subject
    /// passed on (`auth.client_ca`); a client may still connect without one.
    pub client_roots: Option<Arc<rustls::RootCertStore>>,
}

impl TlsMaterial {
    /// Verifies client certificates against the CA certificates in `path`
    /// (PEM), optional for the client (an API key serves as well).
    pub fn with_client_ca(mut self, path: &Path) -> Result<TlsMaterial, TlsError> {
        let roots = nusa_tls_config::load_roots(path).map_err(file_error)?;
        self.client_roots = Some(Arc::new(roots));
        Ok(self)
    }

    /// When the served certificate (the chain's first) stops being valid,
    /// in seconds since the Unix epoch; `None` if it does not parse. For
    /// `nusa_tls_certificate_expiry_timestamp_seconds`.
    pub fn not_after(&self) -> Option<i64> {
        let leaf = self.certs.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// What the server asks of clients: nothing, or an optional
    /// certificate verified against `client_roots`.
    pub(crate) fn client_verifier(
        &self,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
        match &self.client_roots {
            None => Ok(rustls::server::WebPkiClientVerifier::no_client_auth()),
            Some(roots) => rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::clone(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("auth.client_ca: {e}")),
        }
    }
}

/// The subject of a verified client certificate (the leaf), in RFC 4514
/// form (`CN=robot-1, O=Acme`), as API keys name it (`cert_subject`).
pub(crate) fn client_subject(certs: Option<&[CertificateDer<'static>]>) -> Option<Arc<str>> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(Arc::from(cert.subject().to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("generating TLS material: {0}")]
    Generate(String),
}

/// Loads `cert` and `key`, or makes (once, then renews as it nears its
/// end) and loads a CA-signed server certificate for localhost under
/// `data_dir/tls`.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<TlsMaterial, TlsError> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return load(cert, key, None);
    }
    let dir = data_dir.join("tls");
    local_ca::ensure(&dir, time::OffsetDateTime::now_utc())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let files = local_ca::Files::new(&dir);
    load(&files.cert, &files.key, Some(files.ca))
}

/// `nusa-tls-config`'s errors as this crate's (`auth.client_ca`, `server.tls`).
fn file_error(e: nusa_tls_config::TlsError) -> TlsError {
    match e {
        nusa_tls_config::TlsError::File { path, detail } => TlsError::File {
            path,
            message: detail,
        },
        // The loaders fail only on files; kept total all the same.
        other => TlsError::Generate(other.to_string()),
    }
}

fn load(cert: &Path, key: &Path, generated_ca: Option<PathBuf>) -> Result<TlsMaterial, TlsError> {
    Ok(TlsMaterial {
        certs: nusa_tls_config::load_chain(cert).map_err(file_error)?,
        // The error says what is wrong with the file, never its bytes.
        key: nusa_tls_config::load_key(key).map_err(file_error)?,
        generated_ca,
        client_roots: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = std::env::temp_dir().join(format!("nusa-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_generate(None, None, &dir).unwrap();
        assert_eq!(a.certs.len(), 2);
        let ca = a.generated_ca.clone().unwrap();
        let before = std::fs::read(&ca).unwrap();
        let b = load_or_generate(None, None, &dir).unwrap();
        assert_eq!(std::fs::read(&ca).unwrap(), before, "not regenerated");
        assert_eq!(a.certs, b.certs);
        // The served (leaf) certificate's end: ahead, within its lifetime.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let end = a.not_after().unwrap();
        assert!(
            end > now && end <= now + (local_ca::SERVER_DAYS + 1) * 86_400,
            "{end} vs now {now}"
        );
        use std::os::unix::fs::PermissionsExt;
        for private in ["tls/server.key", "tls/ca.key"] {
            let mode = std::fs::metadata(dir.join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{private}");
        }
        let bad = load_or_generate(Some(&ca), Some(&ca), &dir);
        assert!(matches!(bad, Err(TlsError::File { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
