//! The local CA and server certificate made when no certificate is
//! configured, kept in `DATA/tls`: `ca.pem` (what clients trust), `ca.key`,
//! `server.pem` (the chain sent: server certificate, then the CA's) and
//! `server.key`.
//!
//! Both have bounded validity: the CA [`CA_DAYS`], the server certificate
//! [`SERVER_DAYS`] (what browsers accept for a server certificate). At start
//! the server certificate is issued again from the kept CA when it is
//! within [`RENEW_BEFORE_DAYS`] of its end, so `ca.pem` stays the same and
//! clients that trust it keep working. Only a CA near its own end (or
//! missing its key, or damaged) is replaced.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

type Error = Box<dyn std::error::Error>;

/// The generated CA's validity.
pub const CA_DAYS: i64 = 3650;
/// The server certificate's validity, not-before to not-after.
pub const SERVER_DAYS: i64 = 397;
/// A certificate this close to its end is replaced at start.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// How far back validity starts, for clients whose clock is a little behind.
const BACKDATE: Duration = Duration::hours(1);

pub(super) struct Files {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    pub fn new(dir: &Path) -> Files {
        Files {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// A certificate's end and public key, read from its PEM file.
struct Known {
    not_after: OffsetDateTime,
    public_key: Vec<u8>,
}

/// Makes sure `dir` holds a CA and a server certificate usable for at least
/// [`RENEW_BEFORE_DAYS`] more days, making or renewing what is needed.
pub(super) fn ensure(dir: &Path, now: OffsetDateTime) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    let files = Files::new(dir);
    let renew_by = now + Duration::days(RENEW_BEFORE_DAYS);
    match kept_ca(&files) {
        Some((issuer, ca)) if ca.not_after > renew_by => {
            match read_known(&files.cert, Some(&files.key)) {
                Some(server) if server.not_after > renew_by => {}
                _ => {
                    // A server certificate never outlives its CA.
                    let not_after = ca.not_after.min(now - BACKDATE + Duration::days(SERVER_DAYS));
                    issue_server(&files, &issuer, now, not_after)?;
                    tracing::info!(until = %not_after, "issued the server certificate from the kept local CA (DATA/tls/ca.pem unchanged)");
                }
            }
            return Ok(());
        }
        Some(_) => tracing::warn!(
            "the local CA ends within {RENEW_BEFORE_DAYS} days: making a new one; clients must trust the new DATA/tls/ca.pem"
        ),
        None => {
            // A complete set without the CA's key: provisioned (image/build
            // --tls-*, an operator) or made by an older nusad. Its clients
            // trust its CA, so it is served as it is and never replaced,
            // whatever its dates; only its owner can renew it. nusad makes
            // its own set only when there is none (or it is broken).
            let old = read_known(&files.ca, None).zip(read_known(&files.cert, Some(&files.key)));
            if let Some((ca, server)) = old {
                let end = ca.not_after.min(server.not_after);
                if end <= renew_by {
                    tracing::warn!(%end, "DATA/tls's certificate ends within {RENEW_BEFORE_DAYS} days and its CA's key is not here (provisioned, or made by an older nusad): nusad does not renew it; replace it, or remove DATA/tls to let nusad make and renew its own CA");
                } else {
                    tracing::info!(%end, "DATA/tls holds a certificate set without its CA's key (provisioned, or made by an older nusad): served as it is, not renewed by nusad");
                }
                return Ok(());
            }
        }
    }
    generate(&files, now)
}

/// The kept CA, when both its files are there, readable and agree.
fn kept_ca(files: &Files) -> Option<(Issuer<'static, KeyPair>, Known)> {
    let ca = read_known(&files.ca, Some(&files.ca_key))?;
    let pem = read_pem(&files.ca)?;
    let key = KeyPair::from_pem(&read_pem(&files.ca_key)?).ok()?;
    let issuer = Issuer::from_ca_cert_pem(&pem, key).ok()?;
    Some((issuer, ca))
}

/// One of the files kept here, bounded like every PEM file; `None` when it
/// cannot be read (then it is made again).
fn read_pem(path: &Path) -> Option<String> {
    nusa_fsutil::read_to_string_bounded(path, nusa_tls_config::MAX_PEM_BYTES).ok()
}

/// Reads the first certificate of `cert`; with `key`, `None` unless that
/// key's public half is the certificate's (a renewal cut short between its
/// two renames leaves them apart).
fn read_known(cert: &Path, key: Option<&Path>) -> Option<Known> {
    let pem = read_pem(cert)?;
    let der: CertificateDer<'_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).ok()?;
    let known = Known {
        not_after: x509.validity().not_after.to_datetime(),
        public_key: x509.public_key().subject_public_key.data.to_vec(),
    };
    if let Some(key) = key {
        let pair = KeyPair::from_pem(&read_pem(key)?).ok()?;
        if pair.der_bytes() != known.public_key.as_slice() {
            return None;
        }
    }
    Some(known)
}

fn ca_params(now: OffsetDateTime) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "nusa local CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now - BACKDATE + Duration::days(CA_DAYS);
    Ok(params)
}

/// A new CA and server certificate; `ca.pem` goes last, so its presence
/// with its key means the CA is complete.
fn generate(files: &Files, now: OffsetDateTime) -> Result<(), Error> {
    let ca_key = KeyPair::generate()?;
    let params = ca_params(now)?;
    let not_after = params.not_after;
    let ca_cert = params.self_signed(&ca_key)?;
    write_private(&files.ca_key, ca_key.serialize_pem().as_bytes())?;
    let issuer = Issuer::new(params, ca_key);
    let server_not_after = not_after.min(now - BACKDATE + Duration::days(SERVER_DAYS));
    issue_server_with_ca(files, &issuer, &ca_cert.pem(), now, server_not_after)?;
    replace(&files.ca, ca_cert.pem().as_bytes(), false)?;
    Ok(())
}

fn issue_server(
    files: &Files,
    issuer: &Issuer<'_, KeyPair>,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), Error> {
    let ca_pem = std::fs::read_to_string(&files.ca)?;
    issue_server_with_ca(files, issuer, &ca_pem, now, not_after)
}

fn issue_server_with_ca(
    files: &Files,
    issuer: &Issuer<'_, KeyPair>,
    ca_pem: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params.distinguished_name.push(DnType::CommonName, "nusad");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer)?;
    replace(&files.key, key.serialize_pem().as_bytes(), true)?;
    // The chain the server sends: its certificate, then the CA's.
    replace(
        &files.cert,
        format!("{}{}", cert.pem(), ca_pem).as_bytes(),
        false,
    )?;
    Ok(())
}

/// Writes `path` whole or not at all (a temporary file renamed over it).
fn replace(path: &Path, content: &[u8], private: bool) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if private {
        write_private(&tmp, content)?;
    } else {
        std::fs::write(&tmp, content)?;
    }
    std::fs::rename(&tmp, path)
}

pub(super) fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nusa-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn end_of(path: &Path) -> OffsetDateTime {
        read_known(path, None).unwrap().not_after
    }

    #[test]
    fn validity_is_bounded() {
        let d = dir("bounded");
        let now = OffsetDateTime::now_utc();
        ensure(&d, now).unwrap();
        let f = Files::new(&d);
        let ca_days = (end_of(&f.ca) - now).whole_days();
        let server_days = (end_of(&f.cert) - now).whole_days();
        assert!((CA_DAYS - 1..=CA_DAYS).contains(&ca_days), "{ca_days}");
        assert!(
            (SERVER_DAYS - 1..=SERVER_DAYS).contains(&server_days),
            "{server_days}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn server_certificate_is_renewed_from_the_kept_ca_near_its_end() {
        let d = dir("renew");
        let f = Files::new(&d);
        let made = OffsetDateTime::now_utc();
        ensure(&d, made).unwrap();
        let ca = std::fs::read(&f.ca).unwrap();
        let cert = std::fs::read(&f.cert).unwrap();

        // Well before the end: nothing changes.
        ensure(
            &d,
            made + Duration::days(SERVER_DAYS - RENEW_BEFORE_DAYS - 2),
        )
        .unwrap();
        assert_eq!(std::fs::read(&f.cert).unwrap(), cert);

        // Within the renewal window: a new server certificate, same CA.
        let later = made + Duration::days(SERVER_DAYS - RENEW_BEFORE_DAYS + 1);
        ensure(&d, later).unwrap();
        assert_ne!(std::fs::read(&f.cert).unwrap(), cert);
        assert_eq!(std::fs::read(&f.ca).unwrap(), ca, "the CA must stay");
        assert!(end_of(&f.cert) > later + Duration::days(SERVER_DAYS - 2));
        // The new chain still ends in the kept CA, and the key is the cert's.
        assert!(read_known(&f.cert, Some(&f.key)).is_some());
        let chain = std::fs::read_to_string(&f.cert).unwrap();
        assert!(chain.ends_with(std::str::from_utf8(&ca).unwrap()));

        // Near the CA's own end the server certificate stops with it, and
        // past the window the CA itself is replaced.
        let near_ca_end = made + Duration::days(CA_DAYS - RENEW_BEFORE_DAYS - 10);
        ensure(&d, near_ca_end).unwrap();
        assert_eq!(std::fs::read(&f.ca).unwrap(), ca);
        assert!(end_of(&f.cert) <= end_of(&f.ca));
        ensure(&d, made + Duration::days(CA_DAYS - 5)).unwrap();
        assert_ne!(std::fs::read(&f.ca).unwrap(), ca);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Regression (the appliance's QEMU test): a set provisioned without the
    /// CA's key (image/build --tls-*), 30 days from its end, was replaced
    /// whole by a new CA its clients did not trust.
    #[test]
    fn a_provisioned_set_without_the_ca_key_is_never_replaced() {
        let d = dir("provisioned");
        let f = Files::new(&d);
        let made = OffsetDateTime::now_utc();
        ensure(&d, made).unwrap();
        std::fs::remove_file(&f.ca_key).unwrap();
        let (ca, cert, key) = (
            std::fs::read(&f.ca).unwrap(),
            std::fs::read(&f.cert).unwrap(),
            std::fs::read(&f.key).unwrap(),
        );
        for days in [0, SERVER_DAYS - RENEW_BEFORE_DAYS + 1, SERVER_DAYS + 10] {
            ensure(&d, made + Duration::days(days)).unwrap();
            assert_eq!(std::fs::read(&f.ca).unwrap(), ca, "day {days}");
            assert_eq!(std::fs::read(&f.cert).unwrap(), cert, "day {days}");
            assert_eq!(std::fs::read(&f.key).unwrap(), key, "day {days}");
            assert!(!f.ca_key.exists());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_replaced() {
        let d = dir("mismatch");
        let f = Files::new(&d);
        let now = OffsetDateTime::now_utc();
        ensure(&d, now).unwrap();
        let ca = std::fs::read(&f.ca).unwrap();
        write_private(
            &f.key,
            KeyPair::generate().unwrap().serialize_pem().as_bytes(),
        )
        .unwrap();
        ensure(&d, now).unwrap();
        assert!(read_known(&f.cert, Some(&f.key)).is_some());
        assert_eq!(std::fs::read(&f.ca).unwrap(), ca);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
