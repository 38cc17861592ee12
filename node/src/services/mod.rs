//! One module per RPC service. `dispatch` routes a request to its service;
//! unary calls answer one frame, streaming calls own the stream.

use std::sync::Arc;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;

use crate::peer::ClusterError;
use crate::server::{ConnSession, Ctx};

pub mod catalog;
pub mod cluster;
pub mod config;
pub mod entrypoint;
pub mod hostname;
pub mod jobs;
pub mod runner;
pub mod server;

tokio::task_local! {
    /// The (client, request) id of the [`ClientRequest::Idempotent`] being
    /// served: [`Ctx::write`](crate::server::Ctx::write) tags its command
    /// with it, so the state machine applies it at most once.
    pub static REQUEST_ID: (u64, u64);

    /// Set by [`Ctx::write`](crate::server::Ctx::write) and
    /// [`Ctx::read`](crate::server::Ctx::read) while serving a request when
    /// the cluster could not be reached from this node in a way that makes
    /// asking another member safe ([`ClusterError::retry_elsewhere`]). An
    /// `Error` answer then goes out as `Unavailable`, so the client tries
    /// another member. (A bridge until the services return typed errors.)
    pub static RETRY_ELSEWHERE: std::cell::Cell<bool>;
}

/// Serve one request of a client connection.
pub async fn dispatch(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    req: ClientRequest,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    RETRY_ELSEWHERE
        .scope(std::cell::Cell::new(false), route(ctx, s, req, send, recv))
        .await
}

/// Note that the request being served failed for want of a reachable
/// leader, and another member may serve it (see [`RETRY_ELSEWHERE`]).
pub fn note_retry_elsewhere(e: &ClusterError) {
    if e.retry_elsewhere {
        let _ = RETRY_ELSEWHERE.try_with(|c| c.set(true));
    }
}

async fn route(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    req: ClientRequest,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let resp = match req {
        ClientRequest::Idempotent {
            client,
            request,
            req,
        } => {
            if !req.is_retryable_write() {
                ClientResponse::Error {
                    message: "only single writes (config, jobs, tokens, operations) can be sent as idempotent requests".into(),
                }
            } else {
                let inner = Box::pin(route(ctx, s, *req, send, recv));
                return REQUEST_ID.scope((client, request), inner).await;
            }
        }
        ClientRequest::ServerInfo => server::info(ctx),
        ClientRequest::ExchangeBootstrap { name } => {
            server::exchange_bootstrap(ctx, s, &name).await
        }
        ClientRequest::ListOperations { kind, project, app } => {
            catalog::list_operations(ctx, kind, project, app).await
        }
        ClientRequest::ListRunners => catalog::list_runners(ctx).await,
        ClientRequest::QueueJob { spec } => jobs::queue(ctx, s, spec).await,
        ClientRequest::ListJobs { limit } => jobs::list(ctx, s, limit).await,
        ClientRequest::InspectJob { id } => jobs::inspect(ctx, s, id).await,
        ClientRequest::CancelJob { id } => jobs::cancel(ctx, id).await,
        ClientRequest::AttachJob { id } => return jobs::attach(ctx, s, id, send).await,
        ClientRequest::RegisterRunner { id, kind, labels } => {
            return runner::register(ctx, s, id, kind, labels, send, recv).await
        }
        ClientRequest::BeginOperation {
            job_id,
            kind,
            plugin,
            input_seq,
        } => runner::begin_operation(ctx, s, job_id, kind, plugin, input_seq).await,
        ClientRequest::CompleteOperation(c) => runner::complete_operation(ctx, s, c).await,
        ClientRequest::SetResourceState { op_id, state } => {
            runner::set_resource_state(ctx, op_id, state).await
        }
        ClientRequest::SetConfig { var } => config::set(ctx, var).await,
        ClientRequest::DeleteConfig { scope, name } => config::delete(ctx, scope, name).await,
        ClientRequest::ListConfig { scope } => config::list(ctx, scope).await,
        ClientRequest::CreateToken { scope, name, ttl_s } => {
            cluster::create_token(ctx, s, scope, name, ttl_s).await
        }
        ClientRequest::JoinCluster {
            csr,
            node_id,
            peer_addr,
        } => cluster::join(ctx, s, csr, node_id, peer_addr).await,
        ClientRequest::Members => cluster::members(ctx).await,
        ClientRequest::Upgrade { finish } => cluster::upgrade(ctx, s, finish).await,
        ClientRequest::RemoveMember { id } => cluster::remove_member(ctx, s, id).await,
        ClientRequest::SnapshotSave => return server::snapshot_save(ctx, s, send).await,
        ClientRequest::RegisterInstance(hello) => {
            return entrypoint::register(ctx, s, hello, send, recv).await
        }
        ClientRequest::ListInstances => entrypoint::list(ctx, s).await,
        ClientRequest::Logs(_) | ClientRequest::Exec { .. }
            if s.principal.scope != cairn_protocol::types::TokenScope::User =>
        {
            ClientResponse::Error {
                message: "logs and exec need a user token".into(),
            }
        }
        ClientRequest::Logs(q) => return crate::logs::serve_query(ctx, q, send).await,
        ClientRequest::Exec {
            target,
            instance,
            spec,
        } => return crate::exec::open(ctx, s, target, instance, spec, send, recv).await,
        ClientRequest::RegisterHostname { name, target } => {
            hostname::register(ctx, s, name, target).await
        }
        ClientRequest::DeleteHostname { name } => hostname::delete(ctx, s, name).await,
        ClientRequest::ListHostnames => hostname::list(ctx).await,
        ClientRequest::RemoveApps { project, app } => {
            catalog::remove_apps(ctx, s, project, app).await
        }
    };
    let resp = match resp {
        ClientResponse::Error { message } if RETRY_ELSEWHERE.try_with(|c| c.get()) == Ok(true) => {
            ClientResponse::Unavailable { message }
        }
        other => other,
    };
    let _ = frame::write(&mut send, &resp).await;
    let _ = send.finish();
}

/// Turn a `Result` into a response frame.
pub fn answer<T>(r: Result<T, String>, ok: impl FnOnce(T) -> ClientResponse) -> ClientResponse {
    match r {
        Ok(v) => ok(v),
        Err(message) => ClientResponse::Error { message },
    }
}
