//! Certificates: the configured ones, or a local CA and server certificate
//! generated once and kept in the data directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate files are small; a larger file is not one.
const MAX_PEM_BYTES: u64 = 1 << 20;

pub struct TlsMaterial {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The generated CA's certificate, for clients to trust; `None` when the
    /// certificate was configured.
    pub generated_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("generating TLS material: {0}")]
    Generate(String),
}

/// Loads `cert` and `key`, or makes (once) and loads a CA-signed server
/// certificate for localhost under `data_dir/tls`.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<TlsMaterial, TlsError> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return load(cert, key, None);
    }
    let dir = data_dir.join("tls");
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    if !(ca.is_file() && cert.is_file() && key.is_file()) {
        generate(&dir).map_err(|e| TlsError::Generate(e.to_string()))?;
    }
    load(&cert, &key, Some(ca))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(err(format!("{len} bytes is too large for a PEM file")));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}

fn load(cert: &Path, key: &Path, generated_ca: Option<PathBuf>) -> Result<TlsMaterial, TlsError> {
    let cert_pem = read_bounded(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            path: cert.to_path_buf(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: cert.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    let key_pem = read_bounded(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::File {
        path: key.to_path_buf(),
        // The error names the PEM section, never the key's bytes.
        message: format!("no usable private key: {e}"),
    })?;
    Ok(TlsMaterial {
        certs,
        key: key_der,
        generated_ca,
    })
}

fn generate(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nusa local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params.distinguished_name.push(DnType::CommonName, "nusad");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer)?;

    write_private(
        &dir.join("server.key"),
        server_key.serialize_pem().as_bytes(),
    )?;
    // The chain the server sends: its certificate, then the CA's.
    std::fs::write(
        dir.join("server.pem"),
        format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    // Written last: its presence means the set is complete.
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    Ok(())
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)
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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls/server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let bad = load_or_generate(Some(&ca), Some(&ca), &dir);
        assert!(matches!(bad, Err(TlsError::File { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
