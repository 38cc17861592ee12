//! The QUIC transport's adapters over the service layer ([`crate::api`]): `dispatch` checks
//! the caller may make the request ([`crate::api::auth`]) and routes it to its service;
//! unary calls answer one frame, streaming calls own the stream.

use std::sync::Arc;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;

use crate::api::auth::{self, Action};
use crate::api::{ApiError, Caller};
use crate::ctx::Ctx;

pub mod catalog;
pub mod cluster;
pub mod config;
pub mod entrypoint;
pub mod exec;
pub mod hostname;
pub mod jobs;
pub mod runner;
pub mod server;
pub mod source;

pub use crate::cluster::{note_retry_elsewhere, REQUEST_ID, RETRY_ELSEWHERE};

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub scope: cairn_protocol::types::TokenScope,
    /// The hash of the token the connection was admitted with (empty for
    /// peers): what a single-use token is consumed by.
    pub token_hash: String,
    /// An enrolled runner admitted by its certificate (issue 19): its id.
    pub runner_id: Option<String>,
}

impl Principal {
    /// A runner connection without a certificate (with a runner token or
    /// none): it may only enroll.
    pub fn enrolling(&self) -> bool {
        self.scope == cairn_protocol::types::TokenScope::Runner && self.runner_id.is_none()
    }
}

/// Per-connection state shared by its streams.
pub struct ConnSession {
    pub conn: quinn::Connection,
    pub principal: Principal,
    pub role: cairn_protocol::handshake::Role,
    /// The protocol version the connection speaks and what the other side runs.
    pub speaks: cairn_protocol::handshake::Speaks,
    /// Set once the connection registered as a runner.
    pub runner: std::sync::Mutex<Option<String>>,
}

/// The answer for `r`: `ok` of its value, or its error ([`ApiError::into_response`]).
pub fn reply<T>(r: Result<T, ApiError>, ok: impl FnOnce(T) -> ClientResponse) -> ClientResponse {
    match r {
        Ok(v) => ok(v),
        Err(e) => e.into_response(),
    }
}

/// [`reply`] for actions that answer `Ok`.
pub fn reply_ok(r: Result<(), ApiError>) -> ClientResponse {
    reply(r, |()| ClientResponse::Ok)
}

/// The caller of a connection's requests.
pub fn caller(s: &ConnSession) -> Caller {
    Caller {
        name: s.principal.name.clone(),
        scope: s.principal.scope.clone(),
        speaks: s.speaks.version,
        release: s.speaks.release.clone(),
    }
}

/// Serve one request of a client connection.
pub async fn dispatch(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    req: ClientRequest,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    use tracing::Instrument as _;
    let name = auth::request_name(&req);
    let span = tracing::debug_span!("request", transport = "quic", request = name, principal = %s.principal.name);
    ctx.metrics.api("quic", name, "served");
    RETRY_ELSEWHERE
        .scope(std::cell::Cell::new(false), route(ctx, s, req, send, recv))
        .instrument(span)
        .await
}

async fn route(
    ctx: &Arc<Ctx>,
    s: &Arc<ConnSession>,
    req: ClientRequest,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let who = caller(s);
    let action = Action::of(&req);
    let refused = if s.principal.enrolling()
        && !matches!(action, Action::ServerInfo | Action::EnrollRunner)
    {
        Err(crate::api::ApiError::refused(
            "this runner is not enrolled yet: a runner token (or no token) only enrolls a runner; it then connects with its certificate",
        ))
    } else {
        auth::check(&who.scope, action)
    };
    if let Err(e) = refused {
        let _ = frame::write(&mut send, &e.into_response()).await;
        let _ = send.finish();
        return;
    }
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
        ClientRequest::ServerInfo => {
            ClientResponse::ServerInfo(Box::new(crate::api::server_info(ctx)))
        }
        ClientRequest::ExchangeBootstrap { name } => server::exchange_bootstrap(ctx, &name).await,
        ClientRequest::ListOperations { kind, project, app } => {
            catalog::list_operations(ctx, kind, project, app).await
        }
        ClientRequest::ListRunners => catalog::list_runners(ctx).await,
        ClientRequest::QueueJob { spec } => jobs::queue(ctx, &who, spec).await,
        ClientRequest::ListJobs { limit } => jobs::list(ctx, &who, limit).await,
        ClientRequest::InspectJob { id } => jobs::inspect(ctx, &who, id).await,
        ClientRequest::CancelJob { id } => jobs::cancel(ctx, id).await,
        ClientRequest::AttachJob { id } => return jobs::attach(ctx, &who, id, send).await,
        req @ (ClientRequest::RegisterRunner { .. } | ClientRequest::RegisterRunnerWith { .. }) => {
            if let Some(r) = runner::Registering::of(req) {
                runner::register(ctx, s, r, send, recv).await;
            }
            return;
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
            cluster::create_token(ctx, scope, name, ttl_s).await
        }
        ClientRequest::JoinCluster {
            csr,
            node_id,
            peer_addr,
        } => cluster::join(ctx, s, csr, node_id, peer_addr).await,
        ClientRequest::Members => reply(crate::api::members(ctx).await, ClientResponse::Members),
        ClientRequest::Upgrade { finish } => cluster::upgrade(ctx, finish).await,
        ClientRequest::RemoveMember { id } => cluster::remove_member(ctx, s, id).await,
        ClientRequest::SnapshotSave => return server::snapshot_save(ctx, send).await,
        ClientRequest::RegisterInstance(hello) => {
            return entrypoint::register(ctx, s, hello, send, recv).await
        }
        ClientRequest::ListInstances => {
            reply(crate::api::instances(ctx).await, ClientResponse::Instances)
        }
        ClientRequest::Logs(q) => return crate::logs::serve_query(&ctx.logs_ctx(), q, send).await,
        ClientRequest::Exec {
            target,
            instance,
            spec,
        } => return exec::open(ctx, s, target, instance, spec, send, recv).await,
        ClientRequest::RegisterHostname { name, target } => {
            hostname::register(ctx, name, target).await
        }
        ClientRequest::DeleteHostname { name } => hostname::delete(ctx, name).await,
        ClientRequest::ListHostnames => hostname::list(ctx).await,
        ClientRequest::RemoveApps { project, app } => catalog::remove_apps(ctx, project, app).await,
        ClientRequest::CreateRunnerToken {
            name,
            labels,
            ttl_s,
        } => runner::create_token(ctx, name, labels, ttl_s).await,
        ClientRequest::EnrollRunner { id, csr, labels } => {
            runner::enroll(ctx, s, id, csr, labels).await
        }
        ClientRequest::DecideRunner { id, decision } => runner::decide(ctx, s, id, decision).await,
        ClientRequest::InspectRunners { id } => runner::inspect(ctx, id).await,
        ClientRequest::UploadSource { digest, size } => {
            return source::upload(ctx, digest, size, send, recv).await
        }
        ClientRequest::FetchSource { digest } => return source::fetch(ctx, digest, send).await,
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
