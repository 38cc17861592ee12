//! Runner service: registration (a long-lived stream), and recording the
//! operations a runner performs for the job it holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::frame;
use cairn_protocol::types::{JobId, OpCompletion, OpId, OpKind, ResourceState, RunnerKind};

use crate::ctx::Ctx;
use crate::jobs::runner_record;
use crate::services::ConnSession;
use crate::state::{Command, Response, State};

pub async fn register(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    id: String,
    kind: RunnerKind,
    labels: BTreeMap<String, String>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
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
    let session = ctx
        .jobs
        .add_runner(&id, s.conn.clone(), labels, s.speaks.version);
    tracing::info!(runner = %id, principal = %s.principal.name, "runner registered");
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
