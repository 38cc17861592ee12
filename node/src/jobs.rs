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
//! labels, capacity, the jobs it carries for them, the jobs they carried
//! back from another node) to the leader
//! ([`LeaderRequest::ReportRunnerLoads`], or `ReportRunners` before the
//! cluster is at version 5): when one registers or leaves, when a relayed
//! job starts or ends, when the leader changes, and every
//! [`REPORT_INTERVAL`]. The leader keeps each node's report for
//! [`REMOTE_RUNNER_TTL`]: a node that stops reporting loses its runners.
//! For a runner on another node the leader opens a peer stream to that node
//! ([`PeerRequest::RelayOffer`]); that node opens the offer stream on the
//! runner's own connection and copies frames both ways ([`relay_offer`]).
//! The leader drives both kinds the same way (a [`Link`]).
//!
//! A running job outlives its stream: when the stream breaks (the runner's
//! node died, the runner moved) the leader waits up to [`RESUME_WINDOW`]
//! for the runner to come back, on any node, saying it carries the job, and
//! resumes the stream there (`NodeToRunner::Resume`, with the count of
//! events it has, so the runner sends the rest again); a runner back
//! elsewhere while the old stream still looks alive is resumed at once.
//!
//! Invariants:
//! - Only the leader schedules, and it drives every job it offers, local or
//!   relayed; a node that becomes leader first takes over the
//!   assigned/running jobs it does not drive (their job streams went to the
//!   previous leader, directly or through a relay): it adopts the running
//!   ones whose runners can resume them, and fails the others with
//!   [`TAKEOVER_REASON`]; then it offers queued jobs. A node that stops
//!   leading leaves the jobs it drives to the next leader and records
//!   nothing of them. A job is offered at most once: it runs at most once.
//! - At most one job per (project, app) is assigned or running at a time.
//! - A runner (by id, wherever it is connected) holds at most its capacity
//!   of jobs (1 unless it registered with more): the leader counts for it
//!   the jobs of its local entry, its own claims, and the assigned or
//!   running jobs reports name for it (busy or carried back).
//! - Every assigned job ends in a final state: the runner says so, or the
//!   driving task records why it could not (runner lost: its lease ran out,
//!   or its stream broke and it did not come back within [`RESUME_WINDOW`];
//!   runner no longer connected to the node the leader thought it was on).
//! - A job stream that breaks is reset, not finished, on every hop: a runner
//!   whose leader (or relay) gave up sees its job stream fail. A relay ends
//!   its runner stream when the leader's stream breaks, or when the leader
//!   that asked is no longer the leader.
//! - Only cluster members (node certificates, checked on the peer ALPN) can
//!   ask for a relay or report runners, and a node reports only its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_protocol::api::{JobEvent, NodeToRunner, RunnerStatus, RunnerToNode};
use cairn_protocol::frame;
use cairn_protocol::types::{Job, JobId, JobState, RunnerKind, RunnerTarget};
use futures::StreamExt;
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
/// How long the leader keeps a running job whose stream broke (its
/// runner's node died, or the runner moved to another node; or, for a new
/// leader, the stream was on the previous one) waiting for its runner to
/// come back and resume it (`NodeToRunner::Resume`) before it fails the job.
/// A runner notices a dead node within about 6 s (its probes) and registers
/// with another member at once.
pub const RESUME_WINDOW: Duration = Duration::from_secs(20);
/// How often the driving task looks whether the job's runner came back
/// (carrying the job) on another node.
pub const RESUME_POLL: Duration = Duration::from_millis(200);
/// How often the leader tries to resume a job where its runner is
/// connected but did not say it carries the job.
pub const RESUME_RETRY: Duration = Duration::from_secs(1);
/// How long a runner has to answer a `Resume`.
pub const RESUME_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// On the leader: remote runners it offered jobs to (runner → jobs).
    remote_claims: HashMap<String, BTreeSet<JobId>>,
    hubs: HashMap<JobId, Hub>,
    finished_order: Vec<JobId>,
    cancels: HashMap<JobId, Arc<Notify>>,
    next_session: u64,
}

struct RunnerEntry {
    conn: quinn::Connection,
    labels: BTreeMap<String, String>,
    /// The jobs this node carries for it: offered by this node (the
    /// leader), or relayed by it for the leader.
    busy: BTreeSet<JobId>,
    /// How many jobs it takes at once.
    capacity: u32,
    /// Jobs it still runs whose streams broke with its previous node (it
    /// said so when it registered): the leader resumes them here.
    carrying: BTreeSet<JobId>,
    session: u64,
    /// The protocol version its connection speaks: a job of a newer kind
    /// is not offered to it (it could not decode the offer).
    version: u32,
}

struct RemoteNode {
    addr: String,
    expires: Instant,
    runners: Vec<RunnerLoad>,
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

pub use crate::peer::msg::{RunnerLoad, RunnerReport};

/// A runner as this node knows it (diagnostics and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRunner {
    pub id: String,
    /// `None`: connected to this node; else the node that reported it.
    pub node: Option<NodeId>,
    /// The jobs this node carries for it (local), or the jobs the leader
    /// claimed it for and its node reported (remote).
    pub busy: Vec<JobId>,
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
        status: RunnerStatus,
    ) -> u64 {
        let mut inner = self.lock();
        inner.next_session += 1;
        let session = inner.next_session;
        let busy = inner
            .runners
            .get(id)
            .map(|r| r.busy.clone())
            .unwrap_or_default();
        inner.runners.insert(
            id.to_string(),
            RunnerEntry {
                conn,
                labels,
                busy,
                capacity: status
                    .capacity
                    .clamp(1, cairn_protocol::api::MAX_RUNNER_CAPACITY),
                carrying: status.carrying.into_iter().collect(),
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

    /// The protocol version `runner` speaks, as this node knows it
    /// (connected here, or, on the leader, reported by its node).
    fn version_of(&self, runner: &str) -> Option<u32> {
        let inner = self.lock();
        inner.runners.get(runner).map(|r| r.version).or_else(|| {
            inner
                .remote
                .values()
                .find_map(|n| n.runners.iter().find(|r| r.id == runner))
                .map(|r| r.version)
        })
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
                busy: r.busy.iter().copied().collect(),
            })
            .collect();
        for (node, n) in &inner.remote {
            for r in &n.runners {
                let mut busy: BTreeSet<JobId> = r.busy.iter().copied().collect();
                busy.extend(inner.remote_claims.get(&r.id).into_iter().flatten());
                out.push(KnownRunner {
                    id: r.id.clone(),
                    node: Some(*node),
                    busy: busy.into_iter().collect(),
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
    fn local_report(&self) -> Vec<RunnerLoad> {
        let draining = self.draining.load(Ordering::SeqCst);
        self.lock()
            .runners
            .iter()
            .filter(|(_, r)| r.conn.close_reason().is_none())
            .filter(|(_, r)| !draining || !r.busy.is_empty() || !r.carrying.is_empty())
            .map(|(id, r)| RunnerLoad {
                id: id.clone(),
                labels: r.labels.clone(),
                version: r.version,
                capacity: r.capacity,
                busy: r.busy.iter().copied().collect(),
                carrying: r.carrying.iter().copied().collect(),
            })
            .collect()
    }

    /// On the leader: `node` (at peer address `addr`) reported `runners`;
    /// they replace its previous report for [`REMOTE_RUNNER_TTL`].
    pub fn set_remote_runners(&self, node: NodeId, addr: String, runners: Vec<RunnerLoad>) {
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
            r.busy.remove(&job);
            r.carrying.remove(&job);
        }
        if let Some(claims) = inner.remote_claims.get_mut(runner) {
            claims.remove(&job);
            if claims.is_empty() {
                inner.remote_claims.remove(runner);
            }
        }
        inner.cancels.remove(&job);
        drop(inner);
        self.wake();
    }

    /// Pick a runner for `target` with room for one more job, local or
    /// reported by another node, and mark it busy with `job`. `active`: the
    /// jobs assigned or running (a report naming another job, e.g. one
    /// already finished, does not fill its runner).
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
        // The jobs each runner id holds, wherever its connections are.
        let load = runner_loads(&inner, active);
        let room = |id: &str, capacity: u32| {
            load.get(id).map_or(0, |jobs| jobs.len()) < capacity.max(1) as usize
        };
        let local = inner
            .runners
            .iter()
            .find(|(id, r)| {
                room(id, r.capacity) && r.conn.close_reason().is_none() && fits(id, &r.labels)
            })
            .map(|(id, _)| id.clone());
        let (runner, route) = if let Some(id) = local {
            // Invariant: `id` was just found in the map, under the same lock.
            let entry = inner.runners.get_mut(&id)?;
            entry.busy.insert(job);
            let conn = entry.conn.clone();
            (id, Route::Local(conn))
        } else {
            let (node, addr, id) = inner.remote.iter().find_map(|(node, n)| {
                n.runners
                    .iter()
                    .find(|r| room(&r.id, r.capacity) && fits(&r.id, &r.labels))
                    .map(|r| (*node, n.addr.clone(), r.id.clone()))
            })?;
            inner
                .remote_claims
                .entry(id.clone())
                .or_default()
                .insert(job);
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

    /// On the leader: where `runner` says it still runs `job` (it moved and
    /// registered with `carrying`), other than through `not_via` (the route
    /// in use: a report from that node is an older one); with `connected`,
    /// failing that, wherever it is connected at all (a runner whose job
    /// stream broke while its connection did not, e.g. at a leader change,
    /// takes a resume there too). The runner is marked busy with the job
    /// there. `None` if it is not back (yet).
    fn find_carrier(
        &self,
        runner: &str,
        job: JobId,
        not_via: Option<Option<NodeId>>,
        connected: bool,
    ) -> Option<Route> {
        let mut inner = self.lock();
        expire_reports(&mut inner, Instant::now());
        for carrying_only in [true, false] {
            if !carrying_only && !connected {
                return None;
            }
            if not_via != Some(None) {
                if let Some(r) = inner.runners.get_mut(runner) {
                    if (!carrying_only || r.carrying.contains(&job))
                        && r.conn.close_reason().is_none()
                    {
                        r.carrying.remove(&job);
                        r.busy.insert(job);
                        return Some(Route::Local(r.conn.clone()));
                    }
                }
            }
            let found = inner.remote.iter_mut().find_map(|(node, n)| {
                if not_via == Some(Some(*node)) {
                    return None;
                }
                let r = n
                    .runners
                    .iter_mut()
                    .find(|r| r.id == runner && (!carrying_only || r.carrying.contains(&job)))?;
                r.carrying.retain(|j| *j != job);
                Some((*node, n.addr.clone()))
            });
            if let Some((node, addr)) = found {
                inner
                    .remote_claims
                    .entry(runner.to_string())
                    .or_default()
                    .insert(job);
                return Some(Route::Relay { node, addr });
            }
        }
        None
    }

    /// On a new leader: drive `job`, running on a runner whose stream was on
    /// the previous leader, from now on (it is waited for, see
    /// [`RESUME_WINDOW`]). Returns its cancel signal.
    fn adopt(&self, job: JobId) -> Arc<Notify> {
        let cancel = Arc::new(Notify::new());
        self.lock().cancels.insert(job, cancel.clone());
        cancel
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
        inner.cancels.len() + inner.runners.values().map(|r| r.busy.len()).sum::<usize>()
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
        r.busy.insert(job);
        r.carrying.remove(&job);
        let conn = r.conn.clone();
        drop(inner);
        self.report.notify_one();
        Some(conn)
    }

    fn relay_end(&self, id: &str, job: JobId) {
        let mut inner = self.lock();
        if let Some(r) = inner.runners.get_mut(id) {
            r.busy.remove(&job);
        }
        drop(inner);
        self.report.notify_one();
    }
}

fn expire_reports(inner: &mut Inner, now: Instant) {
    inner.remote.retain(|_, n| n.expires > now);
}

/// The jobs each runner holds as the leader sees it: its local entry's,
/// the leader's claims on remote runners, and what nodes reported (busy or
/// carried back after a move) of the `active` jobs.
fn runner_loads(inner: &Inner, active: &BTreeSet<JobId>) -> HashMap<String, BTreeSet<JobId>> {
    let mut load: HashMap<String, BTreeSet<JobId>> = inner.remote_claims.clone();
    for (id, r) in &inner.runners {
        let jobs = load.entry(id.clone()).or_default();
        jobs.extend(r.busy.iter().copied());
        jobs.extend(r.carrying.iter().filter(|j| active.contains(j)));
    }
    for n in inner.remote.values() {
        for r in &n.runners {
            let jobs = load.entry(r.id.clone()).or_default();
            jobs.extend(
                r.busy
                    .iter()
                    .chain(&r.carrying)
                    .filter(|j| active.contains(j)),
            );
        }
    }
    load
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
    // The newest job id applied: a new one wakes the scheduler.
    let mut last_job = ctx.cluster.raft.read_local(|s| s.next_job);
    // Outside the loop: metrics change several times a second (heartbeats),
    // which must not keep restarting the periodic tick.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.jobs.wake.notified() => {},
            // A leader change wakes the scheduler at once; so does a job
            // queued through another node (metrics change on every apply:
            // the others are ignored here).
            r = metrics.changed() => {
                if r.is_err() {
                    return;
                }
                let leading = {
                    let m = metrics.borrow_and_update();
                    m.current_leader == Some(m.id)
                };
                // Only the leader looks (a follower never schedules; a new
                // leader schedules for the leader change anyway).
                let mut queued_elsewhere = false;
                if leading {
                    let newest = ctx.cluster.raft.read_local(|s| s.next_job);
                    queued_elsewhere = newest != last_job;
                    last_job = newest;
                }
                if leading == taken_over_term.is_some() && !queued_elsewhere {
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
        // Loads (capacity, jobs carried back) once every member reads them.
        let req = if ctx.cluster.raft.read_local(|s| s.cluster_version()) >= 5 {
            LeaderRequest::ReportRunnerLoads { node: me, runners }
        } else {
            LeaderRequest::ReportRunners {
                node: me,
                runners: runners.iter().map(RunnerReport::from).collect(),
            }
        };
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

/// Reason recorded on jobs a new leader finds assigned, or running on a
/// runner that cannot resume them.
pub const TAKEOVER_REASON: &str = "interrupted by a leader change: the job's runner stream was on the previous leader, so its progress can no longer be recorded; it was not run again (jobs run at most once)";

/// A new leader's first duty: jobs that are assigned or running but not
/// driven by this node had their runner stream on the previous leader (a
/// runner's job stream always goes to the leader that offered it, directly
/// or through a relay).
/// - A running job whose runner can resume it (it speaks protocol 5, is
///   not a CLI, and the cluster is at version 5) is adopted: this node
///   drives it from now on, waiting up to [`RESUME_WINDOW`] for its runner
///   to come back (on any node) and resume its stream; only then is it failed.
/// - The others (assigned ones included: their runner never began) are
///   failed with [`TAKEOVER_REASON`], so they release their app and their
///   clients see the end. They are never offered again: a job runs at most
///   once (a runner still working on one finds its operations refused,
///   since the job is no longer running). Queued jobs stay queued and are
///   offered by this leader.
///
/// Runs before every scheduling pass. The read is linearizable (the
/// leader's read index), so it sees every assignment committed before this
/// term, even ones this node had not applied yet when it became leader.
/// Only the scheduler task (the caller) assigns and adopts jobs, and it
/// marks a job driven before its assignment is written, so a job assigned
/// by this leader is never taken for an orphan.
/// Returns `false` if the read or the write failed (retried on the next tick).
async fn take_over(ctx: &Arc<JobsCtx>) -> bool {
    type Active = (Vec<(JobId, JobState, Option<String>)>, u32);
    let read: Result<Active, String> = ctx
        .read(|s| {
            let active = s
                .jobs
                .values()
                .filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
                .map(|j| (j.id, j.state, j.runner.clone()))
                .collect();
            (active, s.cluster_version())
        })
        .await;
    let (active, version) = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the jobs before scheduling; retrying");
            return false;
        }
    };
    let driven = ctx.jobs.driven();
    let mut orphans: Vec<JobId> = Vec::new();
    for (id, state, runner) in active {
        if driven.contains(&id) {
            continue;
        }
        match runner {
            Some(runner)
                if state == JobState::Running && version >= 5 && can_resume(ctx, &runner) =>
            {
                tracing::info!(job = id, %runner, "adopting a running job whose stream was on the previous leader; waiting for its runner to resume it");
                let cancel = ctx.jobs.adopt(id);
                let ctx2 = ctx.clone();
                tokio::spawn(async move {
                    let outcome = match follow(&ctx2, id, &runner, None, &cancel, true).await {
                        Followed::Lost(reason) => Followed::Ended(
                            JobState::Error,
                            Some(format!(
                                "interrupted by a leader change, and its runner {runner} was lost: {reason}"
                            )),
                        ),
                        other => other,
                    };
                    finish_driven(&ctx2, id, &runner, outcome).await;
                });
            }
            _ => orphans.push(id),
        }
    }
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

/// Whether `runner`'s jobs can outlive their streams: it registered as an
/// agent (a CLI runs its own jobs and goes with them), and it does not
/// speak an older protocol than 5 where this node can tell (connected here,
/// or reported).
fn can_resume(ctx: &JobsCtx, runner: &str) -> bool {
    let agent = ctx
        .cluster
        .raft
        .read_local(|s| s.runners.get(runner).map(|r| r.kind))
        .is_some_and(|k| k != RunnerKind::Cli);
    agent && ctx.jobs.version_of(runner).is_none_or(|v| v >= 5)
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
            Some(reason) => Followed::Ended(JobState::Error, Some(reason)),
            None => match conn.open_bi().await {
                Ok((send, recv)) => {
                    let lease = ctx.jobs.speaks(&runner).is_some_and(|v| v >= 5);
                    let link = Link {
                        send,
                        recv,
                        via: None,
                        lease,
                    };
                    drive_link(&ctx, job, &runner, link, &claim.cancel).await
                }
                Err(e) => Followed::Lost(e.to_string()),
            },
        },
        Route::Relay { node, addr } => match open_relay(&ctx, &runner, id, node, &addr).await {
            Ok(link) => drive_link(&ctx, job, &runner, link, &claim.cancel).await,
            Err(RelayRefusal::NoRunner(reason)) => Followed::Ended(JobState::Error, Some(reason)),
            Err(RelayRefusal::Failed(reason)) => Followed::Lost(reason),
        },
    };
    finish_driven(&ctx, id, &runner, outcome).await;
}

/// Record how a driven job ended (or that its runner was lost, and why),
/// tell its clients, and release its runner; an abandoned job is only
/// released (the next leader drives it).
async fn finish_driven(ctx: &Arc<JobsCtx>, id: JobId, runner: &str, outcome: Followed) {
    let (state, error) = match outcome {
        Followed::Ended(state, error) => (state, error),
        Followed::Lost(reason) => (
            JobState::Error,
            Some(format!("runner {runner} lost: {reason}")),
        ),
        Followed::Abandoned => {
            tracing::info!(job = id, %runner, "no longer the leader: leaving the job to the next one");
            ctx.jobs.release_runner(runner, id);
            return;
        }
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
    ctx.jobs.release_runner(runner, id);
}

/// Why a relay node did not open a job stream to a runner.
enum RelayRefusal {
    /// The runner is not connected there (any more), or cannot take the job.
    NoRunner(String),
    Failed(String),
}

/// Open a job stream to `runner` through `node` (at peer address `addr`),
/// which it is connected to ([`PeerRequest::RelayOffer`]).
async fn open_relay(
    ctx: &JobsCtx,
    runner: &str,
    job: JobId,
    node: NodeId,
    addr: &str,
) -> Result<Link, RelayRefusal> {
    let req = PeerRequest::RelayOffer {
        runner: runner.to_string(),
        job,
    };
    match ctx
        .cluster
        .peers
        .open_stream(addr, Some(node), &req, RELAY_OPEN_TIMEOUT)
        .await
    {
        // The relay node holds the runner's lease (heartbeats never cross
        // a peer link).
        Ok((PeerResponse::RelayOpen, send, recv)) => Ok(Link {
            send,
            recv,
            via: Some(node),
            lease: false,
        }),
        Ok((PeerResponse::NoRunner(reason), _, _)) => {
            ctx.jobs.forget_remote_runner(node, runner);
            Err(RelayRefusal::NoRunner(reason))
        }
        Ok((PeerResponse::Refused(reason), _, _)) => Err(RelayRefusal::Failed(format!(
            "node {node:x}, which it is connected to, refused to relay the offer: {reason}"
        ))),
        Ok((other, _, _)) => Err(RelayRefusal::Failed(format!(
            "node {node:x}, which it is connected to, answered the relayed offer with {other:?}"
        ))),
        Err(e) => Err(RelayRefusal::Failed(format!(
            "relaying the offer through node {node:x}, which it is connected to: {e}"
        ))),
    }
}

/// A job stream to a runner: on its own connection (`via: None`) or
/// through the node it is connected to. `lease`: this node holds the
/// runner's lease (it heartbeats on this stream).
struct Link {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    via: Option<NodeId>,
    lease: bool,
}

impl Link {
    /// End a stream that could not be followed to its end: the runner
    /// (through its relay) sees it fail.
    fn abort(mut self) {
        let _ = self.send.reset(JOB_STREAM_ABORTED.into());
        let _ = self.recv.stop(JOB_STREAM_ABORTED.into());
    }
}

/// Offer `job` on `link` and follow it to its end (see [`follow`]).
async fn drive_link(
    ctx: &Arc<JobsCtx>,
    job: Job,
    runner: &str,
    mut link: Link,
    cancel: &Notify,
) -> Followed {
    let id = job.id;
    match offer(ctx, job, &mut link).await {
        Err(e) => {
            link.abort();
            Followed::Lost(e)
        }
        Ok(Some((state, error))) => Followed::Ended(state, error),
        Ok(None) => {
            let resumable = ctx.cluster.raft.read_local(|s| s.cluster_version()) >= 5
                && can_resume(ctx, runner);
            follow(ctx, id, runner, Some(link), cancel, resumable).await
        }
    }
}

/// The offer on a fresh job stream: Offer, Accept or Decline, StartJob,
/// Started. `Some`: the job ended there (declined).
async fn offer(
    ctx: &Arc<JobsCtx>,
    job: Job,
    link: &mut Link,
) -> Result<Option<(JobState, Option<String>)>, String> {
    let id = job.id;
    frame::write(&mut link.send, &NodeToRunner::Offer { job: Box::new(job) })
        .await
        .map_err(|e| e.to_string())?;
    let first: RunnerToNode =
        tokio::time::timeout(OFFER_TIMEOUT, frame::read_required(&mut link.recv))
            .await
            .map_err(|_| "it did not answer the job offer in time".to_string())?
            .map_err(|e| e.to_string())?;
    match first {
        RunnerToNode::Accept => {}
        RunnerToNode::Decline { reason } => {
            return Ok(Some((
                JobState::Error,
                Some(format!("the runner declined the job: {reason}")),
            )))
        }
        other => return Err(format!("unexpected first answer {other:?}")),
    }
    ctx.write(Command::StartJob { id })
        .await
        .map_err(|e| format!("recording job start: {e}"))?;
    let started = if link.lease {
        NodeToRunner::StartedWithLease {
            heartbeat_ms: LEASE_HEARTBEAT.as_millis() as u64,
        }
    } else {
        NodeToRunner::Started
    };
    frame::write(&mut link.send, &started)
        .await
        .map_err(|e| e.to_string())?;
    ctx.jobs.publish(
        id,
        JobEvent::State {
            state: JobState::Running,
            runner: None,
        },
    );
    Ok(None)
}

/// How following a job on one stream ended.
enum LinkEnd {
    /// The runner ended the job.
    Done(JobState, Option<String>),
    /// The stream broke (its runner may come back and resume the job).
    Broke(String),
    /// The runner is back on another node, carrying the job.
    Moved(Route),
    /// The job cannot go on: its lease ran out, or the runner broke the protocol.
    Fatal(String),
    /// This node no longer leads: the next leader drives the job.
    Abandoned,
}

/// How following a job ended.
enum Followed {
    /// The runner ended it.
    Ended(JobState, Option<String>),
    /// Its runner was lost, for this reason.
    Lost(String),
    /// This node no longer leads: it records nothing; the next leader
    /// adopts the job (see [`take_over`]).
    Abandoned,
}

/// Follow a running job to its end: relay its events, pass on a cancel.
/// When its stream breaks and it is `resumable`, wait up to
/// [`RESUME_WINDOW`] for its runner to come back (on any node) and resume
/// the stream there; a runner that is back elsewhere while the old stream
/// still looks alive (its node died silently) is resumed at once. `link`:
/// `None` when the stream is already gone (a job adopted from a previous
/// leader). `Err`: why the runner was lost.
async fn follow(
    ctx: &Arc<JobsCtx>,
    id: JobId,
    runner: &str,
    mut link: Option<Link>,
    cancel: &Notify,
    resumable: bool,
) -> Followed {
    // Events the leader got from the runner: a resumed stream begins after them.
    let mut received: u64 = 0;
    let mut broke = tokio::time::Instant::now();
    let mut why = "its job stream was on the previous leader".to_string();
    loop {
        if let Some(mut l) = link.take() {
            let end = follow_link(ctx, id, runner, &mut l, cancel, &mut received, resumable).await;
            let moved_to = match end {
                LinkEnd::Done(state, error) => return Followed::Ended(state, error),
                LinkEnd::Abandoned => {
                    l.abort();
                    return Followed::Abandoned;
                }
                LinkEnd::Fatal(reason) => {
                    l.abort();
                    return Followed::Lost(reason);
                }
                LinkEnd::Broke(reason) => {
                    l.abort();
                    if !ctx.cluster.raft.is_leader() {
                        return Followed::Abandoned;
                    }
                    if !resumable {
                        return Followed::Lost(reason);
                    }
                    tracing::info!(job = id, %runner, %reason, "job stream broke; waiting for its runner to resume it");
                    broke = tokio::time::Instant::now();
                    why = reason;
                    None
                }
                LinkEnd::Moved(route) => {
                    l.abort();
                    broke = tokio::time::Instant::now();
                    why = "its job stream broke".into();
                    Some(route)
                }
            };
            if let Some(route) = moved_to {
                match resume(ctx, runner, id, route, received).await {
                    Ok(l) => link = Some(l),
                    Err(ResumeError::Refused(reason)) => return Followed::Lost(reason),
                    Err(ResumeError::Failed(reason)) => {
                        tracing::info!(job = id, %runner, %reason, "could not resume a job; waiting");
                    }
                }
                continue;
            }
        }
        // Waiting for the runner to come back carrying the job; where it is
        // connected without saying so (its connection outlived the stream),
        // a resume is tried too, at most every RESUME_RETRY.
        let mut tried_connected: Option<tokio::time::Instant> = None;
        loop {
            if !ctx.cluster.raft.is_leader() {
                return Followed::Abandoned;
            }
            let connected = tried_connected.is_none_or(|t| t.elapsed() >= RESUME_RETRY);
            if let Some(route) = ctx.jobs.find_carrier(runner, id, None, connected) {
                match resume(ctx, runner, id, route, received).await {
                    Ok(l) => {
                        link = Some(l);
                        break;
                    }
                    Err(ResumeError::Refused(reason)) => return Followed::Lost(reason),
                    Err(ResumeError::Failed(reason)) => {
                        tracing::info!(job = id, %runner, %reason, "could not resume a job; waiting");
                        if connected {
                            tried_connected = Some(tokio::time::Instant::now());
                        }
                    }
                }
            }
            if broke.elapsed() >= RESUME_WINDOW {
                return Followed::Lost(format!(
                    "{why}, and it did not come back to resume the job within {} s",
                    RESUME_WINDOW.as_secs()
                ));
            }
            tokio::time::sleep(RESUME_POLL).await;
        }
    }
}

/// Why a resume did not happen.
enum ResumeError {
    /// The runner does not hold the job (any more): final.
    Refused(String),
    /// The stream could not be opened or answered: the runner may try again.
    Failed(String),
}

/// Open a new job stream to `runner` on `route` and resume `job` on it.
async fn resume(
    ctx: &Arc<JobsCtx>,
    runner: &str,
    job: JobId,
    route: Route,
    received: u64,
) -> Result<Link, ResumeError> {
    let mut link = match route {
        Route::Local(conn) => {
            let (send, recv) = conn
                .open_bi()
                .await
                .map_err(|e| ResumeError::Failed(e.to_string()))?;
            Link {
                send,
                recv,
                via: None,
                lease: ctx.jobs.speaks(runner).is_some_and(|v| v >= 5),
            }
        }
        Route::Relay { node, addr } => match open_relay(ctx, runner, job, node, &addr).await {
            Ok(l) => l,
            Err(RelayRefusal::NoRunner(r) | RelayRefusal::Failed(r)) => {
                return Err(ResumeError::Failed(r))
            }
        },
    };
    let answer = async {
        frame::write(&mut link.send, &NodeToRunner::Resume { job, received })
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(
            RESUME_ANSWER_TIMEOUT,
            frame::read_required::<_, RunnerToNode>(&mut link.recv),
        )
        .await
        .map_err(|_| "it did not answer the resume in time".to_string())?
        .map_err(|e| e.to_string())
    }
    .await;
    match answer {
        Ok(RunnerToNode::Accept) => {
            tracing::info!(job, %runner, via = ?link.via, received, "job stream resumed");
            Ok(link)
        }
        Ok(RunnerToNode::Decline { reason }) => {
            link.abort();
            Err(ResumeError::Refused(format!(
                "it came back without the job: {reason}"
            )))
        }
        Ok(other) => {
            link.abort();
            Err(ResumeError::Failed(format!(
                "unexpected answer to a resume: {other:?}"
            )))
        }
        Err(e) => {
            link.abort();
            Err(ResumeError::Failed(e))
        }
    }
}

/// Follow a running job on one stream: events, heartbeats, Cancel, Done.
async fn follow_link(
    ctx: &Arc<JobsCtx>,
    id: JobId,
    runner: &str,
    link: &mut Link,
    cancel: &Notify,
    received: &mut u64,
    resumable: bool,
) -> LinkEnd {
    let lease = link.lease;
    let via = link.via;
    let Link { send, recv, .. } = link;
    // A stream of frames: the read in progress survives the other branches
    // of the select below (a bare `frame::read` there would lose bytes).
    let mut frames = pin!(futures::stream::unfold(recv, |r| async move {
        let msg = frame::read::<_, RunnerToNode>(&mut *r).await;
        Some((msg, r))
    }));
    let mut poll = tokio::time::interval(CANCEL_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut carrier = tokio::time::interval(RESUME_POLL);
    carrier.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cancel_sent = false;
    // Reset by every frame from the runner (only kept with a lease).
    let expiry = tokio::time::sleep(RUNNER_LEASE);
    tokio::pin!(expiry);
    loop {
        let want_cancel = tokio::select! {
            msg = frames.next() => {
                let Some(msg) = msg else {
                    return LinkEnd::Broke("the job stream ended without a result".into());
                };
                expiry.as_mut().reset(tokio::time::Instant::now() + RUNNER_LEASE);
                match msg {
                    Err(e) => return LinkEnd::Broke(e.to_string()),
                    Ok(None) => return LinkEnd::Broke("the job stream ended without a result".into()),
                    Ok(Some(RunnerToNode::Heartbeat)) => {}
                    Ok(Some(RunnerToNode::Event(ev))) => {
                        *received += 1;
                        ctx.jobs.publish(id, ev);
                    }
                    Ok(Some(RunnerToNode::Done { state, error })) => {
                        if !state.is_final() {
                            return LinkEnd::Fatal(format!("it ended the job in a non-final state ({})", state.word()));
                        }
                        return LinkEnd::Done(state, error);
                    }
                    Ok(Some(other)) => return LinkEnd::Fatal(format!("unexpected message {other:?}")),
                }
                false
            }
            _ = &mut expiry, if lease => return LinkEnd::Fatal(lease_lost()),
            _ = carrier.tick() => {
                if !resumable {
                    if !ctx.cluster.raft.is_leader() {
                        return LinkEnd::Abandoned;
                    }
                    continue;
                }
                // Back on another node while this stream still looks alive:
                // its node died without a word.
                if !ctx.cluster.raft.is_leader() {
                    return LinkEnd::Abandoned;
                }
                if let Some(route) = ctx.jobs.find_carrier(runner, id, Some(via), false) {
                    return LinkEnd::Moved(route);
                }
                false
            }
            _ = cancel.notified(), if !cancel_sent => true,
            // A cancel asked through another node is only in the record.
            _ = poll.tick(), if !cancel_sent => ctx
                .cluster
                .raft
                .read_local(|s| s.jobs.get(&id).is_some_and(|j| j.cancel_requested)),
        };
        if want_cancel {
            cancel_sent = true;
            if let Err(e) = frame::write(&mut *send, &NodeToRunner::Cancel).await {
                return LinkEnd::Broke(e.to_string());
            }
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
    let record = ctx.cluster.raft.read_local(|s| s.jobs.get(&job).cloned());
    // A running job's stream is being resumed (not offered) through here.
    let resuming = record
        .as_ref()
        .is_some_and(|j| j.state == JobState::Running);
    let too_old = record.and_then(|j| ctx.jobs.too_old_for(&runner, &j));
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
    tracing::debug!(%runner, job, leader = format!("{from:x}"), resuming, "relaying a job offer");
    if !resuming {
        ctx.jobs.publish(
            job,
            JobEvent::State {
                state: JobState::Assigned,
                runner: Some(runner.clone()),
            },
        );
    }
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
        // A resumed job's runner heartbeats as it did on its first stream.
        if lease && matches!(msg, NodeToRunner::Resume { .. }) {
            leased.store(true, std::sync::atomic::Ordering::SeqCst);
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
