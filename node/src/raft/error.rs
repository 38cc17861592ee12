//! Errors of the [`RaftNode`](super::RaftNode) API. Each tells the caller what
//! to do: forward to the leader, retry later, or give up (the node is dead).

use std::path::PathBuf;

use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader};

use super::log_store::DbError;
use super::{Node, NodeId};

/// Where the current leader is, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub id: NodeId,
    /// The leader's peer address from the membership config.
    pub addr: String,
}

impl Leader {
    fn from_forward(f: &ForwardToLeader<NodeId, Node>) -> Option<Self> {
        match (f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) => Some(Leader {
                id,
                addr: node.addr.clone(),
            }),
            _ => None,
        }
    }
}

/// Opening, initializing or shutting down a [`RaftNode`](super::RaftNode).
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("creating data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening {path}: {source}")]
    Store { path: PathBuf, source: DbError },
    #[error("invalid raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft node is dead: {0}")]
    Fatal(#[from] Fatal<NodeId>),
    #[error("initializing cluster: {0}")]
    Initialize(openraft::error::InitializeError<NodeId, Node>),
    #[error("raft core task failed: {0}")]
    Join(String),
}

/// A write could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader. Forward the write to `leader`; with `None`,
    /// no leader is known yet (an election is running): retry shortly.
    #[error("not the leader; {}", leader_hint(.leader))]
    ForwardToLeader { leader: Option<Leader> },
    /// A membership change was refused (only membership writes see this).
    #[error("membership change refused: {0}")]
    ChangeMembership(openraft::error::ChangeMembershipError<NodeId>),
    /// The Raft node stopped (shutdown, storage failure, panic). Do not retry here.
    #[error("raft node is dead: {0}")]
    Fatal(#[from] Fatal<NodeId>),
}

impl WriteError {
    /// The leader to forward to, if this is a forward and the leader is known.
    pub fn leader(&self) -> Option<&Leader> {
        match self {
            WriteError::ForwardToLeader { leader } => leader.as_ref(),
            _ => None,
        }
    }

    /// `true` unless the node is dead.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, WriteError::Fatal(_))
    }
}

impl From<openraft::error::RaftError<NodeId, ClientWriteError<NodeId, Node>>> for WriteError {
    fn from(e: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Self {
        match e {
            openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                WriteError::ForwardToLeader {
                    leader: Leader::from_forward(&f),
                }
            }
            openraft::error::RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                WriteError::ChangeMembership(e)
            }
            openraft::error::RaftError::Fatal(f) => WriteError::Fatal(f),
        }
    }
}

/// A linearizable read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// This node is not the leader. Forward the read to `leader`; with `None`,
    /// no leader is known yet: retry shortly.
    #[error("not the leader; {}", leader_hint(.leader))]
    ForwardToLeader { leader: Option<Leader> },
    /// The leader could not confirm its leadership with a quorum: retry.
    #[error("leadership not confirmed by a quorum: {0}")]
    QuorumNotEnough(openraft::error::QuorumNotEnough<NodeId>),
    /// The Raft node stopped. Do not retry here.
    #[error("raft node is dead: {0}")]
    Fatal(#[from] Fatal<NodeId>),
}

impl ReadError {
    /// The leader to forward to, if this is a forward and the leader is known.
    pub fn leader(&self) -> Option<&Leader> {
        match self {
            ReadError::ForwardToLeader { leader } => leader.as_ref(),
            _ => None,
        }
    }

    /// `true` unless the node is dead.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ReadError::Fatal(_))
    }
}

impl From<openraft::error::RaftError<NodeId, CheckIsLeaderError<NodeId, Node>>> for ReadError {
    fn from(e: openraft::error::RaftError<NodeId, CheckIsLeaderError<NodeId, Node>>) -> Self {
        match e {
            openraft::error::RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
                ReadError::ForwardToLeader {
                    leader: Leader::from_forward(&f),
                }
            }
            openraft::error::RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
                ReadError::QuorumNotEnough(q)
            }
            openraft::error::RaftError::Fatal(f) => ReadError::Fatal(f),
        }
    }
}

fn leader_hint(leader: &Option<Leader>) -> String {
    match leader {
        Some(l) => format!("forward to node {} at {}", l.id, l.addr),
        None => "no leader known yet, retry".to_string(),
    }
}
