//! The node's shared context: every handle a request or task of this node may need (the
//! cluster, its runners, log windows, entrypoint connections, upgrade tracker, metrics,
//! ingress drain). The service layer ([`crate::api`]) and its transports take it; the
//! modules below them take only the narrow handles they need ([`crate::cluster::Cluster`],
//! [`crate::jobs::JobsCtx`], [`crate::logs::LogsCtx`], [`crate::ingress::IngressCtx`]),
//! which it hands out. Built once by the composition root ([`crate::server::start`]).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::identity::Identity;
use crate::jobs::Jobs;
use crate::peer::QuicTransport;
use crate::raft::RaftNode;
use crate::state::{Command, Response, State};

/// Shared by every task of a node.
pub struct Ctx {
    pub raft: RaftNode,
    /// The narrow handle to the replicated state (write, linearizable read, the leader).
    pub cluster: Arc<Cluster>,
    pub identity: Identity,
    pub jobs: Jobs,
    pub addr: SocketAddr,
    /// The peer network (Raft and requests to the leader).
    pub peers: QuicTransport,
    /// Log windows of the instances connected to this node.
    pub logs: crate::logs::LogStore,
    /// Connections of the entrypoints connected to this node.
    pub attached: crate::attached::Attached,
    /// This node's URL-service ingress, if it serves one.
    pub ingress: Option<cairn_protocol::api::IngressInfo>,
    /// The leader's view of an upgrade in progress (see [`crate::upgrade`]).
    pub upgrade: Arc<crate::upgrade::Tracker>,
    /// This node's metrics (`/metrics` on the HTTP API).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The ingress's graceful stop.
    pub ingress_drain: crate::ingress::Drain,
    /// Uploaded job sources this node holds.
    pub sources: crate::sources::Sources,
}

impl Ctx {
    /// Commit a command (through the leader, wherever this node is); an
    /// `Error` answer from the state machine becomes `Err` (see [`Cluster::write`]).
    pub async fn write(&self, command: Command) -> Result<Response, String> {
        self.cluster.write(command).await
    }

    /// What the job scheduler and offer relays need of this node.
    pub fn jobs_ctx(&self) -> crate::jobs::JobsCtx {
        crate::jobs::JobsCtx {
            cluster: self.cluster.clone(),
            jobs: self.jobs.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// What the logs module needs of this node.
    pub fn logs_ctx(&self) -> crate::logs::LogsCtx {
        crate::logs::LogsCtx {
            cluster: self.cluster.clone(),
            logs: self.logs.clone(),
            me: self.identity.node_id,
        }
    }

    /// A linearizable read, on any node (see [`Cluster::read`]).
    pub async fn read<F, T>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(&State) -> T,
    {
        self.cluster.read(f).await
    }
}
