//! The replicated state machine: a pure `apply(&mut State, &Request) -> Response`.
//!
//! Invariants:
//! - `apply` does no I/O and reads no clock: time comes in `Request::now_ms`,
//!   stamped by the proposer, so every member computes the same state.
//! - A command that is not allowed in the current state changes nothing and
//!   answers `Response::Error`.
//! - Sequence numbers (v1, v2…) are per (project, app, kind) and never go
//!   back while the app exists (a removed app's records all go).
//! - App names are unique in the cluster ignoring case, whatever the project:
//!   each answers at `APP.DOMAIN`, so a second project's app of the same
//!   name is refused rather than shadowing the first (`remove.rs`).
//! - A job in a final state never changes again; an operation that finished
//!   never changes again except its resource state (active → destroyed).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cairn_protocol::instance::DeploymentRef;
use cairn_protocol::types::{
    App, ConfigScope, ConfigVar, Hostname, Instance, InstanceState, Job, JobId, JobKind, JobSpec,
    JobState, OpCompletion, OpId, OpKind, OpStatus, Operation, Project, Removed, ResourceState,
    Route, Runner, RunnerRecord, TokenRecord, TokenScope, MAX_OP_OUTPUT_BYTES,
};
use serde::{Deserialize, Serialize};

mod env_limit;
mod remove;
pub mod runners;
#[cfg(test)]
mod tests;
pub mod v0;

pub use remove::check_name;

/// A write proposed through Raft.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub now_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// A plain register (used by tests and the chaos workload).
    Put {
        key: String,
        value: String,
    },
    CreateJob {
        spec: JobSpec,
        requested_by: String,
    },
    AssignJob {
        id: JobId,
        runner: String,
    },
    StartJob {
        id: JobId,
    },
    FinishJob {
        id: JobId,
        state: JobState,
        error: Option<String>,
    },
    RequestCancel {
        id: JobId,
    },
    /// Fail every assigned/running job (and its running operations): used
    /// when a node takes over after a restart and the job streams are gone.
    FailInterrupted {
        reason: String,
    },
    /// Fail these jobs if they are still assigned or running (a new leader
    /// takes over jobs whose runner streams were on the old one).
    FailJobs {
        ids: Vec<JobId>,
        reason: String,
    },
    /// Fail the unfinished jobs held by one runner.
    FailRunnerJobs {
        runner: String,
        reason: String,
    },
    BeginOperation {
        job_id: JobId,
        kind: OpKind,
        plugin: String,
        input_seq: Option<u64>,
    },
    CompleteOperation(OpCompletion),
    SetResourceState {
        op_id: OpId,
        state: ResourceState,
    },
    RegisterRunner {
        runner: Runner,
    },
    CreateToken {
        record: TokenRecord,
    },
    /// Consume the one-time bootstrap token and store the first user token.
    ConsumeBootstrap {
        bootstrap_hash: String,
        user: TokenRecord,
    },
    RevokeToken {
        id: String,
    },
    SetConfig {
        var: ConfigVar,
    },
    DeleteConfig {
        scope: ConfigScope,
        name: String,
    },
    /// Record the cluster CA (certificate and key) so that whichever node
    /// leads can sign joining nodes' certificates. Set once; the same CA
    /// again is a no-op, another CA is refused.
    SetClusterCa {
        ca: ClusterCa,
    },
    /// A member was removed: its certificate no longer admits it as a peer.
    MarkNodeRemoved {
        id: u64,
    },
    /// `command`, applied at most once per (`client`, `request`): a retry
    /// of a write whose answer was lost gets the first answer and changes
    /// nothing. The state remembers the last [`MAX_APPLIED_REQUESTS`] ids.
    Idempotent {
        client: u64,
        request: u64,
        command: Box<Command>,
    },
    /// Replace the whole state with a saved one (`cairn-node --restore`).
    /// Only a brand new cluster accepts it: one with no CA and no tokens yet.
    /// The state travels in release 0.1.0's shape ([`v0::State`]), which is
    /// what this command's encoding has always been; what later releases
    /// added to the state is not restored (the cluster version is the new
    /// cluster's own).
    Restore {
        state: Box<v0::State>,
    },
    /// An entrypoint (re)connected to `instance.node`: insert or replace
    /// the instance, connected since `now`.
    InstanceConnected {
        instance: Instance,
    },
    /// Refresh `last_seen_ms` of an instance still connected to `node`.
    InstanceSeen {
        deployment: OpId,
        id: String,
        node: u64,
    },
    /// The instance's connection to `node` ended. Ignored when it has
    /// reconnected to another node since.
    InstanceDisconnected {
        deployment: OpId,
        id: String,
        node: u64,
    },
    /// The leader's sweep: connected instances not seen for `stale_ms`
    /// (their node died) become disconnected; disconnected instances whose
    /// last sight is `expire_ms` old are forgotten.
    SweepInstances {
        stale_ms: u64,
        expire_ms: u64,
    },
    /// Register a custom hostname for the URL service (its `created_ms` is
    /// set to `now`). Refused when the name is not a valid host name or is
    /// taken.
    RegisterHostname {
        hostname: Hostname,
    },
    DeleteHostname {
        name: String,
    },
    /// Remove an app (`app: Some`) or every app of a project and the
    /// project itself (`None`) with everything recorded about them; refused
    /// while a deployment is active or a job unfinished (see `remove.rs`).
    RemoveApps {
        project: String,
        app: Option<String>,
    },
    /// Use up a join token: refused when it is not a valid (unexpired,
    /// unrevoked) join token, so of the nodes that present one only the first
    /// gets its certificate.
    ConsumeJoinToken {
        hash: String,
    },
    /// Every voter speaks protocol `version` (or newer): from now on the
    /// cluster uses what that version added. Never goes back; refused when
    /// it would. Gated: proposed only when every voter runs a release that
    /// knows it (see `crate::upgrade`).
    SetClusterVersion {
        version: u32,
    },
    // Issue 19 (proposed only once the cluster is on protocol 5).
    /// Store a runner token with the labels its runners get.
    CreateRunnerToken {
        record: Box<TokenRecord>,
        labels: BTreeMap<String, String>,
    },
    /// Enroll runner `id` with its key (see `state::runners`); `token`: the
    /// hash of the runner token it presented, which adopts it.
    EnrollRunner {
        id: String,
        key_fingerprint: String,
        labels: BTreeMap<String, String>,
        token: Option<String>,
    },
    /// Adopt, reject or forget an enrolled runner.
    DecideRunner {
        id: String,
        decision: cairn_protocol::api::RunnerDecision,
        by: String,
    },
    /// Node `node` holds uploaded source `digest` (`size` bytes).
    RecordSource {
        digest: String,
        size: u64,
        node: u64,
    },
}

/// An uploaded source: its size and the nodes that hold its bytes (see
/// `crate::sources`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub size: u64,
    pub nodes: BTreeSet<u64>,
    pub stored_ms: u64,
}

/// Why `name` is not a host name the URL service can serve: lowercase
/// labels of letters, digits and hyphens (not at either end), 1–63 bytes
/// each, 253 in all.
pub fn check_hostname(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a valid host name: {why}"));
    if name.is_empty() || name.len() > 253 {
        return bad("1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated part has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("use lowercase letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a part cannot start or end with '-'");
        }
    }
    Ok(())
}

/// How many (client, request) ids the state remembers for
/// [`Command::Idempotent`]; the oldest are forgotten first. A retry must
/// come before this many other idempotent writes (minutes at any real rate).
pub const MAX_APPLIED_REQUESTS: usize = 10_000;

/// The cluster CA as replicated in the state.
///
/// Trade-off: every member (and every snapshot and log file) holds the CA
/// key, so any node can sign a joining node's certificate when it leads, and
/// losing the bootstrap node loses nothing. The cost is that reading any
/// member's data dir yields the CA key — but such a reader already holds a
/// node certificate and the whole replicated state, so it already has the
/// cluster. `Debug` never prints the key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub enum Response {
    #[default]
    Ok,
    Error(String),
    Value(Option<String>),
    JobCreated(JobId),
    OperationStarted {
        id: OpId,
        sequence: u64,
    },
    /// How many records a bulk command changed.
    Changed(u64),
    /// What [`Command::RemoveApps`] removed.
    Removed(Removed),
}

/// The whole replicated state. Serialized whole into snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub registers: BTreeMap<String, String>,
    pub projects: BTreeMap<String, Project>,
    /// Key: (project, app).
    pub apps: BTreeMap<(String, String), App>,
    pub operations: BTreeMap<OpId, Operation>,
    /// Last sequence per (project, app, kind).
    pub sequences: BTreeMap<(String, String, OpKind), u64>,
    pub jobs: BTreeMap<JobId, Job>,
    pub runners: BTreeMap<String, Runner>,
    /// Key: token hash.
    pub tokens: BTreeMap<String, TokenRecord>,
    pub config: BTreeMap<(ConfigScope, String), ConfigVar>,
    pub next_job: JobId,
    pub next_op: OpId,
    /// The cluster CA, set by the bootstrapping node (see [`ClusterCa`]).
    pub cluster_ca: Option<ClusterCa>,
    /// Ids of nodes removed from the cluster: never admitted as peers again.
    pub removed_nodes: BTreeSet<u64>,
    /// Answers of recent [`Command::Idempotent`] writes, by (client, request).
    pub applied_requests: BTreeMap<(u64, u64), Response>,
    /// Their ids, oldest first (bounded by [`MAX_APPLIED_REQUESTS`]).
    pub applied_order: VecDeque<(u64, u64)>,
    /// App instances by (deployment op id, instance id).
    pub instances: BTreeMap<(OpId, String), Instance>,
    /// Release routes by (project, app, workspace): set when a release
    /// operation succeeds.
    pub routes: BTreeMap<(String, String, String), Route>,
    /// Custom hostnames of the URL service, by name.
    pub hostnames: BTreeMap<String, Hostname>,
    // Added after release 0.1.0: each with `#[serde(default)]` (format 1
    // reads older records) and known to `v0`'s conversions.
    /// The protocol version every voter speaks, set by
    /// [`Command::SetClusterVersion`]; `None` in a cluster made by release
    /// 0.1.0 that has not finished an upgrade (see [`State::cluster_version`]).
    #[serde(default)]
    pub cluster_version: Option<u32>,
    /// Enrolled runners by id (issue 19; see `state::runners`).
    #[serde(default)]
    pub runner_records: BTreeMap<String, RunnerRecord>,
    /// The labels runner tokens give, by token hash.
    #[serde(default)]
    pub runner_token_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Uploaded job sources by digest (issue 19; the bytes are on the nodes).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceRecord>,
}

impl State {
    /// The protocol version every voter speaks: what the cluster may use.
    /// A cluster made by release 0.1.0 is on its version until an upgrade
    /// finishes.
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
            .unwrap_or(cairn_protocol::handshake::V0_1_PROTOCOL_VERSION)
    }

    /// Apply one committed request. Pure: no I/O, no clock.
    pub fn apply(&mut self, req: &Request) -> Response {
        self.apply_command(req.now_ms, &req.command)
    }

    fn apply_command(&mut self, now: u64, command: &Command) -> Response {
        match command {
            Command::Idempotent {
                client,
                request,
                command,
            } => self.apply_once(now, (*client, *request), command),
            Command::Put { key, value } => {
                Response::Value(self.registers.insert(key.clone(), value.clone()))
            }
            Command::CreateJob { spec, requested_by } => self.create_job(now, spec, requested_by),
            Command::AssignJob { id, runner } => self.with_job(*id, |job| {
                if job.state != JobState::Queued {
                    return Err(format!(
                        "job {} is {}, not queued",
                        job.id,
                        job.state.word()
                    ));
                }
                job.state = JobState::Assigned;
                job.runner = Some(runner.clone());
                job.assigned_ms = Some(now);
                Ok(())
            }),
            Command::StartJob { id } => self.with_job(*id, |job| {
                if job.state != JobState::Assigned {
                    return Err(format!(
                        "job {} is {}, not assigned",
                        job.id,
                        job.state.word()
                    ));
                }
                job.state = JobState::Running;
                Ok(())
            }),
            Command::FinishJob { id, state, error } => {
                if !state.is_final() {
                    return Response::Error(format!("{} is not a final job state", state.word()));
                }
                let r = self.with_job(*id, |job| {
                    if job.state.is_final() {
                        return Err(format!(
                            "job {} already finished ({})",
                            job.id,
                            job.state.word()
                        ));
                    }
                    job.state = *state;
                    job.error = error.clone();
                    job.completed_ms = Some(now);
                    Ok(())
                });
                if r == Response::Ok {
                    let reason = error
                        .clone()
                        .unwrap_or_else(|| format!("job {id} ended ({})", state.word()));
                    self.fail_running_ops(now, |op| op.job_id == *id, &reason);
                }
                r
            }
            Command::RequestCancel { id } => {
                let r = self.with_job(*id, |job| {
                    if job.state.is_final() {
                        return Err(format!(
                            "job {} already finished ({})",
                            job.id,
                            job.state.word()
                        ));
                    }
                    if job.state == JobState::Queued {
                        job.state = JobState::Cancelled;
                        job.completed_ms = Some(now);
                        job.error = Some("cancelled before it started".into());
                    } else {
                        job.cancel_requested = true;
                    }
                    Ok(())
                });
                r
            }
            Command::FailInterrupted { reason } => {
                let n = self.fail_jobs(
                    now,
                    |j| matches!(j.state, JobState::Assigned | JobState::Running),
                    reason,
                );
                Response::Changed(n)
            }
            Command::FailJobs { ids, reason } => {
                let n = self.fail_jobs(
                    now,
                    |j| {
                        matches!(j.state, JobState::Assigned | JobState::Running)
                            && ids.contains(&j.id)
                    },
                    reason,
                );
                Response::Changed(n)
            }
            Command::FailRunnerJobs { runner, reason } => {
                let n = self.fail_jobs(
                    now,
                    |j| {
                        matches!(j.state, JobState::Assigned | JobState::Running)
                            && j.runner.as_deref() == Some(runner)
                    },
                    reason,
                );
                Response::Changed(n)
            }
            Command::BeginOperation {
                job_id,
                kind,
                plugin,
                input_seq,
            } => self.begin_operation(now, *job_id, *kind, plugin, *input_seq),
            Command::CompleteOperation(c) => {
                let op_id = c.op_id;
                let Some(op) = self.operations.get_mut(&op_id) else {
                    return Response::Error(format!("no operation {op_id}"));
                };
                if op.status != OpStatus::Running {
                    return Response::Error(format!(
                        "operation {op_id} already finished ({})",
                        op.status.word()
                    ));
                }
                if c.status == OpStatus::Running {
                    return Response::Error("an operation cannot complete as running".into());
                }
                op.status = c.status;
                op.result = c.result.clone();
                op.error = c.error.clone();
                let (kept, dropped) = bound_output(&c.output);
                op.output = kept;
                op.output_dropped = c.output_dropped + dropped;
                op.url = c.url.clone();
                op.completed_ms = Some(now);
                if op.kind == OpKind::Release && op.status == OpStatus::Success {
                    let op = op.clone();
                    self.route_release(&op);
                }
                Response::Ok
            }
            Command::SetResourceState { op_id, state } => {
                let Some(op) = self.operations.get_mut(op_id) else {
                    return Response::Error(format!("no operation {op_id}"));
                };
                op.state = *state;
                Response::Ok
            }
            Command::RegisterRunner { runner } => {
                let mut r = runner.clone();
                if let Some(old) = self.runners.get(&runner.id) {
                    r.registered_ms = old.registered_ms;
                }
                r.last_seen_ms = now;
                self.runners.insert(r.id.clone(), r);
                Response::Ok
            }
            Command::CreateToken { record } => {
                if self.tokens.contains_key(&record.hash) {
                    return Response::Error("token already exists".into());
                }
                if record.scope == TokenScope::Bootstrap
                    && self
                        .tokens
                        .values()
                        .any(|t| t.scope == TokenScope::Bootstrap)
                {
                    return Response::Error("the cluster was already bootstrapped".into());
                }
                self.tokens.insert(record.hash.clone(), record.clone());
                Response::Ok
            }
            Command::ConsumeBootstrap {
                bootstrap_hash,
                user,
            } => {
                match self.tokens.get_mut(bootstrap_hash) {
                    Some(t) if t.scope == TokenScope::Bootstrap && !t.revoked => t.revoked = true,
                    _ => {
                        return Response::Error(
                            "the bootstrap token is not valid or was already used".into(),
                        )
                    }
                }
                self.tokens.insert(user.hash.clone(), user.clone());
                Response::Ok
            }
            Command::RevokeToken { id } => {
                let mut n = 0;
                for t in self.tokens.values_mut().filter(|t| &t.id == id) {
                    t.revoked = true;
                    n += 1;
                }
                if n == 0 {
                    Response::Error(format!("no token {id}"))
                } else {
                    Response::Ok
                }
            }
            Command::SetConfig { var } => {
                if let Err(e) = self.check_env_size(var) {
                    return Response::Error(e);
                }
                self.config
                    .insert((var.scope.clone(), var.name.clone()), var.clone());
                Response::Ok
            }
            Command::DeleteConfig { scope, name } => {
                match self.config.remove(&(scope.clone(), name.clone())) {
                    Some(_) => Response::Ok,
                    None => Response::Error(format!("no config variable {name}")),
                }
            }
            Command::SetClusterCa { ca } => match &self.cluster_ca {
                None => {
                    self.cluster_ca = Some(ca.clone());
                    Response::Ok
                }
                Some(have) if have == ca => Response::Ok,
                Some(_) => Response::Error("the cluster already has another CA".into()),
            },
            Command::MarkNodeRemoved { id } => {
                self.removed_nodes.insert(*id);
                Response::Ok
            }
            Command::Restore { state } => {
                if self.cluster_ca.is_some() || !self.tokens.is_empty() {
                    return Response::Error(
                        "only a new, empty cluster can be restored into".into(),
                    );
                }
                *self = State::from((**state).clone());
                Response::Ok
            }
            Command::SetClusterVersion { version } => {
                let now_at = self.cluster_version();
                if *version < now_at {
                    return Response::Error(format!(
                        "the cluster version is {now_at}; it never goes back (to {version})"
                    ));
                }
                self.cluster_version = Some(*version);
                Response::Ok
            }
            Command::InstanceConnected { instance } => {
                let Some(op) = self.operations.get(&instance.deployment) else {
                    return Response::Error(format!("no deployment {}", instance.deployment));
                };
                if op.kind != OpKind::Deployment {
                    return Response::Error(format!(
                        "operation {} is not a deployment",
                        instance.deployment
                    ));
                }
                let mut i = instance.clone();
                i.since_ms = now;
                i.last_seen_ms = now;
                i.state = InstanceState::Connected;
                self.instances.insert((i.deployment, i.id.clone()), i);
                Response::Ok
            }
            Command::InstanceSeen {
                deployment,
                id,
                node,
            } => match self.instances.get_mut(&(*deployment, id.clone())) {
                Some(i) if i.node == *node && i.state == InstanceState::Connected => {
                    i.last_seen_ms = now;
                    Response::Ok
                }
                _ => Response::Changed(0),
            },
            Command::InstanceDisconnected {
                deployment,
                id,
                node,
            } => match self.instances.get_mut(&(*deployment, id.clone())) {
                Some(i) if i.node == *node && i.state == InstanceState::Connected => {
                    i.state = InstanceState::Disconnected;
                    i.last_seen_ms = now;
                    Response::Changed(1)
                }
                _ => Response::Changed(0),
            },
            Command::SweepInstances {
                stale_ms,
                expire_ms,
            } => {
                let mut n = 0;
                for i in self.instances.values_mut() {
                    if i.state == InstanceState::Connected
                        && now.saturating_sub(i.last_seen_ms) >= *stale_ms
                    {
                        i.state = InstanceState::Disconnected;
                        n += 1;
                    }
                }
                let before = self.instances.len();
                self.instances.retain(|_, i| {
                    i.state == InstanceState::Connected
                        || now.saturating_sub(i.last_seen_ms) < *expire_ms
                });
                Response::Changed(n + (before - self.instances.len()) as u64)
            }
            Command::RegisterHostname { hostname } => {
                let name = hostname.name.as_str();
                if let Err(e) = check_hostname(name) {
                    return Response::Error(e);
                }
                if let Some(old) = self.hostnames.get(name) {
                    return Response::Error(format!(
                        "hostname {name} is registered already (for {}/{}); delete it first",
                        old.project, old.app
                    ));
                }
                let mut h = hostname.clone();
                h.created_ms = now;
                self.hostnames.insert(h.name.clone(), h);
                Response::Ok
            }
            Command::DeleteHostname { name } => match self.hostnames.remove(name) {
                Some(_) => Response::Ok,
                None => Response::Error(format!("no hostname {name} is registered")),
            },
            Command::RemoveApps { project, app } => self.remove_apps(project, app.as_deref()),
            Command::CreateRunnerToken { record, labels } => {
                self.create_runner_token(record, labels)
            }
            Command::EnrollRunner {
                id,
                key_fingerprint,
                labels,
                token,
            } => self.enroll_runner(now, id, key_fingerprint, labels, token.as_deref()),
            Command::DecideRunner { id, decision, by } => {
                self.decide_runner(now, id, *decision, by)
            }
            Command::RecordSource { digest, size, node } => {
                let rec = self
                    .sources
                    .entry(digest.clone())
                    .or_insert_with(|| SourceRecord {
                        size: *size,
                        nodes: BTreeSet::new(),
                        stored_ms: now,
                    });
                if rec.size != *size {
                    return Response::Error(format!(
                        "source {digest} was recorded with {} bytes, not {size}",
                        rec.size
                    ));
                }
                rec.nodes.insert(*node);
                Response::Ok
            }
            Command::ConsumeJoinToken { hash } => match self.tokens.get_mut(hash) {
                Some(t)
                    if t.scope == TokenScope::Join
                        && !t.revoked
                        && t.expires_ms.is_none_or(|e| e > now) =>
                {
                    t.revoked = true;
                    Response::Ok
                }
                _ => Response::Error(
                    "the join token was used already or has expired (a join token admits one node): make a new one with `cairn server join-token`".into(),
                ),
            },
        }
    }

    /// Apply `command` unless `key` was applied before: then answer what it
    /// answered the first time and change nothing.
    fn apply_once(&mut self, now: u64, key: (u64, u64), command: &Command) -> Response {
        if let Some(r) = self.applied_requests.get(&key) {
            return r.clone();
        }
        if matches!(command, Command::Idempotent { .. }) {
            return Response::Error("an idempotent request cannot wrap another".into());
        }
        let r = self.apply_command(now, command);
        self.applied_requests.insert(key, r.clone());
        self.applied_order.push_back(key);
        while self.applied_order.len() > MAX_APPLIED_REQUESTS {
            if let Some(old) = self.applied_order.pop_front() {
                self.applied_requests.remove(&old);
            }
        }
        r
    }

    /// How many records the state holds (entries of all its maps): a cheap
    /// measure of its size, O(1). The snapshot cadence scales with it
    /// (`raft::cadence`), since building a snapshot costs time linear in it.
    pub fn record_count(&self) -> u64 {
        let State {
            registers,
            projects,
            apps,
            operations,
            sequences,
            jobs,
            runners,
            tokens,
            config,
            next_job: _,
            next_op: _,
            cluster_ca: _,
            removed_nodes,
            applied_requests,
            applied_order: _,
            instances,
            routes,
            hostnames,
            cluster_version: _,
            runner_records,
            runner_token_labels,
            sources,
        } = self;
        [
            registers.len(),
            projects.len(),
            apps.len(),
            operations.len(),
            sequences.len(),
            jobs.len(),
            runners.len(),
            tokens.len(),
            config.len(),
            removed_nodes.len(),
            applied_requests.len(),
            instances.len(),
            routes.len(),
            hostnames.len(),
            runner_records.len(),
            runner_token_labels.len(),
            sources.len(),
        ]
        .iter()
        .map(|n| *n as u64)
        .sum()
    }

    /// The token record for a secret, if it is valid at `now`.
    pub fn token(&self, hash: &str, now_ms: u64) -> Option<&TokenRecord> {
        self.tokens
            .get(hash)
            .filter(|t| !t.revoked && t.expires_ms.is_none_or(|e| e > now_ms))
    }

    /// Config variables of one scope (a range scan: cost follows the scope's
    /// size, not the catalog's), or all of them.
    pub fn config_in(&self, scope: Option<&ConfigScope>) -> Vec<ConfigVar> {
        match scope {
            None => self.config.values().cloned().collect(),
            Some(sc) => self
                .config
                .range((sc.clone(), String::new())..)
                .take_while(|((s, _), _)| s == sc)
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// Operations of one kind, optionally filtered, in id order.
    pub fn operations_of(
        &self,
        kind: OpKind,
        project: Option<&str>,
        app: Option<&str>,
    ) -> Vec<Operation> {
        self.operations
            .values()
            .filter(|o| o.kind == kind)
            .filter(|o| project.is_none_or(|p| o.project == p))
            .filter(|o| app.is_none_or(|a| o.app == a))
            .cloned()
            .collect()
    }

    /// A release `op` succeeded: the app's route follows it, in full or
    /// (its job asked for a weight below 100) as the canary next to the
    /// deployment released in full before.
    fn route_release(&mut self, op: &Operation) {
        let Some(seq) = op.input_seq else {
            return;
        };
        let weight = match self.jobs.get(&op.job_id).map(|j| &j.spec.kind) {
            Some(JobKind::Release {
                weight: Some(w), ..
            }) => (*w).clamp(1, 100),
            _ => 100,
        };
        let key = (op.project.clone(), op.app.clone(), op.workspace.clone());
        let route = match self.routes.get(&key) {
            Some(r) if weight < 100 && r.primary != seq => Route {
                primary: r.primary,
                canary: Some((seq, weight)),
            },
            _ => Route {
                primary: seq,
                canary: None,
            },
        };
        self.routes.insert(key, route);
    }

    /// The deployment `r` names: deployment `r.sequence` of the app, or by
    /// default the one released in full (the newest successful deployment if
    /// none was released). An error says why there is none.
    pub fn deployment_for(&self, r: &DeploymentRef) -> Result<&Operation, String> {
        let of_app = |kind: OpKind| {
            self.operations.values().filter(move |o| {
                o.kind == kind
                    && o.project == r.project
                    && o.app == r.app
                    && o.workspace == r.workspace
            })
        };
        let by_seq = |seq: u64| {
            of_app(OpKind::Deployment)
                .find(|o| o.sequence == seq)
                .ok_or_else(|| format!("app {} has no deployment v{seq}", r.app))
        };
        let released = self
            .routes
            .get(&(r.project.clone(), r.app.clone(), r.workspace.clone()))
            .map(|route| route.primary);
        let op = match (r.sequence, released) {
            (Some(seq), _) | (None, Some(seq)) => by_seq(seq)?,
            (None, None) => of_app(OpKind::Deployment)
                .filter(|o| o.status == OpStatus::Success)
                .max_by_key(|o| o.sequence)
                .ok_or_else(|| {
                    format!("app {} (project {}) has no deployment", r.app, r.project)
                })?,
        };
        if op.state != ResourceState::Active || op.status != OpStatus::Success {
            return Err(format!(
                "deployment v{} of {} is {}",
                op.sequence,
                r.app,
                if op.state != ResourceState::Active {
                    "destroyed"
                } else {
                    "not a successful deployment"
                }
            ));
        }
        Ok(op)
    }

    fn create_job(&mut self, now: u64, spec: &JobSpec, requested_by: &str) -> Response {
        if let Err(e) = check_name("project", &spec.project)
            .and_then(|()| check_name("app", &spec.app))
            .and_then(|()| self.check_app_name_free(&spec.project, &spec.app))
        {
            return Response::Error(e);
        }
        self.projects
            .entry(spec.project.clone())
            .or_insert_with(|| Project {
                name: spec.project.clone(),
                created_ms: now,
            });
        self.apps
            .entry((spec.project.clone(), spec.app.clone()))
            .or_insert_with(|| App {
                project: spec.project.clone(),
                name: spec.app.clone(),
                created_ms: now,
            });
        self.next_job += 1;
        let id = self.next_job;
        self.jobs.insert(
            id,
            Job {
                id,
                spec: spec.clone(),
                state: JobState::Queued,
                runner: None,
                requested_by: requested_by.to_string(),
                queued_ms: now,
                assigned_ms: None,
                completed_ms: None,
                error: None,
                cancel_requested: false,
            },
        );
        Response::JobCreated(id)
    }

    fn with_job(&mut self, id: JobId, f: impl FnOnce(&mut Job) -> Result<(), String>) -> Response {
        match self.jobs.get_mut(&id) {
            None => Response::Error(format!("no job {id}")),
            Some(job) => match f(job) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error(e),
            },
        }
    }

    fn begin_operation(
        &mut self,
        now: u64,
        job_id: JobId,
        kind: OpKind,
        plugin: &str,
        input_seq: Option<u64>,
    ) -> Response {
        let Some(job) = self.jobs.get(&job_id) else {
            return Response::Error(format!("no job {job_id}"));
        };
        if job.state != JobState::Running {
            return Response::Error(format!("job {job_id} is {}, not running", job.state.word()));
        }
        let key = (job.spec.project.clone(), job.spec.app.clone(), kind);
        let seq = self.sequences.entry(key).or_insert(0);
        *seq += 1;
        let sequence = *seq;
        self.next_op += 1;
        let id = self.next_op;
        self.operations.insert(
            id,
            Operation {
                id,
                kind,
                project: job.spec.project.clone(),
                app: job.spec.app.clone(),
                workspace: job.spec.workspace.clone(),
                sequence,
                status: OpStatus::Running,
                plugin: plugin.to_string(),
                job_id,
                requested_by: job.requested_by.clone(),
                started_ms: now,
                completed_ms: None,
                result: None,
                error: None,
                output: Vec::new(),
                output_dropped: 0,
                url: None,
                input_seq,
                state: ResourceState::Active,
            },
        );
        Response::OperationStarted { id, sequence }
    }

    fn fail_jobs(&mut self, now: u64, which: impl Fn(&Job) -> bool, reason: &str) -> u64 {
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| which(j))
            .map(|j| j.id)
            .collect();
        for id in &ids {
            if let Some(job) = self.jobs.get_mut(id) {
                job.state = JobState::Error;
                job.error = Some(reason.to_string());
                job.completed_ms = Some(now);
            }
            self.fail_running_ops(now, |op| op.job_id == *id, reason);
        }
        ids.len() as u64
    }

    fn fail_running_ops(&mut self, now: u64, which: impl Fn(&Operation) -> bool, reason: &str) {
        for op in self
            .operations
            .values_mut()
            .filter(|o| o.status == OpStatus::Running && which(o))
        {
            op.status = OpStatus::Error;
            op.error = Some(reason.to_string());
            op.completed_ms = Some(now);
        }
    }
}

/// Keep the newest lines that fit in [`MAX_OP_OUTPUT_BYTES`]; returns the
/// kept lines and how many were dropped.
pub fn bound_output(lines: &[String]) -> (Vec<String>, u64) {
    let mut total = 0usize;
    let mut start = lines.len();
    while start > 0 {
        let len = lines[start - 1].len() + 1;
        if total + len > MAX_OP_OUTPUT_BYTES {
            break;
        }
        total += len;
        start -= 1;
    }
    (lines[start..].to_vec(), start as u64)
}

/// A disconnected instance is forgotten this long after it was last seen.
pub const INSTANCE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(5 * 60);
