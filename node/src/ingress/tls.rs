//! TLS for the ingress: the user's certificate, or certificates issued on
//! the fly by a CA of the node's own (self-signed). Either way the ingress
//! offers HTTP/2 and HTTP/1.1 by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// A server config from PEM files: `cert` (the chain, leaf first) and
/// `key` (PKCS#8, PKCS#1 or SEC1).
pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| file_err(cert, e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| file_err(key, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, format!("not a PEM certificate chain: {e:?}")))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| file_err(key, format!("not a PEM private key: {e:?}")))?;
    config(chain, key)
}

/// TLS without a certificate of the user's: a certificate authority of the
/// node's own (kept in `dir` as `ingress-ca.pem` and `ingress-ca-key.pem`,
/// made on first use) issues a certificate for each name a client asks for
/// (SNI) on the fly. Clients trust `ingress-ca.pem`. (A single wildcard for
/// `*.localhost` would not do: clients refuse wildcards right under a
/// one-label domain.)
pub fn self_signed(domain: &str, dir: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let ca = OnDemand::load_or_create(domain, dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ca));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The file clients trust for [`self_signed`] TLS.
pub const CA_FILE: &str = "ingress-ca.pem";
const CA_KEY_FILE: &str = "ingress-ca-key.pem";
/// Certificates issued and kept at most (the oldest names are issued again).
const MAX_ISSUED: usize = 4096;

/// Issues a certificate per requested name, signed by the ingress CA.
struct OnDemand {
    domain: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    issued: std::sync::Mutex<std::collections::HashMap<String, Arc<rustls::sign::CertifiedKey>>>,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand")
            .field("domain", &self.domain)
            .finish()
    }
}

impl OnDemand {
    fn load_or_create(domain: &str, dir: &Path) -> Result<OnDemand, TlsError> {
        let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
        let file_err = |path: &Path, e: std::io::Error| TlsError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let (cert_path, key_path) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
        let (ca, key) = match (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            (Ok(cert), Ok(key)) => {
                let key = rcgen::KeyPair::from_pem(&key).map_err(setup)?;
                let params = rcgen::CertificateParams::from_ca_cert_pem(&cert).map_err(setup)?;
                (params.self_signed(&key).map_err(setup)?, key)
            }
            _ => {
                let key = rcgen::KeyPair::generate().map_err(setup)?;
                let mut params =
                    rcgen::CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                params.distinguished_name.push(
                    rcgen::DnType::CommonName,
                    format!("cairn ingress CA ({domain})"),
                );
                params.key_usages = vec![
                    rcgen::KeyUsagePurpose::KeyCertSign,
                    rcgen::KeyUsagePurpose::DigitalSignature,
                ];
                params.not_before = rcgen::date_time_ymd(2024, 1, 1);
                params.not_after = rcgen::date_time_ymd(2124, 1, 1);
                let cert = params.self_signed(&key).map_err(setup)?;
                std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
                write_file(&key_path, key.serialize_pem().as_bytes(), true)
                    .map_err(|e| file_err(&key_path, e))?;
                write_file(&cert_path, cert.pem().as_bytes(), false)
                    .map_err(|e| file_err(&cert_path, e))?;
                (cert, key)
            }
        };
        Ok(OnDemand {
            domain: domain.to_string(),
            ca,
            ca_key: key,
            issued: Default::default(),
        })
    }

    fn issue(&self, name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).ok()?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = rcgen::KeyPair::generate().ok()?;
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).ok()?;
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).ok()?;
        Some(Arc::new(rustls::sign::CertifiedKey::new(
            vec![cert.der().clone()],
            signer,
        )))
    }
}

impl rustls::server::ResolvesServerCert for OnDemand {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = hello
            .server_name()
            .unwrap_or(&self.domain)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        crate::state::check_hostname(&name).ok()?;
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = issued.get(&name) {
            return Some(c.clone());
        }
        let c = self.issue(&name)?;
        if issued.len() >= MAX_ISSUED {
            issued.clear();
        }
        issued.insert(name, c.clone());
        Some(c)
    }
}

/// Writes a file, readable by its owner only when `private`.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_files_load_and_bad_ones_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert =
            rcgen::generate_simple_self_signed(vec!["shop.example.com".to_string()]).expect("cert");
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.cert.pem()).expect("write");
        std::fs::write(&k, cert.key_pair.serialize_pem()).expect("write");
        let cfg = from_files(&c, &k).expect("loads");
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        std::fs::write(&k, "not a key").expect("write");
        let e = from_files(&c, &k).expect_err("bad key").to_string();
        assert!(e.contains("k.pem") && e.contains("private key"), "{e}");
        let e = from_files(&dir.path().join("missing.pem"), &k)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn the_ingress_ca_is_kept_and_issues_per_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = OnDemand::load_or_create("localhost", dir.path()).expect("create");
        let ca_pem = std::fs::read_to_string(dir.path().join(CA_FILE)).expect("CA file");
        let key_mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .expect("key file");
        assert_eq!(key_mode, 0o600);
        let second = OnDemand::load_or_create("localhost", dir.path()).expect("load");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CA_FILE)).expect("CA file"),
            ca_pem,
            "kept across restarts"
        );
        // Both sign with the same key: a leaf from the second carries the
        // same issuer as the first's certificate names.
        let a = first.issue("web.localhost").expect("issue");
        let b = second.issue("web.localhost").expect("issue");
        assert_ne!(a.cert[0], b.cert[0], "fresh leaves");
        let issuer = |der: &[u8]| {
            let (_, c) = x509_parser::parse_x509_certificate(der).expect("parse");
            c.issuer().to_string()
        };
        assert_eq!(issuer(&a.cert[0]), issuer(&b.cert[0]));
    }
}
