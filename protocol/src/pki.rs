//! The cluster's PKI: a CA made at bootstrap, node and runner certificates
//! issued from it (directly or from a CSR), CA pinning by fingerprint, and the
//! rustls/quinn configurations every role uses.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Every node certificate carries this DNS name; clients always verify it,
/// whatever address they dialled.
pub const NODE_SERVER_NAME: &str = "cairn-node";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls configuration error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("quic crypto configuration error: {0}")]
    Quic(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster certificate authority.
#[derive(Debug, Clone)]
pub struct Ca {
    pub cert_pem: String,
    key_pem: String,
}

impl Ca {
    /// Create a new CA for a cluster.
    pub fn generate(cluster: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("cairn cluster CA ({cluster})"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        // Validate both parse now, so a corrupt file is reported at start.
        KeyPair::from_pem(key_pem)?;
        CertificateParams::from_ca_cert_pem(cert_pem)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// `sha256:<hex>` of the CA certificate's DER.
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        Ok(fingerprint(&pem_to_der(&self.cert_pem)?))
    }

    fn issuer(&self) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(&self.cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok((cert, key))
    }

    /// Issue a certificate for a node. `names` are extra DNS names / IPs;
    /// [`NODE_SERVER_NAME`] is always included.
    pub fn issue_node(&self, node_name: &str, names: &[String]) -> Result<CertifiedKey, PkiError> {
        let mut sans = vec![NODE_SERVER_NAME.to_string()];
        sans.extend(names.iter().cloned());
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate()?;
        let (ca, ca_key) = self.issuer()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign a CSR (from a runner or a joining node). The subject's common
    /// name is replaced by `subject`, so a CSR cannot choose its identity.
    pub fn sign_csr(&self, csr_pem: &str, subject: &str) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        csr.params.distinguished_name = rcgen::DistinguishedName::new();
        csr.params
            .distinguished_name
            .push(DnType::CommonName, subject);
        csr.params.is_ca = IsCa::NoCa;
        csr.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        csr.params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        csr.params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let (ca, ca_key) = self.issuer()?;
        Ok(csr.signed_by(&ca, &ca_key)?.pem())
    }
}

/// Make a key and a CSR for it. Returns (csr_pem, key_pem).
pub fn make_csr(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// A CSR for an existing key (PEM): a runner keeps its key across
/// enrollments, since the key is its identity.
pub fn csr_for_key(name: &str, key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem)?;
    let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(params.serialize_request(&key)?.pem()?)
}

/// A new private key (PEM).
pub fn generate_key() -> Result<String, PkiError> {
    Ok(KeyPair::generate()?.serialize_pem())
}

/// `sha256:<hex>` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The DER of the first certificate in a PEM string.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    Ok(certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Pem("no certificate found".into()))?
        .to_vec())
}

fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(format!("{e:?}")))
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(format!("{e:?}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings shared by every connection: keep-alive well below the
/// idle timeout (so NAT bindings stay open), and explicit flow-control
/// windows (quinn's defaults allow far more memory per connection).
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_bidi_streams: u32,
}

impl TransportLimits {
    /// Nodes, clients and runners.
    pub const DEFAULT: TransportLimits = TransportLimits {
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        stream_window: 2 * 1024 * 1024,
        connection_window: 8 * 1024 * 1024,
        max_bidi_streams: 1024,
    };
    /// The CLI: like [`TransportLimits::DEFAULT`] with the entrypoint's
    /// shorter idle timeout, so a node notices a CLI that died (killed in
    /// the middle of `cairn exec`, say) within about 10 s, and a CLI its
    /// node.
    pub const CLIENT: TransportLimits = TransportLimits {
        keep_alive: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        stream_window: 2 * 1024 * 1024,
        connection_window: 8 * 1024 * 1024,
        max_bidi_streams: 1024,
    };
    /// Entrypoints: thousands per node, so small windows; a shorter idle
    /// timeout (the smaller side's wins), so an entrypoint whose node died
    /// moves to another one within about 10 s (its exec sessions, logs and
    /// URL tunnels come back with it).
    pub const ENTRYPOINT: TransportLimits = TransportLimits {
        keep_alive: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        stream_window: 256 * 1024,
        connection_window: 1024 * 1024,
        max_bidi_streams: 256,
    };

    pub fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        // Invariant: idle_timeout is a few seconds, far below the VarInt limit.
        t.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(self.idle_timeout)
                .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
        ));
        t.stream_receive_window(quinn::VarInt::from_u32(self.stream_window));
        t.receive_window(quinn::VarInt::from_u32(self.connection_window));
        t.send_window(u64::from(self.connection_window));
        t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(self.max_bidi_streams));
        t.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
        t
    }
}

/// Server configuration of a node: presents `[node cert, CA cert]`, accepts
/// clients with or without a certificate (roles that need one check
/// [`peer_is_cluster_member`] after the handshake), all role ALPNs.
pub fn server_config(
    node: &CertifiedKey,
    ca_pem: &str,
    limits: TransportLimits,
) -> Result<quinn::ServerConfig, PkiError> {
    let mut chain = certs_from_pem(&node.cert_pem)?;
    chain.extend(certs_from_pem(ca_pem)?);
    let key = key_from_pem(&node.key_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        roots.add(c)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Quic(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = crate::handshake::Role::all_alpns();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| PkiError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport_config()));
    Ok(cfg)
}

/// Client configuration: the server must present a chain ending in the CA
/// whose fingerprint is `pinned_ca`. `identity` is sent for mutual TLS.
pub fn client_config(
    pinned_ca: &str,
    identity: Option<&CertifiedKey>,
    alpn: &[u8],
    limits: TransportLimits,
) -> Result<quinn::ClientConfig, PkiError> {
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: pinned_ca.to_string(),
        provider: provider(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match identity {
        Some(id) => builder
            .with_client_auth_cert(certs_from_pem(&id.cert_pem)?, key_from_pem(&id.key_pem)?)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| PkiError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(limits.transport_config()));
    Ok(cfg)
}

/// The certificate chain a connected peer presented, if any (the server
/// verifier has already checked it was issued by our CA).
pub fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// True when the peer presented a certificate issued by the cluster CA
/// (verified during the TLS handshake).
pub fn peer_is_cluster_member(conn: &quinn::Connection) -> bool {
    peer_certificate(conn).is_some()
}

/// Common names of node certificates start with this; [`node_common_name`]
/// makes one. Runner and other certificates from the same CA use other
/// names, so a runner certificate is never taken for a cluster member.
pub const NODE_CN_PREFIX: &str = "node-";

/// The common name a node with this id gets in its certificate.
pub fn node_common_name(node_id: u64) -> String {
    format!("{NODE_CN_PREFIX}{node_id:x}")
}

/// The subject common name of a DER certificate, if it has one.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    let params = CertificateParams::from_ca_cert_der(&CertificateDer::from(der)).ok()?;
    match params.distinguished_name.get(&DnType::CommonName)? {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        rcgen::DnValue::Ia5String(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The node id named by a node certificate's common name (`node-<hex>`).
pub fn node_id_of_certificate(der: &[u8]) -> Option<u64> {
    let cn = certificate_common_name(der)?;
    let hex = cn.strip_prefix(NODE_CN_PREFIX)?;
    u64::from_str_radix(hex, 16).ok().filter(|id| *id != 0)
}

/// The node id of a connected peer: it presented a certificate issued by the
/// cluster CA (verified during the TLS handshake) whose common name is a
/// node's. `None` for connections without a certificate or with a
/// non-node certificate (e.g. a runner's).
pub fn peer_node_id(conn: &quinn::Connection) -> Option<u64> {
    node_id_of_certificate(&peer_certificate(conn)?)
}

/// Common names of runner certificates start with this (issue 19);
/// [`runner_common_name`] makes one.
pub const RUNNER_CN_PREFIX: &str = "runner:";

/// The common name an enrolled runner's certificate carries.
pub fn runner_common_name(id: &str) -> String {
    format!("{RUNNER_CN_PREFIX}{id}")
}

/// The runner id a certificate names, if it is a runner's.
pub fn runner_id_of_certificate(der: &[u8]) -> Option<String> {
    let cn = certificate_common_name(der)?;
    cn.strip_prefix(RUNNER_CN_PREFIX)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// Why `id` is not a runner id: 1 to 64 ASCII letters, digits, '-', '_'
/// and '.', starting with a letter or digit.
pub fn check_runner_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a runner id: use 1 to 64 letters, digits, '-', '_' and '.', starting with a letter or digit"
        ))
    }
}

/// `sha256:<hex>` of a public key's bits: what identifies an enrolled
/// runner ([`csr_key_fingerprint`] and [`certificate_key_fingerprint`]
/// agree for the same key).
pub fn key_fingerprint(raw_public_key: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(raw_public_key)))
}

/// The fingerprint of the key a CSR (PEM) asks a certificate for.
pub fn csr_key_fingerprint(csr_pem: &str) -> Result<String, PkiError> {
    use rcgen::PublicKeyData as _;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
    Ok(key_fingerprint(csr.public_key.der_bytes()))
}

/// The fingerprint of the key a DER certificate certifies.
pub fn certificate_key_fingerprint(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(key_fingerprint(
        &cert.tbs_certificate.subject_pki.subject_public_key.data,
    ))
}

/// Verifies a server chain against a CA pinned by fingerprint: the CA must
/// be among the certificates the server sent, and the leaf must chain to it
/// and name [`NODE_SERVER_NAME`].
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's certificate authority does not match the pinned fingerprint {}",
                    self.fingerprint
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let name = ServerName::try_from(NODE_SERVER_NAME)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_and_signs_csrs() {
        let ca = Ca::generate("test").expect("ca");
        let fp = ca.fingerprint().expect("fp");
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
        let node = ca
            .issue_node("node-1", &["127.0.0.1".into()])
            .expect("node cert");
        assert!(node.cert_pem.contains("BEGIN CERTIFICATE"));
        let (csr, _key) = make_csr("runner-x").expect("csr");
        let signed = ca.sign_csr(&csr, "runner:abc").expect("signed");
        assert!(signed.contains("BEGIN CERTIFICATE"));
        let node_cert = ca.sign_csr(&csr, &node_common_name(0xabc)).expect("signed");
        let der = pem_to_der(&node_cert).expect("der");
        assert_eq!(node_id_of_certificate(&der), Some(0xabc));
        let der = pem_to_der(&signed).expect("der");
        assert_eq!(certificate_common_name(&der).as_deref(), Some("runner:abc"));
        assert_eq!(node_id_of_certificate(&der), None, "not a node certificate");
        // Reloading keeps the same identity.
        let again = Ca::load(&ca.cert_pem, ca.key_pem()).expect("load");
        assert_eq!(again.fingerprint().expect("fp"), fp);
    }

    #[test]
    fn a_runner_certificate_names_the_runner_and_carries_the_csr_key() {
        let ca = Ca::generate("test").expect("ca");
        let (csr, _key) = make_csr("anything").expect("csr");
        let (other_csr, _) = make_csr("anything").expect("csr");
        let from_csr = csr_key_fingerprint(&csr).expect("csr key");
        assert_ne!(from_csr, csr_key_fingerprint(&other_csr).expect("csr key"));
        let cert = ca
            .sign_csr(&csr, &runner_common_name("edge-1"))
            .expect("signed");
        let der = pem_to_der(&cert).expect("der");
        assert_eq!(runner_id_of_certificate(&der).as_deref(), Some("edge-1"));
        assert_eq!(certificate_key_fingerprint(&der), Some(from_csr));
        assert_eq!(node_id_of_certificate(&der), None);
        let node = ca.sign_csr(&csr, &node_common_name(7)).expect("signed");
        assert_eq!(
            runner_id_of_certificate(&pem_to_der(&node).expect("der")),
            None
        );
        assert!(check_runner_id("edge-1.shop_2").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_runner_id(bad).is_err(), "{bad:?}");
        }
    }
}
