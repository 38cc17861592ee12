//! What the leader does for requests forwarded to it (and for its own
//! clients, through the same code): writes, read indexes, joins, membership,
//! and the other nodes' reports of their runners.
//!
//! Invariant: an answer of `NotLeader` or `Unavailable` means nothing was
//! done, so the caller may retry elsewhere; `Written` carries exactly what
//! `State::apply` returned.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_protocol::api::JoinGrant;
use cairn_protocol::pki::{self, Ca};
use openraft::error::{CheckIsLeaderError, ClientWriteError};
use openraft::ChangeMembers;

use crate::jobs::{self, RunnerLoad};
use crate::peer::msg::{LeaderRequest, LeaderResponse};
use crate::peer::ADD_MEMBER_TIMEOUT;
use crate::raft::{Node, NodeId, WriteError};
use crate::server::Ctx;
use crate::state::{Command, Request};

/// Longest peer address accepted from a joining node.
const MAX_ADDR_LEN: usize = 256;
/// A voter the leader heard from this recently (several heartbeats) counts
/// as up when checking that a removal leaves a working quorum.
pub const HEALTHY_CONTACT: Duration = Duration::from_secs(1);
/// How long a membership change may take to commit before the caller is
/// told (openraft keeps at it; it completes once a quorum answers).
pub const MEMBERSHIP_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn handle(ctx: &Ctx, req: LeaderRequest) -> LeaderResponse {
    match req {
        LeaderRequest::Forward { request } => forward(ctx, *request).await,
        LeaderRequest::ReadIndex => read_index(ctx).await,
        _ if !ctx.raft.is_leader() => not_leader(ctx),
        LeaderRequest::SignJoin {
            csr,
            node_id,
            peer_addr,
        } => sign_join(ctx, &csr, node_id, &peer_addr),
        LeaderRequest::AddMember { node_id, addr } => add_member(ctx, node_id, addr).await,
        LeaderRequest::RemoveMember { node_id } => remove_member(ctx, node_id, true).await,
        LeaderRequest::Leave { node_id } => remove_member(ctx, node_id, false).await,
        LeaderRequest::Members => LeaderResponse::Members(ctx.cluster.member_info()),
        LeaderRequest::ReportRunners { node, runners } => {
            report_runners(ctx, node, runners.into_iter().map(Into::into).collect())
        }
        LeaderRequest::ReportRunnerLoads { node, runners } => report_runners(ctx, node, runners),
        LeaderRequest::Upgrade { finish } => {
            if finish {
                if let Err(e) = crate::upgrade::finish(&ctx.cluster, &ctx.upgrade).await {
                    return LeaderResponse::Error(e);
                }
            }
            LeaderResponse::Upgrade(crate::upgrade::status(&ctx.cluster, &ctx.upgrade))
        }
    }
}

/// Another node's runners: the scheduler may offer them jobs (relayed
/// through that node) until the report expires.
fn report_runners(ctx: &Ctx, node: NodeId, runners: Vec<RunnerLoad>) -> LeaderResponse {
    if node == ctx.raft.id() {
        // This node's own runners are in its local table already.
        return LeaderResponse::Done;
    }
    if runners.len() > jobs::MAX_REPORTED_RUNNERS {
        return LeaderResponse::Error(format!(
            "{} runners reported; at most {} per node",
            runners.len(),
            jobs::MAX_REPORTED_RUNNERS
        ));
    }
    let addr = ctx
        .raft
        .metrics()
        .membership_config
        .membership()
        .get_node(&node)
        .map(|n| n.addr.clone());
    let Some(addr) = addr else {
        return LeaderResponse::Unavailable(format!(
            "node {node:x} is not a member of this cluster (as far as the leader knows)"
        ));
    };
    ctx.jobs.set_remote_runners(node, addr, runners);
    LeaderResponse::Done
}

fn not_leader(ctx: &Ctx) -> LeaderResponse {
    LeaderResponse::NotLeader {
        leader: ctx
            .raft
            .leader()
            .filter(|l| l.id != ctx.raft.id())
            .map(|l| (l.id, l.addr)),
    }
}

async fn forward(ctx: &Ctx, request: Request) -> LeaderResponse {
    match ctx.raft.write(request).await {
        Ok(r) => LeaderResponse::Written(r),
        Err(WriteError::ForwardToLeader { leader }) => LeaderResponse::NotLeader {
            leader: leader.map(|l| (l.id, l.addr)),
        },
        Err(e) => LeaderResponse::Error(e.to_string()),
    }
}

async fn read_index(ctx: &Ctx) -> LeaderResponse {
    use openraft::error::RaftError;
    match ctx.raft.raft().get_read_log_id().await {
        Ok((read, _applied)) => LeaderResponse::ReadIndex(read),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            LeaderResponse::NotLeader {
                leader: match (f.leader_id, f.leader_node) {
                    (Some(id), Some(n)) => Some((id, n.addr)),
                    _ => None,
                },
            }
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
            LeaderResponse::Unavailable(format!("leadership not confirmed by a quorum: {q}"))
        }
        Err(RaftError::Fatal(f)) => LeaderResponse::Error(format!("raft node is dead: {f}")),
    }
}

/// The CA to sign with: the replicated one, else this node's own.
fn cluster_ca(ctx: &Ctx) -> Result<Ca, String> {
    if let Some(ca) = ctx.raft.read_local(|s| s.cluster_ca.clone()) {
        return Ca::load(&ca.cert_pem, &ca.key_pem).map_err(|e| format!("cluster CA: {e}"));
    }
    ctx.identity.ca.clone().ok_or_else(|| {
        "this leader holds no CA key (the bootstrap node has not recorded it yet)".into()
    })
}

fn sign_join(ctx: &Ctx, csr: &str, node_id: NodeId, peer_addr: &str) -> LeaderResponse {
    if node_id == 0 {
        return LeaderResponse::Error("node id 0 is not allowed".into());
    }
    if peer_addr.is_empty() || peer_addr.len() > MAX_ADDR_LEN {
        return LeaderResponse::Error(format!("invalid peer address {peer_addr:?}"));
    }
    if ctx.raft.read_local(|s| s.removed_nodes.contains(&node_id)) {
        return LeaderResponse::Error(format!(
            "node id {node_id:x} was removed from this cluster; join with a new id"
        ));
    }
    let m = ctx.raft.metrics();
    if let Some(n) = m.membership_config.membership().get_node(&node_id) {
        if n.addr != peer_addr {
            return LeaderResponse::Error(format!(
                "node id {node_id:x} is already a member at {}",
                n.addr
            ));
        }
    }
    let ca = match cluster_ca(ctx) {
        Ok(ca) => ca,
        Err(e) => return LeaderResponse::Unavailable(e),
    };
    match ca.sign_csr(csr, &pki::node_common_name(node_id)) {
        Ok(cert_pem) => {
            tracing::info!(node = format!("{node_id:x}"), %peer_addr, "signed a joining node's certificate");
            LeaderResponse::JoinGrant(JoinGrant {
                cert_pem,
                ca_pem: ca.cert_pem.clone(),
                members: member_addrs(ctx),
            })
        }
        Err(e) => LeaderResponse::Error(format!("cannot sign the certificate request: {e}")),
    }
}

fn member_addrs(ctx: &Ctx) -> Vec<(NodeId, String)> {
    let m = ctx.raft.metrics();
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect()
}

fn membership_error(e: WriteError) -> LeaderResponse {
    match e {
        WriteError::ForwardToLeader { leader } => LeaderResponse::NotLeader {
            leader: leader.map(|l| (l.id, l.addr)),
        },
        // In progress, or a learner not yet caught up: try again shortly.
        WriteError::ChangeMembership(e) => LeaderResponse::Unavailable(e.to_string()),
        WriteError::Fatal(f) => LeaderResponse::Error(format!("raft node is dead: {f}")),
    }
}

fn raft_write_error(
    e: openraft::error::RaftError<NodeId, ClientWriteError<NodeId, Node>>,
) -> LeaderResponse {
    membership_error(WriteError::from(e))
}

/// Learner → caught up → voter. Idempotent: a voter is left as it is.
async fn add_member(ctx: &Ctx, node_id: NodeId, addr: String) -> LeaderResponse {
    if node_id == 0 || addr.is_empty() || addr.len() > MAX_ADDR_LEN {
        return LeaderResponse::Error("invalid node id or address".into());
    }
    if ctx.raft.read_local(|s| s.removed_nodes.contains(&node_id)) {
        return LeaderResponse::Error(format!("node {node_id:x} was removed from this cluster"));
    }
    let is_voter = |ctx: &Ctx| {
        ctx.raft
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node_id)
    };
    if is_voter(ctx) {
        return LeaderResponse::Done;
    }
    let raft = ctx.raft.raft();
    let added = match raft
        .add_learner(node_id, Node::new(addr.clone()), false)
        .await
    {
        Ok(r) => r,
        Err(e) => return raft_write_error(e),
    };
    tracing::info!(node = format!("{node_id:x}"), %addr, "added learner; waiting for it to catch up");
    let target = added.log_id.index;
    let caught_up = raft
        .wait(Some(ADD_MEMBER_TIMEOUT))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&node_id))
                    .and_then(|matched| matched.as_ref())
                    .is_some_and(|l| l.index >= target)
            },
            "new learner caught up",
        )
        .await;
    if let Err(e) = caught_up {
        return LeaderResponse::Unavailable(format!("node {node_id:x} has not caught up: {e}"));
    }
    let promoted = tokio::time::timeout(
        MEMBERSHIP_COMMIT_TIMEOUT,
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true),
    )
    .await;
    let Ok(promoted) = promoted else {
        return LeaderResponse::Unavailable(format!(
            "making node {node_id:x} a voter did not commit within {MEMBERSHIP_COMMIT_TIMEOUT:?}"
        ));
    };
    match promoted {
        Ok(_) => {
            tracing::info!(node = format!("{node_id:x}"), "node is now a voter");
            LeaderResponse::Done
        }
        Err(e) => raft_write_error(e),
    }
}

/// Take `node_id` out of the membership. `revoke`: also refuse its
/// certificate from now on (`cairn server remove`); a node leaving on its own
/// (graceful shutdown) keeps it, and adds itself back when it starts again.
async fn remove_member(ctx: &Ctx, node_id: NodeId, revoke: bool) -> LeaderResponse {
    let m = ctx.raft.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let present = membership.get_node(&node_id).is_some();
    let removed_already = ctx.raft.read_local(|s| s.removed_nodes.contains(&node_id));
    if !present && !removed_already {
        return LeaderResponse::Error(format!("node {node_id:x} is not a member"));
    }
    if present {
        let change = if voters.contains(&node_id) {
            if voters.len() == 1 {
                return LeaderResponse::Error("cannot remove the last voter of the cluster".into());
            }
            // The change commits only with a majority of the old and of the
            // new voters; with too few of the remaining voters up it would
            // hang and block every write until they return. Refuse instead.
            let remaining: Vec<NodeId> = voters.iter().copied().filter(|v| *v != node_id).collect();
            let up = remaining
                .iter()
                .filter(|v| {
                    **v == m.id
                        || ctx
                            .peers
                            .last_contact(**v)
                            .is_some_and(|d| d < HEALTHY_CONTACT)
                })
                .count();
            if up * 2 <= remaining.len() {
                return LeaderResponse::Error(format!(
                    "removing node {node_id:x} would leave {up} of the {} remaining voters reachable, not a majority; bring members back first",
                    remaining.len()
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        let changed = tokio::time::timeout(
            MEMBERSHIP_COMMIT_TIMEOUT,
            ctx.raft.raft().change_membership(change, false),
        )
        .await;
        match changed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return raft_write_error(e),
            Err(_) => {
                return LeaderResponse::Error(format!(
                    "removing node {node_id:x} did not commit within {MEMBERSHIP_COMMIT_TIMEOUT:?}; it completes once a quorum answers"
                ))
            }
        }
        tracing::info!(node = format!("{node_id:x}"), "removed from the membership");
    }
    if !revoke {
        return LeaderResponse::Done;
    }
    // Revoke its certificate for peer connections. After removing itself a
    // leader steps down: the write goes to the next leader.
    match Box::pin(ctx.write(Command::MarkNodeRemoved { id: node_id })).await {
        Ok(_) => LeaderResponse::Done,
        Err(e) => LeaderResponse::Error(format!(
            "node {node_id:x} left the membership but its removal was not recorded: {e}"
        )),
    }
}
