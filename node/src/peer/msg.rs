//! Messages on the peer ALPN (`cairn-peer`). One bidirectional stream per
//! RPC: the caller writes one [`PeerRequest`] frame (for a snapshot, followed
//! by the raw snapshot bytes until the stream ends) and the callee answers
//! one [`PeerResponse`] frame.
//!
//! They live in the node crate because they carry openraft's types.

use cairn_protocol::api::{JoinGrant, MemberInfo};
use cairn_protocol::instance::{LogEntry, NodeToEntrypoint};
use cairn_protocol::types::{JobId, OpId};
use openraft::error::Fatal;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use crate::raft::{LogId, Node, NodeId, TypeConfig};
use crate::state::{Request, Response};

/// Largest snapshot a node accepts from a peer.
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot: this header, then the snapshot bytes (at most
    /// [`MAX_SNAPSHOT_BYTES`]) until the sender finishes the stream.
    FullSnapshot {
        vote: Vote<NodeId>,
        meta: SnapshotMeta<NodeId, Node>,
    },
    /// Something only the leader can do. A node that is not the leader
    /// answers [`LeaderResponse::NotLeader`] and does nothing.
    Leader(LeaderRequest),
    /// The leader offers `job` to `runner`, which is connected to the callee.
    /// The callee answers [`PeerResponse::RelayOpen`] once it opened the
    /// offer stream on the runner's connection, then copies
    /// `NodeToRunner`/`RunnerToNode` frames between this stream and that
    /// one until either ends; or [`PeerResponse::NoRunner`] (and nothing
    /// else) when the runner is not connected to it. See
    /// [`crate::jobs::relay_offer`].
    RelayOffer {
        runner: String,
        job: JobId,
    },
    /// The callee's log lines for `filter`: `LogLines` frames (after
    /// `after`, when it names the callee's incarnation), `LogsHistoryEnd`,
    /// then (with `follow`) live lines until the caller goes away. See
    /// [`crate::logs::serve_peer`].
    Logs {
        filter: LogFilter,
        follow: bool,
        after: Option<LogCursor>,
    },
    /// Open a stream with `header` (an exec session, a URL tunnel) to
    /// instance `instance` of `deployment`, whose entrypoint is connected to
    /// the callee. Answered `RelayOpen` (then the stream carries what
    /// follows the header, raw, both ways) or `NoInstance`. See
    /// [`crate::attached::relay`].
    RelayStream {
        deployment: OpId,
        instance: String,
        header: NodeToEntrypoint,
    },
    /// Protocol 5 (sent only to a node recorded as holding the source, so
    /// one that knows it): send source `digest`: `SourceFound { size }`,
    /// then the bytes raw; or `Refused`. See [`crate::services::source`].
    FetchSource {
        digest: String,
    },
}

/// Requests served by the leader (forwarded by followers on behalf of their
/// clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// Commit this write and answer what `State::apply` returned.
    Forward {
        request: Box<Request>,
    },
    /// Confirm leadership with a quorum and answer the log id a
    /// linearizable read must wait for (openraft's read index).
    ReadIndex,
    /// Sign a joining node's CSR (the join token was checked by the node
    /// that received the client request).
    SignJoin {
        csr: String,
        node_id: NodeId,
        peer_addr: String,
    },
    /// Add a node that holds a cluster certificate: learner, catch up, voter.
    /// Answered when it is a voter.
    AddMember {
        node_id: NodeId,
        addr: String,
    },
    RemoveMember {
        node_id: NodeId,
    },
    /// A node leaving on its own (graceful shutdown): out of the membership,
    /// but not revoked; it adds itself back when it starts again.
    Leave {
        node_id: NodeId,
    },
    Members,
    /// The runners connected to `node` (the sender: checked against its
    /// certificate), replacing what it reported before. The leader offers
    /// them jobs through [`PeerRequest::RelayOffer`] until the report expires
    /// ([`crate::jobs::REMOTE_RUNNER_TTL`]).
    ReportRunners {
        node: NodeId,
        runners: Vec<RunnerReport>,
    },
    /// Protocol 5 (sent only to a leader that speaks it): the upgrade's
    /// state, after finishing it when `finish` (see [`crate::upgrade`]).
    Upgrade {
        finish: bool,
    },
    /// Protocol 5, sent once the cluster version is 5 (every member reads
    /// it): [`LeaderRequest::ReportRunners`] with each runner's capacity, its
    /// jobs, and the jobs it carries back after a move (see [`RunnerLoad`]).
    ReportRunnerLoads {
        node: NodeId,
        runners: Vec<RunnerLoad>,
    },
}

impl LeaderRequest {
    /// Whether sending it twice is harmless (a lost answer may be retried).
    pub fn is_idempotent(&self) -> bool {
        match self {
            // Applied at most once by the state machine, whatever the retries.
            LeaderRequest::Forward { request } => {
                matches!(request.command, crate::state::Command::Idempotent { .. })
            }
            _ => true,
        }
    }

    /// How long the leader may take to answer.
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            LeaderRequest::AddMember { .. } => super::ADD_MEMBER_TIMEOUT,
            _ => super::LEADER_RPC_TIMEOUT,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    Snapshot(SnapshotResponse<NodeId>),
    /// openraft on the callee stopped (shutdown, storage failure).
    Fatal(Fatal<NodeId>),
    Leader(LeaderResponse),
    /// The request was malformed or not allowed; the callee closes the connection.
    Refused(String),
    /// Answer to [`PeerRequest::RelayOffer`]: the runner's offer stream is
    /// open; job frames follow on this stream.
    RelayOpen,
    /// Answer to [`PeerRequest::RelayOffer`]: the runner is not connected to
    /// the callee (any more); the reason says so.
    NoRunner(String),
    /// Part of the answer to [`PeerRequest::Logs`]; `cursor` is where the
    /// callee's lines stand after these.
    LogLines {
        cursor: LogCursor,
        lines: Vec<LogEntry>,
    },
    /// [`PeerRequest::Logs`]: the history is complete.
    LogsHistoryEnd,
    /// Answer to [`PeerRequest::RelayStream`]: the instance is not connected
    /// to the callee (any more).
    NoInstance(String),
    /// Answer to [`PeerRequest::FetchSource`]: `size` bytes follow, raw.
    SourceFound {
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeaderResponse {
    Written(Response),
    ReadIndex(Option<LogId>),
    JoinGrant(JoinGrant),
    Members(Vec<MemberInfo>),
    Done,
    /// Nothing was done: ask `leader` (id, peer address), or retry shortly
    /// when no leader is known.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    /// Nothing was done; retry shortly (e.g. no quorum right now).
    Unavailable(String),
    /// Refused for good.
    Error(String),
    /// Answer to [`LeaderRequest::Upgrade`].
    Upgrade(cairn_protocol::api::UpgradeStatus),
}

// The data of the messages that jobs and logs exchange between nodes (here, below both).

/// One runner in a node's report to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerReport {
    pub id: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The job the node is relaying for it, if any.
    pub busy: Option<cairn_protocol::types::JobId>,
}

/// One runner in a node's protocol-5 report to the leader
/// ([`LeaderRequest::ReportRunnerLoads`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerLoad {
    pub id: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The protocol version its connection speaks.
    pub version: u32,
    /// How many jobs it takes at once.
    pub capacity: u32,
    /// The jobs the node is relaying for it.
    pub busy: Vec<cairn_protocol::types::JobId>,
    /// Jobs it said it still runs when it registered (their streams broke
    /// with its previous node): the leader resumes them through this node.
    pub carrying: Vec<cairn_protocol::types::JobId>,
}

impl From<RunnerReport> for RunnerLoad {
    /// A report from a node that does not send loads: one job at a time,
    /// nothing carried.
    fn from(r: RunnerReport) -> RunnerLoad {
        RunnerLoad {
            id: r.id,
            labels: r.labels,
            version: cairn_protocol::handshake::V0_1_PROTOCOL_VERSION,
            capacity: 1,
            busy: r.busy.into_iter().collect(),
            carrying: Vec::new(),
        }
    }
}

impl From<&RunnerLoad> for RunnerReport {
    /// For a leader that does not read loads yet: the first job only.
    fn from(r: &RunnerLoad) -> RunnerReport {
        RunnerReport {
            id: r.id.clone(),
            labels: r.labels.clone(),
            busy: r.busy.first().copied(),
        }
    }
}

/// Which lines a query wants from one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    pub deployment: cairn_protocol::types::OpId,
    /// Instance ids starting with this.
    pub instance: Option<String>,
    pub since_ms: Option<u64>,
    /// At most this many of the newest matching lines of the history.
    pub tail: Option<u32>,
}

impl LogFilter {
    pub fn matches(&self, e: &cairn_protocol::instance::LogEntry) -> bool {
        e.deployment == self.deployment
            && self
                .instance
                .as_ref()
                .is_none_or(|p| e.instance.starts_with(p.as_str()))
            && self.since_ms.is_none_or(|t| e.time_ms >= t)
    }
}

/// Where a follower left off on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub incarnation: u64,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use cairn_protocol::frame;
    use openraft::{EntryPayload, Membership, StoredMembership};

    use super::*;
    use crate::raft::{Entry, LogId};
    use crate::state::Command;

    fn lid(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<NodeId>(term, 1, index)
    }

    fn roundtrip<T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(v: &T) -> T {
        let bytes = frame::encode(v).expect("encodes");
        let (v, used) = frame::decode(&bytes)
            .expect("decodes")
            .expect("a whole frame");
        assert_eq!(used, bytes.len());
        v
    }

    #[test]
    fn raft_messages_survive_the_frame_codec() {
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([(4, Node::new("127.0.0.1:4"))]),
        );
        let entries = vec![
            Entry {
                log_id: lid(2, 5),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: lid(2, 6),
                payload: EntryPayload::Normal(Request {
                    now_ms: 7,
                    command: Command::Put {
                        key: "k".into(),
                        value: "v".into(),
                    },
                }),
            },
            Entry {
                log_id: lid(2, 7),
                payload: EntryPayload::Membership(membership.clone()),
            },
        ];
        let req = PeerRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(lid(1, 4)),
            entries,
            leader_commit: Some(lid(2, 5)),
        });
        let back = roundtrip(&req);
        assert_eq!(format!("{back:?}"), format!("{req:?}"));

        let snap = PeerRequest::FullSnapshot {
            vote: Vote::new(3, 2),
            meta: SnapshotMeta {
                last_log_id: Some(lid(3, 9)),
                last_membership: StoredMembership::new(Some(lid(2, 7)), membership),
                snapshot_id: "s-1".into(),
            },
        };
        assert_eq!(format!("{:?}", roundtrip(&snap)), format!("{snap:?}"));

        for resp in [
            PeerResponse::AppendEntries(AppendEntriesResponse::Success),
            PeerResponse::AppendEntries(AppendEntriesResponse::PartialSuccess(Some(lid(1, 2)))),
            PeerResponse::AppendEntries(AppendEntriesResponse::Conflict),
            PeerResponse::AppendEntries(AppendEntriesResponse::HigherVote(Vote::new(9, 3))),
            PeerResponse::Vote(VoteResponse::new(Vote::new(4, 2), Some(lid(3, 3)), true)),
            PeerResponse::Snapshot(SnapshotResponse::new(Vote::new(5, 1))),
            PeerResponse::Fatal(Fatal::Stopped),
            PeerResponse::Leader(LeaderResponse::ReadIndex(Some(lid(6, 60)))),
            PeerResponse::Leader(LeaderResponse::NotLeader {
                leader: Some((2, "127.0.0.1:2".into())),
            }),
            PeerResponse::Refused("no".into()),
        ] {
            assert_eq!(format!("{:?}", roundtrip(&resp)), format!("{resp:?}"));
        }
        let lr = PeerRequest::Leader(LeaderRequest::AddMember {
            node_id: 7,
            addr: "a:1".into(),
        });
        assert_eq!(format!("{:?}", roundtrip(&lr)), format!("{lr:?}"));
        let report = PeerRequest::Leader(LeaderRequest::ReportRunners {
            node: 9,
            runners: vec![RunnerReport {
                id: "r1".into(),
                labels: BTreeMap::from([("os".to_string(), "linux".to_string())]),
                busy: Some(4),
            }],
        });
        assert_eq!(format!("{:?}", roundtrip(&report)), format!("{report:?}"));
        let loads = PeerRequest::Leader(LeaderRequest::ReportRunnerLoads {
            node: 9,
            runners: vec![RunnerLoad {
                id: "r1".into(),
                labels: BTreeMap::new(),
                version: 5,
                capacity: 3,
                busy: vec![4, 5],
                carrying: vec![6],
            }],
        });
        assert_eq!(format!("{:?}", roundtrip(&loads)), format!("{loads:?}"));
        let relay = PeerRequest::RelayOffer {
            runner: "r1".into(),
            job: 4,
        };
        assert_eq!(format!("{:?}", roundtrip(&relay)), format!("{relay:?}"));
        for resp in [
            PeerResponse::RelayOpen,
            PeerResponse::NoRunner("gone".into()),
        ] {
            assert_eq!(format!("{:?}", roundtrip(&resp)), format!("{resp:?}"));
        }
    }

    /// Anything a peer sends decodes to a message or an error, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let valid = frame::encode(&PeerRequest::Leader(LeaderRequest::Forward {
            request: Box::new(Request {
                now_ms: 1,
                command: Command::Put {
                    key: "k".into(),
                    value: "v".into(),
                },
            }),
        }))
        .expect("encodes");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let len = (next() % 512) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.append(&mut body);
            let _ = frame::decode::<PeerRequest>(&f);
            let _ = frame::decode::<PeerResponse>(&f);
            let mut g = valid.clone();
            let i = (next() as usize) % g.len();
            g[i] = next() as u8;
            let _ = frame::decode::<PeerRequest>(&g);
        }
    }
}
