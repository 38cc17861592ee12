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
/// How long the leader may take to answer a forwarded request.
pub const LEADER_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long adding a member may take (the learner catches up first).
pub const ADD_MEMBER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a follower waits to apply up to a read index.
pub const READ_APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request could not be served by the leader.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no leader could serve it within {deadline:?}: {last}")]
    NoLeader { deadline: Duration, last: String },
    /// The request reached the leader (maybe) but its answer was lost.
    #[error("the leader did not answer, so the outcome is unknown: {0}")]
    OutcomeUnknown(PeerError),
    /// This node leads but could not commit in time (no quorum?); the write
    /// may still commit later.
    #[error("not committed within {0:?} (is a quorum of the cluster up?); the outcome is unknown")]
    NotCommitted(Duration),
}

/// Run `req` on the leader: here if this node leads, else over the peer
/// network, following `NotLeader` hints and waiting out elections (at most
/// [`ROUTE_DEADLINE`] between attempts).
pub async fn on_leader(ctx: &Ctx, req: LeaderRequest) -> Result<LeaderResponse, RouteError> {
    let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
    let mut hint: Option<(NodeId, String)> = None;
    loop {
        let target = hint
            .take()
            .or_else(|| ctx.raft.leader().map(|l| (l.id, l.addr)));
        let target_id = target.as_ref().map(|t| t.0);
        let resp = match target {
            Some((id, _)) if id == ctx.raft.id() => {
                // Boxed: a leader's handler may itself route a write.
                let local = Box::pin(leader::handle(ctx, req.clone()));
                match tokio::time::timeout(req.timeout(), local).await {
                    Ok(r) => r,
                    Err(_) if req.is_idempotent() => {
                        LeaderResponse::Unavailable(format!("no answer within {:?}", req.timeout()))
                    }
                    Err(_) => return Err(RouteError::NotCommitted(req.timeout())),
                }
            }
            Some((id, addr)) => match ctx
                .peers
                .leader_call(&addr, Some(id), req.clone(), req.timeout())
                .await
            {
                Ok(r) => r,
                Err(e) if !e.maybe_delivered() || req.is_idempotent() => {
                    tracing::debug!(leader = format!("{id:x}"), error = %e, "leader request failed; retrying");
                    LeaderResponse::Unavailable(e.to_string())
                }
                Err(e) => return Err(RouteError::OutcomeUnknown(e)),
            },
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
        if tokio::time::Instant::now() >= deadline {
            return Err(RouteError::NoLeader {
                deadline: ROUTE_DEADLINE,
                last,
            });
        }
        settle(ctx).await;
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

/// Commit `request` through the leader and return what `State::apply`
/// answered there.
pub async fn write(ctx: &Ctx, request: Request) -> Result<Response, String> {
    match on_leader(ctx, LeaderRequest::Forward { request }).await {
        Ok(LeaderResponse::Written(r)) => Ok(r),
        Ok(LeaderResponse::Error(e)) => Err(e),
        Ok(other) => Err(format!("unexpected answer from the leader: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A linearizable read on any node: get the leader's read index (confirmed
/// by a quorum), wait until this node has applied it, then run `f` on the
/// local state. `f` runs under the state's read lock: keep it short.
pub async fn read<F, T>(ctx: &Ctx, f: F) -> Result<T, String>
where
    F: FnOnce(&State) -> T,
{
    let index = match on_leader(ctx, LeaderRequest::ReadIndex).await {
        Ok(LeaderResponse::ReadIndex(id)) => id.map(|l| l.index),
        Ok(LeaderResponse::Error(e)) => return Err(e),
        Ok(other) => return Err(format!("unexpected answer from the leader: {other:?}")),
        Err(e) => return Err(e.to_string()),
    };
    if index.is_some() {
        ctx.raft
            .raft()
            .wait(Some(READ_APPLY_TIMEOUT))
            .applied_index_at_least(index, "linearizable read")
            .await
            .map_err(|e| format!("this node did not catch up with the leader: {e}"))?;
    }
    Ok(ctx.raft.read_local(f))
}
