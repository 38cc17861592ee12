//! Entrypoint service: app instances register on a long-lived stream, get
//! their deployment's resolved configuration on it, and its changes.
//!
//! Invariants:
//! - Only a connection on the entrypoint ALPN, authenticated with an
//!   entrypoint token, registers instances, and only of the token's own
//!   deployment (`server::refused_for_scope` keeps such a token from every
//!   other request).
//! - Writes per instance are bounded: one on connect, one on disconnect, and
//!   a `last_seen` refresh at most every [`INSTANCE_SEEN_INTERVAL`].
//! - Instances of a node that died are marked disconnected, and
//!   disconnected instances forgotten after [`INSTANCE_EXPIRY`], by the
//!   leader's sweep ([`run_sweeper`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::{ClientResponse, EntrypointHello, MAX_INSTANCE_ID};
use cairn_protocol::config::resolve_env;
use cairn_protocol::config::scopes_for;
use cairn_protocol::frame;
use cairn_protocol::handshake::Role;
use cairn_protocol::instance::EntrypointToNode;
use cairn_protocol::types::{Instance, InstanceState, OpId, OpKind, ResourceState, TokenScope};
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::logs::Shipper;
use crate::services::ConnSession;
use crate::state::{Command, State};

/// How often a connected instance's `last_seen_ms` is refreshed.
pub const INSTANCE_SEEN_INTERVAL: Duration = Duration::from_secs(10);
/// A connected instance not refreshed for this long (its node died) is
/// marked disconnected by the leader's sweep.
pub const INSTANCE_STALE: Duration = Duration::from_secs(45);
pub use crate::state::INSTANCE_EXPIRY;
/// How often the leader sweeps instances.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);
/// Shortest pause between two looks at the configuration of one instance
/// (the state changes on every applied entry; this bounds the work).
const CONFIG_CHECK_MIN: Duration = Duration::from_millis(250);

/// Where a deployment's configuration comes from.
#[derive(Debug, Clone)]
struct Target {
    project: String,
    app: String,
    workspace: String,
    sequence: u64,
    /// The entrypoint speaks protocol 5 or later: it is also sent the config files, as
    /// `cairn.file.PATH` entries of its map (an older one would make them env vars).
    files: bool,
}

impl Target {
    fn env(&self, st: &State) -> BTreeMap<String, String> {
        let vars: Vec<_> = scopes_for(&self.project, &self.app, &self.workspace)
            .iter()
            .flat_map(|sc| st.config_in(Some(sc)))
            .collect();
        let mut env = resolve_env(&vars, &self.project, &self.app, &self.workspace);
        if self.files {
            let files = cairn_protocol::config::resolve_files(
                &vars,
                &self.project,
                &self.app,
                &self.workspace,
            );
            env.extend(
                files
                    .into_iter()
                    .map(|(path, content)| (cairn_protocol::config::file_var(&path), content)),
            );
        }
        env
    }
}

/// `RegisterInstance`: owns the stream for as long as the instance is
/// connected.
pub async fn register(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    hello: EntrypointHello,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let target = match admit(ctx, s, &hello).await {
        Ok(t) => Target {
            files: s.speaks.version >= 5,
            ..t
        },
        Err(message) => {
            let _ = frame::write(&mut send, &ClientResponse::Error { message }).await;
            let _ = send.finish();
            return;
        }
    };
    let node = ctx.identity.node_id;
    let instance = Instance {
        id: hello.instance_id.clone(),
        deployment: hello.deployment_id,
        project: target.project.clone(),
        app: target.app.clone(),
        workspace: target.workspace.clone(),
        sequence: target.sequence,
        node,
        pid: hello.pid,
        started_ms: hello.started_ms,
        since_ms: 0,
        last_seen_ms: 0,
        state: InstanceState::Connected,
    };
    if let Err(message) = ctx.write(Command::InstanceConnected { instance }).await {
        let _ = frame::write(&mut send, &ClientResponse::Error { message }).await;
        let _ = send.finish();
        return;
    }
    tracing::info!(deployment = hello.deployment_id, instance = %hello.instance_id, "instance connected");
    ctx.attached
        .attach(hello.deployment_id, &hello.instance_id, &s.conn);
    ctx.logs.connected(hello.deployment_id, &hello.instance_id);
    serve_registered(ctx, s, &target, &hello, &mut send, recv).await;
    ctx.logs
        .disconnected(hello.deployment_id, &hello.instance_id);
    ctx.attached
        .detach(hello.deployment_id, &hello.instance_id, &s.conn);
    tracing::info!(deployment = hello.deployment_id, instance = %hello.instance_id, "instance disconnected");
    let gone = Command::InstanceDisconnected {
        deployment: hello.deployment_id,
        id: hello.instance_id,
        node,
    };
    if let Err(e) = ctx.write(gone).await {
        // The leader's sweep marks it once its refreshes stop.
        tracing::debug!(error = %e, "could not record the instance's disconnection");
    }
}

/// Send the configuration, then push its changes, take its log lines and
/// refresh `last_seen` until the entrypoint goes away.
async fn serve_registered(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    target: &Target,
    hello: &EntrypointHello,
    send: &mut quinn::SendStream,
    recv: quinn::RecvStream,
) {
    // The first answer reflects every write acknowledged before it.
    let mut env = match ctx.read(|st| target.env(st)).await {
        Ok(env) => env,
        Err(_) => ctx.raft.read_local(|st| target.env(st)),
    };
    let members = ctx.raft.members().into_iter().map(|(_, a)| a).collect();
    let first = ClientResponse::InstanceRegistered {
        env: env.clone(),
        members,
    };
    if frame::write(send, &first).await.is_err() {
        return;
    }
    // Log lines: their own task, since a frame read must not be cancelled.
    let shipper = Shipper {
        node: ctx.identity.node_id,
        deployment: hello.deployment_id,
        sequence: target.sequence,
        instance: hello.instance_id.clone(),
    };
    let mut reader = tokio::spawn(take_logs(ctx.clone(), shipper, recv));
    let _abort = tokio_util::task::AbortOnDrop::new(reader.abort_handle());
    let mut metrics = ctx.raft.metrics_watch();
    let mut applied = metrics.borrow_and_update().last_applied;
    let start = tokio::time::Instant::now() + INSTANCE_SEEN_INTERVAL;
    let mut seen = tokio::time::interval_at(start, INSTANCE_SEEN_INTERVAL);
    seen.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut reader => return,
            _ = s.conn.closed() => return,
            _ = seen.tick() => {
                let cmd = Command::InstanceSeen {
                    deployment: hello.deployment_id,
                    id: hello.instance_id.clone(),
                    node: ctx.identity.node_id,
                };
                if let Err(e) = ctx.write(cmd).await {
                    tracing::debug!(error = %e, "could not refresh an instance");
                }
            }
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let now_applied = metrics.borrow_and_update().last_applied;
                if now_applied == applied {
                    continue;
                }
                applied = now_applied;
                let new = ctx.raft.read_local(|st| target.env(st));
                if new != env {
                    env = new;
                    let push = ClientResponse::Env { env: env.clone() };
                    if frame::write(send, &push).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(CONFIG_CHECK_MIN).await;
            }
        }
    }
}

/// Reads the entrypoint's frames (log batches) into `store` until the
/// stream ends or breaks.
async fn take_logs(ctx: Arc<Ctx>, from: Shipper, mut recv: quinn::RecvStream) {
    // The entrypoint's running count of dropped lines, as last seen.
    let mut dropped_seen = 0u64;
    loop {
        match frame::read::<_, EntrypointToNode>(&mut recv).await {
            Ok(Some(EntrypointToNode::Logs { lines, dropped })) => {
                let bytes: usize = lines.iter().map(|l| l.line.len()).sum();
                ctx.metrics.log_bytes.inc_by(bytes as u64);
                if dropped > dropped_seen {
                    ctx.metrics.log_lines_dropped.inc_by(dropped - dropped_seen);
                    dropped_seen = dropped;
                }
                ctx.logs.append(&from, lines, dropped);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(instance = %from.instance, error = %e, "entrypoint stream broke");
                return;
            }
        }
    }
}

/// Check the connection, the token and the hello; find the deployment.
async fn admit(ctx: &Ctx, s: &ConnSession, hello: &EntrypointHello) -> Result<Target, String> {
    let TokenScope::Entrypoint { deployment, .. } = &s.principal.scope else {
        return Err("registering an instance needs an entrypoint token".into());
    };
    if s.role != Role::Entrypoint {
        return Err(
            "registering an instance needs the entrypoint connection (ALPN cairn-entrypoint)"
                .into(),
        );
    }
    if *deployment != hello.deployment_id {
        return Err(format!(
            "this entrypoint token is for deployment {deployment}, not deployment {}",
            hello.deployment_id
        ));
    }
    let id = &hello.instance_id;
    if id.is_empty()
        || id.len() > MAX_INSTANCE_ID
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "invalid instance id {id:?} (1 to {MAX_INSTANCE_ID} of A-Z a-z 0-9 - _ .)"
        ));
    }
    deployment_target(ctx, *deployment).await
}

/// Where deployment `id`'s configuration comes from; an error when it is
/// not an active deployment.
async fn deployment_target(ctx: &Ctx, id: OpId) -> Result<Target, String> {
    let find = move |st: &State| st.operations.get(&id).cloned();
    let op = match ctx.raft.read_local(find) {
        Some(op) => Some(op),
        // Recorded through the leader: this node may lag.
        None => ctx.read(find).await?,
    };
    match op {
        Some(op) if op.kind == OpKind::Deployment && op.state == ResourceState::Active => {
            Ok(Target {
                project: op.project,
                app: op.app,
                workspace: op.workspace,
                sequence: op.sequence,
                files: false,
            })
        }
        Some(op) if op.kind == OpKind::Deployment => Err(format!(
            "deployment {id} ({}/v{}) was destroyed",
            op.app, op.sequence
        )),
        _ => Err(format!("no deployment {id}")),
    }
}

/// Check that `app` names deployment `id` (minting an entrypoint token).
pub async fn check_deployment(ctx: &Ctx, app: &str, id: OpId) -> Result<(), String> {
    let t = deployment_target(ctx, id).await?;
    if t.app != app {
        return Err(format!(
            "deployment {id} belongs to app {}, not {app}",
            t.app
        ));
    }
    Ok(())
}

/// Every [`SWEEP_INTERVAL`]: on every node, drop the log windows of
/// instances gone for [`crate::logs::WINDOW_EXPIRY`]; on the leader, mark
/// instances of dead nodes disconnected and forget old disconnected ones.
pub async fn run_sweeper(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = ctx.logs.expire(crate::logs::WINDOW_EXPIRY);
        if expired > 0 {
            tracing::debug!(
                windows = expired,
                "dropped the log windows of departed instances"
            );
        }
        if !ctx.raft.is_leader() {
            continue;
        }
        let stale_ms = INSTANCE_STALE.as_millis() as u64;
        let expire_ms = INSTANCE_EXPIRY.as_millis() as u64;
        let now = cairn_protocol::now_ms();
        let due = ctx.raft.read_local(|st| {
            st.instances.values().any(|i| {
                let age = now.saturating_sub(i.last_seen_ms);
                match i.state {
                    InstanceState::Connected => age >= stale_ms,
                    InstanceState::Disconnected => age >= expire_ms,
                }
            })
        });
        if !due {
            continue;
        }
        match ctx
            .write(Command::SweepInstances {
                stale_ms,
                expire_ms,
            })
            .await
        {
            Ok(r) => tracing::debug!(?r, "swept instances"),
            Err(e) => tracing::debug!(error = %e, "could not sweep instances"),
        }
    }
}
