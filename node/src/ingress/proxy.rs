//! Forwarding one request to an instance through a URL tunnel.
//!
//! Each tunnel is one TCP connection to the app (through the entrypoint's
//! outbound connection, and the peer mesh when the entrypoint is on
//! another node), spoken to in HTTP/1.1 by the request's own task
//! ([`h1`]). Idle tunnels are kept per instance and reused (keep-alive).
//! Upgrades (websockets) go through hyper's client on a tunnel of their
//! own, which is never reused.
//!
//! Invariants:
//! - A request is sent at most once, with one exception: an idempotent
//!   request without a body that a reused tunnel closed on without a byte
//!   of answer (the app had just closed that idle connection) is sent
//!   again, as RFC 9110 9.2.2 allows. Otherwise it goes to another tunnel
//!   or instance only when it could not be sent (a tunnel that could not
//!   be opened, or would not take the head).
//! - A tunnel is pooled only once its exchange is over (request and
//!   response bodies in full, keep-alive allowed); never after an upgrade.
//! - Hop-by-hop headers are not forwarded; `X-Forwarded-For`, `-Proto` and
//!   `-Host` are set for the app (once per request, however often it is
//!   tried).

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
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::AbortOnDropHandle;

use super::h1::{self, BoxError, HeadError, RequestBody, Sending};
use super::route::Target;
use super::IngressCtx;
use crate::attached;
use crate::raft::NodeId;

/// A response body: the app's, or one of ours.
pub type Body = BoxBody<Bytes, BoxError>;

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

/// A tunnel's two directions, spoken to in HTTP/1.1.
type Tunnel = h1::Tunnel<quinn::RecvStream, quinn::SendStream>;
type Key = (OpId, String);
type IdleMap = HashMap<Key, Vec<(Tunnel, Instant)>>;

/// Pooled tunnels by (deployment, instance), and the instances that
/// failed lately.
#[derive(Clone)]
pub struct Pool {
    idle: Arc<Mutex<Idle>>,
    suspects: Arc<Mutex<HashMap<Key, Instant>>>,
}

/// The idle tunnels, each with when it was handed back.
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
    /// Drops closed tunnels, and those unused for [`IDLE_TIMEOUT`], at most
    /// every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.map.retain(|_, list| {
            list.retain_mut(|(t, since)| {
                now.duration_since(*since) < IDLE_TIMEOUT && t.is_usable()
            });
            !list.is_empty()
        });
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle tunnel to the instance that is still open, if any (the most
    /// recently used first).
    fn take(&self, key: &Key) -> Option<Tunnel> {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.sweep(now);
        let list = idle.map.get_mut(key)?;
        while let Some((mut tunnel, since)) = list.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && tunnel.is_usable() {
                return Some(tunnel);
            }
        }
        None
    }

    /// Pools `tunnel`, whose exchange is over.
    fn put(&self, key: Key, tunnel: Tunnel) {
        let now = Instant::now();
        let mut idle = self.lock();
        idle.sweep(now);
        let list = idle.map.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_INSTANCE {
            list.push((tunnel, now));
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
}

/// A tunnel stream pair as one byte stream (for hyper, on upgrades).
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

/// Opens a tunnel to an instance (the app has accepted the connection).
async fn open_tunnel(
    ctx: &IngressCtx,
    deployment: OpId,
    instance: &str,
    node: NodeId,
    patience: Duration,
) -> Result<Tunnel, String> {
    tokio::time::timeout(patience, async {
        let header = NodeToEntrypoint::Tunnel { port: None };
        let (send, mut recv) = attached::open(
            &ctx.attached,
            &ctx.cluster,
            ctx.me,
            node,
            deployment,
            instance,
            &header,
        )
        .await?;
        match frame::read_required::<_, TunnelReply>(&mut recv).await {
            Ok(TunnelReply::Connected) => Ok(Tunnel::new(recv, send)),
            Ok(TunnelReply::Failed { reason }) => Err(format!("instance {instance}: {reason}")),
            Err(e) => Err(format!("instance {instance}: the tunnel broke: {e}")),
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "instance {instance}: no tunnel within {patience:?}"
        ))
    })
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

/// What one try on one tunnel came to.
enum Tried {
    Answered(Response<Body>),
    /// Not sent (or safely sent again): the request, and why.
    Unsent(Request<Incoming>, String),
    /// Sent, and the instance failed it.
    Failed(String),
}

/// Sends `req` (made ready by [`prepare`]) to one of `target`'s instances,
/// starting at `start` (the round-robin position): a pooled tunnel, else a
/// new one; the next instance when an instance cannot take it. Returns the
/// app's response. `from_client`: the client's side of an upgrade (a
/// websocket), joined to the app's when it answers 101.
pub async fn forward(
    ctx: &IngressCtx,
    pool: &Pool,
    target: &Target,
    start: usize,
    mut req: Request<Incoming>,
    from_client: &mut Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, Failure> {
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
        // Pooled tunnels first, then a new one.
        loop {
            let (tunnel, pooled) = match from_client.is_none().then(|| pool.take(&key)).flatten() {
                Some(t) => (t, true),
                None => {
                    match open_tunnel(ctx, target.deployment, instance, *node, patience).await {
                        Ok(t) => (t, false),
                        Err(e) => {
                            pool.suspect(&key);
                            last = e;
                            break;
                        }
                    }
                }
            };
            let outcome = if from_client.is_some() {
                upgrade(tunnel, req, from_client).await
            } else {
                exchange(pool, &key, tunnel, pooled, req).await
            };
            match outcome {
                Tried::Answered(resp) => return Ok(resp),
                Tried::Unsent(back, why) => {
                    req = back;
                    last = format!("instance {instance}: {why}");
                    if !pooled {
                        break;
                    }
                }
                Tried::Failed(why) => {
                    pool.suspect(&key);
                    return Err(Failure {
                        why: format!("instance {instance} failed while answering: {why}"),
                        unsent: None,
                    });
                }
            }
        }
    }
    Err(Failure {
        why: last,
        unsent: Some(req),
    })
}

/// One request and its response on `tunnel` (HTTP/1.1, in this task).
async fn exchange(
    pool: &Pool,
    key: &Key,
    mut tunnel: Tunnel,
    pooled: bool,
    req: Request<Incoming>,
) -> Tried {
    let (parts, body) = req.into_parts();
    let framing = RequestBody::of(&parts.headers, &body);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let head = h1::encode_head(&parts.method, path, &parts.headers, framing);
    if let Err(e) = tunnel.send.write_all(&head).await {
        let why = format!("the tunnel would not take the request: {e}");
        return Tried::Unsent(Request::from_parts(parts, body), why);
    }
    // Without a body the request can still be sent again; with one, the
    // body goes out in a task of its own (the app may answer before it has
    // all of it).
    let (body, sending) = match framing {
        RequestBody::None => (Some(body), Sending::Idle(tunnel.send)),
        _ => {
            let task = tokio::spawn(h1::send_body(tunnel.send, body, framing));
            (None, Sending::Busy(AbortOnDropHandle::new(task)))
        }
    };
    // While the body goes out, watch it: a body the client got wrong
    // (malformed chunks) is the client's error, 400, not the app's 502.
    let mut sending = sending;
    let read = loop {
        let Sending::Busy(task) = &mut sending else {
            break h1::read_head(&mut tunnel.recv, &mut tunnel.buf, &parts.method).await;
        };
        let sent = tokio::select! {
            read = h1::read_head(&mut tunnel.recv, &mut tunnel.buf, &parts.method) => Err(read),
            sent = task => Ok(sent),
        };
        match sent {
            Err(read) => break read,
            Ok(Ok(Ok(send))) => sending = Sending::Idle(send),
            Ok(Ok(Err(why))) if why.starts_with(h1::CLIENT_BODY_BROKE) => {
                let host = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                return Tried::Answered(super::pages::bad_request(&host, &why));
            }
            // The tunnel broke (or the task failed): what the app says, if
            // anything, decides; the tunnel is not reused.
            Ok(_) => {
                sending = Sending::Gone;
                break h1::read_head(&mut tunnel.recv, &mut tunnel.buf, &parts.method).await;
            }
        }
    };
    let mut head = match (read, body) {
        (Ok(head), _) => head,
        (Err(HeadError::Nothing(why)), Some(body)) if pooled && is_idempotent(&parts.method) => {
            return Tried::Unsent(Request::from_parts(parts, body), why);
        }
        (Err(HeadError::Nothing(why) | HeadError::Broken(why)), _) => return Tried::Failed(why),
    };
    let give_back: h1::GiveBack<_, _> = {
        let pool = pool.clone();
        let key = key.clone();
        Box::new(move |t| pool.put(key, t))
    };
    let mut resp = Response::new(());
    *resp.status_mut() = head.status;
    *resp.headers_mut() = std::mem::take(&mut head.headers);
    strip_hop_by_hop(resp.headers_mut(), false);
    let body = h1::ResponseBody::new(tunnel.recv, tunnel.buf, sending, &head, give_back);
    Tried::Answered(resp.map(|()| body.boxed()))
}

/// Methods a client may send again unasked (RFC 9110 9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// An upgrade (a websocket) on a tunnel of its own, through hyper's
/// client; the two upgraded connections are joined on 101.
async fn upgrade(
    tunnel: Tunnel,
    req: Request<Incoming>,
    from_client: &mut Option<hyper::upgrade::OnUpgrade>,
) -> Tried {
    let io = TunnelIo {
        send: tunnel.send,
        recv: tunnel.recv,
    };
    let (mut sender, conn) = match http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => return Tried::Unsent(req, e.to_string()),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "tunnel connection ended");
        }
    });
    match sender.try_send_request(req).await {
        Ok(mut resp) => {
            let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            if upgraded {
                if let Some(from_client) = from_client.take() {
                    let to_app = hyper::upgrade::on(&mut resp);
                    tokio::spawn(join_upgraded(from_client, to_app));
                }
            }
            strip_hop_by_hop(resp.headers_mut(), upgraded);
            Tried::Answered(resp.map(|b| b.map_err(BoxError::from).boxed()))
        }
        Err(mut e) => match e.take_message() {
            Some(back) => Tried::Unsent(back, e.into_error().to_string()),
            None => Tried::Failed(e.into_error().to_string()),
        },
    }
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
    // Only websockets are passed through; any other protocol's upgrade
    // (h2c, or whatever else a client names) is dropped and the request
    // served as a plain one.
    h.get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request as the app gets it: HTTP/1.1 in origin form, `Host` set,
/// hop-by-hop headers gone, `X-Forwarded-*` added.
pub fn prepare(req: &mut Request<Incoming>, origin: &Origin, upgrade: bool) {
    // The target's authority wins over `Host` (RFC 9112 3.2.2), as routing
    // had it.
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| req.headers().get(header::HOST).cloned());
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Ok(uri) = path.parse() {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    let ip = origin.addr.ip().to_string();
    let proto = if origin.scheme == "https" {
        "https"
    } else {
        "http"
    };
    // `Forwarded` (RFC 7239) is ours to say, like `X-Forwarded-*`: what a
    // client sent is replaced, not passed on as if we vouched for it.
    let mut forwarded = format!("for=\"{}\";proto={proto}", forwarded_node(&origin.addr));
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
        forwarded.push_str(&format!(";host=\"{h}\""));
    }
    headers.remove(header::FORWARDED);
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if origin.scheme == "https" {
            "https"
        } else {
            "http"
        }),
    );
}

/// A client address as RFC 7239 writes a node (IPv6 in brackets).
fn forwarded_node(addr: &std::net::SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    }
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
