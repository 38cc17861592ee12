//! `cairn runner agent`: a standalone runner. It registers as
//! [`RunnerKind::Agent`] on a client connection to any member of the
//! context's cluster (nodes relay offers to runners connected to
//! followers), runs the jobs offered to it with the same code as the CLI's
//! own runner (`Source::Local` directories are read on this machine), and
//! moves to another member when its node dies or stops answering.
//!
//! Invariants:
//! - At most `--concurrency` jobs at a time (1 unless said): an offer that
//!   arrives while that many are in hand is declined.
//! - A job in hand outlives its node: when the agent moves, its jobs keep
//!   running, the agent registers with the next node saying it carries
//!   them, and the leader resumes each job's stream there
//!   (`NodeToRunner::Resume`); their requests wait for the new connection
//!   (see `JobRun::call`). A job nothing resumes within `RESUME_GIVE_UP`
//!   stops before its next step (the cluster has failed it by then).
//! - The node is probed with `ServerInfo` every [`PROBE_INTERVAL`]. After
//!   [`PROBE_MISSES`] unanswered probes in a row (each bounded by
//!   [`PROBE_TIMEOUT`]), or [`LEADERLESS_PROBES`] answers without a leader,
//!   or when the connection closes, the agent closes the connection and
//!   moves: first to the leader it last heard of, then to the other members,
//!   the node it left last. It retries with backoff ([`BACKOFF_MIN`] doubling
//!   to [`BACKOFF_MAX`]) forever, and logs one line per move.
//! - Stopping (the first signal): stop taking offers at once, cancel the job
//!   in hand and wait up to [`STOP_GRACE`] for it to end; a second signal
//!   stops waiting.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse, NodeToRunner, RunnerStatus, ServerInfo};
use cairn_protocol::rpc::{self, RpcError, Session};
use cairn_protocol::types::{JobId, JobState, RunnerKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    decline, first_frame, register, run_offer, OfferOutcome, Registration, Resumed, RunnerOptions,
};
use crate::context::Context;
use crate::{client, local, paths};

/// How often the agent asks its node for `ServerInfo`.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one probe may take before it counts as unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Unanswered probes in a row after which the node counts as gone.
pub const PROBE_MISSES: u32 = 2;
/// Answers without a leader in a row after which the agent moves (its node
/// is cut off from the majority: no job can reach it there).
pub const LEADERLESS_PROBES: u32 = 8;
/// How long registering (a replicated write) may take.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait after a failed attempt to connect and register.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long the same failure to reconnect stays unsaid after it was said.
pub const REPEAT_QUIET: Duration = Duration::from_secs(60);
/// How long a stopping agent waits for the job in hand to end.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// File (in the CLI's data dir) holding this machine's agent id.
const ID_FILE: &str = "runner-agent.id";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    IdFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why one attempt to connect and register failed.
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("{0}")]
    Connect(RpcError),
    #[error("the local node is not running (any `cairn` command starts it)")]
    NoLocalNode,
    #[error("registering with node {node:x} at {addr}: {reason}")]
    Register {
        node: u64,
        addr: String,
        reason: String,
    },
}

/// The agent's id when `--id` is not given: read from the CLI's data dir,
/// or made from the host name (plus a random suffix) and stored there, so it
/// stays the same across restarts.
pub fn stable_id() -> Result<String, AgentError> {
    let dir = paths::data_dir();
    let path = dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AgentError::IdFile { path, source }),
    }
    let suffix = &cairn_protocol::token::hash(&cairn_protocol::token::generate("r"))[..8];
    let id = format!("agent-{}-{suffix}", host_name());
    std::fs::create_dir_all(&dir).map_err(|source| AgentError::IdFile {
        path: dir.clone(),
        source,
    })?;
    std::fs::write(&path, format!("{id}\n")).map_err(|source| AgentError::IdFile {
        path: path.clone(),
        source,
    })?;
    Ok(id)
}

/// This machine's name, reduced to characters that read well in an id.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .collect();
    if host.is_empty() {
        "host".into()
    } else {
        host
    }
}

/// Runner options for an agent: its id and labels; artifacts and
/// deployments in this machine's runner dir (as for the CLI's runner).
pub fn options(
    id: String,
    labels: BTreeMap<String, String>,
    catalog: std::sync::Arc<crate::plugins::Catalog>,
) -> RunnerOptions {
    let self_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn"));
    RunnerOptions {
        id,
        kind: RunnerKind::Agent,
        labels,
        data_dir: paths::runner_dir(),
        entrypoint_argv: super::entrypoint_argv(&self_exe),
        self_exe,
        catalog,
        inputs: Default::default(),
        capacity: 1,
    }
}

/// One line of the agent's log on stdout, stamped with UTC time.
pub fn say(line: &str) {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let now = time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default();
    println!("{now} {line}");
}

/// What the agent last heard of the cluster: members' addresses and the
/// leader's.
#[derive(Debug, Clone, Default)]
struct Cluster {
    members: Vec<String>,
    leader: Option<String>,
}

impl Cluster {
    fn learn(&mut self, info: &ServerInfo) {
        if !info.members.is_empty() {
            self.members = info.members.iter().map(|(_, a)| a.clone()).collect();
        }
        self.leader = info.leader.and_then(|l| {
            info.members
                .iter()
                .find(|(id, _)| *id == l)
                .map(|(_, a)| a.clone())
        });
    }
}

/// Where the agent is registered.
struct Here {
    node: u64,
    addr: String,
}

/// Why the agent left a connection.
enum Left {
    Stopped,
    Lost(String),
}

/// A job the agent holds.
struct InHand {
    cancel: Arc<AtomicBool>,
    since: Instant,
    /// Where a resumed stream for it goes (`None` once nothing can resume it).
    resumes: Option<mpsc::UnboundedSender<Resumed>>,
}

/// The jobs the agent holds: their tasks (each ends with its job's id and
/// outcome) and what the agent keeps of each.
#[derive(Default)]
struct Jobs {
    tasks: JoinSet<(JobId, Option<OfferOutcome>)>,
    held: HashMap<JobId, InHand>,
}

impl Jobs {
    /// Say how a finished job ended and forget it.
    fn ended(&mut self, id: JobId, outcome: Option<OfferOutcome>, note: Option<&str>) {
        if let Some(h) = self.held.remove(&id) {
            if let Some(o) = outcome {
                say(&job_line(&o, h.since.elapsed(), note));
            }
        }
    }

    /// Forget the jobs that ended meanwhile.
    fn reap(&mut self) {
        while let Some(r) = self.tasks.try_join_next() {
            if let Ok((id, outcome)) = r {
                self.ended(id, outcome, None);
            }
        }
    }

    /// The next job to end (pending while there is none).
    async fn next_end(&mut self) -> (JobId, Option<OfferOutcome>) {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(r)) => return r,
                // A panicked job task: its entry goes when the set is empty.
                Some(Err(_)) => continue,
                None => {
                    self.held.clear();
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// The agent will not connect again: nothing resumes the jobs in hand
    /// (each stops before its next step, or at once when cancelled).
    fn unreachable(&mut self) {
        for h in self.held.values_mut() {
            h.resumes = None;
        }
    }

    /// The jobs in hand, for a registration.
    fn carrying(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.held.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

pub struct Agent {
    ctx: Context,
    opts: Arc<RunnerOptions>,
    cluster: Arc<Mutex<Cluster>>,
}

/// A stream the node opened, with its first frame read.
type Incoming = (NodeToRunner, quinn::SendStream, quinn::RecvStream);

impl Agent {
    pub fn new(ctx: Context, opts: Arc<RunnerOptions>) -> Agent {
        Agent {
            ctx,
            opts,
            cluster: Arc::new(Mutex::new(Cluster::default())),
        }
    }

    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        // Poisoned only by a panic while holding it; the lists stay usable.
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run until `stop`: connect, register, take jobs; move to another
    /// member whenever the node is lost, keeping the jobs in hand. `force`
    /// (a second signal) stops waiting for the jobs in hand. Fails only
    /// when the very first connection is refused (a bad token or version:
    /// every member would say the same).
    pub async fn run(
        self,
        stop: CancellationToken,
        force: CancellationToken,
    ) -> Result<(), AgentError> {
        let mut backoff = BACKOFF_MIN;
        // Where the agent was and why it left: the next line says "moved".
        let mut last: Option<(Here, String)> = None;
        // Addresses that failed since the last registration: tried last.
        let mut avoid: Vec<String> = Vec::new();
        let mut registered_once = false;
        // The last failure said, and when.
        let mut quiet: Option<(String, Instant)> = None;
        let mut jobs = Jobs::default();
        // The connection the jobs' requests use (replaced at each move).
        let mut link: Option<watch::Sender<quinn::Connection>> = None;
        loop {
            jobs.reap();
            let attempt = tokio::select! {
                r = self.attach(&avoid, jobs.carrying()) => r,
                _ = stop.cancelled() => {
                    jobs.unreachable();
                    self.wind_down(&mut jobs, &force, "the agent stopped").await;
                    return Ok(());
                }
            };
            let (session, registration, here) = match attempt {
                Ok(x) => x,
                Err(e) => {
                    if let AttachError::Connect(RpcError::Refused(reason)) = &e {
                        // An enrolled runner that was forgotten or rejected
                        // stays refused: say so and stop.
                        let enrolled = self.ctx.runner.is_some();
                        if !registered_once
                            || (enrolled && super::identity::refusal_is_final(reason))
                        {
                            jobs.unreachable();
                            self.wind_down(&mut jobs, &force, "the agent was refused")
                                .await;
                            return Err(AgentError::Refused(format!(
                                "the node refused the connection: {reason}"
                            )));
                        }
                    }
                    if let AttachError::Register { addr, .. } = &e {
                        if !avoid.contains(addr) {
                            avoid.push(addr.clone());
                        }
                    }
                    // One line per new error, then one a minute while it lasts.
                    let text = e.to_string();
                    let repeat = quiet
                        .as_ref()
                        .is_some_and(|(t, at)| *t == text && at.elapsed() < REPEAT_QUIET);
                    if !repeat {
                        say(&format!(
                            "{text}; trying again in {:.1} s (with backoff, up to {} s)",
                            backoff.as_secs_f64(),
                            BACKOFF_MAX.as_secs()
                        ));
                        quiet = Some((text, Instant::now()));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => {
                            jobs.unreachable();
                            self.wind_down(&mut jobs, &force, "the agent stopped").await;
                            return Ok(());
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            registered_once = true;
            quiet = None;
            match &link {
                Some(l) => {
                    l.send_replace(session.conn.clone());
                }
                None => link = Some(watch::channel(session.conn.clone()).0),
            }
            let id = &self.opts.id;
            let carried = match jobs.held.len() {
                0 => String::new(),
                n => format!(
                    " carrying {} ({}), for the leader to resume",
                    in_hand_text(n),
                    ids_text(&jobs.carrying())
                ),
            };
            match &last {
                None => say(&format!(
                    "runner {id} registered with node {:x} at {}{}{}; waiting for jobs",
                    here.node,
                    here.addr,
                    labels_text(&self.opts.labels),
                    capacity_text(self.opts.capacity)
                )),
                Some((from, why)) if from.node == here.node => say(&format!(
                    "reconnected to node {:x} at {} after losing it ({why}); runner {id} registered again{carried}",
                    here.node, here.addr
                )),
                Some((from, why)) => say(&format!(
                    "moved from node {:x} at {} ({why}) to node {:x} at {}; runner {id} registered again{carried}",
                    from.node, from.addr, here.node, here.addr
                )),
            }
            // Invariant: set just above.
            let Some(link_rx) = link.as_ref().map(|l| l.subscribe()) else {
                continue;
            };
            let left = self
                .serve(&session, registration, link_rx, &mut jobs, &stop)
                .await;
            if let Left::Stopped = left {
                // On this connection still: the jobs deliver their ends.
                self.wind_down(&mut jobs, &force, "the agent stopped").await;
                session.conn.close(0u32.into(), b"bye");
                return Ok(());
            }
            session.conn.close(0u32.into(), b"bye");
            match left {
                Left::Stopped => return Ok(()),
                Left::Lost(why) => {
                    jobs.reap();
                    if !jobs.held.is_empty() {
                        say(&format!(
                            "lost node {:x} at {} ({why}); {} ({}) carries on and resumes on the next node",
                            here.node,
                            here.addr,
                            in_hand_text(jobs.held.len()),
                            ids_text(&jobs.carrying())
                        ));
                    }
                    avoid = vec![here.addr.clone()];
                    last = Some((here, why));
                }
            }
        }
    }

    /// The context to dial: the leader last heard of first, then the
    /// context's addresses and the members, the `avoid`ed ones last. For the
    /// embedded default: the local node's current address.
    fn dial_context(&self, avoid: &[String]) -> Result<Context, AttachError> {
        if self.ctx.local {
            let ready = local::running().ok_or(AttachError::NoLocalNode)?;
            return Ok(Context {
                address: ready.addr,
                ..self.ctx.clone()
            });
        }
        let known = self.cluster().clone();
        let mut order: Vec<String> = Vec::new();
        for a in known
            .leader
            .into_iter()
            .chain(self.ctx.addresses())
            .chain(known.members)
        {
            if !order.contains(&a) {
                order.push(a);
            }
        }
        // A stable sort: the others keep their order.
        order.sort_by_key(|a| avoid.contains(a));
        let mut order = order.into_iter();
        let address = order.next().unwrap_or_else(|| self.ctx.address.clone());
        Ok(Context {
            address,
            members: order.collect(),
            ..self.ctx.clone()
        })
    }

    /// Connect to a member, learn the cluster from it, register (saying
    /// which jobs it carries, when the node speaks 5).
    async fn attach(
        &self,
        avoid: &[String],
        carrying: Vec<JobId>,
    ) -> Result<(Session, Registration, Here), AttachError> {
        let target = self.dial_context(avoid)?;
        let session = client::connect_avoiding(&target, avoid)
            .await
            .map_err(AttachError::Connect)?;
        let here = Here {
            node: session.node_id,
            addr: session.conn.remote_address().to_string(),
        };
        if let Ok(Ok(ClientResponse::ServerInfo(info))) = tokio::time::timeout(
            PROBE_TIMEOUT * 2,
            rpc::call(&session.conn, &ClientRequest::ServerInfo),
        )
        .await
        {
            self.cluster().learn(&info);
        }
        let status = (session.node.version >= 5).then(|| RunnerStatus {
            capacity: self.opts.capacity,
            carrying,
        });
        let reason = match tokio::time::timeout(
            REGISTER_TIMEOUT,
            register(&session.conn, &self.opts, status),
        )
        .await
        {
            Ok(Ok(registration)) => return Ok((session.into_session(), registration, here)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", REGISTER_TIMEOUT.as_secs()),
        };
        session.conn.close(0u32.into(), b"bye");
        Err(AttachError::Register {
            node: here.node,
            addr: here.addr,
            reason,
        })
    }

    /// Take offers (and resumed streams of the jobs in hand) on `session`
    /// until it is lost or the agent stops.
    async fn serve(
        &self,
        session: &Session,
        registration: Registration,
        link: watch::Receiver<quinn::Connection>,
        jobs: &mut Jobs,
        stop: &CancellationToken,
    ) -> Left {
        let conn = session.conn.clone();
        let mut probe = tokio::spawn(probe(conn.clone(), self.cluster.clone()));
        // Streams the node opens, each read up to its first frame apart.
        let (in_tx, mut incoming) = mpsc::unbounded_channel::<Incoming>();
        let accept = tokio::spawn(accept_streams(conn.clone(), in_tx));
        let left = loop {
            tokio::select! {
                _ = stop.cancelled() => break Left::Stopped,
                r = &mut probe => {
                    break Left::Lost(r.unwrap_or_else(|e| format!("its probe failed: {e}")))
                }
                e = conn.closed() => break Left::Lost(format!("the connection closed: {e}")),
                (id, outcome) = jobs.next_end() => jobs.ended(id, outcome, None),
                s = incoming.recv() => match s {
                    Some((first, send, recv)) => self.take(first, send, recv, &link, jobs),
                    None => break Left::Lost("the connection closed".to_string()),
                },
            }
        };
        probe.abort();
        accept.abort();
        // Stop taking offers: the node forgets this runner once the
        // registration stream ends.
        drop(registration);
        left
    }

    /// A stream the node opened: an offer (taken if there is room) or a
    /// resumed stream of a job in hand.
    fn take(
        &self,
        first: NodeToRunner,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        link: &watch::Receiver<quinn::Connection>,
        jobs: &mut Jobs,
    ) {
        let id = &self.opts.id;
        match first {
            NodeToRunner::Offer { job } => {
                if jobs.held.len() >= self.opts.capacity.max(1) as usize {
                    say(&format!(
                        "declined job {}: runner {id} has {} job(s) in hand, its most",
                        job.id,
                        jobs.held.len()
                    ));
                    let reason = format!(
                        "runner {id} is busy with {} other job(s), its most at once",
                        jobs.held.len()
                    );
                    tokio::spawn(decline(send, reason));
                    return;
                }
                let job_id = job.id;
                let cancel = Arc::new(AtomicBool::new(false));
                let (resumes, resumed) = mpsc::unbounded_channel();
                let task = run_offer(
                    link.clone(),
                    self.opts.clone(),
                    *job,
                    send,
                    recv,
                    cancel.clone(),
                    Some(resumed),
                );
                jobs.tasks.spawn(async move { (job_id, task.await) });
                jobs.held.insert(
                    job_id,
                    InHand {
                        cancel,
                        since: Instant::now(),
                        resumes: Some(resumes),
                    },
                );
            }
            NodeToRunner::Resume { job, received } => match jobs.held.get(&job) {
                Some(h) => {
                    say(&format!(
                        "resuming job {job}'s stream (the node has {received} of its events)"
                    ));
                    if let Some(r) = &h.resumes {
                        let _ = r.send(Resumed {
                            send,
                            recv,
                            received,
                        });
                    }
                }
                None => {
                    tokio::spawn(decline(
                        send,
                        format!(
                            "runner {id} does not hold job {job} (it ended, or never ran here)"
                        ),
                    ));
                }
            },
            other => {
                tracing::debug!(frame = ?other, "unexpected first frame on a job stream");
            }
        }
    }

    /// Stopping: cancel the jobs in hand and wait up to [`STOP_GRACE`] for
    /// them to end (`force`: not at all).
    async fn wind_down(&self, jobs: &mut Jobs, force: &CancellationToken, note: &str) {
        jobs.reap();
        if jobs.held.is_empty() {
            return;
        }
        say(&format!(
            "stopping: cancelling {} …",
            in_hand_text(jobs.held.len())
        ));
        for h in jobs.held.values() {
            h.cancel.store(true, Ordering::SeqCst);
        }
        let all = async {
            while !jobs.held.is_empty() {
                let (id, outcome) = jobs.next_end().await;
                jobs.ended(id, outcome, Some(note));
            }
        };
        tokio::select! {
            _ = all => {}
            _ = tokio::time::sleep(STOP_GRACE) => {
                say(&format!("{} did not stop within {} s; leaving it", in_hand_text(jobs.held.len()), STOP_GRACE.as_secs()));
            }
            _ = force.cancelled() => say(&format!("not waiting for {}", in_hand_text(jobs.held.len()))),
        }
    }
}

/// Accept the streams the node opens on `conn`, each read up to its first
/// frame apart (so one slow stream holds up no other), until it closes.
async fn accept_streams(conn: quinn::Connection, to: mpsc::UnboundedSender<Incoming>) {
    while let Ok((send, mut recv)) = conn.accept_bi().await {
        let to = to.clone();
        tokio::spawn(async move {
            if let Some(first) = first_frame(&mut recv).await {
                let _ = to.send((first, send, recv));
            }
        });
    }
}

/// "the job in hand", "the 2 jobs in hand".
fn in_hand_text(n: usize) -> String {
    if n == 1 {
        "the job in hand".into()
    } else {
        format!("the {n} jobs in hand")
    }
}

/// "12, 13".
fn ids_text(ids: &[JobId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// ", up to N jobs at once" or nothing (one at a time).
fn capacity_text(capacity: u32) -> String {
    if capacity > 1 {
        format!(", up to {capacity} jobs at once")
    } else {
        String::new()
    }
}

/// Probe the node until it is lost; return why.
async fn probe(conn: quinn::Connection, cluster: Arc<Mutex<Cluster>>) -> String {
    let mut misses = 0u32;
    let mut leaderless = 0u32;
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the node just answered.
    tick.tick().await;
    loop {
        tick.tick().await;
        let r =
            tokio::time::timeout(PROBE_TIMEOUT, rpc::call(&conn, &ClientRequest::ServerInfo)).await;
        let failure = match r {
            Ok(Ok(ClientResponse::ServerInfo(info))) => {
                misses = 0;
                cluster
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .learn(&info);
                if info.leader.is_some() {
                    leaderless = 0;
                    continue;
                }
                leaderless += 1;
                if leaderless >= LEADERLESS_PROBES {
                    return format!(
                        "it has had no leader for {} s",
                        (PROBE_INTERVAL * leaderless).as_secs()
                    );
                }
                continue;
            }
            Ok(Ok(other)) => format!("unexpected answer {other:?}"),
            Ok(Err(e)) => {
                if let Some(reason) = conn.close_reason() {
                    return format!("the connection closed: {reason}");
                }
                e.to_string()
            }
            Err(_) => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        };
        misses += 1;
        if misses >= PROBE_MISSES {
            return format!("{misses} probes in a row failed, the last: {failure}");
        }
    }
}

/// "job 12 up hello/web: success (3.2 s)".
fn job_line(o: &OfferOutcome, took: Duration, note: Option<&str>) -> String {
    let spec = &o.job.spec;
    let result = match (o.state, &o.error) {
        (JobState::Success, _) => "success".to_string(),
        (state, Some(e)) => format!("{}: {e}", state.word()),
        (state, None) => state.word().to_string(),
    };
    let note = note.map(|n| format!(" [{n}]")).unwrap_or_default();
    format!(
        "job {} {} {}/{}: {result} ({:.1} s){note}",
        o.job.id,
        spec.kind.name(),
        spec.project,
        spec.app,
        took.as_secs_f64()
    )
}

/// " (labels a=b, c=d)" or nothing.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let kv: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" (labels {})", kv.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(leader: Option<u64>) -> ServerInfo {
        ServerInfo {
            node_id: 1,
            version: "t".into(),
            protocol: 1,
            ca_fingerprint: "sha256:ab".into(),
            leader,
            members: vec![
                (1, "10.0.0.1:9701".into()),
                (2, "10.0.0.2:9701".into()),
                (3, "10.0.0.3:9701".into()),
            ],
            raft: Default::default(),
            ingress: None,
        }
    }

    fn agent() -> Agent {
        let ctx = Context {
            name: "c".into(),
            address: "10.0.0.2:9701".into(),
            ca_fingerprint: "sha256:ab".into(),
            token: "t".into(),
            local: false,
            members: vec!["10.0.0.1:9701".into()],
            runner: None,
        };
        Agent::new(
            ctx,
            Arc::new(options(
                "a".into(),
                BTreeMap::new(),
                Arc::new(crate::plugins::Catalog::builtin()),
            )),
        )
    }

    #[test]
    fn first_dial_follows_the_context() {
        let a = agent();
        let c = a.dial_context(&[]).expect("dial");
        assert_eq!(c.address, "10.0.0.2:9701");
        assert_eq!(c.members, vec!["10.0.0.1:9701".to_string()]);
    }

    #[test]
    fn a_move_prefers_the_leader_and_tries_the_lost_node_last() {
        let a = agent();
        a.cluster().learn(&info(Some(3)));
        let c = a.dial_context(&["10.0.0.3:9701".into()]).expect("dial");
        // The leader was the lost node: it goes last; the context's own
        // address keeps its place before the other members.
        assert_eq!(c.address, "10.0.0.2:9701");
        assert_eq!(
            c.members,
            vec!["10.0.0.1:9701".to_string(), "10.0.0.3:9701".to_string()]
        );
        let c = a.dial_context(&["10.0.0.2:9701".into()]).expect("dial");
        assert_eq!(c.address, "10.0.0.3:9701", "the leader first");
        assert_eq!(c.members.last().map(String::as_str), Some("10.0.0.2:9701"));
    }

    #[test]
    fn learning_without_a_leader_forgets_the_old_one() {
        let mut k = Cluster::default();
        k.learn(&info(Some(1)));
        assert_eq!(k.leader.as_deref(), Some("10.0.0.1:9701"));
        k.learn(&info(None));
        assert_eq!(k.leader, None);
        assert_eq!(k.members.len(), 3);
    }

    #[test]
    fn job_lines_name_the_job_and_its_result() {
        let mut job = cairn_protocol::types::Job {
            id: 7,
            spec: cairn_protocol::types::JobSpec::example(),
            state: JobState::Running,
            runner: None,
            requested_by: "u".into(),
            queued_ms: 0,
            assigned_ms: None,
            completed_ms: None,
            error: None,
            cancel_requested: false,
        };
        job.spec.project = "p".into();
        job.spec.app = "web".into();
        let o = OfferOutcome {
            job,
            state: JobState::Error,
            error: Some("boom".into()),
        };
        let line = job_line(&o, Duration::from_millis(1500), Some("x"));
        assert_eq!(line, "job 7 up p/web: error: boom (1.5 s) [x]");
    }
}
