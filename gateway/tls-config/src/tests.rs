use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

struct Files {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
    key_text: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["client".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), issuer.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    let key_text = key.serialize_pem();
    std::fs::write(path("key.pem"), &key_text).unwrap();
    let other = KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(path("other.pem"), other).unwrap();
    Files {
        ca: path("ca.pem"),
        cert: path("cert.pem"),
        key: path("key.pem"),
        other_key: path("other.pem"),
        key_text,
        _dir: dir,
    }
}

#[test]
fn builds_with_a_bundle_with_or_without_a_client_certificate() {
    let f = files();
    assert_eq!(load_roots(&f.ca).unwrap().len(), 1);
    client_config(Roots::Bundle(&f.ca), None).unwrap();
    let auth = ClientAuth {
        cert: &f.cert,
        key: &f.key,
    };
    let config = client_config(Roots::Bundle(&f.ca), Some(auth)).unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
    assert!(config.alpn_protocols.is_empty());
    client_config(Roots::Empty, None).unwrap();
}

#[test]
fn system_roots_are_the_first_bundle_there_is_or_none() {
    match system_ca_bundle() {
        Some(path) => assert!(SYSTEM_CA_BUNDLES.contains(&path.to_str().unwrap())),
        None => assert!(SYSTEM_CA_BUNDLES.iter().all(|p| !Path::new(p).is_file())),
    }
    client_config(Roots::System, None).unwrap();
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let f = files();
    let missing = f.ca.with_file_name("missing.pem");
    let e = load_roots(&missing).unwrap_err();
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );

    let e = load_roots(&f.key).unwrap_err();
    assert_eq!(e.detail(), "no certificate in the file");
    let e = load_chain(&f.key).unwrap_err();
    assert_eq!(e.detail(), "no certificate in the file");

    let big = f.ca.with_file_name("big.pem");
    std::fs::write(&big, vec![b'-'; MAX_PEM_BYTES as usize + 1]).unwrap();
    let e = load_roots(&big).unwrap_err();
    assert_eq!(e.detail(), "larger than 1 MiB: not a PEM file");

    // A key that does not go with the certificate.
    let auth = ClientAuth {
        cert: &f.cert,
        key: &f.other_key,
    };
    let e = client_config(Roots::Bundle(&f.ca), Some(auth)).unwrap_err();
    assert!(matches!(e, TlsError::ClientAuth { .. }), "{e:?}");
}

#[test]
fn a_broken_key_file_is_never_quoted() {
    let f = files();
    let garbled = f.key.with_file_name("garbled.pem");
    let text = f
        .key_text
        .replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!!");
    std::fs::write(&garbled, &text).unwrap();
    let message = load_key(&garbled).unwrap_err().to_string();
    for line in f.key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!message.contains(line), "{message}");
    }
    let e = load_key(&f.cert).unwrap_err();
    assert_eq!(
        e.detail(),
        "no PKCS#8, PKCS#1 or SEC1 private key in the file"
    );
}
