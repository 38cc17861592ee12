//! The job queue's live half: connected runners, the scheduler that offers
//! queued jobs to them, and the per-job event hubs that relay a runner's
//! events to every client attached to the job.
//!
//! The durable half (job records and their states) is in the replicated
//! [`State`](crate::state::State); everything here is per node and rebuilt
//! from connections.
//!
//! Invariants:
//! - Only the leader schedules; a node that becomes leader first fails the
//!   assigned/running jobs it does not drive (their runner streams were on
//!   the previous leader) with [`TAKEOVER_REASON`], then offers queued jobs.
//!   A job is offered at most once: it runs at most once.
//! - At most one job per (project, app) is assigned or running at a time.
//! - A runner holds at most one job at a time.
//! - Every assigned job ends in a final state: the runner says so, or the
//!   driving task records why it could not (runner lost, stream broken).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_protocol::api::{JobEvent, NodeToRunner, RunnerToNode};
use cairn_protocol::frame;
use cairn_protocol::types::{Job, JobId, JobState, RunnerKind, RunnerTarget};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::server::Ctx;
use crate::state::{Command, Response};

/// Events kept per job for clients that attach late.
pub const MAX_HUB_HISTORY: usize = 20_000;
/// Finished jobs whose event history stays in memory.
pub const MAX_FINISHED_HUBS: usize = 256;
/// How long a runner has to accept or decline an offer.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a job for a disconnected CLI runner stays queued before it fails.
pub const CLI_RUNNER_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    runners: HashMap<String, RunnerEntry>,
    hubs: HashMap<JobId, Hub>,
    finished_order: Vec<JobId>,
    cancels: HashMap<JobId, Arc<Notify>>,
    next_session: u64,
}

struct RunnerEntry {
    conn: quinn::Connection,
    labels: std::collections::BTreeMap<String, String>,
    busy: Option<JobId>,
    session: u64,
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
        labels: std::collections::BTreeMap<String, String>,
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
            },
        );
        drop(inner);
        self.wake();
        session
    }

    pub fn remove_runner(&self, id: &str, session: u64) {
        let mut inner = self.lock();
        if inner.runners.get(id).is_some_and(|r| r.session == session) {
            inner.runners.remove(id);
        }
    }

    pub fn is_connected(&self, id: &str) -> bool {
        self.lock().runners.contains_key(id)
    }

    pub fn connected_runners(&self) -> Vec<String> {
        self.lock().runners.keys().cloned().collect()
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
        inner.cancels.remove(&job);
        drop(inner);
        self.wake();
    }

    /// Pick a free runner for `target`, mark it busy with `job`.
    fn claim_runner(
        &self,
        target: &RunnerTarget,
        job: JobId,
    ) -> Option<(String, quinn::Connection, Arc<Notify>)> {
        let mut inner = self.lock();
        let (id, entry) = inner.runners.iter_mut().find(|(id, r)| {
            r.busy.is_none()
                && r.conn.close_reason().is_none()
                && match target {
                    RunnerTarget::Any => true,
                    RunnerTarget::Id(want) => *id == want,
                    RunnerTarget::Labels(want) => {
                        want.iter().all(|(k, v)| r.labels.get(k) == Some(v))
                    }
                }
        })?;
        entry.busy = Some(job);
        let out = (id.clone(), entry.conn.clone());
        let cancel = Arc::new(Notify::new());
        inner.cancels.insert(job, cancel.clone());
        Some((out.0, out.1, cancel))
    }

    /// Jobs a task on this node is driving (offered to a runner connected here).
    fn driven(&self) -> BTreeSet<JobId> {
        self.lock().cancels.keys().copied().collect()
    }

    fn unclaim(&self, runner: &str, job: JobId) {
        self.release_runner(runner, job);
    }
}

/// The scheduler: runs until `shutdown`, offering queued jobs to runners.
/// Each time this node becomes the leader it first takes over (see
/// [`take_over`]); until that succeeded it schedules nothing.
pub async fn run_scheduler(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut metrics = ctx.raft.metrics_watch();
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
        if !ctx.raft.is_leader() {
            taken_over_term = None;
            continue;
        }
        let term = ctx.raft.metrics().current_term;
        if taken_over_term != Some(term) {
            if !take_over(&ctx).await {
                continue;
            }
            taken_over_term = Some(term);
        }
        schedule_once(&ctx).await;
    }
}

/// Reason recorded on jobs a new leader finds assigned or running.
pub const TAKEOVER_REASON: &str = "interrupted by a leader change: the job's runner stream was on the previous leader, so its progress can no longer be recorded; it was not run again (jobs run at most once)";

/// A new leader's first duty: jobs that are assigned or running but not
/// driven by this node had their runner stream on the previous leader (a
/// runner's job stream always goes to the leader that offered it). Nothing
/// can follow them any more: fail them with a reason, so they release their
/// app and their clients see the end. They are never offered again: a job
/// runs at most once (a runner still working on one finds its operations
/// refused, since the job is no longer running). Queued jobs stay queued and
/// are offered by this leader. Returns `false` if the write failed (retried
/// on the next tick).
async fn take_over(ctx: &Arc<Ctx>) -> bool {
    let orphans: Vec<JobId> = {
        let driven = ctx.jobs.driven();
        ctx.raft.read_local(|s| {
            s.jobs
                .values()
                .filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
                .filter(|j| !driven.contains(&j.id))
                .map(|j| j.id)
                .collect()
        })
    };
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
            tracing::warn!(jobs = ?orphans, "new leader failed jobs whose runner streams were on the previous leader");
            for id in orphans {
                let rec = ctx
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

async fn schedule_once(ctx: &Arc<Ctx>) {
    let (queued, mut busy_apps): (Vec<Job>, BTreeSet<(String, String)>) =
        ctx.raft.read_local(|s| {
            let queued = s
                .jobs
                .values()
                .filter(|j| j.state == JobState::Queued)
                .cloned()
                .collect();
            let busy = s
                .jobs
                .values()
                .filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
                .map(|j| (j.spec.project.clone(), j.spec.app.clone()))
                .collect();
            (queued, busy)
        });
    for job in queued {
        let app = (job.spec.project.clone(), job.spec.app.clone());
        if busy_apps.contains(&app) {
            continue;
        }
        let Some((runner, conn, cancel)) = ctx.jobs.claim_runner(&job.spec.target, job.id) else {
            fail_if_runner_gone(ctx, &job).await;
            continue;
        };
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
                tokio::spawn(async move { drive(ctx2, job, runner, conn, cancel).await });
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
async fn fail_if_runner_gone(ctx: &Arc<Ctx>, job: &Job) {
    let RunnerTarget::Id(id) = &job.spec.target else {
        return;
    };
    let is_cli = ctx
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

/// Offer `job` to `runner` and relay its events until it ends.
async fn drive(
    ctx: Arc<Ctx>,
    job: Job,
    runner: String,
    conn: quinn::Connection,
    cancel: Arc<Notify>,
) {
    let id = job.id;
    let outcome = drive_inner(&ctx, job, &conn, &cancel).await;
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
    let (state, error) = ctx
        .raft
        .read_local(|s| s.jobs.get(&id).map(|j| (j.state, j.error.clone())))
        .unwrap_or((state, error));
    ctx.jobs.publish(id, JobEvent::Finished { state, error });
    ctx.jobs.release_runner(&runner, id);
}

async fn drive_inner(
    ctx: &Arc<Ctx>,
    job: Job,
    conn: &quinn::Connection,
    cancel: &Notify,
) -> Result<(JobState, Option<String>), String> {
    let id = job.id;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write(&mut send, &NodeToRunner::Offer { job: Box::new(job) })
        .await
        .map_err(|e| e.to_string())?;
    let first: RunnerToNode = tokio::time::timeout(OFFER_TIMEOUT, frame::read_required(&mut recv))
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
    frame::write(&mut send, &NodeToRunner::Started)
        .await
        .map_err(|e| e.to_string())?;
    ctx.jobs.publish(
        id,
        JobEvent::State {
            state: JobState::Running,
            runner: None,
        },
    );
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            msg = frame::read::<_, RunnerToNode>(&mut recv) => {
                match msg.map_err(|e| e.to_string())? {
                    None => return Err("the job stream ended without a result".into()),
                    Some(RunnerToNode::Event(ev)) => ctx.jobs.publish(id, ev),
                    Some(RunnerToNode::Done { state, error }) => {
                        if !state.is_final() {
                            return Err(format!("it ended the job in a non-final state ({})", state.word()));
                        }
                        return Ok((state, error));
                    }
                    Some(other) => return Err(format!("unexpected message {other:?}")),
                }
            }
            _ = cancel.notified(), if !cancel_sent => {
                cancel_sent = true;
                frame::write(&mut send, &NodeToRunner::Cancel).await.map_err(|e| e.to_string())?;
            }
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
    labels: std::collections::BTreeMap<String, String>,
) -> cairn_protocol::types::Runner {
    cairn_protocol::types::Runner {
        id: id.to_string(),
        kind,
        labels,
        registered_ms: 0,
        last_seen_ms: 0,
    }
}
