//! The node process: parse config, open Raft, bind QUIC, serve.
//!
//! `start` returns once the node is listening and, for a one-member
//! cluster, has a leader; a node of a larger cluster (or one that just
//! joined) returns once it is a member, whether or not a quorum is up yet.
//! `Node::stop` cancels every task and waits a bounded time.

pub mod leader;
pub mod peers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::frame;
use cairn_protocol::handshake::{negotiate, release_in_agent, HelloReply, Role, Speaks, Versions};
use cairn_protocol::pki::{self, TransportLimits};
use cairn_protocol::types::{TokenRecord, TokenScope};
use cairn_protocol::{now_ms, token};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::identity::{self, Identity};
use crate::jobs::{self, Jobs};
use crate::peer::{self, join, QuicTransport};
use crate::raft::RaftNode;
use crate::services;
use crate::state::{ClusterCa, Command, Response, State};

/// The node's default QUIC port (see `NodeConfig::listen`).
pub const DEFAULT_QUIC_PORT: u16 = 9701;
/// How long a stopping node lets the ingress's requests in flight finish.
pub const INGRESS_DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long `stop` waits for tasks after cancelling them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// File in the data dir of a node that left the membership on shutdown.
pub const LEFT_MARKER: &str = "left-cluster";
/// How long a node leaving on shutdown waits for the membership change.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits for the cluster to have a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(15);
/// Reason recorded on jobs that were running when the node went down.
pub const INTERRUPTED_REASON: &str =
    "interrupted: the node stopped while the job was running (its runner stream was lost)";

impl From<crate::raft::RaftError> for NodeError {
    fn from(e: crate::raft::RaftError) -> Self {
        // Boxed: openraft's errors are large and would bloat every Result.
        NodeError::Raft(Box::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("raft: {0}")]
    Raft(Box<crate::raft::RaftError>),
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
    #[error(transparent)]
    Join(#[from] join::JoinError),
    #[error("{0}")]
    JoinArgs(String),
    #[error("cannot restore from {path}: {message}")]
    Restore { path: PathBuf, message: String },
    #[error("ingress: {0}")]
    IngressTls(#[from] crate::ingress::tls::TlsError),
    #[error("cannot listen for the ingress on {addr}: {source}")]
    IngressBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for the HTTP API on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP API: {0}")]
    HttpTls(String),
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
    /// With a loopback --listen address, do not also listen on the Docker
    /// bridge's address (docker0), where app containers reach this host.
    #[arg(long)]
    pub no_container_bridge: bool,
    /// Also write the one-time bootstrap token to this file (mode 0600).
    #[arg(long)]
    pub bootstrap_file: Option<PathBuf>,
    /// Write {"addr", "advertise", "ca_fingerprint", "node_id", "pid"} here once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// The address other nodes reach this one at (default: the bound address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Join the cluster of the node at this address (instead of creating a
    /// new cluster). Only used on the first start; a joined node remembers.
    #[arg(long, requires = "join_ca")]
    pub join: Option<String>,
    /// A file holding the join token from `cairn server join-token` (keep it
    /// mode 0600). Or put the token in the environment as CAIRN_JOIN_TOKEN.
    /// It is never taken on the command line, which every local user can
    /// read in /proc while the node runs.
    #[arg(long, value_name = "FILE", requires = "join")]
    pub join_token_file: Option<PathBuf>,
    /// The join token itself, when the node is started in-process (tests);
    /// `cairn-node` reads it from `--join-token-file` or CAIRN_JOIN_TOKEN.
    #[arg(skip)]
    pub join_token: Option<String>,
    /// The cluster CA fingerprint (`sha256:…`) to pin while joining.
    #[arg(long)]
    pub join_ca: Option<String>,
    /// On SIGTERM/Ctrl-C, leave the membership first (unless this is the
    /// last voter), so the others' quorum shrinks with it. Default: on for a
    /// node that joined a cluster, off for the one that bootstrapped it. A
    /// node that left adds itself back when it starts again.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub leave_on_shutdown: Option<bool>,
    /// Start a new one-member cluster whose state is the one saved by
    /// `cairn server snapshot save` in this file (same CA, same tokens).
    /// Only used when the data dir is new.
    #[arg(long, conflicts_with = "join")]
    pub restore: Option<PathBuf>,
    /// TCP address of the URL-service ingress (HTTP, or HTTPS with TLS
    /// options). Default: the --listen IP with the --listen port + 2 (9703
    /// next to the default 9701; any free port when --listen has port 0).
    #[arg(long, value_name = "ADDR")]
    pub ingress: Option<SocketAddr>,
    /// Serve no URL-service ingress on this node.
    #[arg(long, conflicts_with = "ingress")]
    pub no_ingress: bool,
    /// TCP address of the HTTP API (JSON, docs/openapi.json): plain HTTP on a loopback
    /// address, else HTTPS with the node's cluster certificate. Default: the --listen IP
    /// with the --listen port + 1 (9702 next to the default 9701; any free port when
    /// --listen has port 0).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Serve no HTTP API on this node.
    #[arg(long, conflicts_with = "http")]
    pub no_http: bool,
    /// The URL service's domain: apps answer at APP.DOMAIN, deployments at
    /// APP--vN.DOMAIN.
    #[arg(long, default_value = crate::ingress::DEFAULT_DOMAIN)]
    pub domain: String,
    /// Serve the ingress over TLS with this certificate chain (PEM, leaf
    /// first); needs --ingress-tls-key.
    #[arg(long, value_name = "FILE", requires = "ingress_tls_key")]
    pub ingress_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --ingress-tls-cert.
    #[arg(long, value_name = "FILE", requires = "ingress_tls_cert")]
    pub ingress_tls_key: Option<PathBuf>,
    /// Serve the ingress over TLS with certificates issued on the fly by a
    /// CA of this node's own (DATA_DIR/ingress-ca.pem: the file clients
    /// trust; kept across restarts).
    #[arg(long, conflicts_with = "ingress_tls_cert")]
    pub ingress_tls_self_signed: bool,
    /// The most connections the ingress holds open. At the limit the
    /// longest-idle ones are closed to make room for new ones. Lowered to
    /// fit the process's open-files limit (less a reserve) when that is
    /// smaller.
    #[arg(long, value_name = "N", default_value_t = crate::ingress::limits::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub ingress_max_connections: u64,
    /// TEST-ONLY knob, hidden from `--help`: build a Raft snapshot every N
    /// applied entries, whatever the state's size, instead of the default
    /// cadence (`raft::cadence`). Lets tests make a follower fall behind the
    /// leader's purged log with a few writes. Not for production use.
    #[arg(long, hide = true, value_name = "N")]
    pub raft_snapshot_every: Option<u64>,
    /// TEST-ONLY knob, hidden from `--help`: applied entries kept in the log
    /// after a snapshot (default `raft::LOGS_TO_KEEP_AFTER_SNAPSHOT`). Not
    /// for production use.
    #[arg(long, hide = true, value_name = "N")]
    pub raft_logs_to_keep: Option<u64>,
}

impl NodeConfig {
    /// A node keeping its data in `data_dir`, listening on `listen`, with
    /// every other setting at its default (a new cluster).
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            listen,
            no_container_bridge: false,
            bootstrap_file: None,
            ready_file: None,
            advertise: None,
            join: None,
            join_token: None,
            join_token_file: None,
            join_ca: None,
            leave_on_shutdown: None,
            restore: None,
            raft_snapshot_every: None,
            raft_logs_to_keep: None,
            // Any free port: embedded and test nodes share one machine.
            ingress: Some(SocketAddr::new(listen.ip(), 0)),
            no_ingress: false,
            http: Some(SocketAddr::new(listen.ip(), 0)),
            no_http: false,
            domain: crate::ingress::DEFAULT_DOMAIN.to_string(),
            ingress_tls_cert: None,
            ingress_tls_key: None,
            ingress_tls_self_signed: false,
            ingress_max_connections: crate::ingress::limits::DEFAULT_MAX_CONNECTIONS as u64,
        }
    }

    /// Where the ingress listens, or `None` without one (see
    /// [`NodeConfig::ingress`]).
    pub fn ingress_addr(&self) -> Option<SocketAddr> {
        if self.no_ingress {
            return None;
        }
        Some(self.ingress.unwrap_or_else(|| {
            let port = match self.listen.port() {
                0 => 0,
                p => p.saturating_add(crate::ingress::DEFAULT_PORT - DEFAULT_QUIC_PORT),
            };
            SocketAddr::new(self.listen.ip(), port)
        }))
    }

    /// Where the HTTP API listens, or `None` without one (see [`NodeConfig::http`]).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        if self.no_http {
            return None;
        }
        Some(self.http.unwrap_or_else(|| {
            let port = match self.listen.port() {
                0 => 0,
                p => p.saturating_add(crate::http::DEFAULT_PORT - DEFAULT_QUIC_PORT),
            };
            SocketAddr::new(self.listen.ip(), port)
        }))
    }

    /// Raft tuning: the defaults unless a test-only knob is set.
    pub fn raft_tuning(&self) -> crate::raft::Tuning {
        let mut t = crate::raft::Tuning::default();
        if let Some(n) = self.raft_snapshot_every {
            t.snapshot_logs_since_last = n.max(1);
            t.snapshot_logs_per_record = 0;
        }
        if let Some(keep) = self.raft_logs_to_keep {
            t.logs_to_keep_after_snapshot = keep;
        }
        t
    }

    /// Where to join, with the token from `join_token`, `--join-token-file`
    /// or `CAIRN_JOIN_TOKEN` (in that order); an error when `--join` lacks
    /// its token or CA fingerprint.
    fn join_target(&self) -> Result<Option<join::JoinTarget>, String> {
        let Some(addr) = &self.join else {
            return Ok(None);
        };
        let token = match (&self.join_token, &self.join_token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => read_token_file(path)?,
            (None, None) => std::env::var("CAIRN_JOIN_TOKEN")
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    "--join needs a join token: --join-token-file FILE, or CAIRN_JOIN_TOKEN in the environment (`cairn server join-token` prints the command)".to_string()
                })?,
        };
        let Some(ca) = &self.join_ca else {
            return Err("--join needs --join-ca sha256:…".into());
        };
        Ok(Some(join::JoinTarget {
            addr: addr.clone(),
            token,
            ca_fingerprint: ca.clone(),
        }))
    }
}

/// The token in a `--join-token-file`; refused when other users may read
/// the file (the token admits a node that receives every secret).
fn read_token_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by other users (mode {mode:o}): the join token must be kept private (chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("{} holds no join token", path.display()));
    }
    Ok(token)
}

pub use crate::cluster::chaos_bug;
pub use crate::ctx::Ctx;

/// What this node does for requests to the leader while it leads: [`peer::leader::handle`]
/// over the whole node (held weakly: the node owns the cluster handle that holds this).
struct LeaderHandler(std::sync::Weak<Ctx>);

impl crate::cluster::LeaderService for LeaderHandler {
    fn handle(
        &self,
        req: crate::peer::LeaderRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::peer::LeaderResponse> + Send + '_>>
    {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(ctx) => leader::handle(&ctx, req).await,
                None => crate::peer::LeaderResponse::Unavailable("this node is stopping".into()),
            }
        })
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
    /// The same service on the Docker bridge's address (see [`bridge_endpoint`]).
    pub bridge: Option<(SocketAddr, quinn::Endpoint)>,
    data_dir: PathBuf,
}

pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
    // The data dir holds the CA key and every secret: the owner's alone.
    cairn_protocol::private::create_dir(&cfg.data_dir).map_err(|source| NodeError::Io {
        path: cfg.data_dir.clone(),
        source,
    })?;
    for warning in cairn_protocol::private::loose_entries(&cfg.data_dir) {
        tracing::warn!("{warning}");
    }
    let bind_err = |source| NodeError::Bind {
        addr: cfg.listen,
        source,
    };
    // Bind first: a joining node tells the cluster its address before it has
    // the certificate its endpoint will present.
    let socket = std::net::UdpSocket::bind(cfg.listen).map_err(bind_err)?;
    let addr = socket.local_addr().map_err(bind_err)?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
    // A node whose identity exists was restored already (or is being
    // restarted after a crash mid-restore): the file may be gone by now.
    let restored = match &cfg.restore {
        Some(path) if identity::load(&cfg.data_dir)?.is_none() => Some(read_restore(path)?),
        Some(path) => read_restore(path)
            .map_err(|e| tracing::warn!(error = %e, "ignoring --restore: this node has its data already"))
            .ok(),
        None => None,
    };
    let identity = match identity::load(&cfg.data_dir)? {
        Some(id) => id,
        None => match cfg.join_target().map_err(NodeError::JoinArgs)? {
            Some(target) => join::obtain_identity(&cfg.data_dir, &target, &advertise).await?,
            None => match &restored {
                Some((_, ca)) => {
                    identity::create_restored(&cfg.data_dir, &ca.cert_pem, &ca.key_pem, &[])?
                }
                None => identity::load_or_create(&cfg.data_dir, &[])?,
            },
        },
    };
    if let (Some((_, ca)), Some(path)) = (&restored, &cfg.restore) {
        if identity.ca_cert_pem != ca.cert_pem {
            return Err(NodeError::Restore {
                path: path.clone(),
                message: format!(
                    "{} already holds a node of another cluster",
                    cfg.data_dir.display()
                ),
            });
        }
    }
    let server_cfg = pki::server_config(
        &identity.cert,
        &identity.ca_cert_pem,
        TransportLimits::DEFAULT,
    )?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config(&identity),
        Some(server_cfg.clone()),
        socket,
        Arc::new(cairn_protocol::socket::QuietRuntime),
    )
    .map_err(bind_err)?;
    let ingress = match bind_ingress(&cfg).await {
        Ok(i) => i,
        Err(e) => {
            endpoint.close(0u32.into(), b"node failed to start");
            return Err(e);
        }
    };
    let http = match bind_http(&cfg, &identity).await {
        Ok(h) => h,
        Err(e) => {
            endpoint.close(0u32.into(), b"node failed to start");
            return Err(e);
        }
    };
    let http_url = http.as_ref().and_then(|h| h.url().ok());
    let ingress_info = match &ingress {
        Some(i) => Some(i.info().map_err(|source| NodeError::IngressBind {
            addr: cfg.ingress_addr().unwrap_or(cfg.listen),
            source,
        })?),
        None => None,
    };
    let peers = QuicTransport::new(
        identity.node_id,
        endpoint.clone(),
        &identity.ca_fingerprint,
        &identity.cert,
    )?;
    let raft = match RaftNode::open_with(
        &cfg.data_dir.join("raft"),
        identity.node_id,
        advertise.clone(),
        peers.clone(),
        cfg.raft_tuning(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            endpoint.close(0u32.into(), b"node failed to start");
            return Err(e.into());
        }
    };
    let cluster = Cluster::new(raft.clone(), peers.clone());
    let ctx = Arc::new(Ctx {
        raft,
        cluster: cluster.clone(),
        identity: identity.clone(),
        jobs: Jobs::default(),
        addr,
        peers,
        logs: crate::logs::LogStore::default(),
        attached: crate::attached::Attached::default(),
        ingress: ingress_info.clone(),
        upgrade: Arc::default(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        ingress_drain: crate::ingress::Drain::default(),
        sources: crate::sources::Sources::new(&cfg.data_dir),
    });

    cluster.serve_as_leader(Arc::new(LeaderHandler(Arc::downgrade(&ctx))));

    // Serve peers (and clients) before joining: the leader replicates to
    // this node while adding it.
    let shutdown = CancellationToken::new();
    let mut tasks = vec![tokio::spawn(accept_loop(
        ctx.clone(),
        endpoint.clone(),
        shutdown.clone(),
    ))];
    let bridge = match cfg.no_container_bridge {
        true => None,
        false => bridge_endpoint(addr, &identity, &server_cfg),
    };
    if let Some((_, b)) = &bridge {
        tasks.push(tokio::spawn(accept_loop(
            ctx.clone(),
            b.clone(),
            shutdown.clone(),
        )));
    }
    let restored = restored.map(|(state, _)| state);
    let bootstrap_token = match become_member(&ctx, &cfg, &advertise, restored).await {
        Ok(t) => t,
        Err(e) => {
            let node = Node {
                ctx,
                addr,
                ca_fingerprint: identity.ca_fingerprint.clone(),
                bootstrap_token: None,
                shutdown,
                tasks,
                endpoint,
                bridge,
                data_dir: cfg.data_dir.clone(),
            };
            node.stop().await;
            return Err(e);
        }
    };
    if let (Some(tok), Some(path)) = (&bootstrap_token, &cfg.bootstrap_file) {
        identity::write_atomic(path, tok.as_bytes(), true)?;
    }
    tasks.push(tokio::spawn(jobs::run_scheduler(
        Arc::new(ctx.jobs_ctx()),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(services::entrypoint::run_sweeper(
        ctx.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(crate::upgrade::run(
        ctx.cluster.clone(),
        ctx.upgrade.clone(),
        shutdown.clone(),
    )));
    if let Some(ingress) = ingress {
        let ictx = Arc::new(crate::ingress::IngressCtx {
            cluster: ctx.cluster.clone(),
            attached: ctx.attached.clone(),
            me: ctx.identity.node_id,
            metrics: ctx.metrics.clone(),
            drain: ctx.ingress_drain.clone(),
        });
        tasks.push(tokio::spawn(ingress.run(ictx, shutdown.clone())));
    }
    if let Some(api) = http {
        tasks.push(tokio::spawn(api.run(ctx.clone(), shutdown.clone())));
    }

    if let Some(path) = &cfg.ready_file {
        let ready = serde_json::json!({
            "addr": addr.to_string(),
            "ingress": ingress_info.as_ref().map(|i| format!("{}://{}", i.scheme, i.addr)),
            "http": http_url,
            "bridge": bridge.as_ref().map(|(a, _)| a.to_string()),
            "advertise": advertise,
            "ca_fingerprint": identity.ca_fingerprint,
            "node_id": identity.node_id,
            "pid": std::process::id(),
        });
        identity::write_atomic(path, ready.to_string().as_bytes(), false)?;
    }
    tracing::info!(%addr, %advertise, node_id = format!("{:x}", identity.node_id), ca = %identity.ca_fingerprint, "node listening");
    Ok(Node {
        ctx,
        addr,
        ca_fingerprint: identity.ca_fingerprint.clone(),
        bootstrap_token,
        shutdown,
        tasks,
        endpoint,
        bridge,
        data_dir: cfg.data_dir.clone(),
    })
}

/// A node listening on loopback also listens on the Docker bridge's address
/// (the `docker0` interface), same port: app containers on the default bridge
/// reach this host there, and the docker platform points their entrypoints at
/// it. Certificates name no address, so the same identity serves both. Best
/// effort: without a `docker0` interface there is no such listener (nothing
/// logged); when binding it fails, the node logs a warning and goes on.
fn bridge_endpoint(
    addr: SocketAddr,
    identity: &identity::Identity,
    server_cfg: &quinn::ServerConfig,
) -> Option<(SocketAddr, quinn::Endpoint)> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let ip = docker_bridge_ip()?;
    let at = SocketAddr::new(ip.into(), addr.port());
    let bound = std::net::UdpSocket::bind(at).and_then(|socket| {
        quinn::Endpoint::new(
            endpoint_config(identity),
            Some(server_cfg.clone()),
            socket,
            Arc::new(cairn_protocol::socket::QuietRuntime),
        )
    });
    match bound {
        Ok(e) => {
            tracing::info!(%at, "also listening on the Docker bridge, for app containers");
            Some((at, e))
        }
        Err(error) => {
            tracing::warn!(%at, %error, "cannot listen on the Docker bridge: app containers will not reach this node");
            None
        }
    }
}

/// The IPv4 address of the `docker0` interface, if this host has one.
fn docker_bridge_ip() -> Option<std::net::Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name != "docker0" {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Some(sin.ip());
        }
    }
    None
}

/// Binds the ingress as configured (TLS set up first, so a bad certificate
/// is reported before anything listens).
async fn bind_ingress(cfg: &NodeConfig) -> Result<Option<crate::ingress::Ingress>, NodeError> {
    let Some(addr) = cfg.ingress_addr() else {
        return Ok(None);
    };
    let tls = match (&cfg.ingress_tls_cert, &cfg.ingress_tls_key) {
        (Some(cert), Some(key)) => Some(crate::ingress::tls::from_files(cert, key)?),
        _ if cfg.ingress_tls_self_signed => Some(crate::ingress::tls::self_signed(
            &cfg.domain,
            &cfg.data_dir,
        )?),
        _ => None,
    };
    let fds = crate::ingress::limits::raise_fd_limit();
    let wanted = usize::try_from(cfg.ingress_max_connections).unwrap_or(usize::MAX);
    let max_connections = crate::ingress::limits::clamp_to_fds(wanted, fds);
    if max_connections < wanted {
        tracing::warn!(
            wanted,
            max_connections,
            open_files_limit = fds,
            "the ingress connection limit is lowered to fit the open-files limit"
        );
    }
    let limits = crate::ingress::limits::Limits {
        max_connections,
        ..Default::default()
    };
    crate::ingress::Ingress::bind(addr, &cfg.domain, tls, limits)
        .await
        .map(Some)
        .map_err(|source| NodeError::IngressBind { addr, source })
}

/// The HTTP API's listener, unless `--no-http`: plain on loopback, else TLS with the node's
/// certificate.
async fn bind_http(
    cfg: &NodeConfig,
    identity: &Identity,
) -> Result<Option<crate::http::HttpApi>, NodeError> {
    let Some(addr) = cfg.http_addr() else {
        return Ok(None);
    };
    let tls = if addr.ip().is_loopback() {
        None
    } else {
        Some(crate::http::tls_config(identity).map_err(NodeError::HttpTls)?)
    };
    crate::http::HttpApi::bind(addr, tls)
        .await
        .map(Some)
        .map_err(|source| NodeError::HttpBind { addr, source })
}

/// The endpoint config, with a stateless-reset key derived from the node's
/// persistent key: a node restarted on the same address answers packets of
/// its dead incarnation's connections with a stateless reset, so their peers
/// (clients, runners, other nodes) notice at once instead of after the idle
/// timeout.
///
/// Both halves must survive the restart: the reset key (so the token matches
/// what the peer was told) and the connection-id generator's key (quinn's
/// default generator signs its ids with a random key and silently drops
/// packets whose id it cannot validate, which would never reach the reset).
fn endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    let key = &identity.cert.key_pem;
    let mut cfg = quinn::EndpointConfig::new(Arc::new(reset_key(key)));
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&derive(key, b"cairn connection ids v1")[..8]);
    let cid_key = u64::from_be_bytes(cid_key);
    cfg.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    cfg
}

/// HMAC key for stateless resets, derived from the node's private key (PEM).
/// Stable across restarts; reveals nothing about the key.
pub fn reset_key(node_key_pem: &str) -> ring::hmac::Key {
    let k = derive(node_key_pem, b"cairn stateless reset v1");
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k)
}

/// SHA-256 of a label and the node's key: a stable per-node secret.
fn derive(node_key_pem: &str, label: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(label);
    h.update([0u8]);
    h.update(node_key_pem.as_bytes());
    h.finalize().into()
}

/// Make this node a member (initialize a new cluster, or finish joining),
/// then do the leader's start-up chores. Returns the bootstrap token of a
/// brand new cluster.
async fn become_member(
    ctx: &Arc<Ctx>,
    cfg: &NodeConfig,
    advertise: &str,
    restored: Option<State>,
) -> Result<Option<String>, NodeError> {
    let raft = &ctx.raft;
    match &ctx.identity.joined_via {
        None => raft.initialize_single().await?,
        Some(via) => {
            let me = ctx.identity.node_id;
            let voter = raft
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == me);
            // A node that left on shutdown may still find itself a voter in
            // its own log (the change need not have reached it): it asks again.
            let left = cfg.data_dir.join(LEFT_MARKER);
            if !voter || left.exists() {
                let initialized = raft
                    .raft()
                    .is_initialized()
                    .await
                    .map_err(|f| NodeError::from(crate::raft::RaftError::from(f)))?;
                let via = cfg.join.clone().unwrap_or_else(|| via.clone());
                if initialized {
                    tracing::info!(
                        %via,
                        "this node is not a voter (it left the cluster when it last stopped, or its join did not finish): asking {via} to add it back, retrying for up to {:?} while no leader answers there",
                        join::JOIN_DEADLINE
                    );
                }
                match join::add_self(&ctx.peers, &via, me, advertise).await {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&left);
                    }
                    // A restarted node that knows its cluster keeps running
                    // (e.g. it was removed, or the cluster is down right now).
                    Err(e) if initialized => {
                        tracing::warn!(error = %e, "this node is not a voter and could not be added")
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let voters = raft
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if voters <= 1 {
        raft.wait_for_leader(LEADER_WAIT)
            .await
            .ok_or(NodeError::NoLeader(LEADER_WAIT))?;
    }

    // `--restore`: a new cluster takes the saved state whole (once: a
    // restarted restored node already has a CA in its state).
    if let Some(state) = restored {
        if raft.read_local(|s| s.cluster_ca.is_none() && s.tokens.is_empty()) {
            ctx.write(Command::Restore {
                state: Box::new(crate::state::v0::State::from(&state)),
            })
            .await
            .map_err(NodeError::Write)?;
            tracing::info!("restored the cluster state from a snapshot");
            compact_after_restore(raft).await;
        }
    }

    // The CA key goes into the replicated state so any leader can sign
    // joining nodes' certificates (see `state::ClusterCa`).
    if let Some(ca) = &ctx.identity.ca {
        if raft.read_local(|s| s.cluster_ca.is_none()) && raft.is_leader() {
            // A new cluster has no older member: it starts at this build's
            // newest protocol version (see `crate::upgrade`).
            ctx.write(Command::SetClusterVersion {
                version: cairn_protocol::handshake::PROTOCOL_VERSION,
            })
            .await
            .map_err(NodeError::Write)?;
            ctx.write(Command::SetClusterCa {
                ca: ClusterCa {
                    cert_pem: ca.cert_pem.clone(),
                    key_pem: ca.key_pem().to_string(),
                },
            })
            .await
            .map_err(NodeError::Write)?;
        }
    }

    // Jobs that were assigned or running when this node went down cannot
    // finish: their runner streams died with it.
    // Only a lone voter can know this at start: in a larger cluster a
    // restarted ex-leader may still believe it leads an old term (its write
    // would never commit), and the scheduler of whichever node leads fails
    // such jobs when it takes over.
    let voters = raft
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .count();
    if raft.is_leader() && voters == 1 {
        match ctx
            .write(Command::FailInterrupted {
                reason: INTERRUPTED_REASON.into(),
            })
            .await
        {
            Ok(Response::Changed(n)) if n > 0 => {
                tracing::warn!(jobs = n, "marked interrupted jobs as failed")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not mark interrupted jobs yet; the scheduler will")
            }
        }
    }
    bootstrap(ctx).await
}

/// The restore entry holds the whole state: snapshot and purge the log past
/// it, so nodes that join later catch up by (chunked) snapshot instead of
/// receiving that one big entry. Best effort: a failure only logs.
async fn compact_after_restore(raft: &RaftNode) {
    let Some(applied) = raft.metrics().last_applied else {
        return;
    };
    let r = raft.raft();
    if let Err(e) = r.trigger().snapshot().await {
        tracing::warn!(error = %e, "could not snapshot after the restore");
        return;
    }
    let built = r
        .wait(Some(LEADER_WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied.index),
            "snapshot after restore",
        )
        .await;
    if let Err(e) = built {
        tracing::warn!(error = %e, "no snapshot after the restore");
        return;
    }
    if let Err(e) = r.trigger().purge_log(applied.index).await {
        tracing::warn!(error = %e, "could not purge the log after the restore");
    }
}

/// Read a file written by `cairn server snapshot save`: the state and its CA.
fn read_restore(path: &std::path::Path) -> Result<(State, ClusterCa), NodeError> {
    let err = |message: String| NodeError::Restore {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let state = crate::raft::decode_snapshot_file(&bytes).map_err(|e| err(e.to_string()))?;
    let ca = state
        .cluster_ca
        .clone()
        .ok_or_else(|| err("the snapshot has no cluster CA".into()))?;
    Ok((state, ca))
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
        self.ctx.peers.close_all();
        self.endpoint.close(0u32.into(), b"node shutting down");
        if let Some((_, b)) = &self.bridge {
            b.close(0u32.into(), b"node shutting down");
        }
        let wait = futures::future::join_all(self.tasks);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, wait).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.ctx.raft.shutdown()).await;
    }

    /// Serve until `shutdown` fires, then let the jobs running through this
    /// node end (see [`crate::jobs::Jobs::drain`]), then (if `leave`) leave
    /// the membership, then stop.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>, leave: bool) {
        shutdown.await;
        // The URL service stops taking connections; requests in flight finish.
        let left = self.ctx.ingress_drain.drain(INGRESS_DRAIN_GRACE).await;
        if left > 0 {
            tracing::warn!(connections = left, grace = ?INGRESS_DRAIN_GRACE, "ingress connections still busy after the drain grace; they are cut");
        }
        // Let the jobs running through this node end before it goes (a
        // rolling upgrade stops every node in turn).
        self.ctx.jobs.drain().await;
        if leave {
            if let Err(e) = self.leave().await {
                tracing::warn!(error = %e, "could not leave the cluster before stopping");
            }
        }
        self.stop().await;
    }

    /// Whether `cfg` asks this node to leave on shutdown (see
    /// [`NodeConfig::leave_on_shutdown`]).
    pub fn leaves_on_shutdown(&self, cfg: &NodeConfig) -> bool {
        cfg.leave_on_shutdown
            .unwrap_or(self.ctx.identity.joined_via.is_some())
    }

    /// Take this node out of the membership (not revoked). Does nothing when
    /// it is the last voter; bounded by [`LEAVE_TIMEOUT`].
    pub async fn leave(&self) -> Result<(), String> {
        let me = self.ctx.identity.node_id;
        let m = self.ctx.raft.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        if membership.get_node(&me).is_none() || voters == [me] {
            return Ok(());
        }
        let req = peer::LeaderRequest::Leave { node_id: me };
        match tokio::time::timeout(LEAVE_TIMEOUT, self.ctx.cluster.on_leader(req)).await {
            Ok(Ok(peer::LeaderResponse::Done)) => {
                tracing::info!(node = format!("{me:x}"), "left the cluster");
                let marker = self.data_dir.join(LEFT_MARKER);
                if let Err(e) = identity::write_atomic(&marker, b"left\n", false) {
                    tracing::warn!(error = %e, "could not record that this node left");
                }
                Ok(())
            }
            Ok(Ok(other)) => Err(format!("{other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {LEAVE_TIMEOUT:?}")),
        }
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

pub use crate::services::{ConnSession, Principal};

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
    let theirs = hello.versions();
    let me = format!("this node (cairn-node {})", cairn_protocol::VERSION);
    let negotiated = negotiate(Versions::OURS, &me, theirs, hello.who());
    let verdict = if let Err(e) = &negotiated {
        Err(refuse(e.clone()))
    } else if hello.role != role {
        Err(refuse(format!(
            "hello says role {:?} but the connection negotiated {:?}",
            hello.role, role
        )))
    } else if let Some(floor) = (role == Role::Peer)
        .then(|| ctx.raft.read_local(|s| s.cluster_version()))
        .filter(|floor| theirs.max < *floor)
    {
        Err(refuse(format!(
            "the cluster finished an upgrade to protocol version {floor}; {} speaks {theirs} and could not read its log: upgrade it to this cluster's release ({})",
            hello.who(),
            cairn_protocol::VERSION
        )))
    } else if role == Role::Peer {
        // Peers authenticate by their node certificate, not a token.
        peers::admit(&ctx, &conn)
            .map(Admitted::Peer)
            .map_err(refuse)
    } else if role == Role::Runner {
        authenticate_runner(&ctx, &conn, &hello.token)
            .await
            .map(Admitted::Token)
            .map_err(refuse)
    } else {
        authenticate(&ctx, role, &hello.token)
            .await
            .map(Admitted::Token)
            .map_err(refuse)
    };
    let admitted = match verdict {
        Ok(p) => p,
        Err(reply) => {
            if let HelloReply::Refused { reason } = &reply {
                tracing::warn!(
                    remote = %conn.remote_address(),
                    role = role_word(role),
                    agent = %hello.agent,
                    %reason,
                    "refused a connection"
                );
            }
            let _ = frame::write(&mut send, &reply).await;
            let _ = send.finish();
            // Give the refusal time to arrive before closing.
            tokio::time::sleep(Duration::from_millis(200)).await;
            conn.close(2u32.into(), b"refused");
            return;
        }
    };
    let name = match &admitted {
        Admitted::Peer(id) => format!("node:{id:x}"),
        Admitted::Token(p) => p.name.clone(),
    };
    // Checked above: the verdict is an error when negotiation failed.
    let version = negotiated.unwrap_or(theirs.min);
    let speaks = Speaks {
        version,
        versions: theirs,
        release: release_in_agent(hello.who())
            .unwrap_or(match theirs.min == theirs.max {
                true => cairn_protocol::handshake::release_of_legacy(version),
                false => "unknown",
            })
            .to_string(),
    };
    // A sender that speaks only version 4 decodes nothing but `Welcome`.
    let welcome = if theirs.max <= cairn_protocol::handshake::V0_1_PROTOCOL_VERSION {
        HelloReply::Welcome {
            node_id: ctx.identity.node_id,
            version,
            principal: name,
        }
    } else {
        HelloReply::Agreed {
            node_id: ctx.identity.node_id,
            version,
            principal: name,
            release: cairn_protocol::VERSION.to_string(),
            versions: Versions::OURS,
        }
    };
    if frame::write(&mut send, &welcome).await.is_err() || send.finish().is_err() {
        return;
    }
    let principal = match admitted {
        Admitted::Peer(id) => {
            ctx.peers.record_speaks(id, speaks.clone());
            return peers::serve(ctx, conn, id, shutdown).await;
        }
        Admitted::Token(p) => p,
    };
    if let Some(id) = principal.runner_id.clone() {
        tokio::spawn(refuse_when_forgotten(ctx.clone(), conn.clone(), id));
    }
    let session = Arc::new(ConnSession {
        conn: conn.clone(),
        principal,
        role,
        speaks,
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

/// Who a connection was admitted as.
enum Admitted {
    /// A cluster member, by its node certificate.
    Peer(u64),
    /// A client, runner or entrypoint, by its token.
    Token(Principal),
}

async fn authenticate(ctx: &Ctx, role: Role, secret: &str) -> Result<Principal, String> {
    let hash = token::hash(secret);
    let mut rec = ctx.raft.read_local(|s| s.token(&hash, now_ms()).cloned());
    if rec.is_none() {
        // This node may lag behind a token just created through the leader:
        // ask again at the leader's read point before refusing.
        rec = ctx
            .read(|s| s.token(&hash, now_ms()).cloned())
            .await
            .unwrap_or(None);
    }
    let rec =
        rec.ok_or_else(|| "the token is not valid (unknown, expired or revoked)".to_string())?;
    let allowed = matches!(
        (role, &rec.scope),
        (
            Role::Client,
            TokenScope::User | TokenScope::Bootstrap | TokenScope::Join
        ) | (Role::Runner, TokenScope::Runner | TokenScope::User)
            | (Role::Entrypoint, TokenScope::Entrypoint { .. })
    );
    if !allowed {
        let scope = scope_word(&rec.scope);
        let article = if scope.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Err(format!(
            "{article} {scope} token cannot be used for a {} connection",
            role_word(role)
        ));
    }
    let name = crate::api::auth::principal_name(&rec);
    Ok(Principal {
        name,
        scope: rec.scope,
        token_hash: hash,
        runner_id: None,
    })
}

/// A runner connection (issue 19): an enrolled runner by its certificate
/// (its record must be adopted and name the certificate's key); else by a
/// runner token or none at all, which may only enroll; or a user token (a
/// runner acting for a user, as `cairn runner agent` with a CLI context).
async fn authenticate_runner(
    ctx: &Ctx,
    conn: &quinn::Connection,
    secret: &str,
) -> Result<Principal, String> {
    if let Some(der) = pki::peer_certificate(conn) {
        if let Some(id) = pki::runner_id_of_certificate(&der) {
            let key = pki::certificate_key_fingerprint(&der)
                .ok_or("the runner certificate cannot be read")?;
            let check = |st: &crate::state::State| st.runner_admitted(&id, &key).map(|_| ());
            let mut verdict = ctx.raft.read_local(check);
            if verdict.is_err() {
                // This node may lag behind an adoption made through the leader.
                let id = id.clone();
                let key = key.clone();
                verdict = ctx
                    .read(move |st| st.runner_admitted(&id, &key).map(|_| ()))
                    .await
                    .and_then(|v| v);
            }
            verdict?;
            return Ok(Principal {
                name: format!("runner:{id}"),
                scope: TokenScope::Runner,
                token_hash: String::new(),
                runner_id: Some(id),
            });
        }
    }
    if secret.is_empty() {
        return Ok(Principal {
            name: "runner:unenrolled".into(),
            scope: TokenScope::Runner,
            token_hash: String::new(),
            runner_id: None,
        });
    }
    authenticate(ctx, Role::Runner, secret).await
}

/// Close an enrolled runner's connection as soon as this node applies that
/// it was forgotten or rejected: its certificate is refused at once on every
/// node, not only at its next connection.
async fn refuse_when_forgotten(ctx: Arc<Ctx>, conn: quinn::Connection, id: String) {
    let key = pki::peer_certificate(&conn)
        .and_then(|der| pki::certificate_key_fingerprint(&der))
        .unwrap_or_default();
    let mut metrics = ctx.raft.metrics_watch();
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let verdict = ctx
            .raft
            .read_local(|st| st.runner_admitted(&id, &key).map(|_| ()));
        if let Err(reason) = verdict {
            tracing::info!(runner = %id, %reason, "closing the connection of a runner that is no longer admitted");
            let reason = format!("refused: {reason}");
            conn.close(4u32.into(), reason.as_bytes());
            return;
        }
    }
}

/// A token scope as people say it.
fn scope_word(scope: &TokenScope) -> &'static str {
    match scope {
        TokenScope::Bootstrap => "bootstrap",
        TokenScope::User => "user",
        TokenScope::Runner => "runner",
        TokenScope::Join => "join",
        TokenScope::Entrypoint { .. } => "entrypoint",
    }
}

/// A connection's role as people say it.
fn role_word(role: Role) -> &'static str {
    match role {
        Role::Peer => "peer (node)",
        Role::Client => "client",
        Role::Runner => "runner",
        Role::Entrypoint => "entrypoint",
    }
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
    services::dispatch(&ctx, &session, req, send, recv).await;
}
