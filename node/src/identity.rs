//! A node's identity on disk: the cluster CA (its key only on the
//! bootstrapping node), the node's certificate and its id. Created on first
//! start (or granted on join), loaded afterwards.
//!
//! Invariant: files are written to a temporary name and renamed, so a crash
//! never leaves a half-written identity; private keys are mode 0600.

use std::path::{Path, PathBuf};

use cairn_protocol::pki::{self, Ca, CertifiedKey, PkiError};
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

/// The format of `node.json` this build writes (none in the file: release
/// 0.1.0, the same fields). A newer format is refused, naming both.
pub const NODE_FILE_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeFile {
    #[serde(default)]
    format: u32,
    node_id: u64,
    cluster: String,
    /// Set on a node that joined an existing cluster: the address it joined through.
    #[serde(default)]
    joined_via: Option<String>,
}

/// Everything a node needs to speak TLS as itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: u64,
    /// The cluster CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The CA with its key: only on the node that bootstrapped the cluster
    /// (the key is also replicated in the state, see `state::ClusterCa`).
    pub ca: Option<Ca>,
    pub cert: CertifiedKey,
    pub ca_fingerprint: String,
    /// True when this start created the identity (a brand new cluster).
    pub created: bool,
    /// The address this node joined through; `None` if it bootstrapped the cluster.
    pub joined_via: Option<String>,
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

/// Load the identity in `dir`, if there is a complete one.
pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let node_file = dir.join("node.json");
    if !node_file.exists() {
        return Ok(None);
    }
    let nf: NodeFile =
        serde_json::from_str(&read(&node_file)?).map_err(|e| IdentityError::Corrupt {
            path: node_file.clone(),
            message: e.to_string(),
        })?;
    if nf.format > NODE_FILE_FORMAT {
        return Err(IdentityError::Corrupt {
            path: node_file,
            message: format!(
                "written in format {} by a newer cairn-node; this one ({}) reads formats up to {NODE_FILE_FORMAT}: run that release or newer on this data dir",
                nf.format,
                cairn_protocol::VERSION
            ),
        });
    }
    let ca_cert_pem = read(&dir.join("ca.pem"))?;
    let key_file = dir.join("ca-key.pem");
    let ca = if key_file.exists() {
        Some(Ca::load(&ca_cert_pem, &read(&key_file)?)?)
    } else {
        None
    };
    let cert = CertifiedKey {
        cert_pem: read(&dir.join("node.pem"))?,
        key_pem: read(&dir.join("node-key.pem"))?,
    };
    let ca_fingerprint = pki::fingerprint(&pki::pem_to_der(&ca_cert_pem)?);
    Ok(Some(Identity {
        node_id: nf.node_id,
        ca_cert_pem,
        ca,
        cert,
        ca_fingerprint,
        created: false,
        joined_via: nf.joined_via,
    }))
}

/// Load the identity in `dir`, or create a new cluster's identity there.
pub fn load_or_create(dir: &Path, extra_names: &[String]) -> Result<Identity, IdentityError> {
    load_or_create_with(dir, extra_names, || Ok(Ca::generate("cairn")?))
}

/// Create the identity of the first node of a cluster restored from a
/// snapshot: the saved cluster CA (so its fingerprint, and the tokens users
/// pinned it with, stay the same), a new node id and a node certificate
/// issued by that CA. Returns the existing identity if `dir` has one.
pub fn create_restored(
    dir: &Path,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    extra_names: &[String],
) -> Result<Identity, IdentityError> {
    load_or_create_with(dir, extra_names, || Ok(Ca::load(ca_cert_pem, ca_key_pem)?))
}

/// The identity in `dir`, or a new one under the CA `make_ca` gives.
fn load_or_create_with(
    dir: &Path,
    extra_names: &[String],
    make_ca: impl FnOnce() -> Result<Ca, IdentityError>,
) -> Result<Identity, IdentityError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if let Some(id) = load(dir)? {
        return Ok(id);
    }
    let ca = make_ca()?;
    let node_id = new_node_id();
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(extra_names.iter().cloned());
    let cert = ca.issue_node(&pki::node_common_name(node_id), &names)?;
    write_atomic(&dir.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    write_atomic(&dir.join("ca-key.pem"), ca.key_pem().as_bytes(), true)?;
    write_atomic(&dir.join("node.pem"), cert.cert_pem.as_bytes(), false)?;
    write_atomic(&dir.join("node-key.pem"), cert.key_pem.as_bytes(), true)?;
    // node.json last: its presence means the identity is complete.
    write_node_file(dir, node_id, None)?;
    let ca_fingerprint = ca.fingerprint()?;
    Ok(Identity {
        node_id,
        ca_cert_pem: ca.cert_pem.clone(),
        ca: Some(ca),
        cert,
        ca_fingerprint,
        created: true,
        joined_via: None,
    })
}

/// Store the identity a joining node was granted: the CA certificate (no
/// key), its own certificate and key, its id and the address it joined through.
pub fn store_joined(
    dir: &Path,
    node_id: u64,
    ca_cert_pem: &str,
    cert: CertifiedKey,
    joined_via: &str,
) -> Result<Identity, IdentityError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_fingerprint = pki::fingerprint(&pki::pem_to_der(ca_cert_pem)?);
    write_atomic(&dir.join("ca.pem"), ca_cert_pem.as_bytes(), false)?;
    write_atomic(&dir.join("node.pem"), cert.cert_pem.as_bytes(), false)?;
    write_atomic(&dir.join("node-key.pem"), cert.key_pem.as_bytes(), true)?;
    // node.json last: its presence means the identity is complete.
    write_node_file(dir, node_id, Some(joined_via.to_string()))?;
    Ok(Identity {
        node_id,
        ca_cert_pem: ca_cert_pem.to_string(),
        ca: None,
        cert,
        ca_fingerprint,
        created: true,
        joined_via: Some(joined_via.to_string()),
    })
}

fn write_node_file(
    dir: &Path,
    node_id: u64,
    joined_via: Option<String>,
) -> Result<(), IdentityError> {
    let node_file = dir.join("node.json");
    let nf = NodeFile {
        format: NODE_FILE_FORMAT,
        node_id,
        cluster: "cairn".into(),
        joined_via,
    };
    let json = serde_json::to_vec_pretty(&nf).map_err(|e| IdentityError::Corrupt {
        path: node_file.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&node_file, &json, false)
}

/// A fresh random node id (never 0).
pub fn new_node_id() -> u64 {
    loop {
        let id: u64 = rand_id();
        if id != 0 {
            return id;
        }
    }
}

fn rand_id() -> u64 {
    let t = cairn_protocol::token::generate("id");
    let h = cairn_protocol::token::hash(&t);
    u64::from_str_radix(&h[..15], 16).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_file_of_a_newer_format_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("node.json"),
            r#"{"format": 2, "node_id": 1, "cluster": "c", "later": true}"#,
        )
        .expect("write");
        let e = load(dir.path()).expect_err("newer").to_string();
        assert!(
            e.contains("format 2") && e.contains("formats up to 1") && e.contains("node.json"),
            "{e}"
        );
        // Release 0.1.0's file (no format) gets past the check (to the
        // missing certificate files here).
        std::fs::write(
            dir.path().join("node.json"),
            r#"{"node_id": 1, "cluster": "c"}"#,
        )
        .expect("write");
        let e = load(dir.path()).expect_err("no ca.pem").to_string();
        assert!(e.contains("ca.pem"), "{e}");
    }
}
