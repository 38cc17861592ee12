//! Exec sessions: `cairn exec` reaches an instance through the node its
//! entrypoint is connected to, on a stream that node opens on the
//! entrypoint's own (outbound) connection (see [`crate::attached`]).
//!
//! Invariants:
//! - Only a user token opens an exec session (`services::dispatch` keeps
//!   other tokens out; [`open`] checks again).
//! - The client's connection closing ends the session (its command is hung
//!   up by the entrypoint), even when the client had finished its side.

use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::frame;
use cairn_protocol::instance::{DeploymentRef, ExecSpec, NodeToEntrypoint};
use cairn_protocol::types::InstanceState;

use crate::attached::{self, splice, RELAY_BROKEN};
use crate::ctx::Ctx;
use crate::services::ConnSession;

/// How long an exec waits for an instance of the deployment to be connected.
pub const INSTANCE_WAIT: Duration = Duration::from_secs(5);

/// `ClientRequest::Exec`: find the instance, open the session through its
/// node, then copy bytes both ways until both sides end.
pub async fn open(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    target: DeploymentRef,
    instance: Option<String>,
    spec: ExecSpec,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let fail = |message: String| ClientResponse::Error { message };
    let picked = async {
        if let Some(reason) = spec.invalid() {
            return Err(reason);
        }
        let me = ctx.identity.node_id;
        // Right after a deploy its instances may still be connecting: wait
        // a little for one before saying there is none.
        let deadline = tokio::time::Instant::now() + INSTANCE_WAIT;
        let (deployment, chosen) = loop {
            let target = target.clone();
            let prefix = instance.clone();
            let (op, found) = ctx
                .read(move |st| {
                    let op = st.deployment_for(&target)?.clone();
                    let found: Vec<_> = st
                        .instances
                        .values()
                        .filter(|i| i.deployment == op.id && i.state == InstanceState::Connected)
                        .filter(|i| {
                            prefix
                                .as_ref()
                                .is_none_or(|p| i.id.starts_with(p.as_str()))
                        })
                        .cloned()
                        .collect();
                    Ok::<_, String>((op, found))
                })
                .await
                .and_then(|r| r)?;
            if found.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let chosen = match (&instance, found.as_slice()) {
                (Some(p), []) => Err(format!(
                    "deployment v{} of {} has no connected instance {p:?} (see `cairn instance list`)",
                    op.sequence, op.app
                )),
                (None, []) => Err(format!(
                    "deployment v{} of {} has no connected instance (are its instances running under cairn-entrypoint?)",
                    op.sequence, op.app
                )),
                (Some(p), many) if many.len() > 1 => Err(format!(
                    "{p:?} matches {} instances of v{}; give more of the id",
                    many.len(),
                    op.sequence
                )),
                // Prefer an instance connected to this node: one hop less.
                (_, all) => Ok(all
                    .iter()
                    .find(|i| i.node == me)
                    .or_else(|| all.iter().min_by_key(|i| (i.since_ms, &i.id)))
                    .map(|i| (i.id.clone(), i.node))),
            }?;
            break (op.id, chosen);
        };
        let (id, node) = chosen.ok_or("no instance")?;
        let header = NodeToEntrypoint::Exec(spec.clone());
        let streams = attached::open(&ctx.attached, &ctx.cluster, me, node, deployment, &id, &header).await?;
        Ok::<_, String>((id, node, streams))
    }
    .await;
    let (id, node, (esend, erecv)) = match picked {
        Ok(p) => p,
        Err(message) => {
            let _ = frame::write(&mut send, &fail(message)).await;
            let _ = send.finish();
            return;
        }
    };
    tracing::debug!(instance = %id, node = format!("{node:x}"), "exec session opened");
    let opened = ClientResponse::ExecOpened { instance: id, node };
    if frame::write(&mut send, &opened).await.is_err() {
        let mut esend = esend;
        let _ = esend.reset(RELAY_BROKEN.into());
        return;
    }
    // A client that dies mid-session (its connection closes) may have
    // finished its side already: watch its connection too.
    let client_gone = s.conn.closed();
    ctx.metrics.exec_sessions.inc();
    ctx.metrics.exec_active.inc();
    splice((send, recv), (esend, erecv), client_gone).await;
    ctx.metrics.exec_active.dec();
}
