//! A node's identity on disk: the cluster CA (on the bootstrapping node), the
//! node's certificate and its id. Created on first start, loaded afterwards.
//!
//! Invariant: files are written to a temporary name and renamed, so a crash
//! never leaves a half-written identity; private keys are mode 0600.

use std::path::{Path, PathBuf};

use cairn_protocol::pki::{Ca, CertifiedKey, PkiError};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeFile {
    node_id: u64,
    cluster: String,
}

/// Everything a node needs to speak TLS as itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: u64,
    pub ca: Ca,
    pub cert: CertifiedKey,
    pub ca_fingerprint: String,
    /// True when this start created the identity (a brand new cluster).
    pub created: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `contents` to `path` atomically (temp file + rename), `secret` → 0600.
pub fn write_atomic(path: &Path, contents: &[u8], secret: bool) -> Result<(), IdentityError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Load the identity in `dir`, or create a new cluster's identity there.
pub fn load_or_create(dir: &Path, extra_names: &[String]) -> Result<Identity, IdentityError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let node_file = dir.join("node.json");
    if node_file.exists() {
        let nf: NodeFile =
            serde_json::from_str(&read(&node_file)?).map_err(|e| IdentityError::Corrupt {
                path: node_file.clone(),
                message: e.to_string(),
            })?;
        let ca = Ca::load(&read(&dir.join("ca.pem"))?, &read(&dir.join("ca-key.pem"))?)?;
        let cert = CertifiedKey {
            cert_pem: read(&dir.join("node.pem"))?,
            key_pem: read(&dir.join("node-key.pem"))?,
        };
        let ca_fingerprint = ca.fingerprint()?;
        return Ok(Identity {
            node_id: nf.node_id,
            ca,
            cert,
            ca_fingerprint,
            created: false,
        });
    }
    let node_id = loop {
        let id: u64 = rand_id();
        if id != 0 {
            break id;
        }
    };
    let ca = Ca::generate("cairn")?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(extra_names.iter().cloned());
    let cert = ca.issue_node(&format!("node-{node_id:x}"), &names)?;
    write_atomic(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    write_atomic(&dir.join("ca-key.pem"), ca.key_pem().as_bytes(), true)?;
    write_atomic(&dir.join("node.pem"), cert.cert_pem.as_bytes(), false)?;
    write_atomic(&dir.join("node-key.pem"), cert.key_pem.as_bytes(), true)?;
    // node.json last: its presence means the identity is complete.
    let nf = NodeFile {
        node_id,
        cluster: "cairn".into(),
    };
    let json = serde_json::to_vec_pretty(&nf).map_err(|e| IdentityError::Corrupt {
        path: node_file.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&node_file, &json, false)?;
    let ca_fingerprint = ca.fingerprint()?;
    Ok(Identity {
        node_id,
        ca,
        cert,
        ca_fingerprint,
        created: true,
    })
}

fn rand_id() -> u64 {
    let t = cairn_protocol::token::generate("id");
    let h = cairn_protocol::token::hash(&t);
    u64::from_str_radix(&h[..15], 16).unwrap_or(1)
}
