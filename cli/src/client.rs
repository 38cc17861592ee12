//! Connecting the CLI to a node: resolve the context (flag, `CAIRN_CONTEXT`,
//! the current one, or the embedded default), dial with the pinned CA, say
//! hello with the user token.
//!
//! A context remembers the cluster's members. [`connect`] dials them in the
//! order [`Reach`] gives (the member that answered last, the context's
//! address, the other members, those that did not answer lately last):
//! staggered, first to answer wins, bounded by [`FAILOVER_DEADLINE`]. So a
//! CLI keeps working when its node dies, and with a member down a command
//! does not pay for dialling it first. Every successful connect refreshes
//! the member list from the node it reached.
//!
//! [`Client::call`] sends one request; when the node answers `Unavailable`
//! (it cannot reach a leader: nothing was done) or the connection is lost
//! under a read or an idempotent write, it sends the same request to
//! another member, within [`CALL_DEADLINE`]. Single writes go out as
//! [`ClientRequest::Idempotent`], so sending one again never applies it twice.

use std::time::Duration;

use cairn_protocol::now_ms;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial, RpcError, Session};

use crate::context::{self, Context};
use crate::local;
use crate::reach::Reach;

/// How long the preferred address has alone before the others are tried too.
pub const FAILOVER_STAGGER: Duration = rpc::DIAL_STAGGER;
/// Longest a connect may take over all addresses.
pub const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);
/// Longest [`Client::call`] keeps trying members for one request.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// A retry-safe request whose node sends nothing at all for this long is
/// sent to another member (see [`silent`]).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(4);
/// Longest one attempt of a retry-safe request waits for its answer before
/// another member is asked (a node gives up on a request after its
/// `ROUTE_DEADLINE`, 10 s, so this only catches a node that stopped).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(12);

pub async fn resolve(explicit: Option<&str>, quiet: bool) -> anyhow::Result<Context> {
    warn_loose_modes();
    let name = match explicit {
        Some(n) => Some(n.to_string()),
        None => match std::env::var("CAIRN_CONTEXT") {
            Ok(n) if !n.is_empty() => Some(n),
            _ => context::current()?,
        },
    };
    match name {
        Some(n) => {
            let c = context::load(&n)?;
            if c.local {
                Ok(local::ensure(quiet).await?)
            } else {
                Ok(c)
            }
        }
        None => Ok(local::ensure(quiet).await?),
    }
}

/// The context's cluster when one is there to ask, without starting the local node: `None`
/// when the context is the local node and it is not running. For commands that work
/// offline and only use the cluster when it is at hand (`cairn validate`).
pub async fn resolve_running(explicit: Option<&str>) -> anyhow::Result<Option<Context>> {
    let name = match explicit {
        Some(n) => Some(n.to_string()),
        None => match std::env::var("CAIRN_CONTEXT") {
            Ok(n) if !n.is_empty() => Some(n),
            _ => context::current()?,
        },
    };
    let local = match &name {
        Some(n) => {
            let c = context::load(n)?;
            if !c.local {
                return Ok(Some(c));
            }
            true
        }
        None => true,
    };
    if local && local::running().is_none() {
        return Ok(None);
    }
    Ok(Some(local::ensure(true).await?))
}

/// Says on stderr (once per process) when the config dir (contexts hold
/// tokens), a context file or the data dir lets other users in.
fn warn_loose_modes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut warnings = cairn_protocol::private::loose_entries(&crate::paths::config_dir());
        warnings.extend(cairn_protocol::private::loose_entries(
            &crate::paths::config_dir().join("contexts"),
        ));
        warnings.extend(cairn_protocol::private::looser_than_private(
            &crate::paths::data_dir(),
        ));
        warnings.sort();
        warnings.dedup();
        for w in warnings {
            eprintln!("warning: {w}");
        }
    });
}

fn dial(ctx: &Context, addr: &str) -> Dial {
    Dial {
        addr: addr.to_string(),
        ca_fingerprint: ctx.ca_fingerprint.clone(),
        identity: ctx.runner.clone(),
        role: if ctx.runner.is_some() {
            Role::Runner
        } else {
            Role::Client
        },
        token: ctx.token.clone(),
        agent: format!("cairn {}", cairn_protocol::VERSION),
        limits: TransportLimits::CLIENT,
    }
}

/// Connect to the context's node, or to another member when it does not
/// answer; then refresh the context's member list (saved when it changed).
pub async fn connect(ctx: &Context) -> Result<Client, RpcError> {
    connect_avoiding(ctx, &[]).await
}

/// [`connect`], dialling the members in `avoid` (whose connection was just
/// lost, say) only after every other.
pub async fn connect_avoiding(ctx: &Context, avoid: &[String]) -> Result<Client, RpcError> {
    let (session, addr) = connect_any(ctx, avoid).await?;
    if !ctx.local && ctx.runner.is_none() {
        refresh_members(ctx, &session).await;
    }
    Ok(Client {
        session,
        addr,
        ctx: ctx.clone(),
        client_id: rand::random(),
        next_request: 0,
    })
}

/// A connection to a member of the context's cluster that moves to another
/// member when its node cannot serve a request (see the module's doc).
/// Derefs to the current [`Session`] (streaming calls use its connection).
pub struct Client {
    session: Session,
    /// The address `session` was dialled at.
    addr: String,
    ctx: Context,
    /// Random per CLI process: with `next_request`, the id of an idempotent write.
    client_id: u64,
    next_request: u64,
}

impl std::ops::Deref for Client {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Client {
    /// The address of the member this client is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send `req` and read its answer, moving to another member when that is
    /// safe and needed (see the module's doc). `Err` is the last error.
    pub async fn call(&mut self, req: &ClientRequest) -> Result<ClientResponse, RpcError> {
        self.next_request += 1;
        let (req, retry_safe) = req.clone().for_resending(self.client_id, self.next_request);
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let mut avoid: Vec<String> = Vec::new();
        loop {
            let needs = req.since_version();
            let r = if needs > self.session.node.version {
                // The node could not decode it: say so instead of sending it.
                Err(RpcError::Remote(format!(
                    "the node at {} runs cairn-node {} ({}), and this needs protocol version {needs}: upgrade that node (docs/upgrading.md)",
                    self.addr, self.session.node.release, self.session.node.versions
                )))
            } else if retry_safe {
                let attempt =
                    tokio::time::timeout(ATTEMPT_TIMEOUT, rpc::call(&self.session.conn, &req));
                tokio::select! {
                    r = attempt => match r {
                        Ok(r) => r,
                        Err(_) => Err(RpcError::Unavailable(format!(
                            "node at {} did not answer within {ATTEMPT_TIMEOUT:?}",
                            self.addr
                        ))),
                    },
                    () = silent(&self.session.conn, SILENCE_LIMIT) => Err(RpcError::Unavailable(format!(
                        "node at {} sent nothing for {SILENCE_LIMIT:?} (not even an acknowledgement of a keep-alive)",
                        self.addr
                    ))),
                }
            } else {
                rpc::call(&self.session.conn, &req).await
            };
            let e = match r {
                Err(e @ RpcError::Unavailable(_)) => e,
                Err(e) if retry_safe && self.session.conn.close_reason().is_some() => e,
                r => return r,
            };
            if self.ctx.addresses().len() < 2 || tokio::time::Instant::now() >= deadline {
                return Err(e);
            }
            tracing::info!(node = %self.addr, error = %e, "the node could not serve the request; asking another member");
            if !self.ctx.local {
                let mut reach = Reach::load(&self.ctx.name);
                reach.down(&self.addr, now_ms());
                reach.save(&self.ctx.name);
            }
            avoid.push(self.addr.clone());
            if avoid.len() >= self.ctx.addresses().len() {
                // Every member was tried once: start over (an election may
                // have ended meanwhile), after a short pause.
                avoid.clear();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            self.session
                .conn
                .close(0u32.into(), b"moving to another member");
            match connect_any(&self.ctx, &avoid).await {
                Ok((session, addr)) => {
                    self.session = session;
                    self.addr = addr;
                }
                Err(_) => return Err(e),
            }
        }
    }

    /// Close the connection (the node sees a clean close).
    pub fn close(&self) {
        self.session.conn.close(0u32.into(), b"bye");
    }

    /// The current session, for a caller that keeps it (a runner agent).
    pub fn into_session(self) -> Session {
        self.session
    }
}

/// What a request can be sent on: a [`Client`], which moves between
/// members, or a bare connection (a runner's job, on the connection its
/// job arrived by), which does not.
pub trait Call {
    fn call(
        &mut self,
        req: &ClientRequest,
    ) -> impl std::future::Future<Output = Result<ClientResponse, RpcError>> + Send;
}

impl Call for Client {
    fn call(
        &mut self,
        req: &ClientRequest,
    ) -> impl std::future::Future<Output = Result<ClientResponse, RpcError>> + Send {
        Client::call(self, req)
    }
}

impl Call for quinn::Connection {
    fn call(
        &mut self,
        req: &ClientRequest,
    ) -> impl std::future::Future<Output = Result<ClientResponse, RpcError>> + Send {
        rpc::call(self, req)
    }
}

/// Resolves once nothing at all has come from the node for `limit`. A live
/// node acknowledges the CLI's keep-alives (every 2 s, `TransportLimits::CLIENT`)
/// at once, so this tells a node that died or stopped mid-request long
/// before the connection's idle timeout (10 s).
async fn silent(conn: &quinn::Connection, limit: Duration) {
    let mut last = conn.stats().udp_rx.datagrams;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = conn.stats().udp_rx.datagrams;
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= limit {
            return;
        }
    }
}

/// Dial the context's members in [`Reach`] order (those in `avoid` last)
/// with [`rpc::connect_first`]: staggered by [`FAILOVER_STAGGER`], first to
/// answer wins, a refusal is final. Members dialled before the winner (that
/// had not answered) are remembered as down.
async fn connect_any(ctx: &Context, avoid: &[String]) -> Result<(Session, String), RpcError> {
    let mut reach = if ctx.local {
        Reach::default()
    } else {
        Reach::load(&ctx.name)
    };
    let ordered = reach.order(&ctx.addresses(), now_ms());
    let (first, last): (Vec<String>, Vec<String>) =
        ordered.into_iter().partition(|a| !avoid.contains(a));
    let addrs: Vec<String> = first.into_iter().chain(last).collect();
    let dials: Vec<Dial> = addrs.iter().map(|a| dial(ctx, a)).collect();
    let (session, i) = rpc::connect_first(&dials, FAILOVER_STAGGER, FAILOVER_DEADLINE).await?;
    let mut changed = reach.answered(&addrs[i]);
    if i > 0 {
        tracing::info!(from = %addrs[0], to = %addrs[i], "the first member dialled did not answer; using another");
        // Dialled earlier and silent (or failed): down for a while.
        for a in &addrs[..i] {
            if !avoid.contains(a) {
                reach.down(a, now_ms());
                changed = true;
            }
        }
    }
    if changed && !ctx.local {
        reach.save(&ctx.name);
    }
    Ok((session, addrs[i].clone()))
}

/// Ask the node for the members and store their addresses in the context
/// when they changed. Best effort: a failure here never fails the command.
async fn refresh_members(ctx: &Context, session: &Session) {
    let Ok(ClientResponse::ServerInfo(info)) =
        rpc::call(&session.conn, &ClientRequest::ServerInfo).await
    else {
        return;
    };
    let mut members: Vec<String> = info
        .members
        .into_iter()
        .map(|(_, addr)| addr)
        .filter(|a| *a != ctx.address)
        .collect();
    members.sort();
    if members.is_empty() || members == ctx.members {
        return;
    }
    // Only a saved context is updated (not one being created).
    let Ok(mut saved) = context::load(&ctx.name) else {
        return;
    };
    if saved.address != ctx.address || saved.ca_fingerprint != ctx.ca_fingerprint {
        return;
    }
    saved.members = members;
    if let Err(e) = context::save(&saved, true) {
        tracing::debug!(error = %e, "could not save the refreshed member list");
    }
}
