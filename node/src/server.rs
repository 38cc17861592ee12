//! The node process: parse config, open Raft, bind QUIC, serve.
//!
//! `start` returns once the node is listening and its one-member (or
//! joined) cluster has a leader; `Node::stop` cancels every task and waits a
//! bounded time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;
use cairn_protocol::handshake::{check_version, HelloReply, Role, PROTOCOL_VERSION};
use cairn_protocol::pki::{self, TransportLimits};
use cairn_protocol::types::{TokenRecord, TokenScope};
use cairn_protocol::{now_ms, token};
use tokio_util::sync::CancellationToken;

use crate::identity::{self, Identity};
use crate::jobs::{self, Jobs};
use crate::raft::{NoPeers, RaftNode};
use crate::services;
use crate::state::{Command, Request, Response};

/// How long `stop` waits for tasks after cancelling them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long start-up waits for the cluster to have a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(15);
/// Reason recorded on jobs that were running when the node went down.
pub const INTERRUPTED_REASON: &str =
    "interrupted: the node stopped while the job was running (its runner stream was lost)";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::RaftError),
    #[error("tls: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the cluster has no leader after {0:?}")]
    NoLeader(Duration),
    #[error("{0}")]
    Write(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Node settings (from `cairn-node` flags or `cairn server run`).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeConfig {
    /// Where the node keeps its Raft log, state and certificates.
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// UDP address for QUIC (clients, runners, entrypoints, peers). Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:9701")]
    pub listen: SocketAddr,
    /// Also write the one-time bootstrap token to this file (mode 0600).
    #[arg(long)]
    pub bootstrap_file: Option<PathBuf>,
    /// Write {"addr", "ca_fingerprint", "node_id", "pid"} here once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Shared by every task of a node.
pub struct Ctx {
    pub raft: RaftNode,
    pub identity: Identity,
    pub jobs: Jobs,
    pub addr: SocketAddr,
}

impl Ctx {
    /// Commit a command; an `Error` answer from the state machine becomes `Err`.
    pub async fn write(&self, command: Command) -> Result<Response, String> {
        match self
            .raft
            .write(Request {
                now_ms: now_ms(),
                command,
            })
            .await
        {
            Ok(Response::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => Err(format!("the cluster could not record it: {e}")),
        }
    }
}

/// A running node.
pub struct Node {
    pub ctx: Arc<Ctx>,
    pub addr: SocketAddr,
    pub ca_fingerprint: String,
    /// Set on the first start of a new cluster: shown once.
    pub bootstrap_token: Option<String>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    endpoint: quinn::Endpoint,
}

pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
    let identity = identity::load_or_create(&cfg.data_dir, &[])?;
    let raft = RaftNode::open(
        &cfg.data_dir.join("raft"),
        identity.node_id,
        cfg.listen.to_string(),
        NoPeers,
    )
    .await?;
    raft.initialize_single().await?;
    raft.wait_for_leader(LEADER_WAIT)
        .await
        .ok_or(NodeError::NoLeader(LEADER_WAIT))?;

    let server_cfg = pki::server_config(
        &identity.cert,
        &identity.ca.cert_pem,
        TransportLimits::DEFAULT,
    )?;
    let endpoint =
        quinn::Endpoint::server(server_cfg, cfg.listen).map_err(|source| NodeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = endpoint.local_addr().map_err(|source| NodeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let ctx = Arc::new(Ctx {
        raft,
        identity: identity.clone(),
        jobs: Jobs::default(),
        addr,
    });

    // Jobs that were assigned or running when this node went down cannot
    // finish: their runner streams died with it.
    if ctx.raft.is_leader() {
        let n = ctx
            .write(Command::FailInterrupted {
                reason: INTERRUPTED_REASON.into(),
            })
            .await
            .map_err(NodeError::Write)?;
        if let Response::Changed(n) = n {
            if n > 0 {
                tracing::warn!(jobs = n, "marked interrupted jobs as failed");
            }
        }
    }

    let bootstrap_token = bootstrap(&ctx).await?;
    if let (Some(tok), Some(path)) = (&bootstrap_token, &cfg.bootstrap_file) {
        identity::write_atomic(path, tok.as_bytes(), true)?;
    }

    let shutdown = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(accept_loop(ctx.clone(), endpoint.clone(), shutdown.clone())),
        tokio::spawn(jobs::run_scheduler(ctx.clone(), shutdown.clone())),
    ];

    if let Some(path) = &cfg.ready_file {
        let ready = serde_json::json!({
            "addr": addr.to_string(),
            "ca_fingerprint": identity.ca_fingerprint,
            "node_id": identity.node_id,
            "pid": std::process::id(),
        });
        identity::write_atomic(path, ready.to_string().as_bytes(), false)?;
    }
    tracing::info!(%addr, node_id = identity.node_id, ca = %identity.ca_fingerprint, "node listening");
    Ok(Node {
        ctx,
        addr,
        ca_fingerprint: identity.ca_fingerprint.clone(),
        bootstrap_token,
        shutdown,
        tasks,
        endpoint,
    })
}

/// Create the one-time bootstrap token if the cluster has no token at all.
async fn bootstrap(ctx: &Ctx) -> Result<Option<String>, NodeError> {
    let has_tokens = ctx.raft.read_local(|s| !s.tokens.is_empty());
    if has_tokens || !ctx.raft.is_leader() {
        return Ok(None);
    }
    let secret = token::generate("boot");
    let record = TokenRecord {
        id: "bootstrap".into(),
        hash: token::hash(&secret),
        scope: TokenScope::Bootstrap,
        name: "bootstrap".into(),
        created_ms: now_ms(),
        expires_ms: None,
        revoked: false,
    };
    ctx.write(Command::CreateToken { record })
        .await
        .map_err(NodeError::Write)?;
    Ok(Some(secret))
}

impl Node {
    /// Cancel every task, close the endpoint, stop Raft; bounded by [`SHUTDOWN_GRACE`].
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.endpoint.close(0u32.into(), b"node shutting down");
        let wait = futures::future::join_all(self.tasks);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, wait).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.ctx.raft.shutdown()).await;
    }

    /// Serve until `shutdown` fires, then stop.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }
}

async fn accept_loop(ctx: Arc<Ctx>, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_connection(ctx, conn, shutdown).await,
                Err(e) => tracing::debug!(error = %e, "handshake failed"),
            }
        });
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub scope: TokenScope,
}

/// Per-connection state shared by its streams.
pub struct ConnSession {
    pub conn: quinn::Connection,
    pub principal: Principal,
    pub role: Role,
    /// Set once the connection registered as a runner.
    pub runner: std::sync::Mutex<Option<String>>,
}

fn negotiated_role(conn: &quinn::Connection) -> Option<Role> {
    let data = conn.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    Role::from_alpn(data.protocol.as_deref()?)
}

async fn serve_connection(ctx: Arc<Ctx>, conn: quinn::Connection, shutdown: CancellationToken) {
    let Some(role) = negotiated_role(&conn) else {
        conn.close(1u32.into(), b"no cairn ALPN");
        return;
    };
    let (hello, mut send) = match cairn_protocol::rpc::accept_hello(&conn).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, "no hello");
            conn.close(1u32.into(), b"no hello");
            return;
        }
    };
    let refuse = |reason: String| HelloReply::Refused { reason };
    let verdict = if let Err(e) = check_version(hello.version) {
        Err(refuse(e))
    } else if hello.role != role {
        Err(refuse(format!(
            "hello says role {:?} but the connection negotiated {:?}",
            hello.role, role
        )))
    } else {
        authenticate(&ctx, &conn, role, &hello.token).map_err(refuse)
    };
    let principal = match verdict {
        Ok(p) => p,
        Err(reply) => {
            let _ = frame::write(&mut send, &reply).await;
            let _ = send.finish();
            // Give the refusal time to arrive before closing.
            tokio::time::sleep(Duration::from_millis(200)).await;
            conn.close(2u32.into(), b"refused");
            return;
        }
    };
    let welcome = HelloReply::Welcome {
        node_id: ctx.identity.node_id,
        version: PROTOCOL_VERSION,
        principal: principal.name.clone(),
    };
    if frame::write(&mut send, &welcome).await.is_err() || send.finish().is_err() {
        return;
    }
    let session = Arc::new(ConnSession {
        conn: conn.clone(),
        principal,
        role,
        runner: std::sync::Mutex::new(None),
    });
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let ctx = ctx.clone();
        let session = session.clone();
        tokio::spawn(async move { serve_stream(ctx, session, send, recv).await });
    }
}

fn authenticate(
    ctx: &Ctx,
    conn: &quinn::Connection,
    role: Role,
    secret: &str,
) -> Result<Principal, String> {
    let hash = token::hash(secret);
    let rec = ctx
        .raft
        .read_local(|s| s.token(&hash, now_ms()).cloned())
        .ok_or_else(|| "the token is not valid (unknown, expired or revoked)".to_string())?;
    let allowed = match (role, &rec.scope) {
        (Role::Client, TokenScope::User | TokenScope::Bootstrap) => true,
        (Role::Runner, TokenScope::Runner | TokenScope::User) => {
            pki::peer_is_cluster_member(conn) || rec.scope == TokenScope::User
        }
        (Role::Entrypoint, TokenScope::Entrypoint { .. }) => true,
        _ => false,
    };
    if !allowed {
        return Err(format!(
            "a {:?} token cannot be used for a {:?} connection",
            rec.scope, role
        ));
    }
    let name = match &rec.scope {
        TokenScope::Bootstrap => "bootstrap".to_string(),
        TokenScope::User => format!("user:{}", rec.name),
        TokenScope::Runner => format!("runner:{}", rec.name),
        TokenScope::Entrypoint { app, deployment } => format!("entrypoint:{app}/v{deployment}"),
    };
    Ok(Principal {
        name,
        scope: rec.scope,
    })
}

async fn serve_stream(
    ctx: Arc<Ctx>,
    session: Arc<ConnSession>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let req: ClientRequest = match frame::read_required(&mut recv).await {
        Ok(r) => r,
        Err(e) => {
            // A malformed frame: say why, then close this peer's connection.
            let _ = frame::write(
                &mut send,
                &ClientResponse::Error {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            let _ = send.finish();
            tokio::time::sleep(Duration::from_millis(100)).await;
            session.conn.close(3u32.into(), b"malformed frame");
            return;
        }
    };
    if session.principal.scope == TokenScope::Bootstrap
        && !matches!(
            req,
            ClientRequest::ServerInfo | ClientRequest::ExchangeBootstrap { .. }
        )
    {
        let _ = frame::write(
            &mut send,
            &ClientResponse::Error {
                message: "the bootstrap token can only be exchanged for a user token".into(),
            },
        )
        .await;
        let _ = send.finish();
        return;
    }
    services::dispatch(&ctx, &session, req, send, recv).await;
}
