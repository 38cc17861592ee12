//! Connecting the CLI to a node: resolve the context (flag, `CAIRN_CONTEXT`,
//! the current one, or the embedded default), dial with the pinned CA, say
//! hello with the user token.
//!
//! A context remembers the cluster's members. [`connect`] dials the
//! context's address first and, when it does not answer, the other members
//! (staggered, first to answer wins, bounded by [`FAILOVER_DEADLINE`]), so a
//! CLI keeps working when its node dies. Every successful connect refreshes
//! the member list from the node it reached.

use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial, RpcError, Session};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::context::{self, Context};
use crate::local;

/// How long the preferred address has alone before the others are tried too.
pub const FAILOVER_STAGGER: Duration = Duration::from_millis(750);
/// Longest a connect may take over all addresses.
pub const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);

pub async fn resolve(explicit: Option<&str>, quiet: bool) -> anyhow::Result<Context> {
    let name = match explicit {
        Some(n) => Some(n.to_string()),
        None => match std::env::var("CAIRN_CONTEXT") {
            Ok(n) if !n.is_empty() => Some(n),
            _ => context::current()?,
        },
    };
    match name {
        Some(n) => {
            let c = context::load(&n)?;
            if c.local {
                Ok(local::ensure(quiet).await?)
            } else {
                Ok(c)
            }
        }
        None => Ok(local::ensure(quiet).await?),
    }
}

fn dial(ctx: &Context, addr: &str) -> Dial {
    Dial {
        addr: addr.to_string(),
        ca_fingerprint: ctx.ca_fingerprint.clone(),
        identity: None,
        role: Role::Client,
        token: ctx.token.clone(),
        agent: format!("cairn {}", cairn_protocol::VERSION),
        limits: TransportLimits::CLIENT,
    }
}

/// Connect to the context's node, or to another member when it does not
/// answer; then refresh the context's member list (saved when it changed).
pub async fn connect(ctx: &Context) -> Result<Session, RpcError> {
    let session = connect_any(ctx).await?;
    if !ctx.local {
        refresh_members(ctx, &session).await;
    }
    Ok(session)
}

/// Dial `ctx.addresses()`: the first at once, each next one
/// [`FAILOVER_STAGGER`] later (or as soon as an earlier one failed); the
/// first to answer wins. A refusal (bad token, wrong version) is final: the
/// other members would say the same. Errors report the preferred address.
async fn connect_any(ctx: &Context) -> Result<Session, RpcError> {
    let addrs = ctx.addresses();
    if addrs.len() == 1 {
        return rpc::connect(&dial(ctx, &addrs[0])).await;
    }
    let deadline = tokio::time::Instant::now() + FAILOVER_DEADLINE;
    let mut pending = FuturesUnordered::new();
    let mut next = 0usize;
    let mut first_err: Option<RpcError> = None;
    let mut stagger = Box::pin(tokio::time::sleep(Duration::ZERO));
    loop {
        if next >= addrs.len() && pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = &mut stagger, if next < addrs.len() => {
                let d = dial(ctx, &addrs[next]);
                let i = next;
                pending.push(async move { (i, rpc::connect(&d).await) });
                next += 1;
                stagger.as_mut().reset(tokio::time::Instant::now() + FAILOVER_STAGGER);
            }
            Some((i, r)) = pending.next(), if !pending.is_empty() => match r {
                Ok(s) => {
                    if i > 0 {
                        tracing::info!(from = %addrs[0], to = %addrs[i], "the context's node did not answer; using another member");
                    }
                    return Ok(s);
                }
                Err(e @ RpcError::Refused(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(addr = %addrs[i], error = %e, "member did not answer");
                    if i == 0 || first_err.is_none() {
                        first_err = Some(e);
                    }
                    // Try the next one now rather than after the stagger.
                    stagger.as_mut().reset(tokio::time::Instant::now());
                }
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Err(first_err.unwrap_or_else(|| RpcError::Unreachable {
        addr: addrs.join(", "),
        reason: format!("no member answered within {FAILOVER_DEADLINE:?}"),
    }))
}

/// Ask the node for the members and store their addresses in the context
/// when they changed. Best effort: a failure here never fails the command.
async fn refresh_members(ctx: &Context, session: &Session) {
    let Ok(ClientResponse::ServerInfo(info)) =
        rpc::call(&session.conn, &ClientRequest::ServerInfo).await
    else {
        return;
    };
    let mut members: Vec<String> = info
        .members
        .into_iter()
        .map(|(_, addr)| addr)
        .filter(|a| *a != ctx.address)
        .collect();
    members.sort();
    if members.is_empty() || members == ctx.members {
        return;
    }
    // Only a saved context is updated (not one being created).
    let Ok(mut saved) = context::load(&ctx.name) else {
        return;
    };
    if saved.address != ctx.address || saved.ca_fingerprint != ctx.ca_fingerprint {
        return;
    }
    saved.members = members;
    if let Err(e) = context::save(&saved, true) {
        tracing::debug!(error = %e, "could not save the refreshed member list");
    }
}
