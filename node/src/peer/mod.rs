//! The peer network: Raft between nodes over QUIC (ALPN `cairn-peer`,
//! mutual TLS with certificates from the cluster CA), and everything a
//! follower asks of the leader.
//!
//! Code map:
//! - [`msg`]: the peer messages (wrappers around openraft's RPC types,
//!   [`LeaderRequest`]s, and relayed job offers).
//! - [`transport`]: [`QuicTransport`], the client side: one cached
//!   connection per peer, one stream per RPC; implements
//!   [`PeerTransport`](crate::raft::PeerTransport) with openraft's error kinds.
//! - [`serve`]: the callee side of a peer connection.
//! - [`leader`]: what the leader does for forwarded requests.
//! - [`join`]: the joining node's side of `cairn-node --join`.
//! - this module: [`on_leader`], [`write`] and [`read`], which make every
//!   node serve writes and linearizable reads (routing to the leader).
//!
//! Invariants:
//! - A follower never applies a write itself: it forwards it to the leader
//!   and answers what the leader's `State::apply` returned.
//! - A request is retried on another node only when it certainly was not
//!   acted on (`NotLeader`, `Unavailable`, or never delivered), or when it is
//!   idempotent; a write whose answer was lost fails with "outcome unknown".
//! - A linearizable read on a follower waits until it has applied the
//!   leader's read index (confirmed with a quorum) before reading locally.

pub mod join;
pub mod leader;
pub mod msg;
pub mod serve;
pub mod transport;

use std::time::Duration;

pub use msg::{LeaderRequest, LeaderResponse, PeerRequest, PeerResponse, MAX_SNAPSHOT_BYTES};
pub use transport::{PeerError, QuicTransport, PEER_CONNECT_TIMEOUT};

use crate::raft::NodeId;
use crate::server::Ctx;
use crate::state::{Request, Response, State};

/// How long a request keeps looking for a leader (covers an election).
pub const ROUTE_DEADLINE: Duration = Duration::from_secs(10);
/// How long one attempt at the leader may take before it is given up (and
/// retried, when that is safe, within [`ROUTE_DEADLINE`]). An attempt also
/// ends at once when Raft reports that the leadership moved.
pub const LEADER_RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request that is not idempotent still waits for the answer of
/// a leader that stopped leading while it was in flight (a deposed leader
/// that is alive says at once whether it committed; a dead one never does).
pub const MOVED_GRACE: Duration = Duration::from_secs(1);
/// How long adding a member may take (the learner catches up first).
pub const ADD_MEMBER_TIMEOUT: Duration = Duration::from_secs(60);
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

/// Run `req` on the leader: here if this node leads, else over the peer
/// network, following `NotLeader` hints and waiting out elections, within
/// [`ROUTE_DEADLINE`].
///
/// An attempt ends early when the leader it went to is gone: Raft on this
/// node reports another leader (or none) than the one it saw when the
/// attempt began, or this node, leading, is cut off from the majority
/// ([`CUT_OFF_AFTER`]). An idempotent request is then tried again at the new
/// leader; any other whose answer was lost fails with "outcome unknown".
pub async fn on_leader(ctx: &Ctx, req: LeaderRequest) -> Result<LeaderResponse, RouteError> {
    let started = tokio::time::Instant::now();
    let deadline = started + ROUTE_DEADLINE;
    let mut hint: Option<(NodeId, String)> = None;
    // Since when this request has known no leader at all.
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        let seen = ctx.raft.leader_id();
        let target = hint
            .take()
            .or_else(|| ctx.raft.leader().map(|l| (l.id, l.addr)));
        let target_id = target.as_ref().map(|t| t.0);
        let resp = match target {
            Some((id, _)) if id == ctx.raft.id() => {
                if let Some(reason) = cut_off(ctx) {
                    // Nothing proposed: safe to take anywhere else.
                    return Err(RouteError::NoLeader {
                        waited: started.elapsed(),
                        last: reason,
                    });
                }
                // Boxed: a leader's handler may itself route a write.
                let local = Box::pin(leader::handle(ctx, req.clone()));
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
                    reason = became_cut_off(ctx) => {
                        if !req.is_idempotent() {
                            return Err(RouteError::OutcomeUnknown(reason));
                        }
                        return Err(RouteError::NoLeader { waited: started.elapsed(), last: reason });
                    }
                }
            }
            Some((id, addr)) => {
                let call = ctx
                    .peers
                    .leader_call(&addr, Some(id), req.clone(), req.timeout());
                tokio::pin!(call);
                let answered = tokio::select! {
                    r = &mut call => Ok(r),
                    now = leader_moved(ctx, seen, id) => Err(now),
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
        if ctx.raft.leader_id().is_some() {
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
        settle(ctx).await;
    }
}

/// Why this node, which believes it leads, should not take requests: it has
/// not heard from a majority of the voters (itself included) within
/// [`CUT_OFF_AFTER`]. `None` when it has (or does not lead).
pub fn cut_off(ctx: &Ctx) -> Option<String> {
    // Not `current_leader` alone: a restarted node reads its own old
    // leadership from its stored vote until it hears otherwise (openraft
    // may even restore it as Leader at startup: hence `heard_within`
    // counts peers as heard at this node's start).
    if !ctx.raft.is_leader() {
        return None;
    }
    let voters = ctx.raft.voter_ids();
    let heard = voters
        .iter()
        .filter(|v| **v == ctx.raft.id() || ctx.peers.heard_within(**v, CUT_OFF_AFTER))
        .count();
    (heard * 2 <= voters.len()).then(|| {
        format!(
            "this node leads but has heard from only {heard} of {} voters (itself included) in the last {CUT_OFF_AFTER:?}: it is cut off from the majority",
            voters.len()
        )
    })
}

/// Resolves once this node, leading, is cut off (see [`cut_off`]).
async fn became_cut_off(ctx: &Ctx) -> String {
    loop {
        if let Some(reason) = cut_off(ctx) {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves when Raft on this node names a leader other than `seen` (what
/// it named when the attempt began) and other than `target`: the leader the
/// attempt went to is gone (or was never it). Returns the new leader.
async fn leader_moved(ctx: &Ctx, seen: Option<NodeId>, target: NodeId) -> Option<NodeId> {
    let mut w = ctx.raft.metrics_watch();
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
async fn settle(ctx: &Ctx) {
    let mut w = ctx.raft.metrics_watch();
    w.borrow_and_update();
    let _ = tokio::time::timeout(Duration::from_millis(100), w.changed()).await;
    // Metrics change on every apply: do not spin faster than this.
    tokio::time::sleep(Duration::from_millis(10)).await;
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

/// Commit `request` through the leader and return what `State::apply`
/// answered there.
pub async fn write(ctx: &Ctx, request: Request) -> Result<Response, ClusterError> {
    let idempotent = matches!(request.command, crate::state::Command::Idempotent { .. });
    match on_leader(ctx, LeaderRequest::Forward { request }).await {
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
pub async fn read<F, T>(ctx: &Ctx, f: F) -> Result<T, ClusterError>
where
    F: FnOnce(&State) -> T,
{
    let index = match on_leader(ctx, LeaderRequest::ReadIndex).await {
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
        ctx.raft
            .raft()
            .wait(Some(READ_APPLY_TIMEOUT))
            .applied_index_at_least(index, "linearizable read")
            .await
            .map_err(|e| ClusterError {
                message: format!("this node did not catch up with the leader: {e}"),
                retry_elsewhere: true,
            })?;
    }
    Ok(ctx.raft.read_local(f))
}
