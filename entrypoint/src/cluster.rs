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
//! - Retries forever, over every address of `CAIRN_ADDRS` in turn, with
//!   exponential backoff from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; the
//!   backoff starts over after a connection that registered.
//! - Says one line when it cannot reach the cluster, one when it connects,
//!   one when it loses the connection: not one per attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse, EntrypointHello};
use cairn_protocol::frame;
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial};
use cairn_protocol::types::OpId;
use tokio::sync::watch;

use crate::env::ClusterConfig;

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

/// Start the connection task (call within a runtime); the configuration
/// arrives on the returned watch. Dropping the watch closes the connection
/// (the node marks the instance disconnected at once); the task then ends,
/// within [`CLOSE_WAIT`].
pub fn spawn(
    cfg: ClusterConfig,
    hello: EntrypointHello,
) -> (ConfigWatch, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(cfg, hello, tx));
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

async fn run(cfg: ClusterConfig, hello: EntrypointHello, tx: watch::Sender<Option<Env>>) {
    let mut backoff = BACKOFF_MIN;
    let mut next = 0usize;
    let mut complained = false;
    loop {
        if tx.is_closed() {
            return;
        }
        let addr = cfg.addrs[next % cfg.addrs.len()].to_string();
        next = next.wrapping_add(1);
        let outcome = tokio::select! {
            o = session(&cfg, &addr, &hello, &tx) => o,
            _ = tx.closed() => Outcome::Closed,
        };
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

async fn session(
    cfg: &ClusterConfig,
    addr: &str,
    hello: &EntrypointHello,
    tx: &watch::Sender<Option<Env>>,
) -> Outcome {
    let dial = Dial {
        addr: addr.to_string(),
        ca_fingerprint: cfg.ca_fingerprint.clone(),
        identity: None,
        role: Role::Entrypoint,
        token: cfg.token.clone(),
        agent: format!("cairn-entrypoint {}", env!("CARGO_PKG_VERSION")),
        limits: TransportLimits::ENTRYPOINT,
    };
    let s = match rpc::connect(&dial).await {
        Ok(s) => s,
        Err(e) => return Outcome::NotRegistered(e.to_string()),
    };
    let req = ClientRequest::RegisterInstance(hello.clone());
    // `_send` stays open: the registration lasts while the stream lives.
    let (_send, mut recv) = match rpc::open(&s.conn, &req).await {
        Ok(pair) => pair,
        Err(e) => return Outcome::NotRegistered(e.to_string()),
    };
    let first = tokio::time::timeout(
        rpc::CONNECT_TIMEOUT,
        frame::read::<_, ClientResponse>(&mut recv),
    )
    .await;
    match first {
        Ok(Ok(Some(ClientResponse::InstanceRegistered { env }))) => {
            tx.send_replace(Some(env));
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
