//! Runner service: registration (a long-lived stream), and recording the
//! operations a runner performs for the job it holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_protocol::api::{ClientRequest, ClientResponse, RunnerStatus, MAX_RUNNER_CAPACITY};
use cairn_protocol::frame;
use cairn_protocol::types::{JobId, OpCompletion, OpId, OpKind, ResourceState, RunnerKind};

use crate::ctx::Ctx;
use crate::jobs::runner_record;
use crate::services::ConnSession;
use crate::state::{Command, Response, State};

/// What a runner registering says of itself (`RegisterRunner`, or
/// `RegisterRunnerWith` with its status).
pub struct Registering {
    pub id: String,
    pub kind: RunnerKind,
    pub labels: BTreeMap<String, String>,
    pub status: RunnerStatus,
}

impl Registering {
    /// What a registration request says (`RegisterRunner`: one job at a
    /// time, nothing carried); `None` for any other request.
    pub fn of(req: ClientRequest) -> Option<Registering> {
        let (id, kind, labels, status) = match req {
            ClientRequest::RegisterRunner { id, kind, labels } => {
                let status = RunnerStatus {
                    capacity: 1,
                    carrying: Vec::new(),
                };
                (id, kind, labels, status)
            }
            ClientRequest::RegisterRunnerWith {
                id,
                kind,
                labels,
                status,
            } => (id, kind, labels, status),
            _ => return None,
        };
        Some(Registering {
            id,
            kind,
            labels,
            status,
        })
    }
}

pub async fn register(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    r: Registering,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Registering {
        id,
        kind,
        labels,
        status,
    } = r;
    if id.is_empty() {
        let _ = frame::write(
            &mut send,
            &ClientResponse::Error {
                message: "a runner needs an id".into(),
            },
        )
        .await;
        return;
    }
    // An enrolled runner registers as itself, with the labels its record
    // holds; nobody else may take an enrolled runner's id.
    let enrolled = ctx
        .raft
        .read_local(|st| st.runner_records.get(&id).map(|r| r.labels.clone()));
    let (kind, labels) = match (&s.principal.runner_id, enrolled) {
        (Some(me), Some(labels)) if *me == id => (RunnerKind::Agent, labels),
        (Some(me), _) => {
            let _ = frame::write(
                &mut send,
                &ClientResponse::Error {
                    message: format!(
                        "this connection is runner {me}'s; it cannot register as {id}"
                    ),
                },
            )
            .await;
            return;
        }
        (None, Some(_)) => {
            let _ = frame::write(
                &mut send,
                &ClientResponse::Error {
                    message: format!(
                        "runner id {id} belongs to an enrolled runner; pick another id"
                    ),
                },
            )
            .await;
            return;
        }
        (None, None) => (kind, labels),
    };
    if status.carrying.len() > MAX_RUNNER_CAPACITY as usize {
        let message = format!(
            "a runner carries at most {MAX_RUNNER_CAPACITY} jobs; this one says {}",
            status.carrying.len()
        );
        let _ = frame::write(&mut send, &ClientResponse::Error { message }).await;
        return;
    }
    if let Err(message) = ctx
        .write(Command::RegisterRunner {
            runner: runner_record(&id, kind, labels.clone()),
        })
        .await
    {
        let _ = frame::write(&mut send, &ClientResponse::Error { message }).await;
        return;
    }
    if let Ok(mut r) = s.runner.lock() {
        *r = Some(id.clone());
    }
    let (capacity, carrying) = (status.capacity, status.carrying.clone());
    let session = ctx
        .jobs
        .add_runner(&id, s.conn.clone(), labels, s.speaks.version, status);
    tracing::info!(runner = %id, principal = %s.principal.name, capacity, ?carrying, "runner registered");
    if frame::write(&mut send, &ClientResponse::Registered)
        .await
        .is_err()
    {
        ctx.jobs.remove_runner(&id, session);
        return;
    }
    // The registration lasts while the runner keeps this stream open.
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            r = recv.read(&mut buf) => match r {
                Ok(Some(_)) => continue,
                _ => break,
            },
            _ = s.conn.closed() => break,
        }
    }
    tracing::info!(runner = %id, "runner gone");
    ctx.jobs.remove_runner(&id, session);
}

fn runner_of(s: &ConnSession) -> Option<String> {
    s.runner.lock().ok().and_then(|r| r.clone())
}

/// The job must be held by the runner on this connection.
async fn check_holder(ctx: &Ctx, s: &ConnSession, job_id: JobId) -> Result<(), String> {
    let runner = runner_of(s).ok_or("this connection is not a registered runner")?;
    let holder_of = move |st: &State| st.jobs.get(&job_id).and_then(|j| j.runner.clone());
    let mut holder = ctx.raft.read_local(holder_of);
    if holder.as_deref() != Some(runner.as_str()) {
        // A runner connected to a follower gets its offer from the leader
        // (relayed): this node may not have applied the assignment yet.
        holder = ctx.read(holder_of).await?;
    }
    if holder.as_deref() != Some(runner.as_str()) {
        return Err(format!("job {job_id} is not held by runner {runner}"));
    }
    Ok(())
}

pub async fn begin_operation(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    job_id: JobId,
    kind: OpKind,
    plugin: String,
    input_seq: Option<u64>,
) -> ClientResponse {
    if let Err(message) = check_holder(ctx, s, job_id).await {
        return ClientResponse::Error { message };
    }
    match ctx
        .write(Command::BeginOperation {
            job_id,
            kind,
            plugin,
            input_seq,
        })
        .await
    {
        Ok(Response::OperationStarted { id, sequence }) => {
            ClientResponse::OperationStarted { id, sequence }
        }
        Ok(other) => ClientResponse::Error {
            message: format!("unexpected answer {other:?}"),
        },
        Err(message) => ClientResponse::Error { message },
    }
}

pub async fn complete_operation(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    c: OpCompletion,
) -> ClientResponse {
    let op = c.op_id;
    let job_of = move |st: &State| st.operations.get(&op).map(|o| o.job_id);
    let mut job_id = ctx.raft.read_local(job_of);
    if job_id.is_none() {
        // Begun through the leader; this node may not have applied it yet.
        job_id = match ctx.read(job_of).await {
            Ok(j) => j,
            Err(message) => return ClientResponse::Error { message },
        };
    }
    let Some(job_id) = job_id else {
        return ClientResponse::Error {
            message: format!("no operation {}", c.op_id),
        };
    };
    if let Err(message) = check_holder(ctx, s, job_id).await {
        return ClientResponse::Error { message };
    }
    match ctx.write(Command::CompleteOperation(c)).await {
        Ok(_) => ClientResponse::Ok,
        Err(message) => ClientResponse::Error { message },
    }
}

pub async fn set_resource_state(
    ctx: &Arc<Ctx>,
    op_id: OpId,
    state: ResourceState,
) -> ClientResponse {
    match ctx.write(Command::SetResourceState { op_id, state }).await {
        Ok(_) => ClientResponse::Ok,
        Err(message) => ClientResponse::Error { message },
    }
}

// ---------------------------------------------------------------------------------------------
// Runner identity (issue 19)

/// Refuse what needs protocol 5 in the replicated log while the cluster is
/// not there yet.
pub(crate) async fn needs_cluster_version_5(ctx: &Ctx, what: &str) -> Result<(), String> {
    let v = ctx.read(|st| st.cluster_version()).await?;
    if v < 5 {
        return Err(format!(
            "{what} needs cluster version 5, and this cluster is at version {v}: finish the upgrade first (`cairn server upgrade --finish`)"
        ));
    }
    Ok(())
}

/// Most runners that may wait for adoption at once: enrolling needs no
/// token, so this bounds what anyone who can reach a node can add.
pub const MAX_PENDING_RUNNERS: usize = 100;

/// `EnrollRunner`: record the runner (adopted at once with a runner token,
/// else pending) and, once adopted, sign its CSR.
pub async fn enroll(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    id: String,
    csr: String,
    labels: BTreeMap<String, String>,
) -> ClientResponse {
    let error = |message: String| ClientResponse::Error { message };
    if let Err(e) = needs_cluster_version_5(ctx, "enrolling a runner").await {
        return error(e);
    }
    if let Err(e) = cairn_protocol::pki::check_runner_id(&id) {
        return error(e);
    }
    let key = match cairn_protocol::pki::csr_key_fingerprint(&csr) {
        Ok(k) => k,
        Err(e) => return error(format!("the certificate request is not valid: {e}")),
    };
    let token = (!s.principal.token_hash.is_empty()).then(|| s.principal.token_hash.clone());
    if token.is_none() {
        let (known, pending) = ctx.raft.read_local(|st| {
            (
                st.runner_records.contains_key(&id),
                st.runner_records
                    .values()
                    .filter(|r| r.state == cairn_protocol::types::RunnerState::Pending)
                    .count(),
            )
        });
        if !known && pending >= MAX_PENDING_RUNNERS {
            return error(format!(
                "{pending} runners already wait for adoption (the most there may be): adopt, reject or forget some (`cairn runner list`), or enroll with a runner token"
            ));
        }
    }
    let state = match ctx
        .write(Command::EnrollRunner {
            id: id.clone(),
            key_fingerprint: key,
            labels,
            token,
        })
        .await
    {
        Ok(Response::Value(Some(state))) => state,
        Ok(other) => return error(format!("unexpected answer {other:?}")),
        Err(message) => return error(message),
    };
    if state != cairn_protocol::types::RunnerState::Adopted.word() {
        tracing::info!(runner = %id, remote = %s.conn.remote_address(), "runner enrolled; waits for adoption");
        return ClientResponse::RunnerPending {
            message: format!(
                "runner {id} waits to be adopted: a user runs `cairn runner adopt {id}` (or `cairn runner reject {id}`)"
            ),
        };
    }
    let Some(ca) = ctx.raft.read_local(|st| st.cluster_ca.clone()) else {
        return error("this node does not hold the cluster CA yet; try again".into());
    };
    let signed = cairn_protocol::pki::Ca::load(&ca.cert_pem, &ca.key_pem)
        .and_then(|ca| ca.sign_csr(&csr, &cairn_protocol::pki::runner_common_name(&id)));
    match signed {
        Ok(cert_pem) => {
            tracing::info!(runner = %id, remote = %s.conn.remote_address(), "runner enrolled and certified");
            ClientResponse::RunnerEnrolled { cert_pem }
        }
        Err(e) => error(format!("cannot sign the runner's certificate: {e}")),
    }
}

/// `DecideRunner`: adopt, reject or forget.
pub async fn decide(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    id: String,
    decision: cairn_protocol::api::RunnerDecision,
) -> ClientResponse {
    if let Err(message) =
        needs_cluster_version_5(ctx, "adopting, rejecting or forgetting a runner").await
    {
        return ClientResponse::Error { message };
    }
    tracing::info!(runner = %id, ?decision, principal = %s.principal.name, "runner decision");
    match ctx
        .write(Command::DecideRunner {
            id,
            decision,
            by: s.principal.name.clone(),
        })
        .await
    {
        Ok(_) => ClientResponse::Ok,
        Err(message) => ClientResponse::Error { message },
    }
}

/// `CreateRunnerToken`: a token that enrolls (and adopts) runners.
pub async fn create_token(
    ctx: &Arc<Ctx>,
    name: String,
    labels: BTreeMap<String, String>,
    ttl_s: Option<u64>,
) -> ClientResponse {
    let error = |message: String| ClientResponse::Error { message };
    if let Err(e) = needs_cluster_version_5(ctx, "a runner token").await {
        return error(e);
    }
    if name.len() > super::cluster::MAX_TOKEN_NAME {
        return error(format!(
            "token name over {} bytes",
            super::cluster::MAX_TOKEN_NAME
        ));
    }
    let now = cairn_protocol::now_ms();
    let secret = cairn_protocol::token::generate("runner");
    let hash = cairn_protocol::token::hash(&secret);
    let record = cairn_protocol::types::TokenRecord {
        id: format!("runner-{}", &hash[..12]),
        hash,
        scope: cairn_protocol::types::TokenScope::Runner,
        name: if name.is_empty() {
            "runner".into()
        } else {
            name
        },
        created_ms: now,
        expires_ms: ttl_s.map(|t| now.saturating_add(t.saturating_mul(1000))),
        revoked: false,
    };
    match ctx
        .write(Command::CreateRunnerToken {
            record: Box::new(record),
            labels,
        })
        .await
    {
        Ok(_) => ClientResponse::Token { token: secret },
        Err(message) => error(message),
    }
}

/// `InspectRunners`: the records, with where each runner is connected as
/// this node knows it (the leader knows every node's runners), the job it
/// holds and how many it ran.
pub async fn inspect(ctx: &Arc<Ctx>, id: Option<String>) -> ClientResponse {
    use cairn_protocol::types::{JobState, RunnerDetails};
    let here = ctx.raft.id();
    let known = ctx.jobs.known_runners();
    let read = ctx
        .read(move |st| {
            st.runner_records
                .values()
                .filter(|r| id.as_ref().is_none_or(|want| &r.id == want))
                .map(|r| {
                    let mut current = None;
                    let mut run = 0u64;
                    for j in st.jobs.values() {
                        if j.runner.as_deref() != Some(r.id.as_str()) {
                            continue;
                        }
                        match j.state {
                            JobState::Assigned | JobState::Running => current = Some(j.id),
                            s if s.is_final() => run += 1,
                            _ => {}
                        }
                    }
                    let seen = st.runners.get(&r.id).map(|x| x.last_seen_ms);
                    (r.clone(), seen, current, run)
                })
                .collect::<Vec<_>>()
        })
        .await;
    let rows = match read {
        Ok(rows) => rows,
        Err(message) => return ClientResponse::Error { message },
    };
    let details = rows
        .into_iter()
        .map(|(record, last_seen_ms, current_job, jobs_run)| {
            let node = known
                .iter()
                .find(|k| k.id == record.id)
                .map(|k| k.node.unwrap_or(here));
            RunnerDetails {
                record,
                node,
                last_seen_ms,
                current_job,
                jobs_run,
            }
        })
        .collect();
    ClientResponse::RunnerDetails(details)
}
