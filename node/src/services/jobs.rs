//! Job service (QUIC adapter of [`crate::api`]): queue, list, inspect, cancel, attach.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::frame;
use cairn_protocol::types::{JobId, JobSpec};

use super::{reply, reply_ok};
use crate::api::{self, Caller};
use crate::ctx::Ctx;

pub async fn queue(ctx: &Ctx, caller: &Caller, spec: JobSpec) -> ClientResponse {
    reply(api::queue_job(ctx, caller, spec).await, |id| {
        ClientResponse::JobQueued { id }
    })
}

pub async fn list(ctx: &Ctx, caller: &Caller, limit: u32) -> ClientResponse {
    reply(api::jobs(ctx, caller, limit).await, ClientResponse::Jobs)
}

pub async fn inspect(ctx: &Ctx, caller: &Caller, id: JobId) -> ClientResponse {
    reply(api::job(ctx, caller, id).await, |j| {
        ClientResponse::Job(Box::new(j))
    })
}

pub async fn cancel(ctx: &Ctx, id: JobId) -> ClientResponse {
    reply_ok(api::cancel_job(ctx, id).await)
}

/// Stream a job's events: the history this node holds, then live events,
/// ending with `Finished`.
pub async fn attach(ctx: &Arc<Ctx>, caller: &Caller, id: JobId, mut send: quinn::SendStream) {
    let (job, mut events) = match api::follow_job(ctx, caller, id).await {
        Ok(f) => f,
        Err(e) => {
            let _ = frame::write(&mut send, &e.into_response()).await;
            let _ = send.finish();
            return;
        }
    };
    if frame::write(&mut send, &ClientResponse::Job(Box::new(job)))
        .await
        .is_err()
    {
        return;
    }
    while let Some(ev) = events.next().await {
        if frame::write(&mut send, &ev).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}
