//! The outbound cluster connection: register this instance of its
//! deployment, receive the deployment's resolved configuration and every
//! change of it, and reconnect with backoff when the connection is lost.
//!
//! Invariants:
//! - Never in the child's way: the configuration is published on a
//!   [`watch`] channel that the supervision loop reads when it wants;
//!   nothing here waits on the child.
//! - Only outbound connections: the node pushes changes on the stream this
//!   side opened (it works behind NAT).
//! - Dials every address of `CAIRN_ADDRS` (and the members the cluster
//!   named), staggered, first to answer wins; each attempt starts with the
//!   next address in turn. Retries forever, with
//!   exponential backoff from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; the
//!   backoff starts over after a connection that registered.
//! - Says one line when it cannot reach the cluster, one when it connects,
//!   one when it loses the connection: not one per attempt.
//! - Logs are shipped from the bounded [`LogQueue`] on the registration
//!   stream; nothing here blocks the pumps that fill it (they drop and count
//!   when it is full, e.g. while disconnected).
//! - Streams the node opens on the connection (exec sessions) each get
//!   their own task; a session outlives neither the connection nor the
//!   entrypoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse, EntrypointHello};
use cairn_protocol::frame;
use cairn_protocol::handshake::Role;
use cairn_protocol::instance::{
    EntrypointToNode, LogStream, NodeToEntrypoint, ShippedLine, MAX_SHIPPED_BATCH,
};
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial};
use cairn_protocol::types::OpId;
use tokio::sync::watch;

use crate::env::ClusterConfig;
use crate::exec::AppContext;
use crate::logqueue::{LogLine, LogQueue, Stream};

/// First pause between two connection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest pause between two connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// An app's environment as the cluster resolved it.
pub type Env = BTreeMap<String, String>;

/// `None` until the first configuration arrives; then the latest one.
pub type ConfigWatch = watch::Receiver<Option<Env>>;

/// What this entrypoint tells the node about itself.
pub fn hello(deployment_id: OpId) -> EntrypointHello {
    let random = cairn_protocol::token::generate("i");
    let hex = random.rsplit('_').next().unwrap_or(&random);
    EntrypointHello {
        deployment_id,
        instance_id: hex.chars().take(16).collect(),
        pid: std::process::id(),
        started_ms: cairn_protocol::now_ms(),
    }
}

/// How long the entrypoint waits, on its way out, for the node to learn
/// that the connection is closed.
pub const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// How long the shipper waits for more lines before sending a batch that is
/// not full: the most a line is held back.
pub const SHIP_LINGER: Duration = Duration::from_millis(5);

/// How long the node may take to read the first frame of a stream it opened.
const STREAM_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connection serves besides the configuration: the app's log
/// lines to ship, and the app's context for exec sessions.
#[derive(Clone)]
pub struct Services {
    pub logs: Option<Arc<LogQueue>>,
    pub app: Arc<dyn AppContext>,
}

/// Start the connection task (call within a runtime); the configuration
/// arrives on the returned watch. Dropping the watch closes the connection
/// (the node marks the instance disconnected at once); the task then ends,
/// within [`CLOSE_WAIT`].
pub fn spawn(
    cfg: ClusterConfig,
    hello: EntrypointHello,
    services: Services,
) -> (ConfigWatch, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(cfg, hello, services, tx));
    (rx, task)
}

/// How one connection attempt ended.
enum Outcome {
    /// No registration: unreachable, refused, or the node said no.
    NotRegistered(String),
    /// Registered, then lost.
    Lost(String),
    /// The watch was dropped: the entrypoint is on its way out.
    Closed,
}

async fn run(
    cfg: ClusterConfig,
    hello: EntrypointHello,
    services: Services,
    tx: watch::Sender<Option<Env>>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    let mut complained = false;
    // The configured addresses first, then members the cluster told us of.
    let mut addrs: Vec<String> = cfg.addrs.iter().map(ToString::to_string).collect();
    loop {
        if tx.is_closed() {
            return;
        }
        // Every address, starting with the next in turn (so after a loss
        // the first one dialled is another member).
        let start = next % addrs.len();
        let order: Vec<String> = addrs[start..]
            .iter()
            .chain(&addrs[..start])
            .cloned()
            .collect();
        next = next.wrapping_add(1);
        let mut members = Vec::new();
        let outcome = tokio::select! {
            o = session(&cfg, &order, &hello, &services, &tx, &mut members) => o,
            _ = tx.closed() => Outcome::Closed,
        };
        for m in members {
            if !addrs.contains(&m) {
                addrs.push(m);
            }
        }
        match outcome {
            Outcome::Closed => return,
            Outcome::NotRegistered(e) => {
                if !complained {
                    warn(&format!(
                        "cannot register with the cluster ({e}); retrying in the background"
                    ));
                    complained = true;
                }
            }
            Outcome::Lost(e) => {
                warn(&format!(
                    "lost the connection to the cluster ({e}); reconnecting"
                ));
                complained = true;
                backoff = BACKOFF_MIN;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(jittered(backoff)) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connect to the first of `addrs` that answers ([`rpc::connect_first`]:
/// staggered, so a dead member costs [`rpc::DIAL_STAGGER`], not a whole
/// connect timeout), register, and serve the connection until it ends.
async fn session(
    cfg: &ClusterConfig,
    addrs: &[String],
    hello: &EntrypointHello,
    services: &Services,
    tx: &watch::Sender<Option<Env>>,
    members: &mut Vec<String>,
) -> Outcome {
    let dials: Vec<Dial> = addrs
        .iter()
        .map(|addr| Dial {
            addr: addr.clone(),
            ca_fingerprint: cfg.ca_fingerprint.clone(),
            identity: None,
            role: Role::Entrypoint,
            token: cfg.token.clone(),
            agent: format!("cairn-entrypoint {}", env!("CARGO_PKG_VERSION")),
            limits: TransportLimits::ENTRYPOINT,
        })
        .collect();
    let (s, addr) =
        match rpc::connect_first(&dials, rpc::DIAL_STAGGER, rpc::CONNECT_TIMEOUT * 2).await {
            Ok((s, i)) => (s, &addrs[i]),
            Err(e) => return Outcome::NotRegistered(e.to_string()),
        };
    let req = ClientRequest::RegisterInstance(hello.clone());
    // `send` stays open: the registration lasts while the stream lives.
    let (send, mut recv) = match rpc::open(&s.conn, &req).await {
        Ok(pair) => pair,
        Err(e) => return Outcome::NotRegistered(e.to_string()),
    };
    let first = tokio::time::timeout(
        rpc::CONNECT_TIMEOUT,
        frame::read::<_, ClientResponse>(&mut recv),
    )
    .await;
    match first {
        Ok(Ok(Some(ClientResponse::InstanceRegistered { env, members: m }))) => {
            tx.send_replace(Some(env));
            *members = m;
        }
        Ok(Ok(Some(ClientResponse::Error { message }))) => {
            s.conn.close(0u32.into(), b"refused");
            return Outcome::NotRegistered(message);
        }
        Ok(Ok(other)) => {
            s.conn.close(0u32.into(), b"unexpected");
            return Outcome::NotRegistered(format!("unexpected answer {other:?}"));
        }
        Ok(Err(e)) => return Outcome::NotRegistered(e.to_string()),
        Err(_) => {
            s.conn.close(0u32.into(), b"timeout");
            return Outcome::NotRegistered("no answer to the registration".into());
        }
    }
    warn(&format!(
        "connected to the cluster at {addr} as instance {}",
        hello.instance_id
    ));
    // Both end with the connection (the shipper's writes fail, the
    // acceptor's accept fails); aborted on the way out regardless.
    let shipper = services.logs.clone().map(|q| tokio::spawn(ship(q, send)));
    let acceptor = tokio::spawn(accept_streams(s.conn.clone(), services.app.clone()));
    let _tasks = AbortOnDrop(vec![shipper, Some(acceptor)]);
    loop {
        let read = tokio::select! {
            r = frame::read::<_, ClientResponse>(&mut recv) => r,
            _ = tx.closed() => {
                s.conn.close(0u32.into(), b"entrypoint exiting");
                let _ = tokio::time::timeout(CLOSE_WAIT, s.endpoint.wait_idle()).await;
                return Outcome::Closed;
            }
        };
        match read {
            Ok(Some(ClientResponse::Env { env })) => {
                tx.send_replace(Some(env));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Outcome::Lost("the node ended the registration".into()),
            Err(e) => return Outcome::Lost(e.to_string()),
        }
    }
}

/// Aborts its tasks when dropped (the session ended).
struct AbortOnDrop(Vec<Option<tokio::task::JoinHandle<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in self.0.iter().flatten() {
            t.abort();
        }
    }
}

/// Ships queued log lines on the registration stream, in batches of at
/// most [`MAX_SHIPPED_BATCH`], until the stream fails. Lines taken from the
/// queue when the write fails are lost (and not counted: the node never
/// saw them, the queue did not drop them).
async fn ship(queue: Arc<LogQueue>, mut send: quinn::SendStream) {
    let mut reported = 0u64;
    loop {
        queue.readable().await;
        if queue.len() < MAX_SHIPPED_BATCH {
            // Let a trickle gather into one frame: a line at a time costs
            // a packet (and a wake-up on the node and every follower) each.
            tokio::time::sleep(SHIP_LINGER).await;
        }
        let lines = queue.drain(MAX_SHIPPED_BATCH);
        let dropped = queue.dropped();
        if lines.is_empty() && dropped == reported {
            continue;
        }
        reported = dropped;
        let batch = EntrypointToNode::Logs {
            lines: lines.into_iter().map(shipped).collect(),
            dropped,
        };
        if frame::write(&mut send, &batch).await.is_err() {
            return;
        }
    }
}

fn shipped(l: LogLine) -> ShippedLine {
    ShippedLine {
        time_ms: l.time_ms,
        stream: match l.stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        },
        line: String::from_utf8_lossy(&l.bytes).into_owned(),
        truncated: l.truncated,
    }
}

/// Serves the streams the node opens on this connection (exec sessions,
/// URL tunnels) until it closes.
async fn accept_streams(conn: quinn::Connection, app: Arc<dyn AppContext>) {
    while let Ok((send, mut recv)) = conn.accept_bi().await {
        let app = app.clone();
        tokio::spawn(async move {
            let header = tokio::time::timeout(
                STREAM_HEADER_TIMEOUT,
                frame::read_required::<_, NodeToEntrypoint>(&mut recv),
            )
            .await;
            match header {
                Ok(Ok(NodeToEntrypoint::Exec(spec))) => {
                    crate::exec::serve(app.as_ref(), spec, recv, send).await;
                }
                Ok(Ok(NodeToEntrypoint::Tunnel { port })) => {
                    crate::tunnel::serve(app.as_ref(), port, recv, send).await;
                }
                // A malformed or missing header: nothing to serve.
                Ok(Err(_)) | Err(_) => {}
            }
        });
    }
}

/// `d` plus up to a quarter of it, so that many entrypoints that lost the
/// same node do not come back in step.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

fn warn(message: &str) {
    eprintln!("cairn-entrypoint: {message}");
}
