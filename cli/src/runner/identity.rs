//! A runner's own identity (issue 19): `cairn runner agent --address …
//! --ca-fingerprint …` needs no CLI context. The first time, it makes a key
//! and an id, and enrolls: it sends a CSR on the runner ALPN with the runner
//! token (`CAIRN_RUNNER_TOKEN` or `--token-file`), or with none, and then
//! waits as *pending* until a user adopts it. The cluster CA signs its
//! certificate; from then on it connects with mutual TLS as `runner:ID`.
//!
//! Everything is kept in `identity.json` in the agent's data dir (0600): the
//! id, the key, the certificate once there is one, the cluster's CA
//! fingerprint and the addresses it last knew. A restart keeps the same id
//! and key, so the cluster sees the same runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::{self, CertifiedKey, TransportLimits};
use cairn_protocol::rpc::{self, Dial, RpcError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::agent::say;
use crate::context::Context;

/// The file in the agent's data dir.
pub const IDENTITY_FILE: &str = "identity.json";
/// The format this build writes.
pub const IDENTITY_FORMAT: u32 = 1;
/// How often a pending runner asks again whether it was adopted.
pub const PENDING_POLL: Duration = Duration::from_secs(2);
/// The environment variable the runner token is read from.
pub const TOKEN_ENV: &str = "CAIRN_RUNNER_TOKEN";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(default)]
    pub format: u32,
    pub id: String,
    pub ca_fingerprint: String,
    /// The cluster's QUIC addresses: the one given first, then what the
    /// members said.
    pub addresses: Vec<String>,
    pub key_pem: String,
    /// Set once enrolled and adopted.
    #[serde(default)]
    pub cert_pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("the cluster refused this runner: {0}")]
    Refused(String),
}

impl Identity {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(IDENTITY_FILE)
    }

    /// The identity kept in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let path = Identity::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(IdentityError::File {
                    path,
                    message: e.to_string(),
                })
            }
        };
        let id: Identity = serde_json::from_slice(&bytes).map_err(|e| IdentityError::File {
            path: path.clone(),
            message: format!("not a runner identity file: {e}"),
        })?;
        if id.format > IDENTITY_FORMAT {
            return Err(IdentityError::File {
                path,
                message: format!(
                    "written by a newer cairn (format {}; this one reads up to {IDENTITY_FORMAT})",
                    id.format
                ),
            });
        }
        Ok(Some(id))
    }

    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let path = Identity::path(dir);
        let err = |message: String| IdentityError::File {
            path: path.clone(),
            message,
        };
        cairn_protocol::private::create_dir(dir).map_err(|e| err(e.to_string()))?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        cairn_protocol::private::write(&path, &text).map_err(|e| err(e.to_string()))
    }

    /// A new identity: a fresh key, the given or a generated id.
    pub fn new(
        id: String,
        address: String,
        ca_fingerprint: String,
    ) -> Result<Identity, IdentityError> {
        pki::check_runner_id(&id).map_err(IdentityError::Usage)?;
        let key_pem = pki::generate_key().map_err(|e| IdentityError::Usage(e.to_string()))?;
        Ok(Identity {
            format: IDENTITY_FORMAT,
            id,
            ca_fingerprint,
            addresses: vec![address],
            key_pem,
            cert_pem: None,
        })
    }

    /// The context an enrolled runner dials with (its certificate, no token).
    pub fn context(&self) -> Option<Context> {
        let cert_pem = self.cert_pem.clone()?;
        let mut addrs = self.addresses.iter().cloned();
        Some(Context {
            name: format!("runner-{}", self.id),
            address: addrs.next()?,
            ca_fingerprint: self.ca_fingerprint.clone(),
            token: String::new(),
            local: false,
            members: addrs.collect(),
            runner: Some(CertifiedKey {
                cert_pem,
                key_pem: self.key_pem.clone(),
            }),
        })
    }

    /// Remember the members a node named (kept for the next start).
    pub fn learn_members(&mut self, members: &[String]) -> bool {
        let mut changed = false;
        for m in members {
            if !self.addresses.contains(m) {
                self.addresses.push(m.clone());
                changed = true;
            }
        }
        changed
    }
}

/// The runner token: `--token-file`, else `$CAIRN_RUNNER_TOKEN`, else none
/// (the runner then waits to be adopted).
pub fn read_token(token_file: Option<&Path>) -> Result<Option<String>, IdentityError> {
    if let Some(p) = token_file {
        let text = std::fs::read_to_string(p).map_err(|e| IdentityError::File {
            path: p.to_path_buf(),
            message: e.to_string(),
        })?;
        let t = text.trim().to_string();
        if t.is_empty() {
            return Err(IdentityError::File {
                path: p.to_path_buf(),
                message: "the token file is empty".into(),
            });
        }
        return Ok(Some(t));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// Whether a refusal means this identity is no good any more (forgotten,
/// rejected, or enrolled anew with another key): the agent stops instead of
/// retrying forever.
pub fn refusal_is_final(reason: &str) -> bool {
    [
        "is not enrolled",
        "was rejected",
        "enrolled with another key",
    ]
    .iter()
    .any(|m| reason.contains(m))
}

/// Enroll until the cluster certifies this runner (saved in `dir`), it is
/// refused (rejected, a bad token…), or `stop`. `Ok(false)`: stopped.
pub async fn enroll(
    ident: &mut Identity,
    dir: &Path,
    token: Option<String>,
    labels: &BTreeMap<String, String>,
    stop: &CancellationToken,
) -> Result<bool, IdentityError> {
    let csr = pki::csr_for_key(&ident.id, &ident.key_pem)
        .map_err(|e| IdentityError::Usage(format!("cannot make the certificate request: {e}")))?;
    let req = ClientRequest::EnrollRunner {
        id: ident.id.clone(),
        csr,
        labels: labels.clone(),
    };
    let mut said_pending = false;
    let mut backoff = super::agent::BACKOFF_MIN;
    loop {
        let dials: Vec<Dial> = ident
            .addresses
            .iter()
            .map(|a| Dial {
                addr: a.clone(),
                ca_fingerprint: ident.ca_fingerprint.clone(),
                identity: None,
                role: Role::Runner,
                token: token.clone().unwrap_or_default(),
                agent: format!("cairn {}", cairn_protocol::VERSION),
                limits: TransportLimits::CLIENT,
            })
            .collect();
        let attempt = async {
            let (session, _) =
                rpc::connect_first(&dials, rpc::DIAL_STAGGER, Duration::from_secs(10)).await?;
            let r = rpc::call(&session.conn, &req).await;
            session.conn.close(0u32.into(), b"bye");
            r
        };
        let r = tokio::select! {
            r = attempt => r,
            _ = stop.cancelled() => return Ok(false),
        };
        let wait = match r {
            Ok(ClientResponse::RunnerEnrolled { cert_pem }) => {
                ident.cert_pem = Some(cert_pem);
                ident.save(dir)?;
                say(&format!(
                    "runner {} enrolled: the cluster certified it (identity in {})",
                    ident.id,
                    Identity::path(dir).display()
                ));
                return Ok(true);
            }
            Ok(ClientResponse::RunnerPending { message }) => {
                if !said_pending {
                    say(&format!("pending: {message}"));
                    said_pending = true;
                }
                backoff = super::agent::BACKOFF_MIN;
                PENDING_POLL
            }
            Ok(ClientResponse::Error { message }) | Err(RpcError::Remote(message)) => {
                return Err(IdentityError::Refused(message))
            }
            Err(RpcError::Refused(message)) => return Err(IdentityError::Refused(message)),
            Ok(other) => {
                return Err(IdentityError::Refused(format!(
                    "unexpected answer {other:?}"
                )))
            }
            Err(e) => {
                say(&format!(
                    "enrolling: {e}; trying again in {:.1} s",
                    backoff.as_secs_f64()
                ));
                let w = backoff;
                backoff = (backoff * 2).min(super::agent::BACKOFF_MAX);
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_restart_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Identity::load(dir.path()).expect("load"), None);
        let mut id = Identity::new("edge-1".into(), "10.0.0.1:9701".into(), "sha256:ab".into())
            .expect("new");
        assert!(id.context().is_none(), "no certificate yet");
        id.save(dir.path()).expect("save");
        let back = Identity::load(dir.path()).expect("load").expect("some");
        assert_eq!(back, id);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Identity::path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        id.cert_pem = Some("CERT".into());
        assert!(id.learn_members(&["10.0.0.2:9701".into(), "10.0.0.1:9701".into()]));
        let ctx = id.context().expect("context");
        assert_eq!(ctx.address, "10.0.0.1:9701");
        assert_eq!(ctx.members, vec!["10.0.0.2:9701".to_string()]);
        assert!(ctx.token.is_empty());
        assert!(Identity::new("a b".into(), "x:1".into(), "f".into()).is_err());
        std::fs::write(Identity::path(dir.path()), "{").expect("write");
        let e = Identity::load(dir.path()).expect_err("corrupt");
        assert!(e.to_string().contains("identity.json"), "{e}");
    }
}
