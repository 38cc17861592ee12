//! The job queue's live half: connected runners, the scheduler that offers
//! queued jobs to them, the relay that carries offers to runners connected
//! to other nodes, and the per-job event hubs that relay a runner's events
//! to every client attached to the job.
//!
//! The durable half (job records and their states) is in the replicated
//! [`State`](crate::state::State); everything here is per node and rebuilt
//! from connections and reports.
//!
//! Runners (and CLIs, which register as runners on their client
//! connection) connect to any node. Every node reports its runners (id,
//! labels, the job it carries) to the leader ([`LeaderRequest::ReportRunners`]):
//! when one registers or leaves, when a relayed job starts or ends, when the
//! leader changes, and every [`REPORT_INTERVAL`]. The leader keeps each
//! node's report for [`REMOTE_RUNNER_TTL`]: a node that stops reporting
//! loses its runners. For a runner on another node the leader opens a peer
//! stream to that node ([`PeerRequest::RelayOffer`]); that node opens the
//! offer stream on the runner's own connection and copies frames both ways
//! ([`relay_offer`]). The leader drives both kinds the same way (`drive_inner`
//! on a stream pair).
//!
//! Invariants:
//! - Only the leader schedules, and it drives every job it offers, local or
//!   relayed; a node that becomes leader first fails the assigned/running
//!   jobs it does not drive (their job streams went to the previous leader,
//!   directly or through a relay) with [`TAKEOVER_REASON`], then offers
//!   queued jobs. A job is offered at most once: it runs at most once.
//! - At most one job per (project, app) is assigned or running at a time.
//! - A runner (by id, wherever it is connected) holds at most one job at a
//!   time: a runner is free for the leader only if no local entry, no claim
//!   of the leader and no report names an assigned or running job for it.
//! - Every assigned job ends in a final state: the runner says so, or the
//!   driving task records why it could not (runner lost, stream broken,
//!   runner no longer connected to the node the leader thought it was on).
//! - A job stream that breaks is reset, not finished, on every hop: a runner
//!   whose leader (or relay) gave up sees its job stream fail. A relay ends
//!   its runner stream when the leader's stream breaks, or when the leader
//!   that asked is no longer the leader.
//! - Only cluster members (node certificates, checked on the peer ALPN) can
//!   ask for a relay or report runners, and a node reports only its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_protocol::api::{JobEvent, NodeToRunner, RunnerToNode};
use cairn_protocol::frame;
use cairn_protocol::types::{Job, JobId, JobState, RunnerKind, RunnerTarget};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::peer::{LeaderRequest, LeaderResponse, PeerRequest, PeerResponse};
use crate::raft::NodeId;
use crate::state::{Command, Response};

/// Events kept per job for clients that attach late.
pub const MAX_HUB_HISTORY: usize = 20_000;
/// Finished jobs whose event history stays in memory.
pub const MAX_FINISHED_HUBS: usize = 256;
/// How long a runner has to accept or decline an offer.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a job for a disconnected CLI runner stays queued before it fails.
pub const CLI_RUNNER_GRACE: Duration = Duration::from_secs(30);
/// How often a node reports its runners to the leader (also on every change).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the leader keeps a node's last report of its runners.
pub const REMOTE_RUNNER_TTL: Duration = Duration::from_secs(5);
/// How long the leader may take to answer a report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long opening a relayed offer may take (dial, and the relay node's
/// answer that it opened the runner's stream).
pub const RELAY_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// After the leader ended its side of a relayed job stream, how long the
/// relay waits for the runner to end its side.
pub const RELAY_DRAIN: Duration = Duration::from_secs(5);
/// How often the driving task checks the job record for a cancel request
/// (a client may ask through any node).
pub const CANCEL_POLL: Duration = Duration::from_millis(500);
/// How often a runner that speaks protocol 5 says it holds its job
/// (`NodeToRunner::StartedWithLease`).
pub const LEASE_HEARTBEAT: Duration = Duration::from_secs(2);
/// A runner's lease on its job: the node it is connected to fails the job
/// ("runner … lost") when nothing came from the runner for this long (three
/// heartbeats missed: its process, machine or network is gone).
pub const RUNNER_LEASE: Duration = Duration::from_secs(6);

/// Why a lease ran out.
fn lease_lost() -> String {
    format!(
        "nothing came from it for {} s, its lease (it sends a heartbeat every {} s): its process, its machine or its network is gone",
        RUNNER_LEASE.as_secs(),
        LEASE_HEARTBEAT.as_secs()
    )
}
/// Most runners one node may report.
pub const MAX_REPORTED_RUNNERS: usize = 10_000;
/// QUIC error code for a job stream reset because the other side is gone.
pub const JOB_STREAM_ABORTED: u32 = 1;
/// How long a stopping node waits for the jobs it drives or relays to end
/// ([`Jobs::drain`]) before it stops anyway (they then fail as their
/// runner's stream breaks).
pub const JOB_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
    /// Tells the reporter to send this node's runners to the leader now.
    report: Arc<Notify>,
    reports_paused: Arc<AtomicBool>,
    /// Set when the node is stopping (see [`Jobs::drain`]).
    draining: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    /// Runners connected to this node.
    runners: HashMap<String, RunnerEntry>,
    /// On the leader: what the other nodes reported.
    remote: HashMap<NodeId, RemoteNode>,
    /// On the leader: remote runners it offered a job to (runner → job).
    remote_claims: HashMap<String, JobId>,
    hubs: HashMap<JobId, Hub>,
    finished_order: Vec<JobId>,
    cancels: HashMap<JobId, Arc<Notify>>,
    next_session: u64,
}

struct RunnerEntry {
    conn: quinn::Connection,
    labels: BTreeMap<String, String>,
    /// The job this node carries for it: offered by this node (the leader),
    /// or relayed by it for the leader.
    busy: Option<JobId>,
    session: u64,
    /// The protocol version its connection speaks: a job of a newer kind
    /// is not offered to it (it could not decode the offer).
    version: u32,
}

struct RemoteNode {
    addr: String,
    expires: Instant,
    runners: Vec<RunnerReport>,
}

/// What the job scheduler and the offer relays need of the node: the cluster handle, this
/// node's runners and its metrics.
#[derive(Clone)]
pub struct JobsCtx {
    pub cluster: Arc<Cluster>,
    pub jobs: Jobs,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl JobsCtx {
    /// Commit a command through the leader (see [`Cluster::write`]).
    async fn write(&self, command: Command) -> Result<crate::state::Response, String> {
        self.cluster.write(command).await
    }

    /// A linearizable read (see [`Cluster::read`]).
    async fn read<F, T>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(&crate::state::State) -> T,
    {
        self.cluster.read(f).await
    }
}

pub use crate::peer::msg::RunnerReport;

/// A runner as this node knows it (diagnostics and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRunner {
    pub id: String,
    /// `None`: connected to this node; else the node that reported it.
    pub node: Option<NodeId>,
    /// The job this node carries for it (local), or the job the leader
    /// claimed it for or its node reported (remote).
    pub busy: Option<JobId>,
}

/// Where the leader reaches a runner it claimed.
enum Route {
    Local(quinn::Connection),
    Relay { node: NodeId, addr: String },
}

struct Claim {
    runner: String,
    route: Route,
    cancel: Arc<Notify>,
}

struct Hub {
    history: Vec<JobEvent>,
    dropped: u64,
    tx: broadcast::Sender<JobEvent>,
    finished: bool,
}

impl Hub {
    fn new() -> Hub {
        Hub {
            history: Vec::new(),
            dropped: 0,
            tx: broadcast::channel(4096).0,
            finished: false,
        }
    }
}

/// What an attaching client gets: the history so far and the live feed.
pub struct Subscription {
    pub history: Vec<JobEvent>,
    pub live: Option<broadcast::Receiver<JobEvent>>,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while holding it; the maps are still
        // consistent enough to keep serving (each update is a single insert/remove).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the scheduler to look at the queue again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Record an event for a job and relay it to attached clients.
    pub fn publish(&self, job: JobId, ev: JobEvent) {
        let mut inner = self.lock();
        let finished = matches!(ev, JobEvent::Finished { .. });
        let hub = inner.hubs.entry(job).or_insert_with(Hub::new);
        if hub.finished {
            return;
        }
        if hub.history.len() >= MAX_HUB_HISTORY {
            hub.history.remove(1.min(hub.history.len() - 1));
            hub.dropped += 1;
        }
        hub.history.push(ev.clone());
        let _ = hub.tx.send(ev);
        if finished {
            hub.finished = true;
            inner.finished_order.push(job);
            while inner.finished_order.len() > MAX_FINISHED_HUBS {
                let old = inner.finished_order.remove(0);
                inner.hubs.remove(&old);
            }
        }
    }

    /// History plus live feed for a job, or `None` if this node has no hub
    /// for it (the caller then answers from the job record).
    pub fn subscribe(&self, job: JobId, create: bool) -> Option<Subscription> {
        let mut inner = self.lock();
        if !inner.hubs.contains_key(&job) && !create {
            return None;
        }
        let hub = inner.hubs.entry(job).or_insert_with(Hub::new);
        let live = if hub.finished {
            None
        } else {
            Some(hub.tx.subscribe())
        };
        Some(Subscription {
            history: hub.history.clone(),
            live,
        })
    }

    /// Register a runner's connection. Returns a session number that
    /// `remove_runner` must present, so a stale stream cannot remove a newer
    /// registration of the same runner id.
    pub fn add_runner(
        &self,
        id: &str,
        conn: quinn::Connection,
        labels: BTreeMap<String, String>,
        version: u32,
    ) -> u64 {
        let mut inner = self.lock();
        inner.next_session += 1;
        let session = inner.next_session;
        let busy = inner.runners.get(id).and_then(|r| r.busy);
        inner.runners.insert(
            id.to_string(),
            RunnerEntry {
                conn,
                labels,
                busy,
                session,
                version,
            },
        );
        drop(inner);
        self.wake();
        self.report.notify_one();
        session
    }

    /// Why a runner connected to this node cannot take `job` (a kind newer
    /// than the protocol it speaks), if it cannot.
    /// The protocol version a runner connected to this node speaks.
    fn speaks(&self, runner: &str) -> Option<u32> {
        self.lock().runners.get(runner).map(|r| r.version)
    }

    fn too_old_for(&self, runner: &str, job: &Job) -> Option<String> {
        let needs = job.spec.since_version();
        let v = self.lock().runners.get(runner).map(|r| r.version)?;
        (v < needs).then(|| {
            format!(
                "runner {runner} speaks protocol {v}, and a {} job needs {needs}: upgrade that runner",
                job.spec.kind.name()
            )
        })
    }

    pub fn remove_runner(&self, id: &str, session: u64) {
        let mut inner = self.lock();
        if inner.runners.get(id).is_some_and(|r| r.session == session) {
            inner.runners.remove(id);
        }
        drop(inner);
        self.report.notify_one();
    }

    /// Whether runner `id` is connected to this node or (on the leader)
    /// reported by another node.
    pub fn is_connected(&self, id: &str) -> bool {
        let mut inner = self.lock();
        expire_reports(&mut inner, Instant::now());
        inner.runners.contains_key(id)
            || inner
                .remote
                .values()
                .any(|n| n.runners.iter().any(|r| r.id == id))
    }

    /// The runners connected to this node.
    pub fn connected_runners(&self) -> Vec<String> {
        self.lock().runners.keys().cloned().collect()
    }

    /// Every runner this node knows: its own, then (on the leader) those
    /// other nodes reported and that have not expired.
    pub fn known_runners(&self) -> Vec<KnownRunner> {
        let mut inner = self.lock();
        expire_reports(&mut inner, Instant::now());
        let mut out: Vec<KnownRunner> = inner
            .runners
            .iter()
            .map(|(id, r)| KnownRunner {
                id: id.clone(),
                node: None,
                busy: r.busy,
            })
            .collect();
        for (node, n) in &inner.remote {
            for r in &n.runners {
                out.push(KnownRunner {
                    id: r.id.clone(),
                    node: Some(*node),
                    busy: inner.remote_claims.get(&r.id).copied().or(r.busy),
                });
            }
        }
        out
    }

    /// Stop (or resume) reporting this node's runners to the leader. Only
    /// for tests that need the leader to hold a stale report.
    #[doc(hidden)]
    pub fn pause_reports(&self, paused: bool) {
        self.reports_paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.report.notify_one();
        }
    }

    /// This node's report to the leader: its live runners (while draining,
    /// only those in the middle of a job, so the leader offers no more).
    fn local_report(&self) -> Vec<RunnerReport> {
        let draining = self.draining.load(Ordering::SeqCst);
        self.lock()
            .runners
            .iter()
            .filter(|(_, r)| r.conn.close_reason().is_none())
            .filter(|(_, r)| !draining || r.busy.is_some())
            .map(|(id, r)| RunnerReport {
                id: id.clone(),
                labels: r.labels.clone(),
                busy: r.busy,
            })
            .collect()
    }

    /// On the leader: `node` (at peer address `addr`) reported `runners`;
    /// they replace its previous report for [`REMOTE_RUNNER_TTL`].
    pub fn set_remote_runners(&self, node: NodeId, addr: String, runners: Vec<RunnerReport>) {
        let mut inner = self.lock();
        inner.remote.insert(
            node,
            RemoteNode {
                addr,
                expires: Instant::now() + REMOTE_RUNNER_TTL,
                runners,
            },
        );
        drop(inner);
        self.wake();
    }

    /// On the leader: `node` said `runner` is not connected to it; forget
    /// it until the node reports it again.
    fn forget_remote_runner(&self, node: NodeId, runner: &str) {
        let mut inner = self.lock();
        if let Some(n) = inner.remote.get_mut(&node) {
            n.runners.retain(|r| r.id != runner);
        }
    }

    /// Signal the task driving `job` to cancel it on its runner.
    pub fn cancel(&self, job: JobId) -> bool {
        match self.lock().cancels.get(&job) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    fn release_runner(&self, runner: &str, job: JobId) {
        let mut inner = self.lock();
        if let Some(r) = inner.runners.get_mut(runner) {
            if r.busy == Some(job) {
                r.busy = None;
            }
        }
        if inner.remote_claims.get(runner) == Some(&job) {
            inner.remote_claims.remove(runner);
        }
        inner.cancels.remove(&job);
        drop(inner);
        self.wake();
    }

    /// Pick a free runner for `target`, local or reported by another node,
    /// and mark it busy with `job`. `active`: the jobs assigned or running
    /// (a report naming another job, e.g. one already finished, does not
    /// make its runner busy).
    fn claim_runner(
        &self,
        target: &RunnerTarget,
        job: JobId,
        active: &BTreeSet<JobId>,
    ) -> Option<Claim> {
        let mut inner = self.lock();
        expire_reports(&mut inner, Instant::now());
        let fits = |id: &str, labels: &BTreeMap<String, String>| match target {
            RunnerTarget::Any => true,
            RunnerTarget::Id(want) => id == want,
            RunnerTarget::Labels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        };
        // One job per runner id, wherever its connections are.
        let mut busy: HashSet<String> = inner.remote_claims.keys().cloned().collect();
        busy.extend(
            inner
                .runners
                .iter()
                .filter(|(_, r)| r.busy.is_some())
                .map(|(id, _)| id.clone()),
        );
        for n in inner.remote.values() {
            busy.extend(
                n.runners
                    .iter()
                    .filter(|r| r.busy.is_some_and(|j| active.contains(&j)))
                    .map(|r| r.id.clone()),
            );
        }
        let local = inner
            .runners
            .iter()
            .find(|(id, r)| {
                !busy.contains(*id) && r.conn.close_reason().is_none() && fits(id, &r.labels)
            })
            .map(|(id, _)| id.clone());
        let (runner, route) = if let Some(id) = local {
            // Invariant: `id` was just found in the map, under the same lock.
            let entry = inner.runners.get_mut(&id)?;
            entry.busy = Some(job);
            let conn = entry.conn.clone();
            (id, Route::Local(conn))
        } else {
            let (node, addr, id) = inner.remote.iter().find_map(|(node, n)| {
                n.runners
                    .iter()
                    .find(|r| !busy.contains(&r.id) && fits(&r.id, &r.labels))
                    .map(|r| (*node, n.addr.clone(), r.id.clone()))
            })?;
            inner.remote_claims.insert(id.clone(), job);
            (id, Route::Relay { node, addr })
        };
        let cancel = Arc::new(Notify::new());
        inner.cancels.insert(job, cancel.clone());
        Some(Claim {
            runner,
            route,
            cancel,
        })
    }

    /// The node is stopping: offer no more jobs (as the leader), stop
    /// reporting idle runners (so the leader offers them nothing through this
    /// node), and wait until every job this node drives or relays has ended,
    /// at most [`JOB_DRAIN_TIMEOUT`]. A relayed offer already on its way is
    /// still carried: the wait lasts at least one report round trip when
    /// runners are connected here. Returns the jobs still in flight.
    pub async fn drain(&self) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        self.report.notify_one();
        let began = Instant::now();
        let settle = {
            let inner = self.lock();
            if inner.runners.is_empty() && inner.cancels.is_empty() {
                return 0;
            }
            REPORT_TIMEOUT
        };
        loop {
            let left = self.in_flight();
            let waited = began.elapsed();
            if (left == 0 && waited >= settle) || waited >= JOB_DRAIN_TIMEOUT {
                if left > 0 {
                    tracing::warn!(
                        jobs = left,
                        "stopping with jobs still running through this node"
                    );
                } else {
                    tracing::info!(waited_ms = waited.as_millis() as u64, "jobs drained");
                }
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the node is stopping (see [`Jobs::drain`]).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Jobs this node drives (as the leader) or relays.
    fn in_flight(&self) -> usize {
        let inner = self.lock();
        inner.cancels.len() + inner.runners.values().filter(|r| r.busy.is_some()).count()
    }

    /// Jobs a task on this node is driving (offered to a runner connected
    /// here, or relayed through another node).
    fn driven(&self) -> BTreeSet<JobId> {
        self.lock().cancels.keys().copied().collect()
    }

    fn unclaim(&self, runner: &str, job: JobId) {
        self.release_runner(runner, job);
    }

    /// On a relay node: the connection of runner `id`, marked as carrying
    /// `job`; `None` if it is not connected here.
    fn relay_begin(&self, id: &str, job: JobId) -> Option<quinn::Connection> {
        let mut inner = self.lock();
        let r = inner
            .runners
            .get_mut(id)
            .filter(|r| r.conn.close_reason().is_none())?;
        r.busy = Some(job);
        let conn = r.conn.clone();
        drop(inner);
        self.report.notify_one();
        Some(conn)
    }

    fn relay_end(&self, id: &str, job: JobId) {
        let mut inner = self.lock();
        if let Some(r) = inner.runners.get_mut(id) {
            if r.busy == Some(job) {
                r.busy = None;
            }
        }
        drop(inner);
        self.report.notify_one();
    }
}

fn expire_reports(inner: &mut Inner, now: Instant) {
    inner.remote.retain(|_, n| n.expires > now);
}

/// The scheduler (on the leader) and the reporter (on every node): run
/// until `shutdown`.
pub async fn run_scheduler(ctx: Arc<JobsCtx>, shutdown: CancellationToken) {
    tokio::join!(
        schedule_loop(ctx.clone(), shutdown.clone()),
        report_loop(ctx, shutdown)
    );
}

/// Offer queued jobs to runners while this node leads. Each time it becomes
/// the leader it first takes over (see [`take_over`]); until that succeeded
/// it schedules nothing.
async fn schedule_loop(ctx: Arc<JobsCtx>, shutdown: CancellationToken) {
    let mut metrics = ctx.cluster.raft.metrics_watch();
    let mut taken_over_term: Option<u64> = None;
    // Outside the loop: metrics change several times a second (heartbeats),
    // which must not keep restarting the periodic tick.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.jobs.wake.notified() => {},
            // A leader change wakes the scheduler at once (metrics also
            // change on every apply: those are ignored here).
            r = metrics.changed() => {
                if r.is_err() {
                    return;
                }
                let m = metrics.borrow_and_update();
                let leading = m.current_leader == Some(m.id);
                if leading == taken_over_term.is_some() {
                    continue;
                }
            },
            _ = tick.tick() => {},
        }
        if !ctx.cluster.raft.is_leader() {
            taken_over_term = None;
            continue;
        }
        // Before every scheduling pass, not only once per term: the first
        // pass of a term may run before this node has applied the previous
        // leader's last assignments (seen in chaos seed 49: a job assigned
        // by the old leader stayed `assigned` forever and blocked its app).
        let term = ctx.cluster.raft.metrics().current_term;
        if !take_over(&ctx).await {
            continue;
        }
        taken_over_term = Some(term);
        schedule_once(&ctx).await;
    }
}

/// Tell the leader which runners are connected here: on every change (see
/// `Jobs::report`), when the leader changes, and every [`REPORT_INTERVAL`].
/// One report at a time, so they reach the leader in order.
async fn report_loop(ctx: Arc<JobsCtx>, shutdown: CancellationToken) {
    let me = ctx.cluster.raft.id();
    let mut metrics = ctx.cluster.raft.metrics_watch();
    let mut leader = metrics.borrow_and_update().current_leader;
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (leader, whether the report was empty) of the last delivered report:
    // a node without runners tells each leader once, not every second.
    let mut delivered: Option<(NodeId, bool)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.jobs.report.notified() => {},
            r = metrics.changed() => {
                if r.is_err() {
                    return;
                }
                let now = metrics.borrow_and_update().current_leader;
                if now == leader {
                    continue;
                }
                leader = now;
                delivered = None;
            },
            _ = tick.tick() => {},
        }
        if ctx.jobs.reports_paused.load(Ordering::SeqCst) {
            continue;
        }
        let Some(to) = ctx.cluster.raft.leader() else {
            continue;
        };
        if to.id == me {
            continue;
        }
        let runners = ctx.jobs.local_report();
        let empty = runners.is_empty();
        if empty && delivered == Some((to.id, true)) {
            continue;
        }
        let req = LeaderRequest::ReportRunners { node: me, runners };
        match ctx
            .cluster
            .peers
            .leader_call(&to.addr, Some(to.id), req, REPORT_TIMEOUT)
            .await
        {
            Ok(LeaderResponse::Done) => delivered = Some((to.id, empty)),
            Ok(other) => {
                delivered = None;
                tracing::debug!(leader = format!("{:x}", to.id), answer = ?other, "runner report not taken");
            }
            Err(e) => {
                delivered = None;
                tracing::debug!(leader = format!("{:x}", to.id), error = %e, "could not report runners");
            }
        }
    }
}

/// Reason recorded on jobs a new leader finds assigned or running.
pub const TAKEOVER_REASON: &str = "interrupted by a leader change: the job's runner stream was on the previous leader, so its progress can no longer be recorded; it was not run again (jobs run at most once)";

/// A new leader's first duty: jobs that are assigned or running but not
/// driven by this node had their runner stream on the previous leader (a
/// runner's job stream always goes to the leader that offered it, directly
/// or through a relay). Nothing can follow them any more: fail them with a
/// reason, so they release their app and their clients see the end. They
/// are never offered again: a job runs at most once (a runner still working
/// on one finds its operations refused, since the job is no longer
/// running). Queued jobs stay queued and are offered by this leader.
///
/// Runs before every scheduling pass. The read is linearizable (the
/// leader's read index), so it sees every assignment committed before this
/// term, even ones this node had not applied yet when it became leader.
/// Only the scheduler task (the caller) assigns jobs, and it marks a job
/// driven before its assignment is written, so a job assigned by this
/// leader is never taken for an orphan.
/// Returns `false` if the read or the write failed (retried on the next tick).
async fn take_over(ctx: &Arc<JobsCtx>) -> bool {
    let active: Vec<JobId> = match ctx
        .read(|s| {
            s.jobs
                .values()
                .filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
                .map(|j| j.id)
                .collect()
        })
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the jobs before scheduling; retrying");
            return false;
        }
    };
    let driven = ctx.jobs.driven();
    let orphans: Vec<JobId> = active
        .into_iter()
        .filter(|id| !driven.contains(id))
        .collect();
    if orphans.is_empty() {
        return true;
    }
    let r = ctx
        .write(Command::FailJobs {
            ids: orphans.clone(),
            reason: TAKEOVER_REASON.into(),
        })
        .await;
    match r {
        Ok(_) => {
            tracing::warn!(jobs = ?orphans, "failed jobs whose runner streams were on a previous leader");
            for id in orphans {
                let rec = ctx
                    .cluster
                    .raft
                    .read_local(|s| s.jobs.get(&id).map(|j| (j.state, j.error.clone())));
                if let Some((state, error)) = rec.filter(|(st, _)| st.is_final()) {
                    ctx.jobs.publish(id, JobEvent::Finished { state, error });
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not take over the previous leader's jobs; retrying");
            false
        }
    }
}

async fn schedule_once(ctx: &Arc<JobsCtx>) {
    if ctx.jobs.draining() {
        // Stopping: the next leader offers the queued jobs.
        return;
    }
    type Snapshot = (Vec<Job>, BTreeSet<(String, String)>, BTreeSet<JobId>);
    let (queued, mut busy_apps, active): Snapshot = ctx.cluster.raft.read_local(|s| {
        let queued = s
            .jobs
            .values()
            .filter(|j| j.state == JobState::Queued)
            .cloned()
            .collect();
        let active: Vec<&Job> = s
            .jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
            .collect();
        let busy = active
            .iter()
            .map(|j| (j.spec.project.clone(), j.spec.app.clone()))
            .collect();
        let ids = active.iter().map(|j| j.id).collect();
        (queued, busy, ids)
    });
    for job in queued {
        let app = (job.spec.project.clone(), job.spec.app.clone());
        if busy_apps.contains(&app) {
            continue;
        }
        let Some(claim) = ctx.jobs.claim_runner(&job.spec.target, job.id, &active) else {
            fail_if_runner_gone(ctx, &job).await;
            continue;
        };
        let runner = claim.runner.clone();
        match ctx
            .write(Command::AssignJob {
                id: job.id,
                runner: runner.clone(),
            })
            .await
        {
            Ok(_) => {
                busy_apps.insert(app);
                ctx.jobs.publish(
                    job.id,
                    JobEvent::State {
                        state: JobState::Assigned,
                        runner: Some(runner.clone()),
                    },
                );
                let ctx2 = ctx.clone();
                tokio::spawn(async move { drive(ctx2, job, claim).await });
            }
            Err(e) => {
                tracing::warn!(job = job.id, error = %e, "could not assign job");
                ctx.jobs.unclaim(&runner, job.id);
            }
        }
    }
}

/// A job aimed at one CLI runner can only ever run there: once that CLI has
/// been gone for [`CLI_RUNNER_GRACE`], fail the job instead of queueing it forever.
async fn fail_if_runner_gone(ctx: &Arc<JobsCtx>, job: &Job) {
    let RunnerTarget::Id(id) = &job.spec.target else {
        return;
    };
    let is_cli = ctx
        .cluster
        .raft
        .read_local(|s| s.runners.get(id).map(|r| r.kind == RunnerKind::Cli));
    let waited = cairn_protocol::now_ms().saturating_sub(job.queued_ms);
    if is_cli != Some(true)
        || ctx.jobs.is_connected(id)
        || waited < CLI_RUNNER_GRACE.as_millis() as u64
    {
        return;
    }
    let error =
        format!("its runner ({id}, the CLI that queued it) disconnected before the job started");
    if ctx
        .write(Command::FinishJob {
            id: job.id,
            state: JobState::Error,
            error: Some(error.clone()),
        })
        .await
        .is_ok()
    {
        ctx.jobs.publish(
            job.id,
            JobEvent::Finished {
                state: JobState::Error,
                error: Some(error),
            },
        );
    }
}

/// Offer `job` to the claimed runner (on its own connection, or through the
/// node it is connected to) and relay its events until it ends; record the end.
async fn drive(ctx: Arc<JobsCtx>, job: Job, claim: Claim) {
    let id = job.id;
    let runner = claim.runner;
    let outcome = match claim.route {
        Route::Local(conn) => match ctx.jobs.too_old_for(&runner, &job) {
            Some(reason) => Ok((JobState::Error, Some(reason))),
            None => match conn.open_bi().await {
                Ok((send, recv)) => {
                    let lease = ctx.jobs.speaks(&runner).is_some_and(|v| v >= 5);
                    drive_stream(&ctx, job, send, recv, &claim.cancel, lease).await
                }
                Err(e) => Err(e.to_string()),
            },
        },
        Route::Relay { node, addr } => {
            let req = PeerRequest::RelayOffer {
                runner: runner.clone(),
                job: id,
            };
            match ctx
                .cluster
                .peers
                .open_stream(&addr, Some(node), &req, RELAY_OPEN_TIMEOUT)
                .await
            {
                Ok((PeerResponse::RelayOpen, send, recv)) => {
                    // The relay node holds the runner's lease (heartbeats never
                    // cross a peer link).
                    drive_stream(&ctx, job, send, recv, &claim.cancel, false).await
                }
                Ok((PeerResponse::NoRunner(reason), _, _)) => {
                    ctx.jobs.forget_remote_runner(node, &runner);
                    Ok((JobState::Error, Some(reason)))
                }
                Ok((PeerResponse::Refused(reason), _, _)) => Err(format!(
                    "node {node:x}, which it is connected to, refused to relay the offer: {reason}"
                )),
                Ok((other, _, _)) => Err(format!(
                    "node {node:x}, which it is connected to, answered the relayed offer with {other:?}"
                )),
                Err(e) => Err(format!(
                    "relaying the offer through node {node:x}, which it is connected to: {e}"
                )),
            }
        }
    };
    let (state, error) = match outcome {
        Ok(done) => done,
        Err(reason) => (
            JobState::Error,
            Some(format!("runner {runner} lost: {reason}")),
        ),
    };
    match ctx
        .write(Command::FinishJob {
            id,
            state,
            error: error.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(e) => tracing::warn!(job = id, error = %e, "could not record the end of a job"),
    }
    // The recorded state is the truth (e.g. it may already have been failed).
    let recorded = ctx.cluster.raft.read_local(|s| s.jobs.get(&id).cloned());
    if let Some(j) = recorded.as_ref().filter(|j| j.state.is_final()) {
        let took = j
            .completed_ms
            .unwrap_or_else(cairn_protocol::now_ms)
            .saturating_sub(j.assigned_ms.unwrap_or(j.queued_ms));
        ctx.metrics
            .job_duration
            .get_or_create(&crate::metrics::JobLabels {
                kind: j.spec.kind.name().to_string(),
                state: format!("{:?}", j.state).to_ascii_lowercase(),
            })
            .observe(took as f64 / 1000.0);
    }
    let (state, error) = recorded
        .map(|j| (j.state, j.error))
        .unwrap_or((state, error));
    ctx.jobs.publish(id, JobEvent::Finished { state, error });
    ctx.jobs.release_runner(&runner, id);
}

/// Drive a job on a QUIC stream pair (the runner's own stream, or the peer
/// stream to its relay). If the job could not be followed to its end, the
/// stream is reset, so the runner (through its relay) sees it fail.
async fn drive_stream(
    ctx: &Arc<JobsCtx>,
    job: Job,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancel: &Notify,
    lease: bool,
) -> Result<(JobState, Option<String>), String> {
    let r = drive_inner(ctx, job, &mut send, &mut recv, cancel, lease).await;
    if r.is_err() {
        let _ = send.reset(JOB_STREAM_ABORTED.into());
        let _ = recv.stop(JOB_STREAM_ABORTED.into());
    }
    r
}

/// The leader's side of a job stream, whatever carries it: offer, Accept or
/// Decline, StartJob, Started, events, Cancel, Done.
async fn drive_inner<W, R>(
    ctx: &Arc<JobsCtx>,
    job: Job,
    send: &mut W,
    recv: &mut R,
    cancel: &Notify,
    lease: bool,
) -> Result<(JobState, Option<String>), String>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let id = job.id;
    frame::write(send, &NodeToRunner::Offer { job: Box::new(job) })
        .await
        .map_err(|e| e.to_string())?;
    let first: RunnerToNode = tokio::time::timeout(OFFER_TIMEOUT, frame::read_required(recv))
        .await
        .map_err(|_| "it did not answer the job offer in time".to_string())?
        .map_err(|e| e.to_string())?;
    match first {
        RunnerToNode::Accept => {}
        RunnerToNode::Decline { reason } => {
            return Ok((
                JobState::Error,
                Some(format!("the runner declined the job: {reason}")),
            ))
        }
        other => return Err(format!("unexpected first answer {other:?}")),
    }
    ctx.write(Command::StartJob { id })
        .await
        .map_err(|e| format!("recording job start: {e}"))?;
    let started = if lease {
        NodeToRunner::StartedWithLease {
            heartbeat_ms: LEASE_HEARTBEAT.as_millis() as u64,
        }
    } else {
        NodeToRunner::Started
    };
    frame::write(send, &started)
        .await
        .map_err(|e| e.to_string())?;
    ctx.jobs.publish(
        id,
        JobEvent::State {
            state: JobState::Running,
            runner: None,
        },
    );
    // A stream of frames: the read in progress survives the other branches
    // of the select below (a bare `frame::read` there would lose bytes).
    let mut frames = pin!(futures::stream::unfold(recv, |r| async move {
        let msg = frame::read::<_, RunnerToNode>(&mut *r).await;
        Some((msg, r))
    }));
    let mut poll = tokio::time::interval(CANCEL_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cancel_sent = false;
    // Reset by every frame from the runner (only kept with a lease).
    let expiry = tokio::time::sleep(RUNNER_LEASE);
    tokio::pin!(expiry);
    loop {
        let want_cancel = tokio::select! {
            msg = frames.next() => {
                let Some(msg) = msg else {
                    return Err("the job stream ended without a result".into());
                };
                expiry.as_mut().reset(tokio::time::Instant::now() + RUNNER_LEASE);
                match msg.map_err(|e| e.to_string())? {
                    None => return Err("the job stream ended without a result".into()),
                    Some(RunnerToNode::Heartbeat) => {}
                    Some(RunnerToNode::Event(ev)) => ctx.jobs.publish(id, ev),
                    Some(RunnerToNode::Done { state, error }) => {
                        if !state.is_final() {
                            return Err(format!("it ended the job in a non-final state ({})", state.word()));
                        }
                        return Ok((state, error));
                    }
                    Some(other) => return Err(format!("unexpected message {other:?}")),
                }
                false
            }
            _ = &mut expiry, if lease => return Err(lease_lost()),
            _ = cancel.notified(), if !cancel_sent => true,
            // A cancel asked through another node is only in the record.
            _ = poll.tick(), if !cancel_sent => ctx
                .cluster
                .raft
                .read_local(|s| s.jobs.get(&id).is_some_and(|j| j.cancel_requested)),
        };
        if want_cancel {
            cancel_sent = true;
            frame::write(send, &NodeToRunner::Cancel)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// The relay node's side of [`PeerRequest::RelayOffer`]: `from` (the
/// leader) offers `job` to `runner`, connected here. Open the offer stream
/// on the runner's connection, answer [`PeerResponse::RelayOpen`], then copy
/// frames both ways until both sides ended, or either broke (then reset
/// both), or the leader that asked is no longer the leader. Events pass
/// through this node's hub too, for clients attached here.
pub async fn relay_offer(
    ctx: Arc<JobsCtx>,
    from: NodeId,
    runner: String,
    job: JobId,
    mut psend: quinn::SendStream,
    mut precv: quinn::RecvStream,
) {
    let me = ctx.cluster.raft.id();
    let gone = || format!("runner {runner} is no longer connected to node {me:x}");
    let too_old = ctx
        .cluster
        .raft
        .read_local(|s| s.jobs.get(&job).cloned())
        .and_then(|j| ctx.jobs.too_old_for(&runner, &j));
    if let Some(reason) = too_old {
        let _ = frame::write(&mut psend, &PeerResponse::NoRunner(reason)).await;
        let _ = psend.finish();
        return;
    }
    let opened = match ctx.jobs.relay_begin(&runner, job) {
        None => Err(gone()),
        Some(conn) => conn.open_bi().await.map_err(|e| format!("{}: {e}", gone())),
    };
    let (mut rsend, mut rrecv) = match opened {
        Ok(s) => s,
        Err(reason) => {
            tracing::info!(%runner, job, leader = format!("{from:x}"), %reason, "cannot relay a job offer");
            ctx.jobs.relay_end(&runner, job);
            let _ = frame::write(&mut psend, &PeerResponse::NoRunner(reason)).await;
            let _ = psend.finish();
            return;
        }
    };
    if frame::write(&mut psend, &PeerResponse::RelayOpen)
        .await
        .is_err()
    {
        ctx.jobs.relay_end(&runner, job);
        let _ = rsend.reset(JOB_STREAM_ABORTED.into());
        return;
    }
    tracing::debug!(%runner, job, leader = format!("{from:x}"), "relaying a job offer");
    ctx.jobs.publish(
        job,
        JobEvent::State {
            state: JobState::Assigned,
            runner: Some(runner.clone()),
        },
    );
    let lease = ctx.jobs.speaks(&runner).is_some_and(|v| v >= 5);
    let leased = std::sync::atomic::AtomicBool::new(false);
    let end = {
        let down = pin!(relay_down(
            &ctx, job, &mut precv, &mut rsend, lease, &leased
        ));
        let up = pin!(relay_up(
            &ctx, job, &runner, &mut rrecv, &mut psend, &leased
        ));
        tokio::select! {
            e = relay_both(down, up) => e,
            _ = leader_moved(&ctx, from) => Err("the leader that offered the job is no longer the leader".to_string()),
        }
    };
    if let Err(reason) = &end {
        tracing::info!(%runner, job, leader = format!("{from:x}"), %reason, "relayed job stream broke; ending both sides");
        let code = JOB_STREAM_ABORTED.into();
        let _ = rsend.reset(code);
        let _ = rrecv.stop(code);
        let _ = psend.reset(code);
        let _ = precv.stop(code);
    }
    ctx.jobs.relay_end(&runner, job);
    // Clients attached here see the end as recorded by the leader.
    let deadline = Instant::now() + RELAY_DRAIN;
    while Instant::now() < deadline {
        let rec = ctx
            .cluster
            .raft
            .read_local(|s| s.jobs.get(&job).map(|j| (j.state, j.error.clone())));
        if let Some((state, error)) = rec.filter(|(st, _)| st.is_final()) {
            ctx.jobs.publish(job, JobEvent::Finished { state, error });
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How one direction of a relay ended.
enum Half {
    /// Its sender finished cleanly (the finish was passed on).
    Finished,
    /// Its reader stopped reading (nothing more can be passed on).
    Stopped,
}

/// Both halves of a relay until both ended (`Ok`) or one broke (`Err`).
/// Once the leader's half ended, the runner's gets [`RELAY_DRAIN`] to end.
async fn relay_both(
    mut down: std::pin::Pin<&mut impl std::future::Future<Output = Result<Half, String>>>,
    mut up: std::pin::Pin<&mut impl std::future::Future<Output = Result<Half, String>>>,
) -> Result<(), String> {
    let mut down_done = false;
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut down, if !down_done => {
                r?;
                down_done = true;
            }
            r = &mut up, if !up_done => {
                r?;
                up_done = true;
            }
            _ = tokio::time::sleep(RELAY_DRAIN), if down_done => {
                return Err("the runner did not end its side of the job stream".into());
            }
        }
        if down_done && up_done {
            return Ok(());
        }
    }
}

/// Leader → runner: offer, Started, Cancel.
async fn relay_down(
    ctx: &JobsCtx,
    job: JobId,
    precv: &mut quinn::RecvStream,
    rsend: &mut quinn::SendStream,
    lease: bool,
    leased: &std::sync::atomic::AtomicBool,
) -> Result<Half, String> {
    loop {
        let msg = match frame::read::<_, NodeToRunner>(precv).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                let _ = rsend.finish();
                return Ok(Half::Finished);
            }
            Err(e) => return Err(format!("the leader's stream broke: {e}")),
        };
        let mut msg = msg;
        if msg == NodeToRunner::Started {
            ctx.jobs.publish(
                job,
                JobEvent::State {
                    state: JobState::Running,
                    runner: None,
                },
            );
            // This node holds the runner's lease when the runner can heartbeat.
            if lease {
                msg = NodeToRunner::StartedWithLease {
                    heartbeat_ms: LEASE_HEARTBEAT.as_millis() as u64,
                };
                leased.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        frame::write(rsend, &msg)
            .await
            .map_err(|e| format!("the runner's stream broke: {e}"))?;
    }
}

/// Runner → leader: Accept/Decline, events, Done.
async fn relay_up(
    ctx: &JobsCtx,
    job: JobId,
    runner: &str,
    rrecv: &mut quinn::RecvStream,
    psend: &mut quinn::SendStream,
    leased: &std::sync::atomic::AtomicBool,
) -> Result<Half, String> {
    let mut last = Instant::now();
    let mut check = tokio::time::interval(LEASE_HEARTBEAT);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = {
        // The read in progress survives the lease checks.
        let mut frames = pin!(futures::stream::unfold(&mut *rrecv, |r| async move {
            let msg = frame::read::<_, RunnerToNode>(&mut *r).await;
            Some((msg, r))
        }));
        loop {
            let msg = tokio::select! {
                m = frames.next() => m.unwrap_or(Ok(None)),
                _ = check.tick() => {
                    if leased.load(std::sync::atomic::Ordering::SeqCst) && last.elapsed() >= RUNNER_LEASE {
                        // Tell the leader why, as the job's end (it records it).
                        let why = format!("runner {runner} lost: {}", lease_lost());
                        tracing::info!(%runner, job, "{why}");
                        let done = RunnerToNode::Done { state: JobState::Error, error: Some(why.clone()) };
                        if frame::write(&mut *psend, &done).await.is_err() {
                            return Err(why);
                        }
                        let _ = psend.finish();
                        break Half::Finished;
                    }
                    continue;
                }
            };
            last = Instant::now();
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => {
                    let _ = psend.finish();
                    return Ok(Half::Finished);
                }
                Err(e) => return Err(format!("the runner's stream broke: {e}")),
            };
            if msg == RunnerToNode::Heartbeat {
                continue;
            }
            if let RunnerToNode::Event(ev) = &msg {
                ctx.jobs.publish(job, ev.clone());
            }
            if frame::write(psend, &msg).await.is_err() {
                // The leader stopped reading: it is done with the job (if it is
                // gone instead, the other half says so).
                break Half::Stopped;
            }
        }
    };
    let _ = rrecv.stop(0u32.into());
    Ok(stopped)
}

/// Resolves once this node, having seen `from` as the leader, sees another.
async fn leader_moved(ctx: &JobsCtx, from: NodeId) {
    let mut w = ctx.cluster.raft.metrics_watch();
    let mut seen = false;
    loop {
        let now = w.borrow_and_update().current_leader;
        match now {
            Some(l) if l == from => seen = true,
            Some(_) if seen => return,
            _ => {}
        }
        if w.changed().await.is_err() {
            // Raft stopped: the node is shutting down, which ends the streams.
            return std::future::pending().await;
        }
    }
}

/// Is `resp` an acceptance of a job's creation?
pub fn created_job(resp: &Response) -> Option<JobId> {
    match resp {
        Response::JobCreated(id) => Some(*id),
        _ => None,
    }
}

/// Labels and kind of a registering runner, for the record.
pub fn runner_record(
    id: &str,
    kind: RunnerKind,
    labels: BTreeMap<String, String>,
) -> cairn_protocol::types::Runner {
    cairn_protocol::types::Runner {
        id: id.to_string(),
        kind,
        labels,
        registered_ms: 0,
        last_seen_ms: 0,
    }
}
