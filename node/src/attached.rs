//! The entrypoints attached to this node, and the streams that reach them.
//!
//! A node opens streams (exec sessions, URL tunnels) on the connection an
//! entrypoint opened: nothing listens on the app's side. When the
//! entrypoint is connected to another node, the stream goes through the
//! peer mesh (`PeerRequest::RelayStream`) and that node opens it.
//!
//! ```text
//! node A ──RelayStream (peer mesh)──▶ node B ──stream on the entrypoint's connection──▶ cairn-entrypoint
//! ```
//!
//! Invariants:
//! - [`Attached`] holds the connections of the entrypoints connected to
//!   this node, keyed by (deployment, instance); an entry is removed only
//!   by the registration that added it.
//! - After the header, every hop copies raw bytes both ways without
//!   decoding them ([`splice`]); a hop that breaks resets both of its
//!   streams, so both ends see the stream fail instead of hanging, and a
//!   finished stream holds no stream slot of the entrypoint's connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cairn_protocol::frame;
use cairn_protocol::instance::NodeToEntrypoint;
use cairn_protocol::types::OpId;

use crate::cluster::Cluster;
use crate::peer::{PeerRequest, PeerResponse};
use crate::raft::NodeId;

/// How long opening a stream may take (the peer hop and the stream on the
/// entrypoint's connection).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC error code for a stream reset because the other side of a relay broke.
pub const RELAY_BROKEN: u32 = 2;

/// The entrypoint connections attached to this node.
#[derive(Clone, Default)]
pub struct Attached {
    inner: Arc<Mutex<HashMap<(OpId, String), quinn::Connection>>>,
}

impl Attached {
    fn lock(&self) -> MutexGuard<'_, HashMap<(OpId, String), quinn::Connection>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many entrypoints are connected to this node.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The instance's entrypoint is connected here on `conn`.
    pub fn attach(&self, deployment: OpId, instance: &str, conn: &quinn::Connection) {
        self.lock()
            .insert((deployment, instance.to_string()), conn.clone());
    }

    /// The registration on `conn` ended (a newer one may have replaced it).
    pub fn detach(&self, deployment: OpId, instance: &str, conn: &quinn::Connection) {
        let mut map = self.lock();
        let key = (deployment, instance.to_string());
        if map
            .get(&key)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            map.remove(&key);
        }
    }

    fn connection(&self, deployment: OpId, instance: &str) -> Option<quinn::Connection> {
        self.lock()
            .get(&(deployment, instance.to_string()))
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Opens a stream on the instance's entrypoint connection and sends
    /// `header`.
    async fn open(
        &self,
        me: NodeId,
        deployment: OpId,
        instance: &str,
        header: &NodeToEntrypoint,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let gone = || {
            format!(
                "instance {instance} is not connected to node {me:x} (it may be moving); try again"
            )
        };
        let conn = self.connection(deployment, instance).ok_or_else(gone)?;
        let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
            let (mut send, recv) = conn
                .open_bi()
                .await
                .map_err(|e| format!("{}: {e}", gone()))?;
            frame::write(&mut send, header)
                .await
                .map_err(|e| format!("{}: {e}", gone()))?;
            Ok::<_, String>((send, recv))
        })
        .await;
        opened.unwrap_or_else(|_| {
            Err(format!(
                "instance {instance} did not take the stream within {OPEN_TIMEOUT:?}"
            ))
        })
    }
}

/// Opens a stream to instance `instance` of `deployment`, whose entrypoint
/// is connected to `node` (this one or another, through the peer mesh),
/// and sends `header` to the entrypoint. The streams carry what follows the
/// header both ways.
pub async fn open(
    attached: &Attached,
    cluster: &Cluster,
    me: NodeId,
    node: NodeId,
    deployment: OpId,
    instance: &str,
    header: &NodeToEntrypoint,
) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
    if node == me {
        return attached.open(me, deployment, instance, header).await;
    }
    let addr = cluster
        .raft
        .members()
        .into_iter()
        .find(|(id, _)| *id == node)
        .map(|(_, a)| a)
        .ok_or_else(|| {
            format!("node {node:x} (where instance {instance} is connected) is not a member")
        })?;
    let req = PeerRequest::RelayStream {
        deployment,
        instance: instance.to_string(),
        header: header.clone(),
    };
    match cluster
        .peers
        .open_stream(&addr, Some(node), &req, OPEN_TIMEOUT)
        .await
    {
        Ok((PeerResponse::RelayOpen, send, recv)) => Ok((send, recv)),
        Ok((PeerResponse::NoInstance(reason), ..)) => Err(reason),
        Ok((other, ..)) => Err(format!("node {node:x} answered {other:?}")),
        Err(e) => Err(format!(
            "cannot reach node {node:x}, where instance {instance} is connected: {e}"
        )),
    }
}

/// `PeerRequest::RelayStream` on the node the instance is connected to.
pub async fn relay(
    attached: &Attached,
    me: NodeId,
    deployment: OpId,
    instance: String,
    header: NodeToEntrypoint,
    mut psend: quinn::SendStream,
    precv: quinn::RecvStream,
) {
    match attached.open(me, deployment, &instance, &header).await {
        Ok(ep) => {
            if frame::write(&mut psend, &PeerResponse::RelayOpen)
                .await
                .is_err()
            {
                let (mut esend, _) = ep;
                let _ = esend.reset(RELAY_BROKEN.into());
                return;
            }
            // The asking node resets this stream when its client goes.
            splice((psend, precv), ep, std::future::pending::<()>()).await;
        }
        Err(reason) => {
            let _ = frame::write(&mut psend, &PeerResponse::NoInstance(reason)).await;
            let _ = psend.finish();
        }
    }
}

/// How one direction of a [`splice`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Its source finished; its destination was finished too.
    Ended,
    /// Its destination stopped reading (it needs no more); its source was
    /// told to stop as well.
    Declined,
    /// A stream or a connection failed.
    Broken,
}

/// Copies `from` to `to` until one of them ends.
async fn pump(from: &mut quinn::RecvStream, to: &mut quinn::SendStream) -> Flow {
    loop {
        match from.read_chunk(COPY_CHUNK, true).await {
            Ok(Some(chunk)) => match to.write_chunk(chunk.bytes).await {
                Ok(()) => {}
                Err(quinn::WriteError::Stopped(code)) => {
                    let _ = from.stop(code);
                    return Flow::Declined;
                }
                Err(_) => return Flow::Broken,
            },
            Ok(None) => {
                let _ = to.finish();
                return Flow::Ended;
            }
            Err(_) => return Flow::Broken,
        }
    }
}

/// Most bytes moved at once by [`pump`].
const COPY_CHUNK: usize = 64 * 1024;

/// Relays a session between `a` (toward the client) and `b` (toward the
/// side that serves it: the entrypoint, or the next node) until it ends:
///
/// - the client finishing its side finishes ours toward `b` (a half-close:
///   the answer still flows back);
/// - `b` finishing its side ends the session: the rest reaches the client,
///   and whatever the client still sends is refused (`b` needs no more);
/// - `b` no longer reading only stops the client's side;
/// - a stream or connection failing, the client no longer reading, or
///   `a_gone` completing (the client's connection closed) resets all four
///   halves, so both ends see the session fail instead of hanging.
///
/// Every stream is closed when this returns: nothing holds a stream slot of
/// the entrypoint's connection after its session.
pub async fn splice<T>(
    a: (quinn::SendStream, quinn::RecvStream),
    b: (quinn::SendStream, quinn::RecvStream),
    a_gone: impl std::future::Future<Output = T>,
) {
    let (mut a_send, mut a_recv) = a;
    let (mut b_send, mut b_recv) = b;
    let (up, down) = {
        let up = pump(&mut a_recv, &mut b_send);
        let down = pump(&mut b_recv, &mut a_send);
        tokio::pin!(up, down, a_gone);
        let (mut up_flow, mut down_flow) = (None, None);
        loop {
            tokio::select! {
                f = &mut up, if up_flow.is_none() => up_flow = Some(f),
                f = &mut down, if down_flow.is_none() => down_flow = Some(f),
                _ = &mut a_gone => {
                    up_flow.get_or_insert(Flow::Broken);
                    down_flow = Some(Flow::Broken);
                }
            }
            // `down` ending, cleanly or not, ends the session.
            if up_flow == Some(Flow::Broken) || down_flow.is_some() {
                break (up_flow, down_flow);
            }
        }
    };
    let code = RELAY_BROKEN.into();
    let broken = up == Some(Flow::Broken) || down.is_some_and(|f| f != Flow::Ended);
    if broken {
        let _ = a_send.reset(code);
        let _ = b_send.reset(code);
        let _ = a_recv.stop(code);
        let _ = b_recv.stop(code);
    } else if up.is_none() {
        // `b` is done: nothing the client still sends is wanted.
        let _ = a_recv.stop(0u32.into());
        let _ = b_send.reset(0u32.into());
    }
}
