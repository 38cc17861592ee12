//! Real `cairn-node` processes, one per network namespace: bootstrap node 1,
//! join the rest, kill -9 / restart, SIGSTOP / SIGCONT. Dropping the
//! cluster kills every process it started (then the network goes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial, Session};
use cairn_protocol::types::TokenScope;

use crate::net::{self, Net};

/// QUIC port every node listens on (inside its own namespace).
pub const PORT: u16 = 9701;
/// How long a node may take to write its ready file.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Environment variable the node reads for a planted bug (test-only hook).
pub const BUG_ENV: &str = "CAIRN_CHAOS_BUG";

pub struct NodeProc {
    pub idx: usize,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub node_id: u64,
    child: Option<Child>,
    pub paused: bool,
    /// This node's `cairn-node`, when not the cluster's (an upgrade).
    pub bin: Option<PathBuf>,
}

impl NodeProc {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub ca_fingerprint: String,
    pub user_token: String,
    node_bin: PathBuf,
    work: PathBuf,
    bug: Option<String>,
    // Declared last: dropped after the processes are killed.
    pub net: Net,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

fn other(s: impl Into<String>) -> ClusterError {
    ClusterError::Other(s.into())
}

pub fn dial(addr: SocketAddr, ca: &str, token: &str) -> Dial {
    Dial {
        addr: addr.to_string(),
        ca_fingerprint: ca.to_string(),
        identity: None,
        role: Role::Client,
        token: token.to_string(),
        agent: "cairn-chaos".into(),
        limits: TransportLimits::DEFAULT,
    }
}

impl Cluster {
    /// Network, node 1 bootstrapped, the others joined through node 1.
    pub async fn start(
        lane: net::Lane,
        n: usize,
        node_bin: &Path,
        work: &Path,
        bug: Option<String>,
    ) -> Result<Cluster, ClusterError> {
        let net = Net::setup(lane, n)?;
        let mut c = Cluster {
            nodes: Vec::new(),
            ca_fingerprint: String::new(),
            user_token: String::new(),
            node_bin: node_bin.to_path_buf(),
            work: work.to_path_buf(),
            bug,
            net,
        };
        for i in 0..n {
            let dir = work.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            c.nodes.push(NodeProc {
                idx: i,
                addr: SocketAddr::new(lane.node_ip(i).into(), PORT),
                data_dir: dir.join("data"),
                log: dir.join("node.log"),
                node_id: 0,
                child: None,
                paused: false,
                bin: None,
            });
        }
        // Node 1 creates the cluster.
        let boot_file = work.join("bootstrap-token");
        c.spawn(0, &["--bootstrap-file", &boot_file.to_string_lossy()])?;
        let ready = c.wait_ready(0).await?;
        c.ca_fingerprint = ready["ca_fingerprint"]
            .as_str()
            .ok_or_else(|| other("ready file without ca_fingerprint"))?
            .to_string();
        let boot = std::fs::read_to_string(&boot_file)?.trim().to_string();
        c.user_token = exchange_bootstrap(c.nodes[0].addr, &c.ca_fingerprint, &boot).await?;
        for i in 1..n {
            let token = c.join_token().await?;
            let via = c.nodes[0].addr.to_string();
            let ca = c.ca_fingerprint.clone();
            // The token goes in through a 0600 file, never argv.
            let token_file = c.nodes[i].data_dir.with_extension("join-token");
            cairn_protocol::private::write(&token_file, token.as_bytes())?;
            let token_file = token_file.display().to_string();
            c.spawn(
                i,
                &[
                    "--join",
                    &via,
                    "--join-token-file",
                    &token_file,
                    "--join-ca",
                    &ca,
                ],
            )?;
            c.wait_ready(i).await?;
        }
        c.wait_voters(n).await?;
        Ok(c)
    }

    fn ready_file(&self, i: usize) -> PathBuf {
        self.work.join(format!("n{}", i + 1)).join("ready.json")
    }

    /// Start node `i` in its namespace (extra args only on first start).
    fn spawn(&mut self, i: usize, extra: &[&str]) -> Result<(), ClusterError> {
        let ready = self.ready_file(i);
        let _ = std::fs::remove_file(&ready);
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.lane.ns_name(i)])
            .arg(node.bin.as_ref().unwrap_or(&self.node_bin))
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(node.addr.to_string())
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "CAIRN_LOG",
                std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn,cairn_node=info".into()),
            );
        match &self.bug {
            Some(b) => cmd.env(BUG_ENV, b),
            None => cmd.env_remove(BUG_ENV),
        };
        // `ip netns exec` execs the node: the child's pid is the node's.
        let child = cmd.spawn()?;
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize) -> Result<serde_json::Value, ClusterError> {
        let path = self.ready_file(i);
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(id) = v["node_id"].as_u64() {
                        self.nodes[i].node_id = id;
                    }
                    return Ok(v);
                }
            }
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.nodes[i].child = None;
                    return Err(other(format!(
                        "node n{} exited ({status}) before it was ready; see {}",
                        i + 1,
                        self.nodes[i].log.display()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "node n{} not ready within {READY_WAIT:?}; see {}",
                    i + 1,
                    self.nodes[i].log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn session(&self, i: usize) -> Result<Session, ClusterError> {
        rpc::connect(&dial(
            self.nodes[i].addr,
            &self.ca_fingerprint,
            &self.user_token,
        ))
        .await
        .map_err(|e| other(format!("connect to n{}: {e}", i + 1)))
    }

    /// Send `req` to each node in turn (skipping one that cannot be reached
    /// or speaks a protocol older than `min_version`) until `accept` takes
    /// an answer.
    pub async fn ask<T>(
        &self,
        min_version: u32,
        req: &ClientRequest,
        mut accept: impl FnMut(Result<ClientResponse, rpc::RpcError>) -> Option<T>,
    ) -> Option<T> {
        for i in 0..self.nodes.len() {
            let Ok(s) = self.session(i).await else {
                continue;
            };
            if s.node.version < min_version {
                continue;
            }
            let r = rpc::call(&s.conn, req).await;
            s.conn.close(0u32.into(), b"done");
            if let Some(t) = accept(r) {
                return Some(t);
            }
        }
        None
    }

    async fn join_token(&self) -> Result<String, ClusterError> {
        let s = self.session(0).await?;
        let r = rpc::call(
            &s.conn,
            &ClientRequest::CreateToken {
                scope: TokenScope::Join,
                name: "chaos".into(),
                ttl_s: None,
            },
        )
        .await;
        s.conn.close(0u32.into(), b"done");
        match r {
            Ok(ClientResponse::Token { token }) => Ok(token),
            other_answer => Err(other(format!("join token: {other_answer:?}"))),
        }
    }

    pub async fn wait_voters(&self, n: usize) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Ok(s) = self.session(0).await {
                let r = rpc::call(&s.conn, &ClientRequest::Members).await;
                s.conn.close(0u32.into(), b"done");
                if let Ok(ClientResponse::Members(m)) = r {
                    let voters = m
                        .iter()
                        .filter(|x| x.role == cairn_protocol::api::MemberRole::Voter)
                        .count();
                    if voters == n {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(other(format!("{n} voters not reached in {READY_WAIT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node index of the leader, as most running, unpaused nodes see it
    /// (each answers `ServerInfo` from its own view, without a round trip).
    pub async fn leader(&self) -> Option<usize> {
        let mut votes: Vec<(u64, usize)> = Vec::new();
        for n in self.nodes.iter().filter(|n| n.running() && !n.paused) {
            let fut = async {
                let s = self.session(n.idx).await.ok()?;
                let r = rpc::call(&s.conn, &ClientRequest::ServerInfo).await;
                s.conn.close(0u32.into(), b"done");
                match r {
                    Ok(ClientResponse::ServerInfo(info)) => info.leader,
                    _ => None,
                }
            };
            if let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(2), fut).await {
                match votes.iter_mut().find(|(id, _)| *id == l) {
                    Some(v) => v.1 += 1,
                    None => votes.push((l, 1)),
                }
            }
        }
        votes.sort_by_key(|v| std::cmp::Reverse(v.1));
        let id = votes.first()?.0;
        self.nodes.iter().position(|n| n.node_id == id)
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Start a killed node again on its data dir (it remembers its cluster).
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.nodes[i].running() {
            return Ok(());
        }
        self.spawn(i, &[])?;
        self.wait_ready(i).await.map(|_| ())
    }

    /// Stop node `i` as an operator does (SIGTERM; SIGKILL after `grace`).
    pub async fn stop_gracefully(&mut self, i: usize, grace: Duration) {
        self.signal(i, "-TERM");
        let deadline = Instant::now() + grace;
        while let Some(child) = self.nodes[i].child.as_mut() {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    self.nodes[i].child = None;
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(None) => self.kill(i),
            }
        }
    }

    /// One step of a rolling upgrade (or rollback): stop node `i`
    /// gracefully, start `bin` on its data dir and address, and wait until it
    /// is ready.
    pub async fn replace_binary(&mut self, i: usize, bin: &Path) -> Result<(), ClusterError> {
        self.stop_gracefully(i, Duration::from_secs(15)).await;
        self.nodes[i].bin = Some(bin.to_path_buf());
        self.spawn(i, &[])?;
        self.wait_ready(i).await.map(|_| ())
    }

    /// Until every one of the `n` members is a voter again and node `i`'s
    /// log is within `lag` entries of the leader's.
    pub async fn wait_healthy(&self, i: usize, n: usize, lag: u64) -> Result<(), ClusterError> {
        self.wait_voters(n).await?;
        let deadline = Instant::now() + READY_WAIT;
        let id = self.nodes[i].node_id;
        loop {
            let mut caught_up = false;
            for j in 0..self.nodes.len() {
                let Ok(s) = self.session(j).await else {
                    continue;
                };
                let r = rpc::call(&s.conn, &ClientRequest::Members).await;
                s.conn.close(0u32.into(), b"done");
                if let Ok(ClientResponse::Members(m)) = r {
                    let leader = m.iter().find(|x| x.leader).and_then(|x| x.matched_index);
                    let mine = m.iter().find(|x| x.id == id).and_then(|x| x.matched_index);
                    if let (Some(l), Some(me)) = (leader, mine) {
                        caught_up = me + lag >= l;
                    }
                    break;
                }
            }
            if caught_up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "n{} did not catch up with the leader within {READY_WAIT:?}",
                    i + 1
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn signal(&mut self, i: usize, sig: &str) {
        if let Some(pid) = self.nodes[i].pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.nodes[i].paused = false;
    }

    /// Undo every fault: network healed, paused nodes continued, killed
    /// nodes restarted.
    pub async fn heal_all(&mut self) -> Result<(), ClusterError> {
        self.net.heal_all();
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            // A node that died by itself is a finding; restart it anyway so
            // the final read can reach a quorum, and say so.
            if let Some(child) = self.nodes[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("  !! n{} had exited by itself ({status})", i + 1);
                    self.nodes[i].child = None;
                }
            }
            self.restart(i).await?;
        }
        Ok(())
    }

    /// Which nodes died without being killed by us.
    pub fn crashed(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(child) = n.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    out.push(n.idx);
                }
            }
        }
        out
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// Kill every process we started (idempotent).
    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i);
            }
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        // `net` drops next and removes the namespaces and bridge.
    }
}

async fn exchange_bootstrap(
    addr: SocketAddr,
    ca: &str,
    bootstrap: &str,
) -> Result<String, ClusterError> {
    let s = rpc::connect(&dial(addr, ca, bootstrap))
        .await
        .map_err(|e| other(format!("bootstrap connect: {e}")))?;
    let r = rpc::call(
        &s.conn,
        &ClientRequest::ExchangeBootstrap {
            name: "admin".into(),
        },
    )
    .await;
    s.conn.close(0u32.into(), b"done");
    match r {
        Ok(ClientResponse::Token { token }) => Ok(token),
        r => Err(other(format!("bootstrap exchange: {r:?}"))),
    }
}
