//! Multi-node clusters in one process, over real QUIC on loopback: join,
//! writes and linearizable reads through any node, leader failover, peer
//! authentication, removal, and a joined node's restart.

mod common;
use common::{call, connect, var};
use std::net::SocketAddr;
use std::time::Duration;

use cairn_node::{Node, NodeConfig};
use cairn_protocol::api::{ClientRequest, ClientResponse, MemberInfo, MemberRole};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::{self, CertifiedKey, TransportLimits};
use cairn_protocol::rpc::{self, Dial, RpcError, Session};
use cairn_protocol::types::{ConfigScope, TokenScope};
use tempfile::TempDir;

/// Generous bound for anything that should happen "soon" on a loaded box.
const SOON: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Poll `f` until it returns `Some`, at most `SOON`.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually(what, SOON, f).await
}

/// One node of the harness: its data dir and config outlive restarts.
struct Member {
    dir: TempDir,
    cfg: NodeConfig,
    node: Option<Node>,
}

impl Member {
    fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    fn addr(&self) -> SocketAddr {
        self.cfg.listen
    }

    fn id(&self) -> u64 {
        self.node().ctx.identity.node_id
    }

    async fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.stop().await;
        }
    }

    /// Start again on the same address and data dir (retrying while the old
    /// socket is still being released).
    async fn restart(&mut self) {
        let cfg = self.cfg.clone();
        let node = eventually("node restarts on its old address", || {
            let cfg = cfg.clone();
            async move {
                match cairn_node::start(cfg).await {
                    Ok(n) => Some(n),
                    Err(cairn_node::NodeError::Bind { .. }) => None,
                    Err(e) => panic!("restart failed: {e}"),
                }
            }
        })
        .await;
        self.node = Some(node);
    }
}

struct Cluster {
    members: Vec<Member>,
    ca_fingerprint: String,
    user_token: String,
}

fn config(dir: &TempDir) -> NodeConfig {
    NodeConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"))
}

impl Cluster {
    /// Bootstrap one node and join `n - 1` more (each through the previous
    /// node, so joins through followers are exercised too).
    async fn start(n: usize) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(&dir);
        let first = cairn_node::start(cfg.clone()).await.expect("first node");
        cfg.listen = first.addr;
        let ca_fingerprint = first.ca_fingerprint.clone();
        let boot = first.bootstrap_token.clone().expect("bootstrap token");
        let user_token = common::user_token(first.addr, &ca_fingerprint, &boot).await;
        let mut cluster = Cluster {
            members: vec![Member {
                dir,
                cfg,
                node: Some(first),
            }],
            ca_fingerprint,
            user_token,
        };
        for i in 1..n {
            let via = cluster.members[i - 1].addr();
            cluster.join(via).await;
        }
        cluster
    }

    async fn join_token(&self) -> String {
        let s = self.client(0).await;
        match call(
            &s,
            ClientRequest::CreateToken {
                scope: TokenScope::Join,
                name: "test".into(),
                ttl_s: None,
            },
        )
        .await
        {
            ClientResponse::Token { token } => token,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn join(&mut self, via: SocketAddr) {
        let token = self.join_token().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(&dir);
        cfg.join = Some(via.to_string());
        cfg.join_token = Some(token);
        cfg.join_ca = Some(self.ca_fingerprint.clone());
        let node = cairn_node::start(cfg.clone()).await.expect("node joins");
        assert_eq!(node.ca_fingerprint, self.ca_fingerprint);
        cfg.listen = node.addr;
        self.members.push(Member {
            dir,
            cfg,
            node: Some(node),
        });
    }

    /// A user session on member `i`.
    async fn client(&self, i: usize) -> Session {
        connect(
            self.members[i].addr(),
            &self.ca_fingerprint,
            &self.user_token,
        )
        .await
        .expect("user connects")
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.node.is_some())
    }

    /// The member index of the leader all running members agree on.
    async fn leader(&self) -> usize {
        eventually("running members agree on a leader", || async {
            let ids: Vec<Option<u64>> = self
                .running()
                .map(|(_, m)| m.node().ctx.raft.metrics().current_leader)
                .collect();
            let first = ids.first().copied().flatten()?;
            if ids.iter().any(|l| *l != Some(first)) {
                return None;
            }
            self.running()
                .find(|(_, m)| m.id() == first)
                .map(|(i, _)| i)
        })
        .await
    }

    async fn stop_all(mut self) {
        for m in &mut self.members {
            m.stop().await;
        }
    }
}

async fn set(s: &Session, name: &str, value: &str) {
    let r = call(
        s,
        ClientRequest::SetConfig {
            var: var(name, value),
        },
    )
    .await;
    assert_eq!(r, ClientResponse::Ok);
}

/// A linearizable read of project `p`'s config through `s`.
async fn get_all(s: &Session) -> Vec<(String, String)> {
    match call(
        s,
        ClientRequest::ListConfig {
            scope: Some(ConfigScope::Project("p".into())),
        },
    )
    .await
    {
        ClientResponse::Config(vars) => vars.into_iter().map(|v| (v.name, v.value)).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn members(s: &Session) -> Vec<MemberInfo> {
    match call(s, ClientRequest::Members).await {
        ClientResponse::Members(m) => m,
        other => panic!("unexpected {other:?}"),
    }
}

fn local_value(m: &Member, name: &str) -> Option<String> {
    m.node().ctx.raft.read_local(|s| {
        s.config
            .get(&(ConfigScope::Project("p".into()), name.to_string()))
            .map(|v| v.value.clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_serve_writes_and_reads_through_any_node_and_survive_the_leader() {
    let mut c = Cluster::start(3).await;

    // Every member sees three voters and one leader, whichever it is asked.
    let ids: Vec<u64> = c.members.iter().map(|m| m.id()).collect();
    for i in 0..3 {
        let s = c.client(i).await;
        let ms = members(&s).await;
        assert_eq!(ms.len(), 3, "{ms:?}");
        assert!(ms.iter().all(|m| m.role == MemberRole::Voter), "{ms:?}");
        assert_eq!(ms.iter().filter(|m| m.leader).count(), 1, "{ms:?}");
        for id in &ids {
            assert!(ms.iter().any(|m| m.id == *id), "{id:x} missing in {ms:?}");
        }
    }

    // A write through each node is visible through every node, at once
    // (reads are linearizable, even on followers).
    for i in 0..3 {
        let s = c.client(i).await;
        set(&s, &format!("k{i}"), &format!("v{i}")).await;
        for j in 0..3 {
            let all = get_all(&c.client(j).await).await;
            for w in 0..=i {
                assert!(
                    all.contains(&(format!("k{w}"), format!("v{w}"))),
                    "node {j} misses k{w} after a write through node {i}: {all:?}"
                );
            }
        }
    }

    // Kill the leader: the survivors elect another and keep taking writes.
    let old = c.leader().await;
    let old_id = c.members[old].id();
    c.members[old].stop().await;
    let new = c.leader().await;
    assert_ne!(c.members[new].id(), old_id);
    let survivors: Vec<usize> = c.running().map(|(i, _)| i).collect();
    assert_eq!(survivors.len(), 2);
    for &i in &survivors {
        set(&c.client(i).await, &format!("after-{i}"), "yes").await;
    }
    let want: Vec<(String, String)> = survivors
        .iter()
        .map(|i| (format!("after-{i}"), "yes".to_string()))
        .collect();
    for &i in &survivors {
        let all = get_all(&c.client(i).await).await;
        assert!(want.iter().all(|w| all.contains(w)), "{all:?}");
    }

    // The old leader comes back with its identity and catches up by itself.
    c.members[old].restart().await;
    assert_eq!(c.members[old].id(), old_id, "same identity after restart");
    let all = get_all(&c.client(old).await).await;
    assert!(want.iter().all(|w| all.contains(w)), "{all:?}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_joined_node_keeps_its_identity_and_rejoins() {
    let mut c = Cluster::start(3).await;
    let id = c.members[2].id();
    c.members[2].stop().await;
    set(&c.client(0).await, "while-down", "1").await;
    // With one of three down, removing another would leave no working
    // quorum: refused (instead of hanging every write). First wait until the
    // leader no longer counts the stopped node as up.
    let other = c.members[1].id();
    eventually("the leader sees the stopped node as silent", || async {
        let ms = members(&c.client(0).await).await;
        ms.iter()
            .find(|m| m.id == id)
            .and_then(|m| m.last_contact_ms)
            .filter(|ms| *ms > 1500)
    })
    .await;
    match rpc::call(
        &c.client(0).await.conn,
        &ClientRequest::RemoveMember { id: other },
    )
    .await
    {
        Err(RpcError::Remote(m)) => assert!(m.contains("not a majority"), "{m}"),
        r => panic!("expected a refusal, got {r:?}"),
    }

    // No join flags now: the node knows its cluster from its own Raft log.
    c.members[2].cfg.join = None;
    c.members[2].cfg.join_token = None;
    c.members[2].cfg.join_ca = None;
    c.members[2].restart().await;
    assert_eq!(c.members[2].id(), id);
    assert!(
        !c.members[2].dir.path().join("ca-key.pem").exists(),
        "a joined node holds no CA key file"
    );
    eventually("the restarted node catches up", || async {
        local_value(&c.members[2], "while-down").filter(|v| v == "1")
    })
    .await;
    // It serves writes again (forwarded to the leader).
    set(&c.client(2).await, "after-restart", "2").await;
    assert!(get_all(&c.client(0).await)
        .await
        .contains(&("after-restart".into(), "2".into())));
    let ms = members(&c.client(2).await).await;
    assert_eq!(ms.len(), 3, "{ms:?}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_stops_receiving_and_is_refused_as_a_peer() {
    let c = Cluster::start(3).await;
    set(&c.client(0).await, "before", "1").await;
    let victim = if c.leader().await == 2 { 1 } else { 2 };
    let victim_id = c.members[victim].id();
    eventually("the victim has the first write", || async {
        local_value(&c.members[victim], "before")
    })
    .await;

    let r = call(
        &c.client(0).await,
        ClientRequest::RemoveMember { id: victim_id },
    )
    .await;
    assert_eq!(r, ClientResponse::Ok);
    let ms = members(&c.client(0).await).await;
    assert_eq!(ms.len(), 2, "{ms:?}");
    assert!(ms.iter().all(|m| m.id != victim_id), "{ms:?}");

    // The two remaining nodes are a quorum of the new membership.
    set(&c.client(0).await, "after", "2").await;
    for (i, m) in c.running() {
        if i != victim {
            eventually("a remaining member has the new write", || async {
                local_value(m, "after")
            })
            .await;
        }
    }
    // Give replication ample time to (wrongly) reach the removed node.
    set(&c.client(0).await, "after-2", "3").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(local_value(&c.members[victim], "after"), None);
    assert_eq!(local_value(&c.members[victim], "after-2"), None);

    // Its certificate no longer admits it to the peer ALPN.
    let victim_cert = c.members[victim].node().ctx.identity.cert.clone();
    match peer_dial(&c, 0, Some(victim_cert)).await {
        Err(RpcError::Refused(reason)) => assert!(reason.contains("removed"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.stop_all().await;
}

async fn peer_dial(
    c: &Cluster,
    i: usize,
    identity: Option<CertifiedKey>,
) -> Result<Session, RpcError> {
    rpc::connect(&Dial {
        addr: c.members[i].addr().to_string(),
        ca_fingerprint: c.ca_fingerprint.clone(),
        identity,
        role: Role::Peer,
        token: String::new(),
        agent: "intruder".into(),
        limits: TransportLimits::DEFAULT,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_alpn_refuses_anything_but_a_cluster_node_certificate() {
    let c = Cluster::start(1).await;

    // No certificate (a user token does not help).
    match peer_dial(&c, 0, None).await {
        Err(RpcError::Refused(reason)) => {
            assert!(reason.contains("node certificate"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A certificate from another CA fails the TLS handshake.
    let other = pki::Ca::generate("other").expect("ca");
    let foreign = other
        .issue_node(&pki::node_common_name(42), &[])
        .expect("cert");
    // (TLS 1.3: the client may learn it only when its hello stream is cut,
    // so the error takes several forms; what matters is that it is refused.)
    let r = peer_dial(&c, 0, Some(foreign)).await;
    assert!(r.is_err(), "a foreign certificate was accepted");

    // A certificate from this CA that names no node (e.g. a runner's).
    let ca = c.members[0]
        .node()
        .ctx
        .identity
        .ca
        .clone()
        .expect("the bootstrap node has the CA key");
    let (csr, key_pem) = pki::make_csr("runner").expect("csr");
    let cert_pem = ca.sign_csr(&csr, "runner:r1").expect("signed");
    match peer_dial(&c, 0, Some(CertifiedKey { cert_pem, key_pem })).await {
        Err(RpcError::Refused(reason)) => {
            assert!(reason.contains("node certificate"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A real node certificate of this cluster is admitted, but a malformed
    // request gets a refusal and its connection is closed; the node lives on.
    let (csr, key_pem) = pki::make_csr("n").expect("csr");
    let cert_pem = ca
        .sign_csr(&csr, &pki::node_common_name(0x5eed))
        .expect("signed");
    let s = peer_dial(&c, 0, Some(CertifiedKey { cert_pem, key_pem }))
        .await
        .expect("a node certificate is admitted");
    assert_eq!(s.principal, "node:5eed");
    let (mut send, mut recv) = s.conn.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .expect("write");
    let _ = send.finish();
    let answer = tokio::time::timeout(SOON, cairn_protocol::frame::read_required(&mut recv))
        .await
        .expect("answered");
    let answer: cairn_node::peer::PeerResponse = answer.expect("a frame");
    assert!(
        matches!(answer, cairn_node::peer::PeerResponse::Refused(ref r) if r.contains("bad request")),
        "{answer:?}"
    );
    tokio::time::timeout(SOON, s.conn.closed())
        .await
        .expect("the node closes the connection");
    // A non-member node may not use the leader's services.
    let (csr, key_pem) = pki::make_csr("n").expect("csr");
    let cert_pem = ca
        .sign_csr(&csr, &pki::node_common_name(0x5eee))
        .expect("signed");
    let s = peer_dial(&c, 0, Some(CertifiedKey { cert_pem, key_pem }))
        .await
        .expect("admitted");
    let (mut send, mut recv) = s.conn.open_bi().await.expect("stream");
    let req = cairn_node::peer::PeerRequest::Leader(cairn_node::peer::LeaderRequest::Members);
    cairn_protocol::frame::write(&mut send, &req)
        .await
        .expect("write");
    let _ = send.finish();
    let answer: cairn_node::peer::PeerResponse = cairn_protocol::frame::read_required(&mut recv)
        .await
        .expect("answer");
    assert!(
        matches!(
            answer,
            cairn_node::peer::PeerResponse::Leader(cairn_node::peer::LeaderResponse::Unavailable(
                ref r
            )) if r.contains("not a member")
        ),
        "{answer:?}"
    );
    assert!(
        get_all(&c.client(0).await).await.is_empty(),
        "still serving"
    );

    // A join token opens a connection that can do nothing but join.
    let token = c.join_token().await;
    let s = connect(c.members[0].addr(), &c.ca_fingerprint, &token)
        .await
        .expect("join token connects");
    match rpc::call(&s.conn, &ClientRequest::ListJobs { limit: 1 }).await {
        Err(RpcError::Remote(m)) => assert!(m.contains("join token"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_with_a_bad_token_or_the_wrong_ca_fails_cleanly() {
    let c = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&dir);
    cfg.join = Some(c.members[0].addr().to_string());
    cfg.join_token = Some("cairn_join_nope".into());
    cfg.join_ca = Some(c.ca_fingerprint.clone());
    let err = cairn_node::start(cfg.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("not valid"), "{err}");
    assert!(!dir.path().join("node.json").exists(), "no identity stored");

    // A user token is not a join token.
    cfg.join_token = Some(c.user_token.clone());
    let err = cairn_node::start(cfg.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("join token"), "{err}");

    cfg.join_token = Some(c.join_token().await);
    cfg.join_ca = Some(
        pki::Ca::generate("x")
            .expect("ca")
            .fingerprint()
            .expect("fp"),
    );
    let err = cairn_node::start(cfg).await.err().expect("refused");
    assert!(
        err.to_string().contains("fingerprint") || err.to_string().contains("certificate"),
        "{err}"
    );
    c.stop_all().await;
}

/// Issue 13, item 3: a join token used to admit any number of nodes for
/// 24 h. Now it admits one (two nodes racing with one token: one joins, the
/// other is refused and stores no identity) and expires after minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_admits_one_node_and_expires() {
    let c = Cluster::start(1).await;
    let token = c.join_token().await;
    let via = c.members[0].addr().to_string();
    let joiner = |token: String| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(&dir);
        cfg.join = Some(via.clone());
        cfg.join_token = Some(token);
        cfg.join_ca = Some(c.ca_fingerprint.clone());
        (dir, cfg)
    };
    let (dir_a, cfg_a) = joiner(token.clone());
    let (dir_b, cfg_b) = joiner(token);
    let (a, b) = tokio::join!(cairn_node::start(cfg_a), cairn_node::start(cfg_b));
    let (joined, refused, refused_dir) = match (a, b) {
        (Ok(n), Err(e)) => (n, e, dir_b),
        (Err(e), Ok(n)) => (n, e, dir_a),
        (Ok(_), Ok(_)) => panic!("one join token admitted two nodes"),
        (Err(a), Err(b)) => panic!("neither joined: {a}; {b}"),
    };
    assert!(
        refused.to_string().contains("used already") || refused.to_string().contains("not valid"),
        "{refused}"
    );
    assert!(
        !refused_dir.path().join("node.json").exists(),
        "the refused node stored an identity"
    );
    assert_eq!(joined.ca_fingerprint, c.ca_fingerprint);

    // A token whose lifetime ended admits nobody.
    let s = c.client(0).await;
    let ClientResponse::Token { token: short } = call(
        &s,
        ClientRequest::CreateToken {
            scope: TokenScope::Join,
            name: "short".into(),
            ttl_s: Some(1),
        },
    )
    .await
    else {
        panic!("no token")
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (dir_c, cfg_c) = joiner(short);
    let err = cairn_node::start(cfg_c)
        .await
        .err()
        .expect("expired token refused");
    assert!(err.to_string().contains("not valid"), "{err}");
    assert!(!dir_c.path().join("node.json").exists());
    // The default lifetime is minutes, not a day.
    let tokens = c.members[0]
        .node
        .as_ref()
        .expect("running")
        .ctx
        .raft
        .read_local(|st| st.tokens.values().cloned().collect::<Vec<_>>());
    let default = tokens
        .iter()
        .find(|t| t.scope == TokenScope::Join && t.name == "test")
        .expect("the first join token");
    let ttl = default.expires_ms.expect("expires") - default.created_ms;
    assert_eq!(ttl, cairn_node::services::cluster::JOIN_TOKEN_TTL_S * 1000);
    assert!(ttl <= 15 * 60 * 1000, "{ttl}");
    joined.stop().await;
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_write_retried_through_another_node_applies_once() {
    let c = Cluster::start(3).await;
    let spec = cairn_protocol::types::JobSpec::example();
    let queue = ClientRequest::QueueJob { spec }.idempotent(0xc1, 1);
    let first = call(&c.client(0).await, queue.clone()).await;
    let ClientResponse::JobQueued { id } = first else {
        panic!("unexpected {first:?}")
    };
    // The client lost that answer and retries elsewhere: same answer.
    assert_eq!(call(&c.client(1).await, queue.clone()).await, first);
    assert_eq!(call(&c.client(2).await, queue).await, first);
    let jobs = match call(&c.client(0).await, ClientRequest::ListJobs { limit: 0 }).await {
        ClientResponse::Jobs(j) => j,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].id, id);

    // Reads cannot be wrapped.
    let r = rpc::call(
        &c.client(0).await.conn,
        &ClientRequest::ListJobs { limit: 0 }.idempotent(0xc1, 2),
    )
    .await;
    assert!(matches!(r, Err(RpcError::Remote(_))), "{r:?}");
    c.stop_all().await;
}

/// A fake runner on a client connection to member `i`: registered, and
/// answering offers through the returned channel of offer streams.
async fn fake_runner(
    c: &Cluster,
    i: usize,
    id: &str,
) -> (
    Session,
    (quinn::SendStream, quinn::RecvStream),
    tokio::sync::mpsc::UnboundedReceiver<(quinn::SendStream, quinn::RecvStream)>,
) {
    fake_runner_with(c, i, id, None).await
}

/// [`fake_runner`], registered with `status` (`RegisterRunnerWith`) when given.
async fn fake_runner_with(
    c: &Cluster,
    i: usize,
    id: &str,
    status: Option<cairn_protocol::api::RunnerStatus>,
) -> (
    Session,
    (quinn::SendStream, quinn::RecvStream),
    tokio::sync::mpsc::UnboundedReceiver<(quinn::SendStream, quinn::RecvStream)>,
) {
    use cairn_protocol::frame;
    let s = c.client(i).await;
    let kind = cairn_protocol::types::RunnerKind::Agent;
    let req = match status {
        Some(status) => ClientRequest::RegisterRunnerWith {
            id: id.into(),
            kind,
            labels: Default::default(),
            status,
        },
        None => ClientRequest::RegisterRunner {
            id: id.into(),
            kind,
            labels: Default::default(),
        },
    };
    let (send, mut recv) = rpc::open(&s.conn, &req).await.expect("register");
    let r: ClientResponse = frame::read_required(&mut recv).await.expect("registered");
    assert_eq!(r, ClientResponse::Registered);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let conn = s.conn.clone();
    tokio::spawn(async move {
        while let Ok(st) = conn.accept_bi().await {
            if tx.send(st).is_err() {
                return;
            }
        }
    });
    (s, (send, recv), rx)
}

fn spec_for(app: &str, runner: &str) -> cairn_protocol::types::JobSpec {
    let mut spec = cairn_protocol::types::JobSpec::example();
    spec.app = app.into();
    spec.target = cairn_protocol::types::RunnerTarget::Id(runner.into());
    spec
}

async fn job_of(s: &Session, id: u64) -> cairn_protocol::types::Job {
    match call(s, ClientRequest::InspectJob { id }).await {
        ClientResponse::Job(j) => *j,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_survive_a_leader_change_running_ones_fail_once_queued_ones_run_once() {
    use cairn_protocol::api::{JobEvent, NodeToRunner, RunnerToNode};
    use cairn_protocol::frame;
    use cairn_protocol::types::JobState;

    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;

    // Job 1 runs on runner r1, connected to the leader.
    let (_r1, _reg1, mut offers1) = fake_runner(&c, leader, "r1").await;
    let s = c.client(follower).await;
    let ClientResponse::JobQueued { id: running } = call(
        &s,
        ClientRequest::QueueJob {
            spec: spec_for("a", "r1"),
        },
    )
    .await
    else {
        panic!("not queued")
    };
    let (mut osend, mut orecv) = tokio::time::timeout(SOON, offers1.recv())
        .await
        .expect("offered in time")
        .expect("an offer");
    let NodeToRunner::Offer { job } = frame::read_required(&mut orecv).await.expect("offer") else {
        panic!("not an offer")
    };
    assert_eq!(job.id, running);
    frame::write(&mut osend, &RunnerToNode::Accept)
        .await
        .expect("accept");
    let started: NodeToRunner = frame::read_required(&mut orecv).await.expect("started");
    assert!(
        matches!(
            started,
            NodeToRunner::Started | NodeToRunner::StartedWithLease { .. }
        ),
        "{started:?}"
    );
    assert_eq!(job_of(&s, running).await.state, JobState::Running);

    // Job 2 waits for runner r2, which is not connected yet.
    let ClientResponse::JobQueued { id: queued } = call(
        &s,
        ClientRequest::QueueJob {
            spec: spec_for("b", "r2"),
        },
    )
    .await
    else {
        panic!("not queued")
    };

    // A client follows job 1 through the follower.
    let (_asend, mut arecv) = rpc::open(
        &c.client(follower).await.conn,
        &ClientRequest::AttachJob { id: running },
    )
    .await
    .expect("attach");
    let first: ClientResponse = frame::read_required(&mut arecv).await.expect("job");
    assert!(matches!(first, ClientResponse::Job(_)), "{first:?}");

    // The leader dies with r1's job stream.
    c.members[leader].stop().await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);

    // Job 1 fails once, with the reason, and the follower's attach ends.
    let s = c.client(follower).await;
    let j = eventually("the running job is failed by the new leader", || async {
        Some(job_of(&s, running).await).filter(|j| j.state.is_final())
    })
    .await;
    assert_eq!(j.state, JobState::Error);
    let reason = j.error.clone().unwrap_or_default();
    assert!(reason.contains("leader change"), "{reason}");
    let finished = tokio::time::timeout(SOON, async {
        loop {
            match frame::read_required::<_, JobEvent>(&mut arecv).await {
                Ok(JobEvent::Finished { state, error }) => return (state, error),
                Ok(_) => continue,
                Err(e) => panic!("attach stream broke: {e}"),
            }
        }
    })
    .await
    .expect("the attach stream ends");
    assert_eq!(finished.0, JobState::Error);

    // Job 2 is still queued, and runs once r2 connects to the new leader.
    assert_eq!(job_of(&s, queued).await.state, JobState::Queued);
    let (_r2, _reg2, mut offers2) = fake_runner(&c, new_leader, "r2").await;
    let (mut osend, mut orecv) = tokio::time::timeout(SOON, offers2.recv())
        .await
        .expect("offered in time")
        .expect("an offer");
    let NodeToRunner::Offer { job } = frame::read_required(&mut orecv).await.expect("offer") else {
        panic!("not an offer")
    };
    assert_eq!(job.id, queued);
    frame::write(&mut osend, &RunnerToNode::Accept)
        .await
        .expect("accept");
    let started: NodeToRunner = frame::read_required(&mut orecv).await.expect("started");
    assert!(
        matches!(
            started,
            NodeToRunner::Started | NodeToRunner::StartedWithLease { .. }
        ),
        "{started:?}"
    );
    frame::write(
        &mut osend,
        &RunnerToNode::Done {
            state: JobState::Success,
            error: None,
        },
    )
    .await
    .expect("done");
    let j = eventually("the queued job ran", || async {
        Some(job_of(&s, queued).await).filter(|j| j.state.is_final())
    })
    .await;
    assert_eq!(j.state, JobState::Success);
    // Nothing was offered twice.
    assert!(offers1.try_recv().is_err());
    assert!(offers2.try_recv().is_err());
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_serve_writes_with_two_down_and_nodes_leave_gracefully() {
    let mut c = Cluster::start(5).await;
    let leader = c.leader().await;
    let down: Vec<usize> = (0..5).filter(|i| *i != leader).take(2).collect();
    for &i in &down {
        c.members[i].stop().await;
    }
    // Three of five: still a quorum.
    for (i, _) in c.running().collect::<Vec<_>>() {
        set(&c.client(i).await, &format!("two-down-{i}"), "1").await;
    }
    for &i in &down {
        c.members[i].restart().await;
    }
    for &i in &down {
        eventually("a restarted node catches up", || async {
            local_value(&c.members[i], &format!("two-down-{leader}"))
        })
        .await;
    }

    // Two nodes leave on their own (as on SIGTERM): three voters remain.
    for &i in &down {
        let n = c.members[i].node.take().expect("running");
        n.leave().await.expect("leaves");
        n.stop().await;
    }
    let ms = members(&c.client(leader).await).await;
    assert_eq!(ms.len(), 3, "{ms:?}");
    set(&c.client(leader).await, "after-leave", "1").await;

    // A node that left comes back by itself (it was not revoked).
    let back = down[0];
    c.members[back].restart().await;
    let ms = eventually("the node that left is a voter again", || async {
        let ms = members(&c.client(leader).await).await;
        (ms.len() == 4 && ms.iter().all(|m| m.role == MemberRole::Voter)).then_some(ms)
    })
    .await;
    assert!(ms.iter().any(|m| m.id == c.members[back].id()), "{ms:?}");
    set(&c.client(back).await, "back", "1").await;
    c.stop_all().await;
}

// ---- Runners connected to followers: reports to the leader, relayed offers.

type OfferStreams = tokio::sync::mpsc::UnboundedReceiver<(quinn::SendStream, quinn::RecvStream)>;

async fn queue_job(s: &Session, spec: cairn_protocol::types::JobSpec) -> u64 {
    match call(s, ClientRequest::QueueJob { spec }).await {
        ClientResponse::JobQueued { id } => id,
        other => panic!("not queued: {other:?}"),
    }
}

/// The next offer must be job `id`: accept it and wait for `Started`.
async fn accept_offer(
    offers: &mut OfferStreams,
    id: u64,
) -> (quinn::SendStream, quinn::RecvStream) {
    use cairn_protocol::api::{NodeToRunner, RunnerToNode};
    use cairn_protocol::frame;
    let (mut osend, mut orecv) = tokio::time::timeout(SOON, offers.recv())
        .await
        .expect("offered in time")
        .expect("an offer");
    let NodeToRunner::Offer { job } = frame::read_required(&mut orecv).await.expect("offer") else {
        panic!("not an offer")
    };
    assert_eq!(job.id, id, "offered another job");
    frame::write(&mut osend, &RunnerToNode::Accept)
        .await
        .expect("accept");
    let started: NodeToRunner = tokio::time::timeout(SOON, frame::read_required(&mut orecv))
        .await
        .expect("started in time")
        .expect("started");
    // A runner that speaks this protocol gets a lease (these tests end their
    // jobs well within it).
    assert!(
        matches!(
            started,
            NodeToRunner::Started | NodeToRunner::StartedWithLease { .. }
        ),
        "{started:?}"
    );
    (osend, orecv)
}

/// End an accepted job with `state`, as a runner does.
async fn send_done(osend: &mut quinn::SendStream, state: cairn_protocol::types::JobState) {
    cairn_protocol::frame::write(
        osend,
        &cairn_protocol::api::RunnerToNode::Done { state, error: None },
    )
    .await
    .expect("done");
    osend.finish().expect("finish");
}

/// Attach to job `id` through member `i`; the first frame (the record) is read.
async fn attach(c: &Cluster, i: usize, id: u64) -> (Session, quinn::SendStream, quinn::RecvStream) {
    let s = c.client(i).await;
    let (send, mut recv) = rpc::open(&s.conn, &ClientRequest::AttachJob { id })
        .await
        .expect("attach");
    let first: ClientResponse = cairn_protocol::frame::read_required(&mut recv)
        .await
        .expect("job record");
    assert!(matches!(first, ClientResponse::Job(_)), "{first:?}");
    (s, send, recv)
}

/// Every event of an attach stream up to `Finished`, and the end it gives.
async fn events_until_finished(
    recv: &mut quinn::RecvStream,
) -> (
    Vec<cairn_protocol::api::JobEvent>,
    cairn_protocol::types::JobState,
    Option<String>,
) {
    use cairn_protocol::api::JobEvent;
    tokio::time::timeout(SOON, async {
        let mut seen = Vec::new();
        loop {
            match cairn_protocol::frame::read_required::<_, JobEvent>(recv).await {
                Ok(JobEvent::Finished { state, error }) => return (seen, state, error),
                Ok(ev) => seen.push(ev),
                Err(e) => panic!("attach stream broke: {e}"),
            }
        }
    })
    .await
    .expect("the attach stream ends")
}

async fn final_job(s: &Session, id: u64) -> cairn_protocol::types::Job {
    eventually("the job ends", || async {
        Some(job_of(s, id).await).filter(|j| j.state.is_final())
    })
    .await
}

fn knows(c: &Cluster, on: usize, runner: &str, node: u64) -> bool {
    c.members[on]
        .node()
        .ctx
        .jobs
        .known_runners()
        .iter()
        .any(|r| r.id == runner && r.node == Some(node))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_on_a_follower_gets_its_job_relayed_and_clients_see_its_events() {
    use cairn_protocol::api::{JobEvent, NodeToRunner, RunnerToNode};
    use cairn_protocol::frame;
    use cairn_protocol::types::{JobState, Stream};

    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let relay = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let (runner, _reg, mut offers) = fake_runner(&c, relay, "rf").await;

    // A client on the other follower queues a job for the runner.
    let s = c.client(other).await;
    let id = queue_job(&s, spec_for("web", "rf")).await;
    let (_al, _alsend, mut at_leader) = attach(&c, leader, id).await;
    let (_ar, _arsend, mut at_relay) = attach(&c, relay, id).await;
    let (_ao, _aosend, mut at_other) = attach(&c, other, id).await;

    let (mut osend, mut orecv) = accept_offer(&mut offers, id).await;
    // At once, on its own node (which may not have applied the assignment
    // yet), the runner records an operation for the job.
    let op = call(
        &runner,
        ClientRequest::BeginOperation {
            job_id: id,
            kind: cairn_protocol::types::OpKind::Build,
            plugin: "files".into(),
            input_seq: None,
        },
    )
    .await;
    assert!(
        matches!(op, ClientResponse::OperationStarted { .. }),
        "{op:?}"
    );
    assert_eq!(job_of(&s, id).await.state, JobState::Running);
    for line in ["hello from rf", "still here"] {
        let ev = JobEvent::Output {
            step: 1,
            stream: Stream::Stdout,
            line: line.into(),
        };
        frame::write(&mut osend, &RunnerToNode::Event(ev))
            .await
            .expect("event");
    }
    send_done(&mut osend, JobState::Success).await;
    // The job stream ends cleanly on the runner's side too.
    let end = tokio::time::timeout(SOON, frame::read::<_, NodeToRunner>(&mut orecv))
        .await
        .expect("the job stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");

    let lines = |evs: &[JobEvent]| -> Vec<String> {
        evs.iter()
            .filter_map(|e| match e {
                JobEvent::Output { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    };
    // The leader drives the job; the relay node passes the events through
    // its own hub: clients attached to either see them.
    for (name, recv) in [("leader", &mut at_leader), ("relay", &mut at_relay)] {
        let (evs, state, error) = events_until_finished(recv).await;
        assert_eq!(
            lines(&evs),
            ["hello from rf", "still here"],
            "{name}: {evs:?}"
        );
        assert!(
            evs.iter().any(|e| matches!(
                e,
                JobEvent::State {
                    state: JobState::Running,
                    ..
                }
            )),
            "{name}: {evs:?}"
        );
        assert_eq!((state, error), (JobState::Success, None), "{name}");
    }
    // A third node knows the end from the record.
    let (_, state, _) = events_until_finished(&mut at_other).await;
    assert_eq!(state, JobState::Success);

    let j = final_job(&s, id).await;
    assert_eq!(j.state, JobState::Success, "{j:?}");
    assert_eq!(j.runner.as_deref(), Some("rf"));
    assert!(offers.try_recv().is_err(), "offered once");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_learns_the_followers_runners_from_their_reports() {
    use cairn_protocol::types::JobState;

    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let a = (leader + 1) % 3;
    let b = (leader + 2) % 3;
    let (_ra, _rega, mut offers_a) = fake_runner(&c, a, "ra").await;
    let (_rb, _regb, mut offers_b) = fake_runner(&c, b, "rb").await;
    let (a_id, b_id) = (c.members[a].id(), c.members[b].id());
    eventually("the leader knows both runners", || async {
        (knows(&c, leader, "ra", a_id) && knows(&c, leader, "rb", b_id)).then_some(())
    })
    .await;

    // The leader goes away while nothing runs.
    c.members[leader].stop().await;
    let new_leader = c.leader().await;
    assert!(new_leader == a || new_leader == b);
    // The runner on the node that did not become leader is remote for the
    // new leader: it knows it only from that node's reports.
    let (far, far_id, runner, offers, idle) = if new_leader == a {
        (b, b_id, "rb", &mut offers_b, &mut offers_a)
    } else {
        (a, a_id, "ra", &mut offers_a, &mut offers_b)
    };
    let s = c.client(far).await;
    let id = queue_job(&s, spec_for("after-failover", runner)).await;
    let (mut osend, _orecv) = accept_offer(offers, id).await;
    assert!(knows(&c, new_leader, runner, far_id));
    send_done(&mut osend, JobState::Success).await;
    let j = final_job(&s, id).await;
    assert_eq!(j.state, JobState::Success, "{j:?}");
    assert_eq!(j.runner.as_deref(), Some(runner));
    assert!(idle.try_recv().is_err(), "the other runner got no offer");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offer_relayed_to_a_runner_that_just_left_fails_with_the_reason() {
    use cairn_protocol::api::{NodeToRunner, RunnerToNode};
    use cairn_protocol::frame;
    use cairn_protocol::types::JobState;

    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let relay = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let relay_id = c.members[relay].id();
    let (gone, gone_reg, _gone_offers) = fake_runner(&c, relay, "r-gone").await;
    let (_n, _nreg, mut next_offers) = fake_runner(&c, relay, "r-next").await;
    eventually("the leader knows both runners", || async {
        (knows(&c, leader, "r-gone", relay_id) && knows(&c, leader, "r-next", relay_id))
            .then_some(())
    })
    .await;

    // The relay node's report goes stale: r-gone leaves right before the
    // leader offers it a job.
    c.members[relay].node().ctx.jobs.pause_reports(true);
    gone.conn.close(0u32.into(), b"bye");
    drop(gone_reg);
    eventually("the relay node saw r-gone leave", || async {
        let here = c.members[relay].node().ctx.jobs.connected_runners();
        (!here.iter().any(|r| r == "r-gone")).then_some(())
    })
    .await;
    assert!(
        knows(&c, leader, "r-gone", relay_id),
        "the leader should still hold the stale report"
    );
    let s = c.client(leader).await;
    let failed = queue_job(&s, spec_for("app", "r-gone")).await;
    let j = final_job(&s, failed).await;
    assert_eq!(j.state, JobState::Error, "{j:?}");
    assert_eq!(
        j.error.as_deref(),
        Some(format!("runner r-gone is no longer connected to node {relay_id:x}").as_str())
    );

    // The app is free again, and the next job (another runner, same relay
    // node) runs.
    c.members[relay].node().ctx.jobs.pause_reports(false);
    let next = queue_job(&s, spec_for("app", "r-next")).await;
    let (mut osend, _orecv) = accept_offer(&mut next_offers, next).await;
    send_done(&mut osend, JobState::Success).await;
    assert_eq!(final_job(&s, next).await.state, JobState::Success);

    // r-gone was freed: once back, it gets jobs again. Cancelled through a
    // node that neither drives nor relays it, the cancel still reaches it.
    let (_g, _greg, mut gone_offers) = fake_runner(&c, relay, "r-gone").await;
    let back = queue_job(&s, spec_for("app", "r-gone")).await;
    let (mut osend, mut orecv) = accept_offer(&mut gone_offers, back).await;
    let r = call(
        &c.client(other).await,
        ClientRequest::CancelJob { id: back },
    )
    .await;
    assert_eq!(r, ClientResponse::Ok);
    let cancel: NodeToRunner = tokio::time::timeout(SOON, frame::read_required(&mut orecv))
        .await
        .expect("cancel in time")
        .expect("cancel");
    assert_eq!(cancel, NodeToRunner::Cancel);
    frame::write(
        &mut osend,
        &RunnerToNode::Done {
            state: JobState::Cancelled,
            error: Some("cancelled".into()),
        },
    )
    .await
    .expect("done");
    assert_eq!(final_job(&s, back).await.state, JobState::Cancelled);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_job_outlives_the_leader_its_stream_went_to_and_is_resumed_by_the_next() {
    use cairn_protocol::api::{JobEvent, NodeToRunner, RunnerToNode};
    use cairn_protocol::frame;
    use cairn_protocol::types::{JobState, Stream};

    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let relay = (leader + 1) % 3;
    let (_r, _reg, mut offers) = fake_runner(&c, relay, "rr").await;
    // Like a CLI: runner, queue and attach on the same (follower) node.
    let s = c.client(relay).await;
    let id = queue_job(&s, spec_for("web", "rr")).await;
    let (mut osend, mut orecv) = accept_offer(&mut offers, id).await;
    let said = |line: &str| {
        RunnerToNode::Event(JobEvent::Output {
            step: 1,
            stream: Stream::Stdout,
            line: line.into(),
        })
    };
    frame::write(&mut osend, &said("before"))
        .await
        .expect("an event");

    c.members[leader].stop().await;
    // The relay resets the runner's job stream (its leader is gone).
    let r = tokio::time::timeout(SOON, frame::read::<_, NodeToRunner>(&mut orecv))
        .await
        .expect("the runner's job stream ends");
    assert!(r.is_err(), "expected a broken stream, got {r:?}");

    // The new leader adopts the running job and resumes its stream on the
    // runner's connection, which outlived it (through the relay): not an
    // offer, the job runs once.
    let (mut rsend, mut rrecv) = tokio::time::timeout(SOON, offers.recv())
        .await
        .expect("resumed in time")
        .expect("a stream");
    let first: NodeToRunner = frame::read_required(&mut rrecv).await.expect("resume");
    let NodeToRunner::Resume { job, received } = first else {
        panic!("expected a resume, got {first:?}")
    };
    assert_eq!(job, id);
    // A new leader has none of the job's events: the runner sends them all.
    assert_eq!(received, 0);
    frame::write(&mut rsend, &RunnerToNode::Accept)
        .await
        .expect("accept");
    for m in [
        said("before"),
        said("after"),
        RunnerToNode::Done {
            state: JobState::Success,
            error: None,
        },
    ] {
        frame::write(&mut rsend, &m).await.expect("frame");
    }
    let s = c.client(relay).await;
    let j = final_job(&s, id).await;
    assert_eq!(j.state, JobState::Success, "{j:?}");
    assert!(offers.try_recv().is_err(), "not offered again");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_on_a_follower_holds_as_many_jobs_as_its_capacity() {
    use cairn_protocol::api::{NodeToRunner, RunnerStatus, RunnerToNode};
    use cairn_protocol::frame;
    use cairn_protocol::types::JobState;

    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let relay = (leader + 1) % 3;
    let status = RunnerStatus {
        capacity: 2,
        carrying: Vec::new(),
    };
    let (_r, _reg, mut offers) = fake_runner_with(&c, relay, "wide", Some(status)).await;
    // The leader learns of it from the follower's report (its load).
    eventually("the leader knows the runner", || async {
        knows(&c, leader, "wide", c.members[relay].id()).then_some(())
    })
    .await;
    let s = c.client(leader).await;
    let mut ids = Vec::new();
    for app in ["a", "b", "c"] {
        ids.push(queue_job(&s, spec_for(app, "wide")).await);
    }
    // Two offers (jobs of different apps), taken: the runner holds two.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut osend, mut orecv) = tokio::time::timeout(SOON, offers.recv())
            .await
            .expect("offered in time")
            .expect("an offer");
        let NodeToRunner::Offer { job } = frame::read_required(&mut orecv).await.expect("offer")
        else {
            panic!("not an offer")
        };
        frame::write(&mut osend, &RunnerToNode::Accept)
            .await
            .expect("accept");
        let _started: NodeToRunner = frame::read_required(&mut orecv).await.expect("started");
        held.push((job.id, osend, orecv));
    }
    let mut first_two: Vec<u64> = held.iter().map(|(id, _, _)| *id).collect();
    first_two.sort_unstable();
    assert_eq!(first_two, ids[..2].to_vec());
    // No third while it holds two (reports go every second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(offers.try_recv().is_err(), "a third job was offered");
    assert_eq!(job_of(&s, ids[2]).await.state, JobState::Queued);
    // One ends: the third is offered.
    let (done_id, mut dsend, _drecv) = held.remove(0);
    frame::write(
        &mut dsend,
        &RunnerToNode::Done {
            state: JobState::Success,
            error: None,
        },
    )
    .await
    .expect("done");
    let _ = dsend.finish();
    assert_eq!(final_job(&s, done_id).await.state, JobState::Success);
    let (_tsend, _trecv) = accept_offer(&mut offers, ids[2]).await;
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_back_without_its_job_has_the_job_failed_at_once() {
    use cairn_protocol::api::{NodeToRunner, RunnerToNode};
    use cairn_protocol::frame;
    use cairn_protocol::types::JobState;

    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let relay = (leader + 1) % 3;
    let (_r, _reg, mut offers) = fake_runner(&c, relay, "rb").await;
    let s = c.client(relay).await;
    let id = queue_job(&s, spec_for("web", "rb")).await;
    let (_osend, _orecv) = accept_offer(&mut offers, id).await;
    c.members[leader].stop().await;
    let stopped = std::time::Instant::now();
    // The runner answers the new leader's resume: it does not hold the job
    // (say, it restarted).
    let (mut rsend, mut rrecv) = tokio::time::timeout(SOON, offers.recv())
        .await
        .expect("resumed in time")
        .expect("a stream");
    let first: NodeToRunner = frame::read_required(&mut rrecv).await.expect("resume");
    assert!(
        matches!(first, NodeToRunner::Resume { job, .. } if job == id),
        "{first:?}"
    );
    frame::write(
        &mut rsend,
        &RunnerToNode::Decline {
            reason: "no such job here".into(),
        },
    )
    .await
    .expect("decline");
    let s = c.client(relay).await;
    let j = final_job(&s, id).await;
    assert_eq!(j.state, JobState::Error, "{j:?}");
    let error = j.error.clone().unwrap_or_default();
    assert!(error.contains("leader change"), "{error}");
    assert!(error.contains("no such job here"), "{error}");
    // Not after the whole wait for a runner that never comes back.
    assert!(
        stopped.elapsed() < cairn_node::jobs::RESUME_WINDOW,
        "{:?}",
        stopped.elapsed()
    );
    c.stop_all().await;
}
