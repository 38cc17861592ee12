//! Job service: queue, list, inspect, cancel, attach.

use std::sync::Arc;

use cairn_protocol::api::{ClientResponse, JobEvent};
use cairn_protocol::frame;
use cairn_protocol::types::{JobId, JobSpec, JobState};
use tokio::sync::broadcast::error::RecvError;

use crate::jobs::created_job;
use crate::server::{ConnSession, Ctx};
use crate::state::Command;

pub async fn queue(ctx: &Arc<Ctx>, s: &ConnSession, spec: JobSpec) -> ClientResponse {
    // A job of a newer kind is held in the replicated log: every member must
    // be able to read it, so it waits for the cluster version that brought it.
    let since = spec.kind.since_version();
    if since > cairn_protocol::handshake::OLDEST_PROTOCOL_VERSION {
        match ctx.read(|st| st.cluster_version()).await {
            Ok(v) if v >= since => {}
            Ok(v) => {
                return ClientResponse::Error {
                    message: format!(
                        "a {} job needs cluster version {since}, and this cluster is at version {v}: finish the upgrade first (`cairn server upgrade --finish`)",
                        spec.kind.name()
                    ),
                }
            }
            Err(e) => {
                return ClientResponse::Error {
                    message: format!("cannot read the cluster version: {e}"),
                }
            }
        }
    }
    match ctx
        .write(Command::CreateJob {
            spec,
            requested_by: s.principal.name.clone(),
        })
        .await
    {
        Ok(resp) => match created_job(&resp) {
            Some(id) => {
                ctx.jobs.publish(
                    id,
                    JobEvent::State {
                        state: JobState::Queued,
                        runner: None,
                    },
                );
                ctx.jobs.wake();
                ClientResponse::JobQueued { id }
            }
            None => ClientResponse::Error {
                message: format!("unexpected answer {resp:?}"),
            },
        },
        Err(message) => ClientResponse::Error { message },
    }
}

/// Whether the connection can decode `job`: a job of a kind newer than the
/// protocol it speaks (a status job, to a 0.1.0 CLI) is left out of lists
/// and refused by id, instead of breaking the whole answer.
fn readable(job: &cairn_protocol::types::Job, s: &ConnSession) -> bool {
    job.spec.kind.since_version() <= s.speaks.version
}

fn unreadable(job: &cairn_protocol::types::Job, s: &ConnSession) -> String {
    format!(
        "job {} is a {} job, which cairn {} cannot show: upgrade this CLI",
        job.id,
        job.spec.kind.name(),
        s.speaks.release
    )
}

pub async fn list(ctx: &Arc<Ctx>, s: &ConnSession, limit: u32) -> ClientResponse {
    let limit = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    match ctx
        .read(|st| {
            st.jobs
                .values()
                .rev()
                .filter(|j| readable(j, s))
                .take(limit)
                .cloned()
                .collect()
        })
        .await
    {
        Ok(jobs) => ClientResponse::Jobs(jobs),
        Err(e) => ClientResponse::Error {
            message: format!("cannot read jobs: {e}"),
        },
    }
}

pub async fn inspect(ctx: &Arc<Ctx>, s: &ConnSession, id: JobId) -> ClientResponse {
    match ctx.read(|st| st.jobs.get(&id).cloned()).await {
        Ok(Some(job)) if !readable(&job, s) => ClientResponse::Error {
            message: unreadable(&job, s),
        },
        Ok(Some(job)) => ClientResponse::Job(Box::new(job)),
        Ok(None) => ClientResponse::Error {
            message: format!("no job {id}"),
        },
        Err(e) => ClientResponse::Error {
            message: format!("cannot read jobs: {e}"),
        },
    }
}

pub async fn cancel(ctx: &Arc<Ctx>, id: JobId) -> ClientResponse {
    match ctx.write(Command::RequestCancel { id }).await {
        Ok(_) => {
            let state = ctx
                .raft
                .read_local(|s| s.jobs.get(&id).map(|j| (j.state, j.error.clone())));
            if let Some((JobState::Cancelled, error)) = state {
                ctx.jobs.publish(
                    id,
                    JobEvent::Finished {
                        state: JobState::Cancelled,
                        error,
                    },
                );
            } else {
                ctx.jobs.cancel(id);
            }
            ClientResponse::Ok
        }
        Err(message) => ClientResponse::Error { message },
    }
}

/// How often an attached stream checks the job's replicated record.
pub const RECORD_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Stream a job's events: the history this node holds, then live events,
/// ending with `Finished`.
pub async fn attach(ctx: &Arc<Ctx>, s: &ConnSession, id: JobId, mut send: quinn::SendStream) {
    let job = match ctx.read(|st| st.jobs.get(&id).cloned()).await {
        Ok(Some(j)) if !readable(&j, s) => {
            let message = unreadable(&j, s);
            let _ = frame::write(&mut send, &ClientResponse::Error { message }).await;
            let _ = send.finish();
            return;
        }
        Ok(Some(j)) => j,
        Ok(None) => {
            let _ = frame::write(
                &mut send,
                &ClientResponse::Error {
                    message: format!("no job {id}"),
                },
            )
            .await;
            let _ = send.finish();
            return;
        }
        Err(e) => {
            let _ = frame::write(
                &mut send,
                &ClientResponse::Error {
                    message: format!("cannot read jobs: {e}"),
                },
            )
            .await;
            let _ = send.finish();
            return;
        }
    };
    if frame::write(&mut send, &ClientResponse::Job(Box::new(job.clone())))
        .await
        .is_err()
    {
        return;
    }
    let sub = ctx.jobs.subscribe(id, !job.state.is_final());
    let Some(sub) = sub else {
        // A job that ended before this node's last start: its record is all there is.
        let _ = frame::write(
            &mut send,
            &JobEvent::State {
                state: job.state,
                runner: job.runner.clone(),
            },
        )
        .await;
        let _ = frame::write(
            &mut send,
            &JobEvent::Finished {
                state: job.state,
                error: job.error.clone(),
            },
        )
        .await;
        let _ = send.finish();
        return;
    };
    for ev in &sub.history {
        if frame::write(&mut send, ev).await.is_err() {
            return;
        }
    }
    if sub
        .history
        .iter()
        .any(|e| matches!(e, JobEvent::Finished { .. }))
    {
        let _ = send.finish();
        return;
    }
    let Some(mut live) = sub.live else {
        let _ = send.finish();
        return;
    };
    // The events come from the node that drives the job; the end may be
    // recorded elsewhere (a new leader failing the job after a failover):
    // watch the replicated record too.
    let mut tick = tokio::time::interval(RECORD_POLL);
    loop {
        let next = tokio::select! {
            r = live.recv() => r,
            _ = tick.tick() => {
                let rec = ctx.raft.read_local(|s| s.jobs.get(&id).map(|j| (j.state, j.error.clone())));
                let Some((state, error)) = rec.filter(|(st, _)| st.is_final()) else {
                    continue;
                };
                // Everything already relayed goes first.
                while let Ok(ev) = live.try_recv() {
                    if matches!(ev, JobEvent::Finished { .. }) {
                        break;
                    }
                    if frame::write(&mut send, &ev).await.is_err() {
                        return;
                    }
                }
                let _ = frame::write(&mut send, &JobEvent::Finished { state, error }).await;
                let _ = send.finish();
                return;
            }
        };
        match next {
            Ok(ev) => {
                let done = matches!(ev, JobEvent::Finished { .. });
                if frame::write(&mut send, &ev).await.is_err() {
                    return;
                }
                if done {
                    let _ = send.finish();
                    return;
                }
            }
            Err(RecvError::Lagged(n)) => {
                let ev = JobEvent::Output {
                    step: 0,
                    stream: cairn_protocol::types::Stream::Info,
                    line: format!("({n} events skipped: this client fell behind)"),
                };
                if frame::write(&mut send, &ev).await.is_err() {
                    return;
                }
            }
            Err(RecvError::Closed) => {
                let _ = send.finish();
                return;
            }
        }
    }
}
