//! The narrow handle to the replicated state that every part of the node uses: commit a
//! command through the leader ([`Cluster::write`]), a linearizable read on any node
//! ([`Cluster::read`]), and any request the leader serves ([`Cluster::on_leader`]), routed
//! over the peer network wherever this node is. What this node does when it is the leader
//! is given at start ([`Cluster::serve_as_leader`]), so this module needs nothing above it.
//!
//! Invariants:
//! - A follower never applies a write itself: it forwards it to the leader
//!   and answers what the leader's `State::apply` returned.
//! - A request is retried on another node only when it certainly was not
//!   acted on (`NotLeader`, `Unavailable`, or never delivered), or when it is
//!   idempotent; a write whose answer was lost fails with "outcome unknown".
//! - A linearizable read on a follower waits until it has applied the
//!   leader's read index (confirmed with a quorum) before reading locally.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_protocol::now_ms;

use crate::peer::{LeaderRequest, LeaderResponse, QuicTransport};
use crate::raft::{NodeId, RaftNode};
use crate::state::{Command, Request, Response, State};

tokio::task_local! {
    /// The (client, request) id of the idempotent client request being served:
    /// [`Cluster::write`] tags its command with it, so the state machine applies it at most
    /// once.
    pub static REQUEST_ID: (u64, u64);

    /// Set by [`Cluster::write`] and [`Cluster::read`] while serving a request when the
    /// cluster could not be reached from this node in a way that makes asking another
    /// member safe ([`ClusterError::retry_elsewhere`]). An `Error` answer then goes out as
    /// `Unavailable`, so the client tries another member. (A bridge until every service
    /// returns typed errors.)
    pub static RETRY_ELSEWHERE: std::cell::Cell<bool>;
}

/// Note that the request being served failed for want of a reachable
/// leader, and another member may serve it (see [`RETRY_ELSEWHERE`]).
pub fn note_retry_elsewhere(e: &ClusterError) {
    if e.retry_elsewhere {
        let _ = RETRY_ELSEWHERE.try_with(|c| c.set(true));
    }
}

/// Test-only fault injection for the chaos harness: true when this is a
/// debug build and `CAIRN_CHAOS_BUG` names `bug`. Release builds never do.
pub fn chaos_bug(bug: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("CAIRN_CHAOS_BUG").is_ok_and(|v| v == bug)
}

/// What this node does with a request to the leader while it leads (the composition root
/// gives it: it needs the whole node).
pub trait LeaderService: Send + Sync {
    fn handle(
        &self,
        req: LeaderRequest,
    ) -> Pin<Box<dyn Future<Output = LeaderResponse> + Send + '_>>;
}

/// This node's handle to the cluster. Clone the `Arc` freely.
pub struct Cluster {
    pub raft: RaftNode,
    /// The peer network (Raft and requests to the leader).
    pub peers: QuicTransport,
    leader: OnceLock<Arc<dyn LeaderService>>,
}

/// How long a request keeps looking for a leader (covers an election).
pub const ROUTE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a request that is not idempotent still waits for the answer of
/// a leader that stopped leading while it was in flight (a deposed leader
/// that is alive says at once whether it committed; a dead one never does).
pub const MOVED_GRACE: Duration = Duration::from_secs(1);
/// How long a follower waits to apply up to a read index.
pub const READ_APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// A leader that has not heard from a majority of the voters (itself
/// included) for this long is cut off: the others elect a new leader within
/// an election timeout (0.3–0.6 s after 3 missed heartbeats), so it stops
/// taking requests and says so, and clients go to another member.
pub const CUT_OFF_AFTER: Duration = Duration::from_millis(1500);
/// A node that has known no leader at all for this long while serving a
/// request gives up on it (nothing was done): it is likely cut off from the
/// majority, and the client does better at another member.
pub const LEADERLESS_GIVE_UP: Duration = Duration::from_secs(3);

/// Why a request could not be served by the leader.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Nothing was done: no leader could be reached in time, or this node is
    /// cut off from the majority. The request may be sent to another member.
    #[error("no leader could serve it within {waited:?}: {last}")]
    NoLeader { waited: Duration, last: String },
    /// The request reached the leader (maybe) but its answer was lost.
    #[error("the leader did not answer, so the outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// This node leads but could not commit in time (no quorum?); the write
    /// may still commit later.
    #[error("not committed within {0:?} (is a quorum of the cluster up?); the outcome is unknown")]
    NotCommitted(Duration),
}

impl RouteError {
    /// Whether sending the same request again (here or at another member)
    /// cannot apply it twice: nothing was done, or the request is idempotent.
    pub fn retry_safe(&self, idempotent: bool) -> bool {
        idempotent || matches!(self, RouteError::NoLeader { .. })
    }
}

/// Why [`write`] or [`read`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    pub message: String,
    /// Asking another member cannot do it twice: nothing was done here (no
    /// leader reachable from this node, or it is cut off), or the request
    /// is a read or an idempotent write.
    pub retry_elsewhere: bool,
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ClusterError {
    fn route(e: RouteError, idempotent: bool) -> ClusterError {
        ClusterError {
            retry_elsewhere: e.retry_safe(idempotent),
            message: e.to_string(),
        }
    }

    fn fatal(message: String) -> ClusterError {
        ClusterError {
            message,
            retry_elsewhere: false,
        }
    }
}

impl Cluster {
    pub fn new(raft: RaftNode, peers: QuicTransport) -> Arc<Cluster> {
        Arc::new(Cluster {
            raft,
            peers,
            leader: OnceLock::new(),
        })
    }

    /// What this node does when it leads (set once, at start).
    pub fn serve_as_leader(&self, service: Arc<dyn LeaderService>) {
        let _ = self.leader.set(service);
    }

    fn leader_service(&self) -> &dyn LeaderService {
        self.leader
            .get()
            .map(|s| s.as_ref())
            .expect("the node sets its leader service before it serves requests")
    }

    /// The members as this (leading) node sees them.
    pub fn member_info(&self) -> Vec<cairn_protocol::api::MemberInfo> {
        let m = self.raft.metrics();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let empty = std::collections::BTreeMap::new();
        let replication = m.replication.as_ref().unwrap_or(&empty);
        membership
            .nodes()
            .map(|(id, node)| {
                let me = *id == m.id;
                cairn_protocol::api::MemberInfo {
                    id: *id,
                    addr: node.addr.clone(),
                    role: if voters.contains(id) {
                        cairn_protocol::api::MemberRole::Voter
                    } else {
                        cairn_protocol::api::MemberRole::Learner
                    },
                    leader: m.current_leader == Some(*id),
                    matched_index: if me {
                        m.last_log_index
                    } else {
                        replication
                            .get(id)
                            .and_then(|l| l.as_ref())
                            .map(|l| l.index)
                    },
                    last_contact_ms: if me {
                        Some(0)
                    } else {
                        self.peers.last_contact(*id).map(|d| d.as_millis() as u64)
                    },
                }
            })
            .collect()
    }

    /// Commit a command (through the leader, wherever this node is); an `Error` answer
    /// from the state machine becomes `Err`. A client's idempotent request being served
    /// ([`REQUEST_ID`]) tags the command with its id.
    pub async fn write(&self, command: Command) -> Result<Response, String> {
        match self.write_request(self.request(command)).await {
            Ok(Response::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => {
                note_retry_elsewhere(&e);
                Err(format!("the cluster could not record it: {e}"))
            }
        }
    }

    /// The request that commits `command`, tagged with the idempotent client request
    /// being served, if any.
    pub fn request(&self, command: Command) -> Request {
        let command = match REQUEST_ID.try_with(|id| *id) {
            Ok((client, request)) => Command::Idempotent {
                client,
                request,
                command: Box::new(command),
            },
            Err(_) => command,
        };
        Request {
            now_ms: now_ms(),
            command,
        }
    }

    /// A linearizable read, on any node (see [`Cluster::read_state`]).
    pub async fn read<F, T>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(&State) -> T,
    {
        // CHAOS-HARNESS PLANTED BUG (debug builds only; chaos/ proves its
        // checker catches it): serve reads from possibly stale local state.
        if cfg!(debug_assertions) && chaos_bug("stale-read") {
            return Ok(self.raft.read_local(f));
        }
        self.read_state(f).await.map_err(|e| {
            note_retry_elsewhere(&e);
            e.message
        })
    }

    /// Run `req` on the leader: here if this node leads, else over the peer
    /// network, following `NotLeader` hints and waiting out elections, within
    /// [`ROUTE_DEADLINE`].
    ///
    /// An attempt ends early when the leader it went to is gone: Raft on this
    /// node reports another leader (or none) than the one it saw when the
    /// attempt began, or this node, leading, is cut off from the majority
    /// ([`CUT_OFF_AFTER`]). An idempotent request is then tried again at the new
    /// leader; any other whose answer was lost fails with "outcome unknown".
    pub async fn on_leader(&self, req: LeaderRequest) -> Result<LeaderResponse, RouteError> {
        let started = tokio::time::Instant::now();
        let deadline = started + ROUTE_DEADLINE;
        let mut hint: Option<(NodeId, String)> = None;
        // Since when this request has known no leader at all.
        let mut leaderless_since: Option<tokio::time::Instant> = None;
        loop {
            let seen = self.raft.leader_id();
            let target = hint
                .take()
                .or_else(|| self.raft.leader().map(|l| (l.id, l.addr)));
            let target_id = target.as_ref().map(|t| t.0);
            let resp = match target {
                Some((id, _)) if id == self.raft.id() => {
                    if let Some(reason) = self.cut_off() {
                        // Nothing proposed: safe to take anywhere else.
                        return Err(RouteError::NoLeader {
                            waited: started.elapsed(),
                            last: reason,
                        });
                    }
                    // Boxed: a leader's handler may itself route a write.
                    let local = self.leader_service().handle(req.clone());
                    let limit = req
                        .timeout()
                        .max(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    tokio::select! {
                        r = tokio::time::timeout(limit, local) => match r {
                            Ok(r) => r,
                            Err(_) if req.is_idempotent() => {
                                LeaderResponse::Unavailable(format!("no answer within {limit:?}"))
                            }
                            Err(_) => return Err(RouteError::NotCommitted(limit)),
                        },
                        reason = self.became_cut_off() => {
                            if !req.is_idempotent() {
                                return Err(RouteError::OutcomeUnknown(reason));
                            }
                            return Err(RouteError::NoLeader { waited: started.elapsed(), last: reason });
                        }
                    }
                }
                Some((id, addr)) => {
                    let call = self
                        .peers
                        .leader_call(&addr, Some(id), req.clone(), req.timeout());
                    tokio::pin!(call);
                    let answered = tokio::select! {
                        r = &mut call => Ok(r),
                        now = self.leader_moved(seen, id) => Err(now),
                    };
                    let answered = match answered {
                        Ok(r) => Ok(r),
                        // Sending it again cannot apply it twice: go at once.
                        Err(now) if req.is_idempotent() => Err(now),
                        // Else its answer is the only way to know what happened:
                        // a leader that is alive but deposed answers at once.
                        Err(now) => tokio::time::timeout(MOVED_GRACE, &mut call)
                            .await
                            .map_err(|_| now),
                    };
                    match answered {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) if !e.maybe_delivered() || req.is_idempotent() => {
                            tracing::debug!(leader = format!("{id:x}"), error = %e, "leader request failed; retrying");
                            LeaderResponse::Unavailable(e.to_string())
                        }
                        Ok(Err(e)) => return Err(RouteError::OutcomeUnknown(e.to_string())),
                        Err(now) => {
                            let reason = format!(
                                "node {id:x} stopped leading while the request was in flight (Raft now reports {})",
                                now.map_or("no leader".to_string(), |n| format!("node {n:x}"))
                            );
                            if !req.is_idempotent() {
                                return Err(RouteError::OutcomeUnknown(reason));
                            }
                            tracing::debug!(
                                leader = format!("{id:x}"),
                                "leader moved; retrying at the new one"
                            );
                            LeaderResponse::Unavailable(reason)
                        }
                    }
                }
                None => LeaderResponse::NotLeader { leader: None },
            };
            let last = match resp {
                LeaderResponse::NotLeader {
                    leader: Some((id, addr)),
                } if Some(id) != target_id => {
                    hint = Some((id, addr));
                    continue;
                }
                LeaderResponse::NotLeader { .. } => {
                    "no leader known (an election may be running)".to_string()
                }
                LeaderResponse::Unavailable(reason) => reason,
                other => return Ok(other),
            };
            let now = tokio::time::Instant::now();
            if self.raft.leader_id().is_some() {
                leaderless_since = None;
            } else {
                let since = *leaderless_since.get_or_insert(now);
                if now - since >= LEADERLESS_GIVE_UP {
                    return Err(RouteError::NoLeader {
                        waited: started.elapsed(),
                        last: format!(
                            "this node has known no leader for {LEADERLESS_GIVE_UP:?}: {last}"
                        ),
                    });
                }
            }
            if now >= deadline {
                return Err(RouteError::NoLeader {
                    waited: started.elapsed(),
                    last,
                });
            }
            self.settle().await;
        }
    }

    /// Why this node, which believes it leads, should not take requests: it has
    /// not heard from a majority of the voters (itself included) within
    /// [`CUT_OFF_AFTER`]. `None` when it has (or does not lead).
    pub fn cut_off(&self) -> Option<String> {
        // Not `current_leader` alone: a restarted node reads its own old
        // leadership from its stored vote until it hears otherwise (openraft
        // may even restore it as Leader at startup: hence `heard_within`
        // counts peers as heard at this node's start).
        if !self.raft.is_leader() {
            return None;
        }
        let voters = self.raft.voter_ids();
        let heard = voters
            .iter()
            .filter(|v| **v == self.raft.id() || self.peers.heard_within(**v, CUT_OFF_AFTER))
            .count();
        (heard * 2 <= voters.len()).then(|| {
            format!(
                "this node leads but has heard from only {heard} of {} voters (itself included) in the last {CUT_OFF_AFTER:?}: it is cut off from the majority",
                voters.len()
            )
        })
    }

    /// Resolves once this node, leading, is cut off (see [`cut_off`]).
    async fn became_cut_off(&self) -> String {
        loop {
            if let Some(reason) = self.cut_off() {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resolves when Raft on this node names a leader other than `seen` (what
    /// it named when the attempt began) and other than `target`: the leader the
    /// attempt went to is gone (or was never it). Returns the new leader.
    async fn leader_moved(&self, seen: Option<NodeId>, target: NodeId) -> Option<NodeId> {
        let mut w = self.raft.metrics_watch();
        loop {
            let now = w.borrow_and_update().current_leader;
            if now != seen && now != Some(target) {
                return now;
            }
            if w.changed().await.is_err() {
                // The Raft core stopped: the call's own timeout ends the attempt.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Wait a little for the cluster to change (new metrics), at most 100 ms.
    async fn settle(&self) {
        let mut w = self.raft.metrics_watch();
        w.borrow_and_update();
        let _ = tokio::time::timeout(Duration::from_millis(100), w.changed()).await;
        // Metrics change on every apply: do not spin faster than this.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// Commit `request` through the leader and return what `State::apply`
    /// answered there.
    pub async fn write_request(&self, request: Request) -> Result<Response, ClusterError> {
        let idempotent = matches!(request.command, Command::Idempotent { .. });
        match self
            .on_leader(LeaderRequest::Forward {
                request: Box::new(request),
            })
            .await
        {
            Ok(LeaderResponse::Written(r)) => Ok(r),
            Ok(LeaderResponse::Error(e)) => Err(ClusterError::fatal(e)),
            Ok(other) => Err(ClusterError::fatal(format!(
                "unexpected answer from the leader: {other:?}"
            ))),
            Err(e) => Err(ClusterError::route(e, idempotent)),
        }
    }

    /// A linearizable read on any node: get the leader's read index (confirmed
    /// by a quorum), wait until this node has applied it, then run `f` on the
    /// local state. `f` runs under the state's read lock: keep it short.
    pub async fn read_state<F, T>(&self, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(&State) -> T,
    {
        let index = match self.on_leader(LeaderRequest::ReadIndex).await {
            Ok(LeaderResponse::ReadIndex(id)) => id.map(|l| l.index),
            Ok(LeaderResponse::Error(e)) => return Err(ClusterError::fatal(e)),
            Ok(other) => {
                return Err(ClusterError::fatal(format!(
                    "unexpected answer from the leader: {other:?}"
                )))
            }
            Err(e) => return Err(ClusterError::route(e, true)),
        };
        if index.is_some() {
            self.raft
                .raft()
                .wait(Some(READ_APPLY_TIMEOUT))
                .applied_index_at_least(index, "linearizable read")
                .await
                .map_err(|e| ClusterError {
                    message: format!("this node did not catch up with the leader: {e}"),
                    retry_elsewhere: true,
                })?;
        }
        Ok(self.raft.read_local(f))
    }
}
