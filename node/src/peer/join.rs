//! The joining node's side of `CAIRN_JOIN_TOKEN=T cairn-node --join ADDR
//! --join-ca FINGERPRINT`:
//!
//! 1. [`obtain_identity`]: make a key and a CSR, connect to ADDR as a client
//!    (the CA pinned by fingerprint, so the join token only ever goes to this
//!    cluster), send `JoinCluster`; the leader signs the CSR. The certificate,
//!    the CA certificate and the id are stored like any node's identity (no
//!    CA key: it lives in the replicated state).
//! 2. The node binds, opens Raft *uninitialized* and serves peers.
//! 3. [`add_self`]: over the peer ALPN (now with its certificate) it asks to
//!    be added; the leader adds it as a learner, waits until it caught up,
//!    and makes it a voter.
//!
//! A restarted joined node knows its members from its Raft log and needs
//! none of this; one that stopped between 1 and 3 redoes 3 (idempotent).

use std::path::Path;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::{self, CertifiedKey, TransportLimits};
use cairn_protocol::rpc::{self, Dial};

use super::msg::{LeaderRequest, LeaderResponse};
use super::transport::QuicTransport;
use crate::identity::{self, Identity};
use crate::raft::NodeId;

/// How long joining keeps retrying before the node gives up starting.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(120);

/// Where and how to join.
#[derive(Debug, Clone)]
pub struct JoinTarget {
    /// Any member's QUIC address.
    pub addr: String,
    /// A join token (`cairn server join-token`).
    pub token: String,
    /// The cluster CA's fingerprint (`sha256:…`), pinned for the join.
    pub ca_fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("joining through {addr}: {source}")]
    Rpc { addr: String, source: rpc::RpcError },
    #[error("joining: {0}")]
    Refused(String),
    #[error("the cluster answered with a CA whose fingerprint {got} is not the pinned {want}")]
    CaMismatch { got: String, want: String },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("node {node:x} could not be added to the cluster within {deadline:?}: {last}")]
    NotAdded {
        node: NodeId,
        deadline: Duration,
        last: String,
    },
}

/// Get a certificate from the cluster and store this node's identity in `dir`.
pub async fn obtain_identity(
    dir: &Path,
    target: &JoinTarget,
    peer_addr: &str,
) -> Result<Identity, JoinError> {
    let node_id = identity::new_node_id();
    let (csr, key_pem) = pki::make_csr(&pki::node_common_name(node_id))?;
    let dial = Dial {
        addr: target.addr.clone(),
        ca_fingerprint: target.ca_fingerprint.clone(),
        identity: None,
        role: Role::Client,
        token: target.token.clone(),
        agent: format!("cairn-node {} (joining)", cairn_protocol::VERSION),
        limits: TransportLimits::DEFAULT,
    };
    let rpc_err = |source| JoinError::Rpc {
        addr: target.addr.clone(),
        source,
    };
    let session = rpc::connect(&dial).await.map_err(rpc_err)?;
    let resp = rpc::call(
        &session.conn,
        &ClientRequest::JoinCluster {
            csr,
            node_id,
            peer_addr: peer_addr.to_string(),
        },
    )
    .await;
    session.conn.close(0u32.into(), b"joined");
    let grant = match resp.map_err(rpc_err)? {
        ClientResponse::Joined(g) => g,
        other => return Err(JoinError::Refused(format!("unexpected answer {other:?}"))),
    };
    let got = pki::fingerprint(&pki::pem_to_der(&grant.ca_pem)?);
    if got != target.ca_fingerprint {
        return Err(JoinError::CaMismatch {
            got,
            want: target.ca_fingerprint.clone(),
        });
    }
    let cert = CertifiedKey {
        cert_pem: grant.cert_pem,
        key_pem,
    };
    let id = identity::store_joined(dir, node_id, &grant.ca_pem, cert, &target.addr)?;
    tracing::info!(node_id = format!("{node_id:x}"), via = %target.addr, members = ?grant.members, "obtained a node certificate");
    Ok(id)
}

/// Ask the cluster (through `via`, any member) to make this node a voter.
/// Retries until [`JOIN_DEADLINE`].
pub async fn add_self(
    peers: &QuicTransport,
    via: &str,
    node_id: NodeId,
    peer_addr: &str,
) -> Result<(), JoinError> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let req = LeaderRequest::AddMember {
        node_id,
        addr: peer_addr.to_string(),
    };
    let mut via = via.to_string();
    loop {
        let mut redirected = false;
        let last = match peers
            .leader_call(&via, None, req.clone(), req.timeout())
            .await
        {
            Ok(LeaderResponse::Done) => {
                tracing::info!(node_id = format!("{node_id:x}"), "this node is a voter");
                return Ok(());
            }
            Ok(LeaderResponse::Error(e)) => return Err(JoinError::Refused(e)),
            Ok(LeaderResponse::NotLeader {
                leader: Some((_, addr)),
            }) if addr != via => {
                redirected = true;
                let last = format!("redirected from {via} to the leader at {addr}");
                via = addr;
                last
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::NotAdded {
                node: node_id,
                deadline: JOIN_DEADLINE,
                last,
            });
        }
        if !redirected {
            tracing::info!(%via, %last, "not added yet; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
