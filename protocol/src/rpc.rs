//! QUIC helpers: dial a node (CA pinned, bounded time), the handshake, and
//! one-stream-per-call RPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{ClientRequest, ClientResponse};
use crate::frame::{self, FrameError};
use crate::handshake::{Hello, HelloReply, Role, Speaks};
use crate::pki::{self, CertifiedKey, TransportLimits, NODE_SERVER_NAME};

/// How long dialling (QUIC + TLS + hello) may take before we give up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot reach a Cairn node at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the node refused the connection: {0}")]
    Refused(String),
    #[error("{0}")]
    Remote(String),
    /// The node could not reach a leader; nothing was done, and another
    /// member may serve the same request ([`ClientResponse::Unavailable`]).
    #[error("{0}")]
    Unavailable(String),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("connection lost while sending: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("tls setup: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("unexpected answer from the node: {0}")]
    Unexpected(String),
}

/// Everything needed to dial a node.
#[derive(Debug, Clone)]
pub struct Dial {
    pub addr: String,
    pub ca_fingerprint: String,
    pub identity: Option<CertifiedKey>,
    pub role: Role,
    pub token: String,
    pub agent: String,
    pub limits: TransportLimits,
}

/// A live, authenticated connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub conn: quinn::Connection,
    pub endpoint: quinn::Endpoint,
    pub node_id: u64,
    pub principal: String,
    /// The version this connection speaks and what the node runs.
    pub node: Speaks,
}

async fn resolve(addr: &str) -> Result<SocketAddr, RpcError> {
    let unreachable = |reason: String| RpcError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| unreachable(format!("cannot resolve: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| unreachable("name resolved to no address".into()))
}

/// Dial, verify the node against the pinned CA, and say hello. Bounded by
/// [`CONNECT_TIMEOUT`].
pub async fn connect(dial: &Dial) -> Result<Session, RpcError> {
    let addr = dial.addr.clone();
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(dial)).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::Unreachable {
            addr,
            reason: format!(
                "no answer within {} s (is the node running?)",
                CONNECT_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// How long [`connect_first`] gives an address alone before it dials the
/// next one too.
pub const DIAL_STAGGER: Duration = Duration::from_millis(750);

/// Dial several members, in order: the first at once, each next one
/// `stagger` later, or as soon as every earlier one has failed; the first to
/// complete the handshake wins and the others are dropped. A refusal (bad
/// token, wrong version) is final: the other members would say the same.
/// `deadline` bounds the whole. Returns the session and the index of its
/// dial: every dial before it was started earlier and did not answer first.
/// An error reports the first dial's failure when it has one.
pub async fn connect_first(
    dials: &[Dial],
    stagger: Duration,
    deadline: Duration,
) -> Result<(Session, usize), RpcError> {
    if dials.len() == 1 {
        return connect(&dials[0]).await.map(|s| (s, 0));
    }
    let until = tokio::time::Instant::now() + deadline;
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let mut first_err: Option<RpcError> = None;
    let stagger_sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(stagger_sleep);
    loop {
        if next >= dials.len() && pending.is_empty() {
            break;
        }
        tokio::select! {
            () = &mut stagger_sleep, if next < dials.len() => {
                let d = dials[next].clone();
                let i = next;
                pending.spawn(async move { (i, connect(&d).await) });
                next += 1;
                stagger_sleep.as_mut().reset(tokio::time::Instant::now() + stagger);
            }
            Some(joined) = pending.join_next(), if !pending.is_empty() => match joined {
                Ok((i, Ok(s))) => return Ok((s, i)),
                Ok((_, Err(e @ RpcError::Refused(_)))) => return Err(e),
                Ok((i, Err(e))) => {
                    if i == 0 || first_err.is_none() {
                        first_err = Some(e);
                    }
                    // Dial the next one now rather than after the stagger.
                    stagger_sleep.as_mut().reset(tokio::time::Instant::now());
                }
                // A dial task cannot panic short of a bug; count it failed.
                Err(e) => {
                    first_err.get_or_insert(RpcError::Unexpected(format!("dial task: {e}")));
                }
            },
            () = tokio::time::sleep_until(until) => break,
        }
    }
    Err(first_err.unwrap_or_else(|| RpcError::Unreachable {
        addr: dials
            .iter()
            .map(|d| d.addr.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        reason: format!("no member answered within {deadline:?}"),
    }))
}

async fn connect_inner(dial: &Dial) -> Result<Session, RpcError> {
    let unreachable = |reason: String| RpcError::Unreachable {
        addr: dial.addr.clone(),
        reason,
    };
    let remote = resolve(&dial.addr).await?;
    let bind: SocketAddr = if remote.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|e| unreachable(format!("{e}")))?;
    let socket = std::net::UdpSocket::bind(bind)
        .map_err(|e| unreachable(format!("cannot open a UDP socket: {e}")))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(crate::socket::QuietRuntime),
    )
    .map_err(|e| unreachable(format!("cannot open a UDP socket: {e}")))?;
    endpoint.set_default_client_config(pki::client_config(
        &dial.ca_fingerprint,
        dial.identity.as_ref(),
        dial.role.alpn(),
        dial.limits,
    )?);
    let conn = endpoint
        .connect(remote, NODE_SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let hello = Hello::new(dial.role, dial.token.clone(), &dial.agent);
    let (mut send, mut recv) = conn.open_bi().await?;
    frame::write(&mut send, &hello).await?;
    send.finish()?;
    match frame::read(&mut recv).await {
        Ok(Some(HelloReply::Agreed {
            node_id,
            version,
            principal,
            release,
            versions,
        })) => Ok(Session {
            conn,
            endpoint,
            node_id,
            principal,
            node: Speaks {
                version,
                versions,
                release,
            },
        }),
        // Only a node that speaks version 4 alone answers so.
        Ok(Some(HelloReply::Welcome {
            node_id,
            principal,
            version,
        })) => Ok(Session {
            conn,
            endpoint,
            node_id,
            principal,
            node: Speaks::legacy(version),
        }),
        Ok(Some(HelloReply::Refused { reason })) => Err(RpcError::Refused(reason)),
        Ok(None) => Err(RpcError::Refused(
            "the node closed the handshake without an answer".into(),
        )),
        Err(FrameError::Io(e)) => Err(RpcError::Refused(format!("handshake failed: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// One request, one response, on a fresh stream.
pub async fn call(
    conn: &quinn::Connection,
    req: &ClientRequest,
) -> Result<ClientResponse, RpcError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    frame::write(&mut send, req).await?;
    send.finish()?;
    match frame::read_required(&mut recv).await? {
        ClientResponse::Error { message } => Err(RpcError::Remote(message)),
        ClientResponse::Unavailable { message } => Err(RpcError::Unavailable(message)),
        other => Ok(other),
    }
}

/// Open a stream for a streaming call; the caller reads frames from it.
pub async fn open(
    conn: &quinn::Connection,
    req: &ClientRequest,
) -> Result<(quinn::SendStream, quinn::RecvStream), RpcError> {
    let (mut send, recv) = conn.open_bi().await?;
    frame::write(&mut send, req).await?;
    Ok((send, recv))
}

/// `SnapshotSave`: read every chunk and return the whole snapshot file
/// (`CAIRNSNP`, a format version, the bincode of the cluster's state; the
/// node writes the header, see `cairn_node::raft::snapshot_file`).
pub async fn snapshot_save(conn: &quinn::Connection) -> Result<Vec<u8>, RpcError> {
    let (mut send, mut recv) = open(conn, &ClientRequest::SnapshotSave).await?;
    send.finish()?;
    let mut out = Vec::new();
    loop {
        match frame::read_required(&mut recv).await? {
            ClientResponse::SnapshotChunk { data, last } => {
                out.extend_from_slice(&data);
                if last {
                    return Ok(out);
                }
            }
            ClientResponse::Error { message } => return Err(RpcError::Remote(message)),
            other => {
                return Err(RpcError::Remote(format!(
                    "unexpected answer to SnapshotSave: {other:?}"
                )))
            }
        }
    }
}

/// Server side: read the hello on the first stream, bounded in time.
pub async fn accept_hello(
    conn: &quinn::Connection,
) -> Result<(Hello, quinn::SendStream), RpcError> {
    let fut = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let hello: Hello = frame::read_required(&mut recv).await?;
        Ok::<_, RpcError>((hello, send))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| RpcError::Refused("no hello within the connect timeout".into()))?
}
