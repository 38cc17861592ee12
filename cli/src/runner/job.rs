//! One job being run: its event channel, cancellation flag, and the helper
//! that runs a plugin operation as a recorded step.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_protocol::api::{
    ClientRequest, ClientResponse, IngressInfo, JobEvent, RunnerToNode, ServerInfo, StepStatus,
};
use cairn_protocol::rpc;
use cairn_protocol::types::{
    Job, OpCompletion, OpId, OpKind, OpStatus, Operation, ResourceState, Stream, TokenScope,
    TypedValue, MAX_OP_OUTPUT_BYTES,
};
use tokio::sync::{mpsc, watch};

use super::RunnerOptions;
use crate::plugins::{self, EntrypointLaunch, OpContext, OutputSink, PluginError, Value};

/// Why a job stopped early.
#[derive(Debug)]
pub struct JobFailure {
    pub message: String,
    pub cancelled: bool,
}

impl JobFailure {
    pub fn new(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            cancelled: false,
        }
    }
}

impl From<rpc::RpcError> for JobFailure {
    fn from(e: rpc::RpcError) -> Self {
        JobFailure::new(e.to_string())
    }
}

pub struct JobRun {
    pub job: Job,
    /// The runner's connection to the cluster: an agent that moves to
    /// another node sends its new one (see [`JobRun::call`]).
    link: watch::Receiver<quinn::Connection>,
    /// With `next_request`, the ids of this job's writes, so that one sent
    /// again after a move is applied once (`ClientRequest::Idempotent`).
    client_id: u64,
    next_request: AtomicU64,
    pub opts: Arc<RunnerOptions>,
    tx: mpsc::UnboundedSender<RunnerToNode>,
    cancelled: Arc<AtomicBool>,
    /// Set when the job's stream to the cluster broke: the job stops at its
    /// next step (what it does could not be recorded), but a step in progress
    /// is not killed.
    lost: Arc<AtomicBool>,
    step: u32,
    /// The node's `ServerInfo`, once asked for.
    info: Option<Box<ServerInfo>>,
    /// The job's source directory on this machine and its config file's
    /// name, once known (an uploaded source is fetched and unpacked first).
    pub source: Option<(PathBuf, String)>,
    /// The credentials this runner knows of, masked in everything the job
    /// sends (see [`super::mask`]).
    pub mask: Arc<super::mask::Masker>,
}

/// What a recorded step is: its kind, plugin, input, and the environment
/// and directory its plugin runs with.
pub struct OpSpec {
    pub kind: OpKind,
    pub plugin: String,
    pub input_seq: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub source_dir: PathBuf,
    /// For a deployment: the platform that destroys it if it came up but
    /// could not be recorded (the node went away meanwhile), so that nothing
    /// runs that no record names.
    pub undo: Option<Arc<dyn plugins::Platform>>,
}

/// What a recorded step produced.
pub struct StepOutcome {
    pub op_id: OpId,
    pub sequence: u64,
    pub value: Value,
}

/// Forwards plugin output as job events and keeps a bounded copy for the
/// operation's record. Clones share the copy (the context owns one).
#[derive(Clone)]
struct Sink {
    step: u32,
    tx: mpsc::UnboundedSender<RunnerToNode>,
    kept: Arc<Mutex<Kept>>,
    mask: Arc<super::mask::Masker>,
}

#[derive(Default)]
struct Kept {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
}

impl Sink {
    fn new(
        step: u32,
        tx: mpsc::UnboundedSender<RunnerToNode>,
        mask: Arc<super::mask::Masker>,
    ) -> Sink {
        Sink {
            step,
            tx,
            kept: Arc::default(),
            mask,
        }
    }

    /// The lines kept and how many were dropped to stay in bounds.
    fn take(&self) -> (Vec<String>, u64) {
        let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut k.lines).into(), k.dropped)
    }
}

impl OutputSink for Sink {
    fn line(&mut self, stream: plugins::Stream, text: &str) {
        let stream = match stream {
            plugins::Stream::Stdout => Stream::Stdout,
            plugins::Stream::Stderr => Stream::Stderr,
            plugins::Stream::Info => Stream::Info,
        };
        let text = &*self.mask.mask(text);
        let _ = self.tx.send(RunnerToNode::Event(JobEvent::Output {
            step: self.step,
            stream,
            line: text.to_string(),
        }));
        let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        k.bytes += text.len() + 1;
        k.lines.push_back(text.to_string());
        while k.bytes > MAX_OP_OUTPUT_BYTES {
            match k.lines.pop_front() {
                Some(l) => {
                    k.bytes -= l.len() + 1;
                    k.dropped += 1;
                }
                None => break,
            }
        }
    }
}

/// Runs a plugin's future as a task of its own, so that a panic in it fails
/// the step instead of the runner.
async fn supervised<T: Send + 'static>(
    fut: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(fut)
        .await
        .unwrap_or_else(|e| Err(format!("the plugin panicked: {e}")))
}

/// How long a job's request whose connection was lost waits for the
/// runner's next connection before it fails.
pub const RECONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a running plugin step looks whether its job was cancelled.
pub const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// What a cancelled step's error says.
pub const CANCELLED_WHILE_RUNNING: &str =
    "cancelled on request while it ran: its work was stopped (its commands and their process groups killed)";

/// [`supervised`], and when the job is cancelled meanwhile, abort the plugin's task:
/// its future is dropped, which kills the commands it runs (their whole process
/// groups), ends a docker build's request, and stops what it awaited.
async fn supervised_until<T: Send + 'static>(
    fut: impl Future<Output = Result<T, String>> + Send + 'static,
    cancelled: &AtomicBool,
) -> Result<T, String> {
    let mut task = tokio::spawn(fut);
    loop {
        tokio::select! {
            r = &mut task => {
                return r.unwrap_or_else(|e| Err(format!("the plugin panicked: {e}")));
            }
            _ = tokio::time::sleep(CANCEL_CHECK) => {
                if cancelled.load(Ordering::SeqCst) {
                    task.abort();
                    let _ = task.await;
                    return Err(CANCELLED_WHILE_RUNNING.to_string());
                }
            }
        }
    }
}

impl JobRun {
    pub fn new(
        job: Job,
        link: watch::Receiver<quinn::Connection>,
        tx: mpsc::UnboundedSender<RunnerToNode>,
        cancelled: Arc<AtomicBool>,
        lost: Arc<AtomicBool>,
        opts: Arc<RunnerOptions>,
    ) -> JobRun {
        JobRun {
            job,
            link,
            client_id: rand::random(),
            next_request: AtomicU64::new(0),
            opts,
            tx,
            cancelled,
            lost,
            step: 0,
            info: None,
            source: None,
            mask: Arc::default(),
        }
    }

    /// The node's `ServerInfo` (asked once per job).
    pub async fn server_info(&mut self) -> Result<&ServerInfo, JobFailure> {
        if self.info.is_none() {
            match self.call(ClientRequest::ServerInfo).await? {
                ClientResponse::ServerInfo(info) => self.info = Some(info),
                other => {
                    return Err(JobFailure::new(format!(
                        "unexpected answer to ServerInfo: {other:?}"
                    )))
                }
            }
        }
        // Invariant: set just above when it was not.
        self.info
            .as_deref()
            .ok_or_else(|| JobFailure::new("no server info"))
    }

    /// The cluster's URL service, when the node serves one: the app's
    /// deployment and release URLs come from it.
    pub async fn ingress(&mut self) -> Option<IngressInfo> {
        self.server_info()
            .await
            .ok()
            .and_then(|i| i.ingress.clone())
    }

    pub fn event(&self, ev: JobEvent) {
        let _ = self.tx.send(RunnerToNode::Event(ev));
    }

    pub fn result(&self, key: &str, value: &str) {
        self.event(JobEvent::Result {
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn check_cancel(&self) -> Result<(), JobFailure> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(JobFailure {
                message: "cancelled on request".into(),
                cancelled: true,
            });
        }
        if self.lost.load(Ordering::SeqCst) {
            return Err(JobFailure::new(
                "the job's stream to the cluster was lost: stopped before the next step",
            ));
        }
        Ok(())
    }

    /// The runner's current connection.
    pub fn conn(&self) -> quinn::Connection {
        self.link.borrow().clone()
    }

    /// Send `req` and read its answer. A read, or a write (sent as
    /// idempotent), whose connection was lost is sent again on the
    /// runner's next connection (an agent reconnects to another member)
    /// when one comes within [`RECONNECT_WAIT`].
    pub async fn call(&self, req: ClientRequest) -> Result<ClientResponse, JobFailure> {
        let n = self.next_request.fetch_add(1, Ordering::SeqCst) + 1;
        let (req, retry_safe) = req.for_resending(self.client_id, n);
        let mut link = self.link.clone();
        let deadline = tokio::time::Instant::now() + RECONNECT_WAIT;
        loop {
            let conn = link.borrow_and_update().clone();
            match rpc::call(&conn, &req).await {
                Err(e) if retry_safe && conn.close_reason().is_some() => {
                    match tokio::time::timeout_at(deadline, link.changed()).await {
                        Ok(Ok(())) => {
                            tracing::info!(job = self.job.id, error = %e, "sending a request again on the runner's new connection");
                        }
                        _ => return Err(e.into()),
                    }
                }
                r => return Ok(r?),
            }
        }
    }

    pub async fn operations(&self, kind: OpKind) -> Result<Vec<Operation>, JobFailure> {
        let req = ClientRequest::ListOperations {
            kind,
            project: Some(self.job.spec.project.clone()),
            app: Some(self.job.spec.app.clone()),
        };
        match self.call(req).await? {
            ClientResponse::Operations(ops) => Ok(ops),
            other => Err(JobFailure::new(format!("unexpected answer {other:?}"))),
        }
    }

    pub async fn set_destroyed(&self, op_id: OpId) -> Result<(), JobFailure> {
        self.call(ClientRequest::SetResourceState {
            op_id,
            state: ResourceState::Destroyed,
        })
        .await?;
        Ok(())
    }

    /// A plugin operation's context for this job.
    fn context(
        &self,
        sequence: u64,
        env: BTreeMap<String, String>,
        source_dir: PathBuf,
        entrypoint: Option<EntrypointLaunch>,
        out: Sink,
    ) -> OpContext {
        let spec = &self.job.spec;
        OpContext {
            project: spec.project.clone(),
            app: spec.app.clone(),
            workspace: spec.workspace.clone(),
            sequence,
            source_dir,
            data_dir: self.opts.data_dir.clone(),
            self_exe: self.opts.self_exe.clone(),
            env,
            entrypoint,
            out: Box::new(out),
        }
    }

    /// A step that records nothing in the catalog (e.g. destroy): `f` runs
    /// with a context for deployment `sequence`, without config env.
    pub async fn plain_step<T, F, Fut>(
        &mut self,
        title: &str,
        sequence: u64,
        source_dir: PathBuf,
        f: F,
    ) -> Result<T, JobFailure>
    where
        T: Send + 'static,
        F: FnOnce(OpContext) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        self.check_cancel()?;
        self.step += 1;
        let step = self.step;
        self.event(JobEvent::Step {
            step,
            name: title.to_string(),
            status: StepStatus::Started,
            detail: None,
        });
        let sink = Sink::new(step, self.tx.clone(), self.mask.clone());
        let ctx = self.context(sequence, BTreeMap::new(), source_dir, None, sink);
        match supervised_until(f(ctx), &self.cancelled).await {
            Ok(v) => {
                self.event(JobEvent::Step {
                    step,
                    name: title.to_string(),
                    status: StepStatus::Succeeded,
                    detail: None,
                });
                Ok(v)
            }
            Err(e) => {
                self.event(JobEvent::Step {
                    step,
                    name: title.to_string(),
                    status: StepStatus::Failed,
                    detail: Some(e.clone()),
                });
                Err(self.failure(e))
            }
        }
    }

    /// A step's failure; a cancelled one when the job was cancelled.
    fn failure(&self, message: String) -> JobFailure {
        JobFailure {
            message,
            cancelled: self.cancelled.load(Ordering::SeqCst),
        }
    }

    /// Run one plugin operation as a recorded step: begin it on the node
    /// (getting its sequence), run `f`'s future as a task of its own with an
    /// [`OpContext`], then complete it with its result and captured output.
    /// `title` gets the sequence: "Deploying v3 with process".
    pub async fn op_step<F, Fut>(
        &mut self,
        op: OpSpec,
        title: impl Fn(u64) -> String,
        f: F,
    ) -> Result<StepOutcome, JobFailure>
    where
        F: FnOnce(OpContext) -> Fut,
        Fut: Future<Output = Result<(Value, Option<String>), String>> + Send + 'static,
    {
        self.check_cancel()?;
        let (op_id, sequence) = match self
            .call(ClientRequest::BeginOperation {
                job_id: self.job.id,
                kind: op.kind,
                plugin: op.plugin.clone(),
                input_seq: op.input_seq,
            })
            .await?
        {
            ClientResponse::OperationStarted { id, sequence } => (id, sequence),
            other => return Err(JobFailure::new(format!("unexpected answer {other:?}"))),
        };
        self.step += 1;
        let step = self.step;
        let name = title(sequence);
        self.event(JobEvent::Step {
            step,
            name: name.clone(),
            status: StepStatus::Started,
            detail: None,
        });
        let sink = Sink::new(step, self.tx.clone(), self.mask.clone());
        // A deployment's instances run under the entrypoint, with a token
        // for this deployment only.
        let entrypoint = match op.kind {
            OpKind::Deployment => self.entrypoint_launch(op_id, sequence).await.map(Some),
            _ => Ok(None),
        };
        let source_dir = op.source_dir.clone();
        let r = match entrypoint {
            Ok(entrypoint) => {
                let ctx = self.context(sequence, op.env, op.source_dir, entrypoint, sink.clone());
                supervised_until(f(ctx), &self.cancelled).await
            }
            Err(e) => Err(e),
        };
        let (output, output_dropped) = sink.take();
        let (status, result, error, url) = match &r {
            Ok((v, url)) => (
                OpStatus::Success,
                Some(TypedValue {
                    type_name: v.type_name.clone(),
                    json: v.data.to_string(),
                }),
                None,
                url.clone(),
            ),
            Err(e) => (
                OpStatus::Error,
                None,
                Some(self.mask.mask(e).into_owned()),
                None,
            ),
        };
        let completed = self
            .call(ClientRequest::CompleteOperation(OpCompletion {
                op_id,
                status,
                result,
                error,
                output,
                output_dropped,
                url,
            }))
            .await;
        match (r, completed) {
            (Ok((value, _)), Ok(_)) => {
                self.event(JobEvent::Step {
                    step,
                    name,
                    status: StepStatus::Succeeded,
                    detail: None,
                });
                Ok(StepOutcome {
                    op_id,
                    sequence,
                    value,
                })
            }
            (Err(e), _) => {
                self.event(JobEvent::Step {
                    step,
                    name,
                    status: StepStatus::Failed,
                    detail: Some(e.clone()),
                });
                Err(self.failure(e))
            }
            (Ok((value, _)), Err(mut e)) => {
                if let Some(platform) = op.undo {
                    let mut ctx = self.context(sequence, BTreeMap::new(), source_dir, None, sink);
                    let undone = supervised(async move {
                        platform
                            .destroy(&mut ctx, &value)
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
                    e.message = match undone {
                        Ok(()) => format!(
                            "{}; the deployment could not be recorded, so it was removed",
                            e.message
                        ),
                        Err(u) => format!(
                            "{}; the deployment could not be recorded, and removing it failed: {u} (`cairn destroy` cleans it up)",
                            e.message
                        ),
                    };
                }
                self.event(JobEvent::Step {
                    step,
                    name,
                    status: StepStatus::Failed,
                    detail: Some(e.message.clone()),
                });
                Err(e)
            }
        }
    }
}

impl JobRun {
    /// Mints deployment `op_id`'s entrypoint token and gathers what its
    /// instances need to reach the cluster (members, CA fingerprint).
    async fn entrypoint_launch(
        &self,
        op_id: OpId,
        sequence: u64,
    ) -> Result<EntrypointLaunch, String> {
        let why = |e: JobFailure| {
            format!(
                "cannot prepare the entrypoint for v{sequence}: {}",
                e.message
            )
        };
        let info = match self.call(ClientRequest::ServerInfo).await.map_err(why)? {
            ClientResponse::ServerInfo(info) => info,
            other => return Err(format!("unexpected answer to ServerInfo: {other:?}")),
        };
        let mint = ClientRequest::CreateToken {
            scope: TokenScope::Entrypoint {
                app: self.job.spec.app.clone(),
                deployment: op_id,
            },
            name: format!(
                "{}/{} v{sequence}",
                self.job.spec.project, self.job.spec.app
            ),
            ttl_s: None,
        };
        let token = match self.call(mint).await.map_err(why)? {
            ClientResponse::Token { token } => token,
            other => return Err(format!("unexpected answer to CreateToken: {other:?}")),
        };
        // Where this runner reached the cluster first (a member's recorded
        // address may be stale, e.g. a local node restarted on another
        // port), then every member.
        let mut addrs = vec![self.conn().remote_address().to_string()];
        for (_, a) in &info.members {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        let env = [
            ("CAIRN_ADDRS", addrs.join(",")),
            ("CAIRN_CA_FINGERPRINT", info.ca_fingerprint.clone()),
            ("CAIRN_DEPLOYMENT_ID", op_id.to_string()),
            ("CAIRN_ENTRYPOINT_TOKEN", token),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(EntrypointLaunch {
            argv: self.opts.entrypoint_argv.clone(),
            env,
        })
    }
}

/// A recorded operation's result as a plugin value.
pub fn value_of(op: &Operation) -> Result<Value, JobFailure> {
    let r = op.result.as_ref().ok_or_else(|| {
        JobFailure::new(format!(
            "{} v{} has no recorded result",
            op.kind.noun(),
            op.sequence
        ))
    })?;
    let data = serde_json::from_str(&r.json).map_err(|e| {
        JobFailure::new(format!(
            "{} v{}: malformed recorded result: {e}",
            op.kind.noun(),
            op.sequence
        ))
    })?;
    Ok(Value {
        type_name: r.type_name.clone(),
        data,
    })
}

/// Plugin errors as step errors.
pub fn plugin_err(e: PluginError) -> String {
    e.to_string()
}
