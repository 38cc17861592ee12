//! The runner: registers on a node connection, accepts job offers on streams
//! the node opens, and runs each job's operations with the plugins.
//!
//! The CLI is a runner for its own jobs (same code path as `cairn runner
//! agent`): it registers on the connection it already holds and targets its
//! jobs at its own runner id.
//!
//! Invariants:
//! - Every accepted offer ends with exactly one `Done` frame, unless the
//!   connection itself is lost (the node then fails the job).
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

use cairn_protocol::api::{ClientRequest, ClientResponse, NodeToRunner, RunnerToNode};
use cairn_protocol::frame;
use cairn_protocol::rpc::{self, RpcError};
use cairn_protocol::types::{Job, JobState, RunnerKind};
use tokio::sync::mpsc;

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
        }
    }
}

/// A registration: kept alive while this value lives.
pub struct Registration {
    _send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

/// Register on `conn` and wait until the node confirms.
pub async fn register(
    conn: &quinn::Connection,
    opts: &RunnerOptions,
) -> Result<Registration, RpcError> {
    let req = ClientRequest::RegisterRunner {
        id: opts.id.clone(),
        kind: opts.kind,
        labels: opts.labels.clone(),
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

/// Accept job offers on `conn` until it closes.
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
    recv: quinn::RecvStream,
) {
    let _ = run_offer(conn, opts, send, recv, Arc::new(AtomicBool::new(false))).await;
}

/// How a job this runner ran ended (as the runner saw it; the node records
/// its own view when the job stream broke).
#[derive(Debug)]
pub struct OfferOutcome {
    pub job: Job,
    pub state: JobState,
    pub error: Option<String>,
}

/// Run one offer on its stream: accept, wait for `Started`, run the job,
/// send `Done`. Setting `cancelled` stops the job at its next step, as a
/// `Cancel` from the node does. `None` when the offer never became a
/// running job here.
async fn run_offer(
    conn: quinn::Connection,
    opts: Arc<RunnerOptions>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    cancelled: Arc<AtomicBool>,
) -> Option<OfferOutcome> {
    let job = match frame::read_required::<_, NodeToRunner>(&mut recv).await {
        Ok(NodeToRunner::Offer { job }) => *job,
        Ok(_) | Err(_) => return None,
    };
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
    let (tx, mut rx) = mpsc::unbounded_channel::<RunnerToNode>();
    // The runner's credentials never leave it: every frame is masked.
    let masker = Arc::new(mask::Masker::from_env());
    let frames_masker = masker.clone();
    // Writer: every event, in order, then Done.
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let msg = frames_masker.mask_frame(msg);
            let done = matches!(msg, RunnerToNode::Done { .. });
            if frame::write(&mut send, &msg).await.is_err() {
                return;
            }
            if done {
                let _ = send.finish();
                // Keep the stream open until the node has read everything.
                let _ = send.stopped().await;
                return;
            }
        }
    });
    // Reader: a Cancel from the node.
    let flag = cancelled.clone();
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    // A lost job stream (the node died, or leadership moved) also stops the
    // work at the next step: nothing it does could be recorded any more, and
    // the cluster fails the job rather than run it twice.
    let reader = tokio::spawn(async move {
        loop {
            match frame::read::<_, NodeToRunner>(&mut recv).await {
                Ok(Some(NodeToRunner::Cancel)) => flag.store(true, Ordering::SeqCst),
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    lost_flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    // The lease: a heartbeat through the writer while the job runs.
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
    let mut run = JobRun::new(job.clone(), conn, tx.clone(), cancelled, lost, opts);
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
    let _ = writer.await;
    reader.abort();
    Some(OfferOutcome { job, state, error })
}
