//! `cairn runner agent`: a standalone runner. It registers as
//! [`RunnerKind::Agent`] on a client connection to any member of the
//! context's cluster (nodes relay offers to runners connected to
//! followers), runs the jobs offered to it with the same code as the CLI's
//! own runner (`Source::Local` directories are read on this machine), and
//! moves to another member when its node dies or stops answering.
//!
//! Invariants:
//! - At most one job at a time: an offer that arrives while a job is in
//!   hand is declined, and after a move the agent registers again only once
//!   the job in hand (whose stream died with the old connection) has ended.
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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse, NodeToRunner, RunnerToNode, ServerInfo};
use cairn_protocol::frame;
use cairn_protocol::rpc::{self, RpcError, Session};
use cairn_protocol::types::{JobState, RunnerKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{register, run_offer, OfferOutcome, Registration, RunnerOptions};
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

/// The job the agent holds.
struct InHand {
    task: JoinHandle<Option<OfferOutcome>>,
    cancel: Arc<AtomicBool>,
    since: Instant,
}

pub struct Agent {
    ctx: Context,
    opts: Arc<RunnerOptions>,
    cluster: Arc<Mutex<Cluster>>,
}

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
    /// member whenever the node is lost. `force` (a second signal) stops
    /// waiting for the job in hand. Fails only when the very first
    /// connection is refused (a bad token or version: every member would
    /// say the same).
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
        loop {
            let attempt = tokio::select! {
                r = self.attach(&avoid) => r,
                _ = stop.cancelled() => return Ok(()),
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
                        _ = stop.cancelled() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            registered_once = true;
            quiet = None;
            let id = &self.opts.id;
            match &last {
                None => say(&format!(
                    "runner {id} registered with node {:x} at {}{}; waiting for jobs",
                    here.node,
                    here.addr,
                    labels_text(&self.opts.labels)
                )),
                Some((from, why)) if from.node == here.node => say(&format!(
                    "reconnected to node {:x} at {} after losing it ({why}); runner {id} registered again",
                    here.node, here.addr
                )),
                Some((from, why)) => say(&format!(
                    "moved from node {:x} at {} ({why}) to node {:x} at {}; runner {id} registered again",
                    from.node, from.addr, here.node, here.addr
                )),
            }
            let left = self
                .serve(&session, registration, &here, &stop, &force)
                .await;
            session.conn.close(0u32.into(), b"bye");
            match left {
                Left::Stopped => return Ok(()),
                Left::Lost(why) => {
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

    /// Connect to a member, learn the cluster from it, register.
    async fn attach(&self, avoid: &[String]) -> Result<(Session, Registration, Here), AttachError> {
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
        let reason =
            match tokio::time::timeout(REGISTER_TIMEOUT, register(&session.conn, &self.opts)).await
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

    /// Take offers on `session` until it is lost or the agent stops; then
    /// see the job in hand to its end (cancelled when stopping).
    async fn serve(
        &self,
        session: &Session,
        registration: Registration,
        here: &Here,
        stop: &CancellationToken,
        force: &CancellationToken,
    ) -> Left {
        let conn = session.conn.clone();
        let mut probe = tokio::spawn(probe(conn.clone(), self.cluster.clone()));
        let mut job: Option<InHand> = None;
        let left = loop {
            tokio::select! {
                _ = stop.cancelled() => break Left::Stopped,
                r = &mut probe => {
                    break Left::Lost(r.unwrap_or_else(|e| format!("its probe failed: {e}")))
                }
                e = conn.closed() => break Left::Lost(format!("the connection closed: {e}")),
                out = finished(&mut job), if job.is_some() => {
                    if let (Some(o), Some(j)) = (out, job.take()) {
                        say(&job_line(&o, j.since.elapsed(), None));
                    }
                }
                s = conn.accept_bi() => match s {
                    Ok((send, recv)) => {
                        if job.is_some() {
                            tokio::spawn(decline(send, recv, self.opts.id.clone()));
                        } else {
                            let cancel = Arc::new(AtomicBool::new(false));
                            let task = tokio::spawn(run_offer(
                                conn.clone(),
                                self.opts.clone(),
                                send,
                                recv,
                                cancel.clone(),
                            ));
                            job = Some(InHand { task, cancel, since: Instant::now() });
                        }
                    }
                    Err(e) => break Left::Lost(format!("the connection closed: {e}")),
                },
            }
        };
        probe.abort();
        // Stop taking offers: the node forgets this runner once the
        // registration stream ends.
        drop(registration);
        let Some(j) = job else {
            return left;
        };
        let note = match &left {
            Left::Stopped => {
                say("stopping: cancelling the job in hand …");
                j.cancel.store(true, Ordering::SeqCst);
                "the agent stopped".to_string()
            }
            Left::Lost(why) => {
                // Its stream was on this connection: the job stops at its
                // next step (the cluster fails it); wait for that before
                // registering again, so jobs never overlap.
                conn.close(0u32.into(), b"lost");
                say(&format!(
                    "lost node {:x} at {} ({why}); waiting for the job in hand to stop …",
                    here.node, here.addr
                ));
                format!("its node was lost: {why}")
            }
        };
        let grace = async {
            match &left {
                Left::Stopped => tokio::time::sleep(STOP_GRACE).await,
                // A lost job is waited for until it ends, unless the agent
                // is asked to stop meanwhile (then it is cancelled and gets
                // the same grace).
                Left::Lost(_) => {
                    stop.cancelled().await;
                    j.cancel.store(true, Ordering::SeqCst);
                    tokio::time::sleep(STOP_GRACE).await
                }
            }
        };
        let since = j.since;
        let mut task = j.task;
        tokio::select! {
            out = &mut task => {
                if let Ok(Some(o)) = out {
                    say(&job_line(&o, since.elapsed(), Some(&note)));
                }
            }
            _ = grace => {
                say(&format!("the job in hand did not stop within {} s; leaving it", STOP_GRACE.as_secs()));
            }
            _ = force.cancelled() => say("not waiting for the job in hand"),
        }
        if stop.is_cancelled() {
            Left::Stopped
        } else {
            left
        }
    }
}

/// The end of the job in hand (pending while there is none).
async fn finished(job: &mut Option<InHand>) -> Option<OfferOutcome> {
    match job {
        Some(j) => (&mut j.task).await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Answer an offer that arrived while a job is in hand.
async fn decline(mut send: quinn::SendStream, mut recv: quinn::RecvStream, id: String) {
    if let Ok(NodeToRunner::Offer { job }) = frame::read_required(&mut recv).await {
        say(&format!(
            "declined job {}: runner {id} is busy with another job",
            job.id
        ));
        let _ = frame::write(
            &mut send,
            &RunnerToNode::Decline {
                reason: format!("runner {id} is busy with another job"),
            },
        )
        .await;
        let _ = send.finish();
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
