//! The jobs half of the workload: a headless runner and job queuers, so a
//! chaos run also exercises the job queue across failovers.
//!
//! - One runner (`RegisterRunner` on a client connection, like a CLI or an
//!   agent) connects to a random node, moves to another node when its
//!   connection dies or its node stops answering, and runs every job it is
//!   offered: accept, wait for `Started`, record a deployment and a release
//!   (`BeginOperation` + `CompleteOperation` on its own registered
//!   connection, as a runner must; idempotent, retried), then `Done`.
//! - One queuer per app queues jobs aimed at that runner (idempotent, retried)
//!   and waits for each to end before queueing the next.
//!
//! What is recorded: every acknowledged queueing (job id), every `Started`
//! the runner saw (job id), and every `BeginOperation` with its answer
//! (sequence number) and invoke/complete times. [`check`] then asserts: no
//! job started twice, no job recorded two operations of a kind, sequence
//! numbers per app and kind never go back (an operation begun after another
//! one's answer gets a larger number) and are never reused, and nothing
//! acknowledged is missing afterwards (jobs, operations with their numbers).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse, NodeToRunner, RunnerToNode};
use cairn_protocol::frame;
use cairn_protocol::rpc::{self, RpcError, Session};
use cairn_protocol::types::{
    JobId, JobKind, JobSpec, JobState, OpCompletion, OpKind, OpStatus, Operation, RunnerKind,
    RunnerTarget,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::dial;
use crate::workload::{Config, Outcome};

/// Project of the jobs' apps.
pub const JOB_PROJECT: &str = "chaos-jobs";
/// Apps `a0`, `a1`, … (one queuer each).
pub const APPS: usize = 2;
/// Attempts of one idempotent request (each through a fresh connection to
/// another node after a failure).
const ATTEMPTS: usize = 4;

pub fn app_name(i: usize) -> String {
    format!("a{i}")
}

pub fn runner_id(seed: u64) -> String {
    format!("chaos-runner-{seed}")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Queued {
    pub app: String,
    pub job: Option<JobId>,
    pub outcome: Outcome,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Started {
    pub job: JobId,
    /// Node (index) the runner was connected to.
    pub node: usize,
    pub at_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Begun {
    pub job: JobId,
    pub app: String,
    pub kind: OpKind,
    /// The sequence number the cluster answered (acknowledged only).
    pub sequence: Option<u64>,
    pub outcome: Outcome,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobHistory {
    pub queued: Vec<Queued>,
    pub started: Vec<Started>,
    pub begun: Vec<Begun>,
    /// Jobs the runner finished with `Done(success)`.
    pub done: Vec<JobId>,
}

/// What the cluster holds after healing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobsFinal {
    pub jobs: BTreeMap<JobId, JobState>,
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobsReport {
    pub queued: usize,
    pub started: usize,
    pub succeeded: usize,
    /// Problems found; empty when every check held.
    pub violations: Vec<String>,
}

fn us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// A client that sends requests to one node at a time and moves to another
/// one when its node fails it.
struct Mover {
    cfg: Config,
    rng: ChaCha8Rng,
    node: usize,
    session: Option<Session>,
    /// Idempotency: this client's id and its next request number.
    client: u64,
    next_req: u64,
}

impl Mover {
    fn new(cfg: &Config, salt: u64) -> Mover {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ salt);
        let node = rng.gen_range(0..cfg.nodes.len());
        let client = rng.gen();
        Mover {
            cfg: cfg.clone(),
            rng,
            node,
            session: None,
            client,
            next_req: 0,
        }
    }

    fn move_on(&mut self) {
        if let Some(s) = self.session.take() {
            s.conn.close(0u32.into(), b"moving on");
        }
        let n = self.cfg.nodes.len();
        if n > 1 {
            self.node = (self.node + self.rng.gen_range(1..n)) % n;
        }
    }

    async fn session(&mut self) -> Option<&Session> {
        if self.session.is_none() {
            let d = dial(self.cfg.nodes[self.node], &self.cfg.ca, &self.cfg.token);
            match rpc::connect(&d).await {
                Ok(s) => self.session = Some(s),
                Err(_) => {
                    self.move_on();
                    return None;
                }
            }
        }
        self.session.as_ref()
    }

    /// Send `req` (wrapped idempotent when it is a retryable write) up to
    /// [`ATTEMPTS`] times. `Err` carries the last error; whether a write
    /// took effect is then unknown.
    async fn call(&mut self, req: ClientRequest) -> Result<ClientResponse, String> {
        let req = if req.is_retryable_write() {
            self.next_req += 1;
            req.idempotent(self.client, self.next_req)
        } else {
            req
        };
        let mut last = String::from("no attempt");
        for _ in 0..ATTEMPTS {
            let timeout = self.cfg.op_timeout;
            let Some(s) = self.session().await else {
                last = "no node reachable".into();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match tokio::time::timeout(timeout, rpc::call(&s.conn, &req)).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(RpcError::Remote(m))) => {
                    last = m;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    self.move_on();
                }
                Err(_) => {
                    last = format!("timed out after {timeout:?}");
                    self.move_on();
                }
            }
        }
        Err(last)
    }
}

impl Mover {
    /// Like [`Mover::call`] but on a given connection (a runner's own,
    /// which alone may record its job's operations): retried only while
    /// the connection lives.
    async fn call_on(
        &mut self,
        conn: &quinn::Connection,
        req: ClientRequest,
    ) -> Result<ClientResponse, String> {
        self.next_req += 1;
        let req = req.idempotent(self.client, self.next_req);
        let mut last = String::from("no attempt");
        for _ in 0..ATTEMPTS {
            let timeout = self.cfg.op_timeout;
            match tokio::time::timeout(timeout, rpc::call(conn, &req)).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(RpcError::Remote(m))) => {
                    last = m;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => last = format!("timed out after {timeout:?}"),
            }
        }
        Err(last)
    }
}

/// Run the runner and the queuers until `stop`; returns what they recorded.
pub async fn run(cfg: Config, start: Instant, stop: Arc<AtomicBool>) -> JobHistory {
    let hist = Arc::new(Mutex::new(JobHistory::default()));
    let runner = tokio::spawn(runner(cfg.clone(), start, stop.clone(), hist.clone()));
    let mut queuers = Vec::new();
    for a in 0..APPS {
        queuers.push(tokio::spawn(queuer(
            cfg.clone(),
            a,
            start,
            stop.clone(),
            hist.clone(),
        )));
    }
    for q in queuers {
        if let Err(e) = q.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    // The runner finishes the job in hand before it stops.
    if let Err(e) = runner.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let h = hist.lock().map(|h| h.clone()).unwrap_or_default();
    h
}

fn spec(app: &str, runner: &str) -> JobSpec {
    JobSpec {
        kind: JobKind::Up {
            release: true,
            prune: false,
            retain: None,
        },
        project: JOB_PROJECT.into(),
        app: app.into(),
        workspace: "default".into(),
        source: cairn_protocol::types::Source::Local {
            dir: "/nonexistent".into(),
            config: "cairn.hcl".into(),
        },
        target: RunnerTarget::Id(runner.into()),
    }
}

async fn queuer(
    cfg: Config,
    a: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    hist: Arc<Mutex<JobHistory>>,
) {
    let app = app_name(a);
    let runner = runner_id(cfg.seed);
    let mut m = Mover::new(&cfg, 0x51ed_0000 + a as u64);
    while !stop.load(Ordering::Relaxed) {
        let invoke_us = us(start);
        let r = m
            .call(ClientRequest::QueueJob {
                spec: spec(&app, &runner),
            })
            .await;
        let complete_us = us(start);
        let (job, outcome, error) = match r {
            Ok(ClientResponse::JobQueued { id }) => (Some(id), Outcome::Ok, None),
            Ok(other) => (None, Outcome::Unknown, Some(format!("{other:?}"))),
            Err(e) => (None, Outcome::Unknown, Some(e)),
        };
        if let Ok(mut h) = hist.lock() {
            h.queued.push(Queued {
                app: app.clone(),
                job,
                outcome,
                invoke_us,
                complete_us,
                error,
            });
        }
        // Wait (bounded) for the job to end before queueing the next one,
        // so jobs do not pile up behind faults.
        if let Some(id) = job {
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                if let Ok(ClientResponse::Job(j)) = m.call(ClientRequest::InspectJob { id }).await {
                    if j.state.is_final() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The runner: register, take offers, move to another node when the
/// connection breaks or the node stops answering a probe.
async fn runner(cfg: Config, start: Instant, stop: Arc<AtomicBool>, hist: Arc<Mutex<JobHistory>>) {
    let id = runner_id(cfg.seed);
    let mut conn_m = Mover::new(&cfg, 0x7e57_0001);
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = conn_m.session().await.map(|s| s.conn.clone()) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let node = conn_m.node;
        let reg = async {
            let (send, mut recv) = rpc::open(
                &conn,
                &ClientRequest::RegisterRunner {
                    id: id.clone(),
                    kind: RunnerKind::Agent,
                    labels: Default::default(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            match frame::read_required::<_, ClientResponse>(&mut recv).await {
                Ok(ClientResponse::Registered) => Ok((send, recv)),
                Ok(other) => Err(format!("{other:?}")),
                Err(e) => Err(e.to_string()),
            }
        };
        let registration = match tokio::time::timeout(cfg.op_timeout, reg).await {
            Ok(Ok(r)) => r,
            _ => {
                conn_m.move_on();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Serve offers until the connection breaks, the node stops
        // answering, or the run stops.
        let mut probe = tokio::time::interval(Duration::from_secs(2));
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::select! {
                st = conn.accept_bi() => match st {
                    Ok((send, recv)) => {
                        run_offer(&mut conn_m, &conn, send, recv, node, start, &hist).await;
                    }
                    Err(_) => break,
                },
                _ = probe.tick() => {
                    let ok = tokio::time::timeout(
                        Duration::from_secs(2),
                        rpc::call(&conn, &ClientRequest::ServerInfo),
                    )
                    .await;
                    if !matches!(ok, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        drop(registration);
        conn_m.move_on();
    }
}

/// One offer, end to end. Any failure abandons the job (the node records
/// why); nothing here is retried except the idempotent operation writes.
async fn run_offer(
    m: &mut Mover,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    node: usize,
    start: Instant,
    hist: &Arc<Mutex<JobHistory>>,
) {
    let wait = Duration::from_secs(10);
    let job = match tokio::time::timeout(wait, frame::read_required::<_, NodeToRunner>(&mut recv))
        .await
    {
        Ok(Ok(NodeToRunner::Offer { job })) => job,
        // A new leader resuming a job whose stream broke: this runner does
        // not resume jobs (its job is a few requests, over or abandoned by
        // then), and says so: the job fails at once rather than after the
        // leader's resume window.
        Ok(Ok(NodeToRunner::Resume { job, .. })) => {
            let reason = format!("the chaos runner gave job {job} up when its stream broke");
            let _ = frame::write(&mut send, &RunnerToNode::Decline { reason }).await;
            let _ = send.finish();
            return;
        }
        _ => return,
    };
    if frame::write(&mut send, &RunnerToNode::Accept)
        .await
        .is_err()
    {
        return;
    }
    let heartbeat = match tokio::time::timeout(
        wait,
        frame::read_required::<_, NodeToRunner>(&mut recv),
    )
    .await
    {
        Ok(Ok(NodeToRunner::Started)) => None,
        Ok(Ok(NodeToRunner::StartedWithLease { heartbeat_ms })) => {
            Some(Duration::from_millis(heartbeat_ms.max(100)))
        }
        _ => return,
    };
    // Hold the lease as a runner does: a heartbeat until the job's end,
    // which goes through the same task (one writer on the stream).
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<RunnerToNode>();
    let writer = tokio::spawn(async move {
        let mut end_rx = end_rx;
        let mut tick = tokio::time::interval(heartbeat.unwrap_or(Duration::from_secs(3600)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick(), if heartbeat.is_some() => {
                    if frame::write(&mut send, &RunnerToNode::Heartbeat).await.is_err() {
                        return false;
                    }
                }
                end = &mut end_rx => {
                    let Ok(end) = end else { return false };
                    if frame::write(&mut send, &end).await.is_err() {
                        return false;
                    }
                    let _ = send.finish();
                    return true;
                }
            }
        }
    });
    if let Ok(mut h) = hist.lock() {
        h.started.push(Started {
            job: job.id,
            node,
            at_us: us(start),
        });
    }
    let mut input = None;
    for kind in [OpKind::Deployment, OpKind::Release] {
        let invoke_us = us(start);
        let r = m
            .call_on(
                conn,
                ClientRequest::BeginOperation {
                    job_id: job.id,
                    kind,
                    plugin: "chaos".into(),
                    input_seq: input,
                },
            )
            .await;
        let complete_us = us(start);
        let (op_id, sequence, outcome, error) = match r {
            Ok(ClientResponse::OperationStarted { id, sequence }) => {
                (Some(id), Some(sequence), Outcome::Ok, None)
            }
            Ok(other) => (None, None, Outcome::Unknown, Some(format!("{other:?}"))),
            Err(e) => (None, None, Outcome::Unknown, Some(e)),
        };
        if let Ok(mut h) = hist.lock() {
            h.begun.push(Begun {
                job: job.id,
                app: job.spec.app.clone(),
                kind,
                sequence,
                outcome,
                invoke_us,
                complete_us,
                error,
            });
        }
        let Some(op_id) = op_id else {
            return;
        };
        let done = m
            .call_on(
                conn,
                ClientRequest::CompleteOperation(OpCompletion {
                    op_id,
                    status: OpStatus::Success,
                    result: None,
                    error: None,
                    output: Vec::new(),
                    output_dropped: 0,
                    url: None,
                }),
            )
            .await;
        if !matches!(done, Ok(ClientResponse::Ok)) {
            return;
        }
        input = sequence;
    }
    let fin = RunnerToNode::Done {
        state: JobState::Success,
        error: None,
    };
    let _ = end_tx.send(fin);
    if writer.await.unwrap_or(false) {
        if let Ok(mut h) = hist.lock() {
            h.done.push(job.id);
        }
        // Let the node read it before the stream is dropped.
        let _ = tokio::time::timeout(wait, recv.read_to_end(1024)).await;
    }
}

/// Read the jobs and operations of [`JOB_PROJECT`] through any node that
/// answers, until `deadline`.
pub async fn final_read(cfg: &Config, deadline: Instant) -> Option<JobsFinal> {
    let mut m = Mover::new(cfg, 0xf1a1);
    while Instant::now() < deadline {
        let jobs = m.call(ClientRequest::ListJobs { limit: 0 }).await;
        let mut operations = Vec::new();
        let mut ok = true;
        for kind in [OpKind::Deployment, OpKind::Release] {
            match m
                .call(ClientRequest::ListOperations {
                    kind,
                    project: Some(JOB_PROJECT.into()),
                    app: None,
                })
                .await
            {
                Ok(ClientResponse::Operations(ops)) => operations.extend(ops),
                _ => ok = false,
            }
        }
        if let (Ok(ClientResponse::Jobs(jobs)), true) = (jobs, ok) {
            let jobs = jobs
                .into_iter()
                .filter(|j| j.spec.project == JOB_PROJECT)
                .map(|j| (j.id, j.state))
                .collect();
            return Some(JobsFinal { jobs, operations });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// After healing, one more job must run to success within `within`: the
/// runner found a node that offers it jobs. Returns the job's final state.
pub async fn liveness_job(cfg: &Config, within: Duration) -> Result<JobId, String> {
    let deadline = Instant::now() + within;
    let mut m = Mover::new(cfg, 0x11fe);
    let id = match m
        .call(ClientRequest::QueueJob {
            spec: spec(&app_name(0), &runner_id(cfg.seed)),
        })
        .await
    {
        Ok(ClientResponse::JobQueued { id }) => id,
        other => return Err(format!("could not queue the after-healing job: {other:?}")),
    };
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(ClientResponse::Job(j)) = m.call(ClientRequest::InspectJob { id }).await {
            if j.state.is_final() {
                return if j.state == JobState::Success {
                    Ok(id)
                } else {
                    Err(format!(
                        "the after-healing job {id} ended {}: {}",
                        j.state.word(),
                        j.error.unwrap_or_default()
                    ))
                };
            }
            last = Some(j.state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "the after-healing job {id} did not finish within {within:?} (last seen {})",
        last.map(|s| s.word()).unwrap_or("nothing")
    ))
}

/// The checks described in the module docs.
pub fn check(h: &JobHistory, fin: &JobsFinal) -> JobsReport {
    let mut v = Vec::new();
    // No job started twice.
    let mut starts: HashMap<JobId, usize> = HashMap::new();
    for s in &h.started {
        *starts.entry(s.job).or_default() += 1;
    }
    for (job, n) in &starts {
        if *n > 1 {
            v.push(format!("job {job} was started {n} times (ran twice)"));
        }
    }
    // Acknowledged jobs are all there.
    for q in h.queued.iter().filter(|q| q.outcome == Outcome::Ok) {
        if let Some(id) = q.job {
            if !fin.jobs.contains_key(&id) {
                v.push(format!("acknowledged job {id} (app {}) is missing", q.app));
            }
        }
    }
    // At most one operation of a kind per job; sequences never reused.
    let mut per_job: HashMap<(JobId, OpKind), usize> = HashMap::new();
    let mut seqs: HashMap<(String, OpKind, u64), u64> = HashMap::new();
    for op in &fin.operations {
        *per_job.entry((op.job_id, op.kind)).or_default() += 1;
        if let Some(other) = seqs.insert((op.app.clone(), op.kind, op.sequence), op.id) {
            v.push(format!(
                "{} {} v{} recorded twice (operations {other} and {})",
                op.app,
                op.kind.noun(),
                op.sequence,
                op.id
            ));
        }
    }
    for ((job, kind), n) in &per_job {
        if *n > 1 {
            v.push(format!(
                "job {job} recorded {n} {} operations (ran twice)",
                kind.noun()
            ));
        }
    }
    // Acknowledged operations are there with the number they were given.
    for b in h.begun.iter().filter(|b| b.outcome == Outcome::Ok) {
        let Some(seq) = b.sequence else { continue };
        let found = fin
            .operations
            .iter()
            .any(|o| o.job_id == b.job && o.kind == b.kind && o.sequence == seq);
        if !found {
            v.push(format!(
                "acknowledged {} v{seq} of job {} (app {}) is missing",
                b.kind.noun(),
                b.job,
                b.app
            ));
        }
    }
    // Sequence numbers never go back: one begun after another's answer
    // has a larger number (same app and kind).
    let acked: Vec<&Begun> = h
        .begun
        .iter()
        .filter(|b| b.outcome == Outcome::Ok && b.sequence.is_some())
        .collect();
    for a in &acked {
        for b in &acked {
            if a.app == b.app
                && a.kind == b.kind
                && a.complete_us < b.invoke_us
                && b.sequence <= a.sequence
            {
                v.push(format!(
                    "{} {} went back: v{} (job {}) was answered before job {} began and got v{}",
                    a.app,
                    a.kind.noun(),
                    a.sequence.unwrap_or(0),
                    a.job,
                    b.job,
                    b.sequence.unwrap_or(0)
                ));
            }
        }
    }
    JobsReport {
        queued: h.queued.iter().filter(|q| q.outcome == Outcome::Ok).count(),
        started: starts.len(),
        succeeded: fin
            .jobs
            .values()
            .filter(|s| **s == JobState::Success)
            .count(),
        violations: v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begun(job: JobId, seq: u64, invoke: u64, complete: u64) -> Begun {
        Begun {
            job,
            app: "a0".into(),
            kind: OpKind::Release,
            sequence: Some(seq),
            outcome: Outcome::Ok,
            invoke_us: invoke,
            complete_us: complete,
            error: None,
        }
    }

    fn op(id: u64, job: JobId, seq: u64) -> Operation {
        Operation {
            id,
            kind: OpKind::Release,
            project: JOB_PROJECT.into(),
            app: "a0".into(),
            workspace: "default".into(),
            sequence: seq,
            status: OpStatus::Success,
            plugin: "chaos".into(),
            job_id: job,
            requested_by: "test".into(),
            started_ms: 0,
            completed_ms: Some(1),
            result: None,
            error: None,
            output: Vec::new(),
            output_dropped: 0,
            url: None,
            input_seq: None,
            state: cairn_protocol::types::ResourceState::Active,
        }
    }

    fn good() -> (JobHistory, JobsFinal) {
        let h = JobHistory {
            queued: vec![Queued {
                app: "a0".into(),
                job: Some(1),
                outcome: Outcome::Ok,
                invoke_us: 0,
                complete_us: 5,
                error: None,
            }],
            started: vec![
                Started {
                    job: 1,
                    node: 0,
                    at_us: 10,
                },
                Started {
                    job: 2,
                    node: 1,
                    at_us: 40,
                },
            ],
            begun: vec![begun(1, 1, 10, 20), begun(2, 2, 30, 40)],
            done: vec![1, 2],
        };
        let fin = JobsFinal {
            jobs: [(1, JobState::Success), (2, JobState::Success)].into(),
            operations: vec![op(1, 1, 1), op(2, 2, 2)],
        };
        (h, fin)
    }

    #[test]
    fn a_clean_history_passes() {
        let (h, fin) = good();
        let r = check(&h, &fin);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.queued, r.started, r.succeeded), (1, 2, 2));
    }

    #[test]
    fn a_job_started_twice_is_caught() {
        let (mut h, fin) = good();
        h.started.push(Started {
            job: 1,
            node: 2,
            at_us: 50,
        });
        let r = check(&h, &fin);
        assert!(r.violations.iter().any(|v| v.contains("started 2 times")));
    }

    #[test]
    fn two_operations_of_one_job_are_caught() {
        let (h, mut fin) = good();
        fin.operations.push(op(3, 1, 3));
        let r = check(&h, &fin);
        assert!(r.violations.iter().any(|v| v.contains("ran twice")));
    }

    #[test]
    fn a_sequence_going_back_or_reused_is_caught() {
        let (mut h, fin) = good();
        // Job 2 began after job 1's answer but got a smaller number.
        h.begun[1].sequence = Some(1);
        let r = check(&h, &fin);
        assert!(r.violations.iter().any(|v| v.contains("went back")));
        let (h, mut fin) = good();
        fin.operations[1].sequence = 1;
        let r = check(&h, &fin);
        assert!(r.violations.iter().any(|v| v.contains("recorded twice")));
    }

    #[test]
    fn lost_acknowledged_records_are_caught() {
        let (h, mut fin) = good();
        fin.jobs.remove(&1);
        fin.operations.remove(1);
        let r = check(&h, &fin);
        assert!(r
            .violations
            .iter()
            .any(|v| v.contains("job 1 (app a0) is missing")));
        assert!(r
            .violations
            .iter()
            .any(|v| v.contains("release v2 of job 2")));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let (mut h, fin) = good();
        // Overlapping in time: no order is implied.
        h.begun[1].invoke_us = 15;
        h.begun[1].sequence = Some(2);
        h.begun[0].sequence = Some(1);
        assert!(check(&h, &fin).violations.is_empty());
    }
}
