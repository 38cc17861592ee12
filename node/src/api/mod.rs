//! The node's service layer: every question and action a client may put to the cluster,
//! typed, answered with `Result<T, ApiError>`, whatever transport brought it. Who may do
//! what is one table ([`auth::check`]). The QUIC services (`crate::services`) and the HTTP
//! API (`crate::http`) are thin adapters over these functions, so the CLI and the HTTP API
//! cannot drift apart.
//!
//! A new endpoint goes here first (a function taking the [`Ctx`] and the [`Caller`]), then
//! gets its adapters: a `ClientRequest` arm in `services::route` and a route in
//! `http::router`, each a few lines.

pub mod app;
pub mod auth;
mod error;

use std::sync::Arc;

use cairn_protocol::api::{JobEvent, MemberInfo, RaftProgress, ServerInfo};
use cairn_protocol::instance::DeploymentRef;
use cairn_protocol::types::{
    ConfigScope, ConfigVar, Hostname, Instance, Job, JobId, JobSpec, JobState, OpKind, Operation,
    Removed, Runner, TokenScope,
};

pub use error::{ApiError, ErrorKind};

use crate::ctx::Ctx;
use crate::state::{check_hostname, Command, Response};

/// Who is asking: the token's name and scope, and the protocol version its client speaks
/// (jobs of newer kinds are left out for an older client).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: TokenScope,
    pub speaks: u32,
    /// The release of the caller's client ("0.1.0"), for messages.
    pub release: String,
}

impl Caller {
    /// `Ok` when this caller may do `action` ([`auth::check`]).
    pub fn may(&self, action: auth::Action) -> Result<(), ApiError> {
        auth::check(&self.scope, action)
    }
}

/// The typed write and read of the service layer, on the node's context.
impl Ctx {
    /// Commit a command (through the leader, wherever this node is), with typed errors: a
    /// refusal of the state machine, or the cluster not reachable from here
    /// ([`ApiError`]).
    pub async fn submit(&self, command: Command) -> Result<Response, ApiError> {
        match self
            .cluster
            .write_request(self.cluster.request(command))
            .await
        {
            Ok(Response::Error(e)) => Err(ApiError::refusal(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(ApiError::cluster(e).context("the cluster could not record it")),
        }
    }

    /// A linearizable read, on any node, with typed errors (see [`crate::cluster::Cluster::read_state`]).
    pub async fn query<F, T>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&crate::state::State) -> T,
    {
        if cfg!(debug_assertions) && crate::cluster::chaos_bug("stale-read") {
            return Ok(self.raft.read_local(f));
        }
        self.cluster.read_state(f).await.map_err(ApiError::cluster)
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

/// Operations of one kind, optionally of one project and app, in id order.
pub async fn operations(
    ctx: &Ctx,
    kind: OpKind,
    project: Option<String>,
    app: Option<String>,
) -> Result<Vec<Operation>, ApiError> {
    ctx.query(move |s| s.operations_of(kind, project.as_deref(), app.as_deref()))
        .await
        .map_err(|e| e.context("cannot read the catalog"))
}

/// The projects and their apps, as (project, app) pairs, sorted.
pub async fn apps(ctx: &Ctx) -> Result<Vec<(String, String)>, ApiError> {
    ctx.query(|s| s.apps.keys().cloned().collect())
        .await
        .map_err(|e| e.context("cannot read the catalog"))
}

pub async fn runners(ctx: &Ctx) -> Result<Vec<Runner>, ApiError> {
    ctx.query(|s| s.runners.values().cloned().collect())
        .await
        .map_err(|e| e.context("cannot read the catalog"))
}

/// Whether the caller's client can decode `job`: a job of a kind newer than the protocol
/// it speaks (a status job, to a 0.1.0 CLI) is left out of lists and refused by id,
/// instead of breaking the whole answer.
fn readable(job: &Job, caller: &Caller) -> bool {
    job.spec.since_version() <= caller.speaks
}

/// The newest `limit` jobs (0: all), newest first.
pub async fn jobs(ctx: &Ctx, caller: &Caller, limit: u32) -> Result<Vec<Job>, ApiError> {
    let limit = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    let caller = caller.clone();
    ctx.query(move |st| {
        st.jobs
            .values()
            .rev()
            .filter(|j| readable(j, &caller))
            .take(limit)
            .cloned()
            .collect()
    })
    .await
    .map_err(|e| e.context("cannot read jobs"))
}

pub async fn job(ctx: &Ctx, caller: &Caller, id: JobId) -> Result<Job, ApiError> {
    let job = ctx
        .query(move |st| st.jobs.get(&id).cloned())
        .await
        .map_err(|e| e.context("cannot read jobs"))?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if !readable(&job, caller) {
        return Err(ApiError::invalid(format!(
            "job {} is a {} job, which cairn {} cannot show: upgrade this CLI",
            job.id,
            job.spec.kind.name(),
            caller.release
        )));
    }
    Ok(job)
}

/// Config variables of one scope, or of every scope (secrets included: the transports
/// mask them where they show them).
pub async fn config(ctx: &Ctx, scope: Option<ConfigScope>) -> Result<Vec<ConfigVar>, ApiError> {
    ctx.query(move |s| s.config_in(scope.as_ref()))
        .await
        .map_err(|e| e.context("cannot read config"))
}

pub async fn hostnames(ctx: &Ctx) -> Result<Vec<Hostname>, ApiError> {
    ctx.query(|st| st.hostnames.values().cloned().collect())
        .await
}

pub async fn instances(ctx: &Ctx) -> Result<Vec<Instance>, ApiError> {
    ctx.query(|st| st.instances.values().cloned().collect())
        .await
}

/// This node: its id, release, protocol, the leader and members it knows, its Raft
/// progress, its ingress (no round trip: what this node holds now).
pub fn server_info(ctx: &Ctx) -> ServerInfo {
    let m = ctx.raft.metrics();
    let members = ctx.raft.members();
    let p = ctx.raft.progress();
    ServerInfo {
        node_id: ctx.identity.node_id,
        version: cairn_protocol::VERSION.to_string(),
        protocol: cairn_protocol::handshake::PROTOCOL_VERSION,
        ca_fingerprint: ctx.identity.ca_fingerprint.clone(),
        leader: m.current_leader,
        members,
        raft: RaftProgress {
            last_log_index: p.last_log_index,
            last_applied: p.last_applied,
            snapshot_index: p.snapshot_index,
            purged_index: p.purged_index,
            snapshots_installed: p.snapshots_installed,
        },
        ingress: ctx.ingress.clone(),
    }
}

/// The members as the leader sees them.
pub async fn members(ctx: &Ctx) -> Result<Vec<MemberInfo>, ApiError> {
    use crate::peer::msg::{LeaderRequest, LeaderResponse};
    match ctx.cluster.on_leader(LeaderRequest::Members).await {
        Ok(LeaderResponse::Members(m)) => Ok(m),
        Ok(other) => Err(ApiError::internal(format!(
            "unexpected answer from the leader: {other:?}"
        ))),
        Err(e) => Err(ApiError::new(
            match e {
                crate::cluster::RouteError::NoLeader { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::OutcomeUnknown,
            },
            e.to_string(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Actions

/// Queue a job; its id.
pub async fn queue_job(ctx: &Ctx, caller: &Caller, spec: JobSpec) -> Result<JobId, ApiError> {
    // A job of a newer kind is held in the replicated log: every member must be able to
    // read it, so it waits for the cluster version that brought it.
    let since = spec.since_version();
    if since > cairn_protocol::handshake::OLDEST_PROTOCOL_VERSION {
        let v = ctx
            .query(|st| st.cluster_version())
            .await
            .map_err(|e| e.context("cannot read the cluster version"))?;
        if v < since {
            return Err(ApiError::conflict(format!(
                "a {} job needs cluster version {since}, and this cluster is at version {v}: finish the upgrade first (`cairn server upgrade --finish`)",
                spec.kind.name()
            )));
        }
    }
    let resp = ctx
        .submit(Command::CreateJob {
            spec,
            requested_by: caller.name.clone(),
        })
        .await?;
    let id = crate::jobs::created_job(&resp)
        .ok_or_else(|| ApiError::internal(format!("unexpected answer {resp:?}")))?;
    ctx.jobs.publish(
        id,
        JobEvent::State {
            state: JobState::Queued,
            runner: None,
        },
    );
    ctx.jobs.wake();
    Ok(id)
}

/// Ask a job to stop: a queued one is cancelled at once, a running one's runner is told.
pub async fn cancel_job(ctx: &Ctx, id: JobId) -> Result<(), ApiError> {
    ctx.submit(Command::RequestCancel { id }).await?;
    let state = ctx
        .raft
        .read_local(|s| s.jobs.get(&id).map(|j| (j.state, j.error.clone())));
    if let Some((JobState::Cancelled, error)) = state {
        ctx.jobs.publish(
            id,
            JobEvent::Finished {
                state: JobState::Cancelled,
                error,
            },
        );
    } else {
        ctx.jobs.cancel(id);
    }
    Ok(())
}

/// Longest config variable name and value accepted.
pub const MAX_CONFIG_NAME: usize = cairn_protocol::config::MAX_NAME;
pub const MAX_CONFIG_VALUE: usize = cairn_protocol::config::MAX_VALUE;

pub async fn set_config(ctx: &Arc<Ctx>, var: ConfigVar) -> Result<(), ApiError> {
    if var.name.is_empty()
        || var.name.len() > MAX_CONFIG_NAME
        || var.name.contains('=')
        || var.name.contains('\0')
    {
        return Err(ApiError::invalid(format!(
            "invalid config variable name {:?}",
            var.name
        )));
    }
    if var.value.len() > MAX_CONFIG_VALUE {
        return Err(ApiError::invalid(format!(
            "config value of {} bytes is over the {MAX_CONFIG_VALUE}-byte limit",
            var.value.len()
        )));
    }
    // CHAOS-HARNESS PLANTED BUG (debug builds only): acknowledge before the
    // write commits, so chaos/ can show its checker catches lost writes.
    if crate::cluster::chaos_bug("ack-before-commit") {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ctx.submit(Command::SetConfig { var }).await;
        });
        return Ok(());
    }
    ctx.submit(Command::SetConfig { var }).await.map(|_| ())
}

pub async fn delete_config(ctx: &Ctx, scope: ConfigScope, name: String) -> Result<(), ApiError> {
    ctx.submit(Command::DeleteConfig { scope, name })
        .await
        .map(|_| ())
}

/// Register `name` for `target` (checked: a valid host name outside the apps' own names,
/// an existing app, an existing deployment when one is named).
pub async fn register_hostname(
    ctx: &Ctx,
    name: String,
    target: DeploymentRef,
) -> Result<(), ApiError> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    check_hostname(&name).map_err(ApiError::invalid)?;
    let domain = ctx
        .ingress
        .as_ref()
        .map_or(crate::ingress::DEFAULT_DOMAIN, |i| i.domain.as_str());
    if let Some(message) = crate::ingress::route::reserved(domain, &name) {
        return Err(ApiError::invalid(message));
    }
    let t = target.clone();
    ctx.query(move |st| {
        if !st.apps.contains_key(&(t.project.clone(), t.app.clone())) {
            return Err(ApiError::not_found(format!(
                "project {} has no app {}",
                t.project, t.app
            )));
        }
        if let Some(seq) = t.sequence {
            let exists = st.operations.values().any(|o| {
                o.kind == OpKind::Deployment
                    && o.project == t.project
                    && o.app == t.app
                    && o.workspace == t.workspace
                    && o.sequence == seq
            });
            if !exists {
                return Err(ApiError::not_found(format!(
                    "app {} has no deployment v{seq}",
                    t.app
                )));
            }
        }
        Ok(())
    })
    .await??;
    let hostname = Hostname {
        name,
        project: target.project,
        app: target.app,
        workspace: target.workspace,
        deployment: target.sequence,
        created_ms: 0,
    };
    ctx.submit(Command::RegisterHostname { hostname })
        .await
        .map(|_| ())
}

pub async fn delete_hostname(ctx: &Ctx, name: String) -> Result<(), ApiError> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    ctx.submit(Command::DeleteHostname { name })
        .await
        .map(|_| ())
}

/// Remove an app, or a project with all its apps, from the records (the state machine
/// refuses while deployments are active or jobs unfinished).
pub async fn remove_apps(
    ctx: &Ctx,
    project: String,
    app: Option<String>,
) -> Result<Removed, ApiError> {
    match ctx.submit(Command::RemoveApps { project, app }).await? {
        Response::Removed(r) => Ok(r),
        other => Err(ApiError::internal(format!(
            "unexpected answer from the state machine: {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Streams

/// How often a followed job's replicated record is checked (the events come from the node
/// that drives the job; its end may be recorded elsewhere, e.g. by a new leader failing the
/// job after a failover).
pub const RECORD_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// A job's events for one follower: the history this node holds, then live events, ending
/// with `Finished` (then `None`).
pub struct JobEvents {
    ctx: Arc<Ctx>,
    id: JobId,
    queue: std::collections::VecDeque<JobEvent>,
    live: Option<tokio::sync::broadcast::Receiver<JobEvent>>,
    tick: tokio::time::Interval,
    done: bool,
}

/// Follow job `id`: its record now, and its events.
pub async fn follow_job(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    id: JobId,
) -> Result<(Job, JobEvents), ApiError> {
    let job = job(ctx, caller, id).await?;
    let (queue, live) = match ctx.jobs.subscribe(id, !job.state.is_final()) {
        Some(sub) => (sub.history.into_iter().collect(), sub.live),
        // A job that ended before this node's last start: its record is all there is.
        None => (
            [
                JobEvent::State {
                    state: job.state,
                    runner: job.runner.clone(),
                },
                JobEvent::Finished {
                    state: job.state,
                    error: job.error.clone(),
                },
            ]
            .into_iter()
            .collect(),
            None,
        ),
    };
    let events = JobEvents {
        ctx: ctx.clone(),
        id,
        queue,
        live,
        tick: tokio::time::interval(RECORD_POLL),
        done: false,
    };
    Ok((job, events))
}

impl JobEvents {
    /// The next event; `None` after `Finished` (or when the feed ends).
    pub async fn next(&mut self) -> Option<JobEvent> {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        if self.done {
            return None;
        }
        if let Some(ev) = self.queue.pop_front() {
            self.done = matches!(ev, JobEvent::Finished { .. });
            return Some(ev);
        }
        let live = match self.live.as_mut() {
            Some(l) => l,
            None => {
                self.done = true;
                return None;
            }
        };
        loop {
            let next = tokio::select! {
                r = live.recv() => r,
                _ = self.tick.tick() => {
                    let id = self.id;
                    let rec = self.ctx.raft.read_local(|s| s.jobs.get(&id).map(|j| (j.state, j.error.clone())));
                    let Some((state, error)) = rec.filter(|(st, _)| st.is_final()) else {
                        continue;
                    };
                    // Everything already relayed goes first.
                    loop {
                        match live.try_recv() {
                            Ok(JobEvent::Finished { .. }) => break,
                            Ok(ev) => self.queue.push_back(ev),
                            Err(TryRecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        }
                    }
                    self.queue.push_back(JobEvent::Finished { state, error });
                    let ev = self.queue.pop_front();
                    self.done = matches!(ev, Some(JobEvent::Finished { .. }));
                    return ev;
                }
            };
            return match next {
                Ok(ev) => {
                    self.done = matches!(ev, JobEvent::Finished { .. });
                    Some(ev)
                }
                Err(RecvError::Lagged(n)) => Some(JobEvent::Output {
                    step: 0,
                    stream: cairn_protocol::types::Stream::Info,
                    line: format!("({n} events skipped: this client fell behind)"),
                }),
                Err(RecvError::Closed) => {
                    self.done = true;
                    None
                }
            };
        }
    }
}
