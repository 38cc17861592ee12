//! The embedded default: with no context configured, the CLI starts a local
//! node in the background (`cairn server run` as a detached process, data in
//! the user's data dir, a free loopback port), creates the `local` context
//! from its one-time bootstrap token, and reuses both afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial};

use crate::context::{self, Context};
use crate::paths;

/// Name of the embedded default's context.
pub const LOCAL_CONTEXT: &str = "local";
/// How long to wait for a freshly started local node.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot start the local node: {0}")]
    Start(String),
    #[error(
        "the local node did not become ready within {secs} s; its log ({log}) ends with:\n{tail}"
    )]
    NotReady {
        secs: u64,
        log: String,
        tail: String,
    },
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error("{0}")]
    Rpc(#[from] rpc::RpcError),
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ready {
    pub addr: String,
    pub ca_fingerprint: String,
    pub pid: u32,
    /// `http://ip:port` of the node's URL-service ingress.
    #[serde(default)]
    pub ingress: Option<String>,
    /// `http://ip:port` of the node's HTTP API (and web UI).
    #[serde(default)]
    pub http: Option<String>,
}

fn ready_file(dir: &Path) -> PathBuf {
    dir.join("ready.json")
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("node.log")
}

/// The local node's ready record, if that node is alive.
pub fn running() -> Option<Ready> {
    let dir = paths::local_node_dir();
    let text = std::fs::read_to_string(ready_file(&dir)).ok()?;
    let ready: Ready = serde_json::from_str(&text).ok()?;
    pid_alive(ready.pid).then_some(ready)
}

pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Make sure the local node runs and the `local` context exists; return the
/// context with the node's current address.
pub async fn ensure(quiet: bool) -> Result<Context, LocalError> {
    let dir = paths::local_node_dir();
    let ready = match running() {
        Some(r) => r,
        None => {
            if !quiet {
                eprintln!("Starting a local Cairn node (data in {}) …", dir.display());
            }
            start(&dir).await?
        }
    };
    let ctx = match context::load(LOCAL_CONTEXT) {
        Ok(c) if c.ca_fingerprint == ready.ca_fingerprint => c,
        _ => {
            let c = bootstrap_context(&dir, &ready).await?;
            context::save(&c, true)?;
            if context::current()?.is_none() {
                context::set_current(LOCAL_CONTEXT)?;
            }
            c
        }
    };
    Ok(Context {
        address: ready.addr,
        ..ctx
    })
}

async fn start(dir: &Path) -> Result<Ready, LocalError> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| LocalError::Start(format!("{}: {e}", dir.display())))?;
    // The same port as last time when it is free: the entrypoints of apps
    // deployed before reconnect to it by themselves.
    let listen = previous_addr(dir)
        .filter(|a| std::net::UdpSocket::bind(a).is_ok())
        .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
    // The URL service: its port as last time, else the usual 9703, when free.
    let ingress = loopback_port(previous_url(dir, |r| r.ingress), DEFAULT_INGRESS_PORT);
    // The HTTP API (and web UI) likewise: as last time, else the usual 9702.
    let http = loopback_port(previous_url(dir, |r| r.http), DEFAULT_HTTP_PORT);
    let _ = std::fs::remove_file(ready_file(dir));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(dir))
        .map_err(|e| LocalError::Start(format!("{}: {e}", log_file(dir).display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| LocalError::Start(e.to_string()))?;
    let exe = std::env::current_exe()
        .map_err(|e| LocalError::Start(format!("cannot find the cairn binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "server",
        "run",
        "--listen",
        &listen,
        "--ingress",
        &ingress,
        "--http",
        &http,
        "--data-dir",
    ])
    .arg(dir)
    .arg("--ready-file")
    .arg(ready_file(dir))
    .arg("--bootstrap-file")
    .arg(dir.join("bootstrap.token"))
    .stdin(std::process::Stdio::null())
    .stdout(log)
    .stderr(log2)
    .process_group(0);
    let mut child = cmd.spawn().map_err(|e| LocalError::Start(e.to_string()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready_file(dir)) {
            if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                // Detach: the node outlives this CLI. Reap nothing.
                std::mem::forget(child);
                return Ok(r);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LocalError::NotReady {
                secs: 0,
                log: log_file(dir).display().to_string(),
                tail: format!("{}\n(exited: {status})", tail(&log_file(dir))),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(LocalError::NotReady {
                secs: START_TIMEOUT.as_secs(),
                log: log_file(dir).display().to_string(),
                tail: tail(&log_file(dir)),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The loopback address the local node last listened on, from its ready file.
fn previous_addr(dir: &Path) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(ready_file(dir)).ok()?;
    let ready: Ready = serde_json::from_str(&text).ok()?;
    ready
        .addr
        .parse::<std::net::SocketAddr>()
        .ok()
        .filter(|a| a.ip().is_loopback())
}

/// The loopback address of one of the local node's last `http://` listeners.
fn previous_url(dir: &Path, which: fn(Ready) -> Option<String>) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(ready_file(dir)).ok()?;
    let ready: Ready = serde_json::from_str(&text).ok()?;
    which(ready)?
        .strip_prefix("http://")?
        .parse::<std::net::SocketAddr>()
        .ok()
        .filter(|a| a.ip().is_loopback())
}

/// `previous` when it is free, else the loopback `port` when free, else any free port.
fn loopback_port(previous: Option<std::net::SocketAddr>, port: u16) -> String {
    let default = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    previous
        .into_iter()
        .chain([default])
        .find(|a| std::net::TcpListener::bind(a).is_ok())
        .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string())
}

/// The URL service's usual port (`cairn_node::ingress::DEFAULT_PORT`).
const DEFAULT_INGRESS_PORT: u16 = cairn_node::ingress::DEFAULT_PORT;
/// The HTTP API's usual port (`cairn_node::http::DEFAULT_PORT`).
const DEFAULT_HTTP_PORT: u16 = cairn_node::http::DEFAULT_PORT;

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

async fn bootstrap_context(dir: &Path, ready: &Ready) -> Result<Context, LocalError> {
    let boot_file = dir.join("bootstrap.token");
    let boot = std::fs::read_to_string(&boot_file).map_err(|e| {
        LocalError::Start(format!(
            "the local node was bootstrapped before but the `local` context is missing or stale, and {} cannot be read ({e}); run `cairn server stop-local` and remove {} to start over",
            boot_file.display(),
            dir.display()
        ))
    })?;
    let token = exchange_bootstrap(&ready.addr, &ready.ca_fingerprint, boot.trim()).await?;
    let _ = std::fs::remove_file(&boot_file);
    Ok(Context {
        name: LOCAL_CONTEXT.into(),
        address: ready.addr.clone(),
        ca_fingerprint: ready.ca_fingerprint.clone(),
        token,
        local: true,
        members: Vec::new(),
        runner: None,
    })
}

/// Trade a one-time bootstrap token for a user token.
pub async fn exchange_bootstrap(
    addr: &str,
    ca_fingerprint: &str,
    bootstrap: &str,
) -> Result<String, rpc::RpcError> {
    let dial = Dial {
        addr: addr.to_string(),
        ca_fingerprint: ca_fingerprint.to_string(),
        identity: None,
        role: Role::Client,
        token: bootstrap.to_string(),
        agent: format!("cairn {}", cairn_protocol::VERSION),
        limits: TransportLimits::DEFAULT,
    };
    let s = rpc::connect(&dial).await?;
    let r = rpc::call(
        &s.conn,
        &ClientRequest::ExchangeBootstrap {
            name: "admin".into(),
        },
    )
    .await;
    s.conn.close(0u32.into(), b"done");
    match r? {
        ClientResponse::Token { token } => Ok(token),
        other => Err(rpc::RpcError::Unexpected(format!("{other:?}"))),
    }
}

/// Stop the local node, waiting for it to exit. Returns false if none ran.
pub fn stop() -> Result<bool, LocalError> {
    let Some(ready) = running() else {
        return Ok(false);
    };
    // SAFETY: sending SIGTERM to the pid recorded by our own node.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(ready.pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid_alive(ready.pid) && !is_zombie(ready.pid) {
        if Instant::now() > deadline {
            return Err(LocalError::Start(format!(
                "the local node (pid {}) did not stop within 15 s",
                ready.pid
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(ready_file(&paths::local_node_dir()));
    Ok(true)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}
