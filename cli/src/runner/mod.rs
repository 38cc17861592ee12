//! The runner: registers on a node connection, accepts job offers on streams
//! the node opens, and runs each job's operations with the plugins.
//!
//! The CLI is a runner for its own jobs (same code path as `cairn runner
//! agent`): it registers on the connection it already holds and targets its
//! jobs at its own runner id.
//!
//! Invariants:
//! - Every accepted offer ends with exactly one `Done` frame delivered,
//!   unless the job's stream is lost for good: an agent's job outlives a
//!   broken stream (its node died, or the agent moved) and is resumed on a
//!   new one (`NodeToRunner::Resume`) that carries again what the node did
//!   not get; a runner that is not resumed within [`RESUME_GIVE_UP`] (or
//!   the CLI's own runner, at once) stops the job before its next step.
//! - Each operation is begun on the node (which assigns its sequence number)
//!   before any plugin work, and completed with its captured output after.

pub mod agent;
mod hooks;
pub mod identity;
mod job;
pub mod mask;
pub(crate) mod ops;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use cairn_protocol::api::{
    ClientRequest, ClientResponse, JobEvent, NodeToRunner, RunnerStatus, RunnerToNode,
};
use cairn_protocol::frame;
use cairn_protocol::rpc::{self, RpcError};
use cairn_protocol::types::{Job, JobId, JobState, RunnerKind};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

pub use job::JobRun;

/// Who this runner is and where it works.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub id: String,
    pub kind: RunnerKind,
    pub labels: BTreeMap<String, String>,
    /// Artifacts and deployments live here.
    pub data_dir: PathBuf,
    /// The `cairn` binary (for the process supervisor).
    pub self_exe: PathBuf,
    /// How instances are started under the entrypoint: see [`entrypoint_argv`].
    pub entrypoint_argv: Vec<String>,
    /// The plugins jobs run with (the program's one catalog).
    pub catalog: std::sync::Arc<crate::plugins::Catalog>,
    /// What configs are evaluated with: for the CLI's own runner, its --var and --var-file
    /// (sensitive values stay in this process, never in a job); for an agent, nothing but
    /// its environment. The workspace always comes from the job.
    pub inputs: std::sync::Arc<crate::config::Inputs>,
    /// How many jobs it takes at once (an agent's `--concurrency`).
    pub capacity: u32,
}

/// Names the `cairn-entrypoint` program to use instead of looking for it.
pub const ENTRYPOINT_BIN_ENV: &str = "CAIRN_ENTRYPOINT_BIN";

/// The entrypoint program for deployed instances: `$CAIRN_ENTRYPOINT_BIN`,
/// else `cairn-entrypoint` next to `self_exe` (where cargo and packages put
/// it), else on `PATH`; without one, the copy compiled into this `cairn`
/// (`cairn __entrypoint`, the same program).
pub fn entrypoint_argv(self_exe: &std::path::Path) -> Vec<String> {
    let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
    if let Some(p) = std::env::var_os(ENTRYPOINT_BIN_ENV).filter(|p| !p.is_empty()) {
        return vec![text(std::path::Path::new(&p))];
    }
    let sibling = self_exe.with_file_name("cairn-entrypoint");
    if sibling.is_file() {
        return vec![text(&sibling)];
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("cairn-entrypoint");
            if candidate.is_file() {
                return vec![text(&candidate)];
            }
        }
    }
    vec![text(self_exe), "__entrypoint".into()]
}

impl RunnerOptions {
    /// Options for the CLI acting as its own runner.
    pub fn for_cli(catalog: std::sync::Arc<crate::plugins::Catalog>) -> RunnerOptions {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let suffix = &cairn_protocol::token::hash(&cairn_protocol::token::generate("r"))[..8];
        let self_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn"));
        RunnerOptions {
            id: format!(
                "cli-{}-{suffix}",
                if host.is_empty() { "local" } else { &host }
            ),
            kind: RunnerKind::Cli,
            labels: BTreeMap::new(),
            data_dir: crate::paths::runner_dir(),
            entrypoint_argv: entrypoint_argv(&self_exe),
            self_exe,
            catalog,
            inputs: Default::default(),
            capacity: 1,
        }
    }
}

/// A registration: kept alive while this value lives.
pub struct Registration {
    _send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

/// Register on `conn` and wait until the node confirms. `status`: what a
/// runner on a node that speaks 5 says of itself (its capacity and the
/// jobs it carries back); `None`: one job at a time, nothing carried.
pub async fn register(
    conn: &quinn::Connection,
    opts: &RunnerOptions,
    status: Option<RunnerStatus>,
) -> Result<Registration, RpcError> {
    let req = match status {
        Some(status) => ClientRequest::RegisterRunnerWith {
            id: opts.id.clone(),
            kind: opts.kind,
            labels: opts.labels.clone(),
            status,
        },
        None => ClientRequest::RegisterRunner {
            id: opts.id.clone(),
            kind: opts.kind,
            labels: opts.labels.clone(),
        },
    };
    let (send, mut recv) = rpc::open(conn, &req).await?;
    match frame::read_required(&mut recv).await? {
        ClientResponse::Registered => Ok(Registration {
            _send: send,
            _recv: recv,
        }),
        ClientResponse::Error { message } => Err(RpcError::Remote(message)),
        other => Err(RpcError::Unexpected(format!("{other:?}"))),
    }
}

/// Accept job offers on `conn` until it closes (the CLI's own runner: its
/// jobs go with its connection, nothing is resumed).
pub async fn serve(conn: quinn::Connection, opts: Arc<RunnerOptions>) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let conn = conn.clone();
        let opts = opts.clone();
        tokio::spawn(async move { handle_offer(conn, opts, send, recv).await });
    }
}

async fn handle_offer(
    conn: quinn::Connection,
    opts: Arc<RunnerOptions>,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(job) = first_frame(&mut recv).await else {
        return;
    };
    match job {
        NodeToRunner::Offer { job } => {
            // The sender goes at once: the job's link never changes.
            let link = watch::channel(conn).1;
            let cancelled = Arc::new(AtomicBool::new(false));
            let _ = run_offer(link, opts, *job, send, recv, cancelled, None).await;
        }
        NodeToRunner::Resume { job, .. } => {
            decline(
                send,
                format!("job {job} is not running here (this CLI resumes nothing)"),
            )
            .await
        }
        _ => {}
    }
}

/// How long a runner waits for the first frame of a stream the node opened.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The first frame of a job stream the node opened (an offer or a resume).
pub async fn first_frame(recv: &mut quinn::RecvStream) -> Option<NodeToRunner> {
    tokio::time::timeout(FIRST_FRAME_TIMEOUT, frame::read_required(recv))
        .await
        .ok()?
        .ok()
}

/// Answer a job stream with `Decline`.
pub async fn decline(mut send: quinn::SendStream, reason: String) {
    let _ = frame::write(&mut send, &RunnerToNode::Decline { reason }).await;
    let _ = send.finish();
}

/// How a job this runner ran ended (as the runner saw it; the node records
/// its own view when the job stream broke).
#[derive(Debug)]
pub struct OfferOutcome {
    pub job: Job,
    pub state: JobState,
    pub error: Option<String>,
}

/// A job stream opened again for a running job (`NodeToRunner::Resume`).
pub struct Resumed {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// How many of the job's events the node has.
    pub received: u64,
}

/// How long an agent's job whose stream broke keeps running while nothing
/// resumes it: past this the cluster has failed it (its leader waits
/// `RESUME_WINDOW`, 20 s, from when it saw the break), so the job stops
/// before its next step.
pub const RESUME_GIVE_UP: Duration = Duration::from_secs(30);

/// Events of a job kept for a resumed stream to send again.
pub const MAX_REPLAYED_EVENTS: usize = 20_000;

/// Run one offered `job` on its stream: accept, wait for `Started`, run
/// the job, deliver `Done`. Setting `cancelled` stops the job at its next
/// step, as a `Cancel` from the node does. `resumes`: new streams for this
/// job after its stream broke (an agent's); `None`: a broken stream stops
/// the job before its next step. `link`: the runner's current connection
/// (an agent's changes when it moves), for the job's requests. `None` when
/// the offer never became a running job here.
pub async fn run_offer(
    link: watch::Receiver<quinn::Connection>,
    opts: Arc<RunnerOptions>,
    job: Job,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancelled: Arc<AtomicBool>,
    resumes: Option<mpsc::UnboundedReceiver<Resumed>>,
) -> Option<OfferOutcome> {
    if frame::write(&mut send, &RunnerToNode::Accept)
        .await
        .is_err()
    {
        return None;
    }
    // Work begins only once the node has recorded the job as running.
    let heartbeat = match frame::read_required::<_, NodeToRunner>(&mut recv).await {
        Ok(NodeToRunner::Started) => None,
        Ok(NodeToRunner::StartedWithLease { heartbeat_ms }) => Some(
            std::time::Duration::from_millis(heartbeat_ms.clamp(100, 60_000)),
        ),
        _ => return None,
    };
    // A node that does not hold leases cannot resume a job either.
    let resumes = resumes.filter(|_| heartbeat.is_some());
    let (tx, rx) = mpsc::unbounded_channel::<RunnerToNode>();
    // The runner's credentials never leave it: every frame is masked.
    let masker = Arc::new(mask::Masker::from_env());
    let lost = Arc::new(AtomicBool::new(false));
    let pump = tokio::spawn(pump(
        job.id,
        rx,
        send,
        recv,
        resumes,
        masker.clone(),
        cancelled.clone(),
        lost.clone(),
    ));
    // The lease: a heartbeat through the pump while the job runs.
    let beats = heartbeat.map(|every| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if tx.send(RunnerToNode::Heartbeat).is_err() {
                    return;
                }
            }
        })
    });
    let mut run = JobRun::new(job.clone(), link, tx.clone(), cancelled, lost, opts);
    run.mask = masker;
    let (state, error) = match ops::run(&mut run).await {
        Ok(()) => (JobState::Success, None),
        Err(e) if e.cancelled => (JobState::Cancelled, Some(e.message)),
        Err(e) => (JobState::Error, Some(e.message)),
    };
    if let Some(b) = beats {
        b.abort();
    }
    let _ = tx.send(RunnerToNode::Done {
        state,
        error: error.clone(),
    });
    drop(tx);
    drop(run);
    let _ = pump.await;
    Some(OfferOutcome { job, state, error })
}

type Frames =
    Pin<Box<dyn futures::Stream<Item = Result<Option<NodeToRunner>, frame::FrameError>> + Send>>;

fn frames_of(recv: quinn::RecvStream) -> Frames {
    Box::pin(futures::stream::unfold(recv, |mut r| async move {
        let msg = frame::read::<_, NodeToRunner>(&mut r).await;
        Some((msg, r))
    }))
}

/// The job's side of its stream: every frame the job makes goes out in
/// order (masked); a `Cancel` from the node sets `cancelled`. When the
/// stream breaks, events are kept (the last [`MAX_REPLAYED_EVENTS`]) and
/// heartbeats dropped until a resumed stream arrives: it is accepted, gets
/// every event the node did not, and carries on. Without `resumes`, or
/// after [`RESUME_GIVE_UP`] without one, `lost` is set (the job stops
/// before its next step). Ends once `Done` was delivered (the node read the
/// stream to its end), or could not be.
#[allow(clippy::too_many_arguments)]
async fn pump(
    job: JobId,
    mut rx: mpsc::UnboundedReceiver<RunnerToNode>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    mut resumes: Option<mpsc::UnboundedReceiver<Resumed>>,
    masker: Arc<mask::Masker>,
    cancelled: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
) {
    let mut out: Option<quinn::SendStream> = Some(send);
    let mut frames: Option<Frames> = Some(frames_of(recv));
    // Every event so far (the first `base` dropped to stay in bounds).
    let mut events: VecDeque<JobEvent> = VecDeque::new();
    let mut base: u64 = 0;
    let mut done: Option<RunnerToNode> = None;
    let give_up = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(give_up);
    let mut detached = false;
    loop {
        // Deliver Done: finish the stream and wait until the node read it all.
        if let (Some(d), true) = (&done, out.is_some()) {
            let Some(mut s) = out.take() else { return };
            let delivered = async {
                frame::write(&mut s, d).await.ok()?;
                s.finish().ok()?;
                s.stopped().await.ok()
            };
            tokio::select! {
                r = delivered => {
                    if r.is_some() {
                        return;
                    }
                }
                // A newer stream replaces this one (the node lost it).
                r = next_resume(&mut resumes) => {
                    if let Some(r) = r {
                        attach(job, r, &mut out, &mut frames, &events, base).await;
                        continue;
                    }
                }
            }
            frames = None;
        }
        let broken = out.is_none() || frames.is_none();
        if broken && !detached {
            detached = true;
            if resumes.is_none() {
                lost.store(true, Ordering::SeqCst);
            }
            give_up
                .as_mut()
                .reset(tokio::time::Instant::now() + RESUME_GIVE_UP);
        }
        if !broken {
            detached = false;
        }
        if done.is_some() && (resumes.is_none() || lost.load(Ordering::SeqCst)) && broken {
            // Nothing will deliver it.
            return;
        }
        tokio::select! {
            msg = rx.recv(), if done.is_none() => {
                let Some(msg) = msg else {
                    return;
                };
                let msg = masker.mask_frame(msg);
                match &msg {
                    RunnerToNode::Done { .. } => {
                        done = Some(msg);
                        continue;
                    }
                    RunnerToNode::Event(ev) => {
                        if events.len() >= MAX_REPLAYED_EVENTS {
                            events.pop_front();
                            base += 1;
                        }
                        events.push_back(ev.clone());
                    }
                    _ => {}
                }
                if let Some(s) = out.as_mut() {
                    if frame::write(s, &msg).await.is_err() {
                        out = None;
                    }
                }
            }
            f = async { frames.as_mut()?.next().await }, if frames.is_some() => match f {
                Some(Ok(Some(NodeToRunner::Cancel))) => cancelled.store(true, Ordering::SeqCst),
                Some(Ok(Some(_))) => {}
                // The node finished its side (it has the job's end).
                Some(Ok(None)) => frames = None,
                Some(Err(_)) | None => {
                    frames = None;
                    out = None;
                }
            },
            r = next_resume(&mut resumes) => match r {
                Some(r) => attach(job, r, &mut out, &mut frames, &events, base).await,
                None => {
                    // Nothing can resume the job any more.
                    resumes = None;
                    if detached {
                        lost.store(true, Ordering::SeqCst);
                    }
                }
            },
            _ = &mut give_up, if detached && !lost.load(Ordering::SeqCst) => {
                lost.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// The next resumed stream (pending forever without any to come).
async fn next_resume(resumes: &mut Option<mpsc::UnboundedReceiver<Resumed>>) -> Option<Resumed> {
    match resumes {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Take a resumed stream: accept it and send again the events from the
/// node's count on. The old stream (if any) is ended.
async fn attach(
    job: JobId,
    r: Resumed,
    out: &mut Option<quinn::SendStream>,
    frames: &mut Option<Frames>,
    events: &VecDeque<JobEvent>,
    base: u64,
) {
    if let Some(mut old) = out.take() {
        let _ = old.reset(0u32.into());
    }
    *frames = None;
    let Resumed {
        mut send,
        recv,
        received,
    } = r;
    let skip = received.saturating_sub(base) as usize;
    let ok = async {
        frame::write(&mut send, &RunnerToNode::Accept).await.ok()?;
        for ev in events.iter().skip(skip) {
            frame::write(&mut send, &RunnerToNode::Event(ev.clone()))
                .await
                .ok()?;
        }
        Some(())
    }
    .await;
    if ok.is_some() {
        tracing::info!(
            job,
            received,
            resent = events.len().saturating_sub(skip),
            "job stream resumed"
        );
        *out = Some(send);
        *frames = Some(frames_of(recv));
    }
}
