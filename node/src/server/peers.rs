//! The callee side of the peer ALPN: Raft RPCs into openraft, leader
//! requests into [`super::leader`], relayed job offers into
//! [`crate::jobs::relay_offer`].
//!
//! Invariants:
//! - Only a connection whose certificate names a node of this cluster and
//!   whose id was not removed gets here (checked in `server::serve_connection`
//!   by [`admit`]); the removal check is repeated on every stream.
//! - A node that is not yet a member may only ask to be added (itself).
//! - A malformed request gets a `Refused` answer and its connection is
//!   closed; nothing a peer sends is unwrapped.
//! - A node reports only its own runners (`ReportRunners.node` must be the
//!   sender's certified id), and only members may have job offers relayed
//!   to the runners connected here ([`crate::jobs::relay_offer`]).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::frame;
use openraft::error::RaftError;
use openraft::Snapshot;
use tokio_util::sync::CancellationToken;

use crate::peer::msg::{
    LeaderRequest, LeaderResponse, PeerRequest, PeerResponse, MAX_SNAPSHOT_BYTES,
};
use crate::raft::NodeId;
use crate::server::Ctx;

/// Decide whether a peer connection is admitted; `Ok(node id)` or the reason.
pub fn admit(ctx: &Ctx, conn: &quinn::Connection) -> Result<NodeId, String> {
    let Some(id) = cairn_protocol::pki::peer_node_id(conn) else {
        return Err(
            "a peer connection needs a node certificate issued by this cluster's CA".into(),
        );
    };
    if is_removed(ctx, id) {
        return Err(format!("node {id:x} was removed from this cluster"));
    }
    Ok(id)
}

fn is_removed(ctx: &Ctx, id: NodeId) -> bool {
    ctx.raft.read_local(|s| s.removed_nodes.contains(&id))
}

/// Serve the streams of an admitted peer connection until it closes.
pub async fn serve(
    ctx: Arc<Ctx>,
    conn: quinn::Connection,
    from: NodeId,
    shutdown: CancellationToken,
) {
    tracing::debug!(peer = format!("{from:x}"), "peer connected");
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer = format!("{from:x}"), error = %e, "peer connection ended");
                    return;
                }
            },
        };
        let ctx = ctx.clone();
        let conn = conn.clone();
        tokio::spawn(async move { serve_stream(ctx, conn, from, send, recv).await });
    }
}

async fn serve_stream(
    ctx: Arc<Ctx>,
    conn: quinn::Connection,
    from: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let resp = match frame::read_required::<_, PeerRequest>(&mut recv).await {
        Err(e) => Err(format!("bad request: {e}")),
        Ok(_) if is_removed(&ctx, from) => {
            Err(format!("node {from:x} was removed from this cluster"))
        }
        // A relayed job offer keeps the stream: it is the job's stream.
        Ok(PeerRequest::RelayOffer { runner, job }) if is_member(&ctx, from) => {
            return crate::jobs::relay_offer(
                Arc::new(ctx.jobs_ctx()),
                from,
                runner,
                job,
                send,
                recv,
            )
            .await;
        }
        Ok(PeerRequest::RelayOffer { .. }) => Ok(PeerResponse::NoRunner(format!(
            "node {from:x} is not a member of this cluster (as far as this node knows)"
        ))),
        // Log streams and exec sessions keep their stream too.
        Ok(PeerRequest::Logs {
            filter,
            follow,
            after,
        }) if is_member(&ctx, from) => {
            return crate::logs::serve_peer(&ctx.logs_ctx(), filter, follow, after, send).await;
        }
        Ok(PeerRequest::RelayStream {
            deployment,
            instance,
            header,
        }) if is_member(&ctx, from) => {
            return crate::attached::relay(
                &ctx.attached,
                ctx.identity.node_id,
                deployment,
                instance,
                header,
                send,
                recv,
            )
            .await;
        }
        Ok(PeerRequest::FetchSource { digest }) if is_member(&ctx, from) => {
            return crate::services::source::serve_peer(&ctx, digest, send).await;
        }
        Ok(PeerRequest::FetchSource { .. }) => Ok(PeerResponse::Refused(format!(
            "node {from:x} is not a member of this cluster (as far as this node knows)"
        ))),
        Ok(PeerRequest::Logs { .. }) => Ok(PeerResponse::Refused(format!(
            "node {from:x} is not a member of this cluster (as far as this node knows)"
        ))),
        Ok(PeerRequest::RelayStream { .. }) => Ok(PeerResponse::NoInstance(format!(
            "node {from:x} is not a member of this cluster (as far as this node knows)"
        ))),
        Ok(req) => handle(&ctx, from, req, &mut recv).await,
    };
    match resp {
        Ok(resp) => {
            let _ = frame::write(&mut send, &resp).await;
            let _ = send.finish();
        }
        Err(reason) => {
            tracing::warn!(peer = format!("{from:x}"), %reason, "refusing peer request; closing its connection");
            let _ = frame::write(&mut send, &PeerResponse::Refused(reason)).await;
            let _ = send.finish();
            // Give the refusal time to arrive before closing.
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(3u32.into(), b"refused");
        }
    }
}

/// `Err` refuses the request and closes the connection.
async fn handle(
    ctx: &Arc<Ctx>,
    from: NodeId,
    req: PeerRequest,
    recv: &mut quinn::RecvStream,
) -> Result<PeerResponse, String> {
    let raft = ctx.raft.raft();
    let fatal = |e: RaftError<NodeId>| match e {
        RaftError::APIError(never) => match never {},
        RaftError::Fatal(f) => PeerResponse::Fatal(f),
    };
    let member = is_member(ctx, from);
    Ok(match req {
        PeerRequest::AppendEntries(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => PeerResponse::AppendEntries(r),
            Err(e) => fatal(e),
        },
        PeerRequest::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => PeerResponse::Vote(r),
            Err(e) => fatal(e),
        },
        PeerRequest::FullSnapshot { vote, meta } => {
            let data = recv
                .read_to_end(MAX_SNAPSHOT_BYTES)
                .await
                .map_err(|e| format!("reading snapshot: {e}"))?;
            tracing::info!(peer = format!("{from:x}"), bytes = data.len(), snapshot_id = %meta.snapshot_id, "installing snapshot from peer");
            let snapshot = Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => PeerResponse::Snapshot(r),
                Err(f) => PeerResponse::Fatal(f),
            }
        }
        PeerRequest::Leader(
            LeaderRequest::ReportRunners { node, .. }
            | LeaderRequest::ReportRunnerLoads { node, .. },
        ) if node != from => {
            return Err(format!(
                "node {from:x} reported the runners of node {node:x}; a node reports only its own"
            ));
        }
        PeerRequest::Leader(lr) => {
            let own_add =
                matches!(&lr, LeaderRequest::AddMember { node_id, .. } if *node_id == from);
            if !member && !own_add {
                // Maybe this node has not yet applied the membership that
                // adds `from`: not a protocol error, but nothing is done.
                return Ok(PeerResponse::Leader(LeaderResponse::Unavailable(format!(
                    "node {from:x} is not a member of this cluster (as far as this node knows)"
                ))));
            }
            PeerResponse::Leader(super::leader::handle(ctx, lr).await)
        }
        PeerRequest::RelayOffer { .. }
        | PeerRequest::Logs { .. }
        | PeerRequest::RelayStream { .. }
        | PeerRequest::FetchSource { .. } => {
            return Err("this request is served on its own stream".into())
        }
    })
}

fn is_member(ctx: &Ctx, id: NodeId) -> bool {
    ctx.raft
        .metrics()
        .membership_config
        .membership()
        .get_node(&id)
        .is_some()
}
