//! The URL service's HTTP ingress: every node answers `APP.DOMAIN` (the
//! app's release), `APP--vN.DOMAIN` (deployment N) and registered custom
//! hostnames, and tunnels each request to an instance through that
//! instance's entrypoint connection (see [`proxy`]).
//!
//! ```text
//! client ─HTTP/1.1 or h2, TLS optional─▶ ingress (any node) ─tunnel─▶ entrypoint ─TCP─▶ app:PORT
//! ```
//!
//! Invariants:
//! - Routing reads this node's applied state ([`route`]): a release switch
//!   is atomic (each request sees the old route or the new one), and a
//!   canary takes its weight's share of requests.
//! - Requests spread over the deployment's connected instances round-robin;
//!   an instance that cannot take a request is skipped for it ([`proxy`]).
//! - Unknown host: 404; known but nothing can answer: a readable 502.

pub mod h1;
pub mod limits;
pub mod pages;
pub mod proxy;
pub mod route;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::IngressInfo;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use limits::{Limits, Registry};
use proxy::{Body, Pool};

/// The ingress's default port.
pub const DEFAULT_PORT: u16 = 9703;
/// The default domain: `http://web.localhost:9703/` works on a dev node.
pub const DEFAULT_DOMAIN: &str = "localhost";
/// How long a request that no instance could take (none connected, or
/// none reachable where the state says it is) waits for one before the 502.
pub const MOVE_WAIT: Duration = Duration::from_secs(5);
/// How often it looks again meanwhile.
const MOVE_POLL: Duration = Duration::from_millis(200);

/// A bound ingress, ready to serve.
pub struct Ingress {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    domain: String,
    scheme: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pool: Pool,
    /// Round-robin position, shared by every deployment.
    next: AtomicUsize,
    limits: Limits,
    conns: Arc<Registry>,
}

impl Ingress {
    /// Binds `addr` (parse, then bind: errors name the address). `tls`
    /// serves HTTPS (with HTTP/2 by ALPN) instead of plain HTTP.
    pub async fn bind(
        addr: SocketAddr,
        domain: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
    ) -> std::io::Result<Ingress> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A deeper backlog than tokio's 1024: a burst of connections waits
        // to be accepted instead of having its handshakes dropped (which
        // costs a client a 1 s SYN retransmission). The kernel caps it at
        // net.core.somaxconn.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        Ok(Ingress {
            listener,
            shared: Arc::new(Shared {
                domain: domain.trim_end_matches('.').to_ascii_lowercase(),
                scheme: if tls.is_some() { "https" } else { "http" },
                tls: tls.map(tokio_rustls::TlsAcceptor::from),
                pool: Pool::default(),
                next: AtomicUsize::new(0),
                conns: Registry::new(limits.max_connections),
                limits,
            }),
        })
    }

    /// What `ServerInfo` says about this ingress.
    pub fn info(&self) -> std::io::Result<IngressInfo> {
        Ok(IngressInfo {
            scheme: self.shared.scheme.to_string(),
            addr: self.listener.local_addr()?.to_string(),
            domain: self.shared.domain.clone(),
        })
    }

    /// Accepts connections until `shutdown`. At the connection limit the
    /// longest-idle connections make room (see [`limits`]); an accept error
    /// (out of descriptors, say) backs off instead of spinning.
    pub async fn run(self, ctx: Arc<IngressCtx>, shutdown: CancellationToken) {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut last_warned: Option<tokio::time::Instant> = None;
        let drain = ctx.drain.clone();
        loop {
            // At the connection limit, room is made (idle connections
            // closed) before the next accept; meanwhile newcomers wait in
            // the listen backlog.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // Draining: no new connection (the listener closes).
                _ = drain.token.cancelled() => return,
                _ = self.shared.conns.wait_for_room() => {}
            }
            let (tcp, client) = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = drain.token.cancelled() => return,
                a = self.listener.accept() => match a {
                    Ok(a) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        a
                    }
                    Err(e) => {
                        if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            tracing::warn!(error = %e, open = self.shared.conns.len(), "ingress cannot accept connections; backing off");
                            last_warned = Some(tokio::time::Instant::now());
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                },
            };
            let Some(admitted) = self.shared.conns.admit() else {
                // Every connection has a request in flight: this one waits
                // for nothing, it is closed (dropped) at once.
                if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(limit = self.shared.limits.max_connections, "ingress at its connection limit with every connection busy; refusing new ones");
                    last_warned = Some(tokio::time::Instant::now());
                }
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let ctx = ctx.clone();
            let shared = self.shared.clone();
            let shutdown = shutdown.clone();
            let open = drain.open();
            tokio::spawn(async move {
                let conn = admitted.conn.clone();
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = conn.close.cancelled() => {}
                    _ = conn.watchdog(&shared.limits) => {}
                    _ = serve_connection(ctx, shared.clone(), tcp, client, conn.clone()) => {}
                }
                drop(admitted);
                drop(open);
            });
        }
    }
}

/// Connections waiting to be accepted, at most (see [`Ingress::bind`]).
const LISTEN_BACKLOG: u32 = 4096;

/// The first wait after a failed accept, doubled up to the last.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Repeated warnings about the same condition at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serve a hyper connection to its end; when the node drains, its requests in flight
/// finish and it then closes (HTTP/1: after the current response; HTTP/2: GOAWAY).
macro_rules! until_drained {
    ($conn:expr, $drain:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = $drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }};
}

async fn serve_connection(
    ctx: Arc<IngressCtx>,
    shared: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    client: SocketAddr,
    conn: Arc<limits::Conn>,
) {
    let ctx_drain = ctx.drain.clone();
    let service = {
        let shared = shared.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let shared = shared.clone();
            let in_flight = conn.begin();
            async move {
                let resp = handle(&ctx, &shared, client, req).await;
                // The request is in flight until its response body is done.
                Ok::<_, std::convert::Infallible>(resp.map(|b| {
                    http_body_util::BodyExt::boxed(Tracked {
                        body: b,
                        _in_flight: in_flight,
                    })
                }))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let drain = ctx_drain.token.clone();
    let served = match &shared.tls {
        Some(acceptor) => {
            match tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    until_drained!(conn, drain)
                }
                Ok(Err(e)) => {
                    tracing::debug!(%client, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%client, "TLS handshake timed out");
                    return;
                }
            }
        }
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            until_drained!(conn, drain)
        }
    };
    if let Err(e) = served {
        tracing::debug!(%client, error = %e, "ingress connection ended");
    }
}

/// A response body that holds its request's [`limits::InFlight`] until it
/// is done (or dropped).
struct Tracked {
    body: Body,
    _in_flight: limits::InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = h1::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request: route it, then forward it (or answer 404/502); counted and timed in the
/// node's metrics by the deployment it reached.
async fn handle(
    ctx: &IngressCtx,
    shared: &Shared,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let mut routed = None;
    let resp = route_and_forward(ctx, shared, client, req, &mut routed).await;
    ctx.metrics
        .ingress(routed, resp.status().as_u16(), started.elapsed());
    resp
}

async fn route_and_forward(
    ctx: &IngressCtx,
    shared: &Shared,
    client: SocketAddr,
    req: Request<Incoming>,
    routed: &mut Option<crate::metrics::DeploymentLabels>,
) -> Response<Body> {
    // RFC 9112 3.2.2: a request in absolute form is routed by its target's
    // authority, not by `Host`; HTTP/2's :authority is the same. More than
    // one `Host` is a bad request (RFC 9112 3.2).
    let hosts = req.headers().get_all(http::header::HOST).iter().count();
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let host = route::normalize(&host);
    if hosts > 1 {
        return pages::bad_request(&host, "the request has more than one Host header");
    }
    if req.method() == http::Method::CONNECT {
        return pages::method_not_allowed(
            &host,
            "CONNECT is not served: the URL service is not a forward proxy",
        );
    }
    let roll = (rand_u32() % 100) as u8;
    // Instances that are moving (their node died, they reconnect to
    // another) cannot take a request for a moment: as long as it was not
    // sent, look again for a little while before answering 502.
    let deadline = tokio::time::Instant::now() + MOVE_WAIT;
    let mut req = req;
    let upgrade = proxy::wants_upgrade(req.headers());
    let mut from_client = upgrade.then(|| hyper::upgrade::on(&mut req));
    let origin = proxy::Origin {
        addr: client,
        scheme: shared.scheme,
    };
    proxy::prepare(&mut req, &origin, upgrade);
    loop {
        let target = ctx
            .cluster
            .raft
            .read_local(|st| route::resolve(st, &shared.domain, &host, roll));
        let target = match target {
            Ok(t) => t,
            Err(route::Miss::Unknown(why)) => return pages::not_found(&host, &why),
            Err(route::Miss::Unavailable(why)) => return pages::bad_gateway(&host, &why),
        };
        *routed = Some(crate::metrics::DeploymentLabels {
            project: target.project.clone(),
            app: target.app.clone(),
            workspace: target.workspace.clone(),
            deployment: format!("v{}", target.sequence),
        });
        let what = || format!("v{} of {}", target.sequence, target.app);
        let why = if target.instances.is_empty() {
            format!(
                "{} has no instance up (none is connected to the cluster)",
                what()
            )
        } else {
            let start = shared.next.fetch_add(1, Ordering::Relaxed);
            let sent = proxy::forward(ctx, &shared.pool, &target, start, req, &mut from_client);
            match sent.await {
                Ok(resp) => return resp,
                Err(proxy::Failure {
                    why,
                    unsent: Some(back),
                }) => {
                    req = back;
                    format!("{}: {why}", what())
                }
                Err(proxy::Failure { why, unsent: None }) => {
                    return pages::bad_gateway(&host, &format!("{}: {why}", what()))
                }
            }
        };
        if tokio::time::Instant::now() >= deadline {
            return pages::bad_gateway(&host, &why);
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// A cheap, non-cryptographic random number (canary rolls).
fn rand_u32() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
                | 1,
        );
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

/// What the ingress needs of the node: the replicated state (its routes), the entrypoint
/// connections it tunnels through (here or, through the peer mesh, on another node), its
/// metrics and its graceful stop.
#[derive(Clone)]
pub struct IngressCtx {
    pub cluster: Arc<crate::cluster::Cluster>,
    pub attached: crate::attached::Attached,
    /// This node.
    pub me: crate::raft::NodeId,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub drain: Drain,
}

/// The ingress's graceful stop: `drain` stops accepting connections and lets the ones
/// open finish their requests in flight (see [`Drain::drain`]).
#[derive(Clone, Default)]
pub struct Drain {
    pub token: CancellationToken,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// One open connection, counted while held.
pub struct Open(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drain {
    fn open(&self) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self.open.clone())
    }

    /// Stop accepting, let the open connections finish what they are doing, and wait for
    /// them to close: at most `grace`. Returns how many were still open then.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.token.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = self.open.load(Ordering::SeqCst);
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
