//! Cluster service: tokens, joining nodes, members.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::{TokenRecord, TokenScope};
use cairn_protocol::{now_ms, token};

use crate::ctx::Ctx;
use crate::peer::{LeaderRequest, LeaderResponse};
use crate::services::ConnSession;
use crate::state::Command;

/// Join tokens expire after 10 minutes unless asked otherwise (and each
/// admits one node).
pub const JOIN_TOKEN_TTL_S: u64 = 10 * 60;
/// Longest token name accepted.
pub const MAX_TOKEN_NAME: usize = 128;

/// Mint a token. Only users may, except entrypoint tokens (users and
/// runners, for an existing deployment); the bootstrap token is made once at
/// bootstrap.
pub async fn create_token(
    ctx: &Arc<Ctx>,
    scope: TokenScope,
    name: String,
    ttl_s: Option<u64>,
) -> ClientResponse {
    let (kind, default_ttl) = match &scope {
        TokenScope::Join => ("join", Some(JOIN_TOKEN_TTL_S)),
        TokenScope::Runner => ("runner", None),
        TokenScope::User => ("user", None),
        TokenScope::Entrypoint { app, deployment } => {
            if let Err(e) =
                crate::services::entrypoint::check_deployment(ctx, app, *deployment).await
            {
                return error(e);
            }
            ("entrypoint", None)
        }
        TokenScope::Bootstrap => {
            return error(format!("{scope:?} tokens cannot be created this way"))
        }
    };
    if name.len() > MAX_TOKEN_NAME {
        return error(format!("token name over {MAX_TOKEN_NAME} bytes"));
    }
    let now = now_ms();
    let expires_ms = ttl_s
        .or(default_ttl)
        .map(|t| now.saturating_add(t.saturating_mul(1000)));
    let secret = token::generate(kind);
    let hash = token::hash(&secret);
    let record = TokenRecord {
        id: format!("{kind}-{}", &hash[..12]),
        hash,
        scope,
        name: if name.is_empty() { kind.into() } else { name },
        created_ms: now,
        expires_ms,
        revoked: false,
    };
    match ctx.write(Command::CreateToken { record }).await {
        Ok(_) => ClientResponse::Token { token: secret },
        Err(message) => error(message),
    }
}

/// A joining node asks for its certificate (the connection was made with a
/// join token). The leader signs it; then the token is consumed through
/// Raft, and only if that commits does the joiner get the certificate. So
/// of several nodes presenting one token, one joins; and a request that
/// cannot be signed does not use the token up.
pub async fn join(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    csr: String,
    node_id: u64,
    peer_addr: String,
) -> ClientResponse {
    tracing::info!(node = format!("{node_id:x}"), %peer_addr, principal = %s.principal.name, "node asks to join");
    let req = LeaderRequest::SignJoin {
        csr,
        node_id,
        peer_addr,
    };
    let grant = match ctx.cluster.on_leader(req).await {
        Ok(LeaderResponse::JoinGrant(g)) => g,
        Ok(other) => return unexpected(other),
        Err(e) => return error(e.to_string()),
    };
    let consume = Command::ConsumeJoinToken {
        hash: s.principal.token_hash.clone(),
    };
    match ctx.write(consume).await {
        Ok(_) => {
            tracing::info!(node = format!("{node_id:x}"), principal = %s.principal.name, "join token used");
            ClientResponse::Joined(Box::new(grant))
        }
        Err(message) => {
            tracing::warn!(node = format!("{node_id:x}"), principal = %s.principal.name, %message, "join refused");
            error(message)
        }
    }
}

/// `cairn server upgrade [--finish]` and `cairn server members`: the
/// leader's view of the members' releases and the cluster version. When the
/// leader runs a release without this request (0.1.0), this node answers
/// with what it knows itself, and cannot finish the upgrade.
pub async fn upgrade(ctx: &Arc<Ctx>, finish: bool) -> ClientResponse {
    let leader = ctx.raft.leader_id();
    let old_leader = leader.filter(|id| *id != ctx.raft.id()).and_then(|id| {
        ctx.peers
            .speaks(id)
            .filter(|(sp, _)| sp.version < 5)
            .map(|(sp, _)| (id, sp.release))
    });
    if let Some((id, release)) = old_leader {
        if finish {
            return error(format!(
                "the leader (node {id:x}) runs cairn-node {release}, which cannot finish an upgrade: upgrade it first"
            ));
        }
        return ClientResponse::Upgrade(crate::upgrade::status(&ctx.cluster, &ctx.upgrade));
    }
    match ctx
        .cluster
        .on_leader(LeaderRequest::Upgrade { finish })
        .await
    {
        Ok(LeaderResponse::Upgrade(status)) => ClientResponse::Upgrade(status),
        Ok(LeaderResponse::Error(e)) => error(e),
        Ok(other) => unexpected(other),
        Err(e) => error(e.to_string()),
    }
}

pub async fn remove_member(ctx: &Arc<Ctx>, s: &ConnSession, id: u64) -> ClientResponse {
    tracing::info!(node = format!("{id:x}"), principal = %s.principal.name, "removing a member");
    match ctx
        .cluster
        .on_leader(LeaderRequest::RemoveMember { node_id: id })
        .await
    {
        Ok(LeaderResponse::Done) => ClientResponse::Ok,
        Ok(other) => unexpected(other),
        Err(e) => error(e.to_string()),
    }
}

fn error(message: String) -> ClientResponse {
    ClientResponse::Error { message }
}

fn unexpected(r: LeaderResponse) -> ClientResponse {
    match r {
        LeaderResponse::Error(message) => ClientResponse::Error { message },
        other => error(format!("unexpected answer from the leader: {other:?}")),
    }
}
