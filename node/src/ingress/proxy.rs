//! Forwarding one request to an instance through a URL tunnel.
//!
//! Each tunnel is one TCP connection to the app (through the entrypoint's
//! outbound connection, and the peer mesh when the entrypoint is on
//! another node), spoken to in HTTP/1.1. Idle tunnels are kept per
//! instance and reused (keep-alive).
//!
//! Invariants:
//! - A request is sent at most once: it is retried on another tunnel (or
//!   instance) only when hyper hands it back unsent (a pooled connection
//!   the app had just closed, a tunnel that could not be opened).
//! - A tunnel takes a pooled request only once its previous exchange is
//!   over (hyper says it is ready); it is never pooled after an upgrade.
//! - Hop-by-hop headers are not forwarded; `X-Forwarded-For`, `-Proto` and
//!   `-Host` are set for the app.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_protocol::frame;
use cairn_protocol::instance::{NodeToEntrypoint, TunnelReply};
use cairn_protocol::types::OpId;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::route::Target;
use crate::attached;
use crate::raft::NodeId;
use crate::server::Ctx;

/// A response body: the app's, or one of ours.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// An idle tunnel is dropped after this long unused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle tunnels kept per instance at most.
pub const MAX_IDLE_PER_INSTANCE: usize = 64;
/// How long opening a tunnel may take (the app connecting included) when
/// it is the last instance to try.
pub const TUNNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, when other instances are left to try.
pub const TUNNEL_TIMEOUT_WITH_ALTERNATIVES: Duration = Duration::from_secs(1);
/// An instance that failed a request is tried last for this long.
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);

type Sender = http1::SendRequest<Incoming>;
type Key = (OpId, String);
type IdleMap = HashMap<Key, Vec<(Sender, Instant)>>;

/// Pooled tunnels by (deployment, instance), and the instances that
/// failed lately.
#[derive(Clone)]
pub struct Pool {
    idle: Arc<Mutex<Idle>>,
    suspects: Arc<Mutex<HashMap<Key, Instant>>>,
}

/// The pooled tunnels: each with when it was last handed back. A tunnel is
/// pooled as soon as its response has begun; it can take a request once
/// hyper says it is ready (its previous exchange is over).
struct Idle {
    map: IdleMap,
    swept: Instant,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            idle: Arc::new(Mutex::new(Idle {
                map: HashMap::new(),
                swept: Instant::now(),
            })),
            suspects: Arc::default(),
        }
    }
}

/// How often the pool drops closed and long-idle tunnels at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Idle {
    /// Drops closed tunnels, and ready ones unused for [`IDLE_TIMEOUT`],
    /// at most every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.map.retain(|_, list| {
            list.retain(|(s, since)| {
                let stale = s.is_ready() && now.duration_since(*since) >= IDLE_TIMEOUT;
                !(s.is_closed() || stale)
            });
            !list.is_empty()
        });
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pooled tunnel to the instance that is open and ready, if any (the
    /// most recently used first).
    fn take(&self, key: &Key) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.sweep(now);
        let list = idle.map.get_mut(key)?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let (sender, since) = &list[i];
            if sender.is_closed() || now.duration_since(*since) >= IDLE_TIMEOUT {
                list.remove(i);
            } else if sender.is_ready() {
                return Some(list.remove(i).0);
            }
        }
        None
    }

    /// Pools `sender`, whose response has begun: it takes requests again
    /// once that exchange is over.
    fn put(&self, key: Key, sender: Sender) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.sweep(now);
        let list = idle.map.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_INSTANCE {
            list.retain(|(s, _)| !s.is_closed());
        }
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push((sender, now));
        }
    }

    /// `key` failed a request: try it last (and drop its pooled tunnels)
    /// for [`SUSPECT_FOR`].
    fn suspect(&self, key: &Key) {
        self.lock().map.remove(key);
        let mut s = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        s.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        s.insert(key.clone(), Instant::now());
    }

    fn is_suspect(&self, key: &Key) -> bool {
        self.suspects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .is_some_and(|since| since.elapsed() < SUSPECT_FOR)
    }

    /// Whether any instance failed within [`SUSPECT_FOR`].
    fn has_suspects(&self) -> bool {
        let mut s = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        if s.is_empty() {
            return false;
        }
        s.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        !s.is_empty()
    }

    /// Pooled tunnels that can take a request now (all instances).
    pub fn idle(&self) -> usize {
        self.lock()
            .map
            .values()
            .flatten()
            .filter(|(s, _)| !s.is_closed() && s.is_ready())
            .count()
    }
}

/// A tunnel stream pair as one byte stream.
struct TunnelIo {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.send)
            .poll_write(cx, buf)
            .map_err(std::io::Error::from)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

/// Opens a tunnel to an instance and starts an HTTP/1.1 client on it.
async fn open_tunnel(
    ctx: &Ctx,
    deployment: OpId,
    instance: &str,
    node: NodeId,
    patience: Duration,
) -> Result<Sender, String> {
    let opened = tokio::time::timeout(patience, async {
        let header = NodeToEntrypoint::Tunnel { port: None };
        let (send, mut recv) = attached::open(ctx, node, deployment, instance, &header).await?;
        match frame::read_required::<_, TunnelReply>(&mut recv).await {
            Ok(TunnelReply::Connected) => Ok(TunnelIo { send, recv }),
            Ok(TunnelReply::Failed { reason }) => Err(format!("instance {instance}: {reason}")),
            Err(e) => Err(format!("instance {instance}: the tunnel broke: {e}")),
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "instance {instance}: no tunnel within {patience:?}"
        ))
    })?;
    let (sender, conn) = http1::handshake(TokioIo::new(opened))
        .await
        .map_err(|e| format!("instance {instance}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "tunnel connection ended");
        }
    });
    Ok(sender)
}

/// Where a request came from: the client's address and the scheme it used
/// (for the `X-Forwarded-*` headers).
pub struct Origin {
    pub addr: SocketAddr,
    pub scheme: &'static str,
}

/// Why forwarding failed: the text of a 502 page, and the request when it
/// was never sent (it may be tried again).
pub struct Failure {
    pub why: String,
    pub unsent: Option<Request<Incoming>>,
}

/// Sends `req` to one of `target`'s instances (starting at `start`, the
/// round-robin position): a pooled tunnel, else a new one; the next
/// instance when an instance cannot take it. Returns the app's response.
/// `from_client`: the client's side of an upgrade (a websocket), joined to
/// the app's when it answers 101.
pub async fn forward(
    ctx: &Ctx,
    pool: &Pool,
    target: &Target,
    start: usize,
    client: &Origin,
    mut req: Request<Incoming>,
    from_client: &mut Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, Failure> {
    let upgrade = wants_upgrade(req.headers());
    prepare(&mut req, client.addr, client.scheme, upgrade);
    // Instances that failed lately go last: an instance that went away
    // (its node has not noticed yet) costs one request a short wait, not
    // every request.
    let n = target.instances.len();
    let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
    if pool.has_suspects() {
        order
            .sort_by_key(|i| pool.is_suspect(&(target.deployment, target.instances[*i].0.clone())));
    }
    let mut last = String::from("no instance is connected");
    for (tried, i) in order.into_iter().enumerate() {
        let (instance, node) = &target.instances[i];
        let key = (target.deployment, instance.clone());
        // Waiting long only makes sense when no other instance is left.
        let patience = if tried + 1 < n {
            TUNNEL_TIMEOUT_WITH_ALTERNATIVES
        } else {
            TUNNEL_TIMEOUT
        };
        // Pooled tunnels first, then a new one; a pooled tunnel the app has
        // closed meanwhile hands the request back unsent.
        loop {
            let (mut sender, pooled) = match pool.take(&key) {
                Some(s) => (s, true),
                None => {
                    match open_tunnel(ctx, target.deployment, instance, *node, patience).await {
                        Ok(s) => (s, false),
                        Err(e) => {
                            pool.suspect(&key);
                            last = e;
                            break;
                        }
                    }
                }
            };
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(from_client) = from_client.take() {
                            let to_app = hyper::upgrade::on(&mut resp);
                            tokio::spawn(join_upgraded(from_client, to_app));
                        }
                    } else {
                        pool.put(key, sender);
                    }
                    let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                    strip_hop_by_hop(resp.headers_mut(), upgraded);
                    return Ok(resp.map(BodyExt::boxed));
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        req = back;
                        last = format!("instance {instance}: {}", e.into_error());
                        if !pooled {
                            break;
                        }
                    }
                    None => {
                        pool.suspect(&key);
                        return Err(Failure {
                            why: format!(
                                "instance {instance} failed while answering: {}",
                                e.into_error()
                            ),
                            unsent: None,
                        });
                    }
                },
            }
        }
    }
    Err(Failure {
        why: last,
        unsent: Some(req),
    })
}

/// Copies bytes between the client's and the app's upgraded connections
/// (a websocket) until both ends close.
async fn join_upgraded(client: hyper::upgrade::OnUpgrade, app: hyper::upgrade::OnUpgrade) {
    let (client, app) = match tokio::try_join!(client, app) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut app = TokioIo::new(app);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
}

/// Whether the request asks to switch protocols (a websocket).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request as the app gets it: HTTP/1.1 in origin form, `Host` set,
/// hop-by-hop headers gone, `X-Forwarded-*` added.
fn prepare(req: &mut Request<Incoming>, client: SocketAddr, scheme: &str, upgrade: bool) {
    let host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = path.parse() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let ip = client.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
}

/// Removes the headers that concern one connection only (RFC 9110 7.6.1),
/// and those the `Connection` header names. With `upgrade`, `Connection:
/// upgrade` and `Upgrade` stay.
fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        h.remove(n);
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }
}
