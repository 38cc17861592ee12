//! The two 3-member clusters on loopback: start, find the leader, `kill -9`
//! a member, restart it on the same data dir and ports, wait until healthy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use cairn_protocol::api::{ClientRequest, ClientResponse, MemberRole};
use cairn_protocol::rpc;
use cairn_protocol::types::TokenScope;

use crate::conn::{cairn_dial, within, CairnConn, Conn};
use crate::etcd_grpc::EtcdConn;
use crate::procs::{eventually, free_ports, Member};

pub const MEMBERS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cairn,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cairn => "cairn",
            Kind::Etcd => "etcd",
        }
    }
}

pub struct Cluster {
    pub kind: Kind,
    pub members: Vec<Member>,
    /// Client address of each member.
    pub addrs: Vec<String>,
    /// Each member's id as the system reports it (Cairn node id, etcd member id).
    pub ids: Vec<u64>,
    /// Cairn only: ready files, CA fingerprint and the user token.
    ready: Vec<PathBuf>,
    ca: String,
    token: String,
}

#[derive(serde::Deserialize)]
struct Ready {
    ca_fingerprint: String,
    node_id: u64,
}

impl Cluster {
    /// Bootstrap a Cairn node and join two more through it.
    pub async fn start_cairn(node_bin: &Path, root: &Path) -> anyhow::Result<Cluster> {
        let ports = free_ports(MEMBERS, false)?;
        let mut c = Cluster {
            kind: Kind::Cairn,
            members: Vec::new(),
            addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            ids: Vec::new(),
            ready: Vec::new(),
            ca: String::new(),
            token: String::new(),
        };
        for i in 0..MEMBERS {
            let dir = root.join(format!("cairn-{i}"));
            std::fs::create_dir_all(&dir)?;
            let ready = dir.join("ready.json");
            let args = vec![
                "--data-dir".into(),
                dir.join("data").display().to_string(),
                "--listen".into(),
                c.addrs[i].clone(),
                "--ready-file".into(),
                ready.display().to_string(),
                // Raft is what is measured here.
                "--no-ingress".into(),
            ];
            let first = if i == 0 {
                vec![
                    "--bootstrap-file".into(),
                    dir.join("bootstrap.token").display().to_string(),
                ]
            } else {
                let token = c.join_token().await?;
                let token_file = dir.join("join.token");
                cairn_protocol::private::write(&token_file, token.as_bytes())?;
                vec![
                    "--join".into(),
                    c.addrs[0].clone(),
                    "--join-token-file".into(),
                    token_file.display().to_string(),
                    "--join-ca".into(),
                    c.ca.clone(),
                ]
            };
            c.members.push(Member::new(
                &format!("cairn-{i}"),
                node_bin,
                args,
                first,
                dir.join("node.log"),
            ));
            c.ready.push(ready);
            let r = c.spawn_cairn(i).await?;
            c.ids.push(r.node_id);
            if i == 0 {
                c.ca = r.ca_fingerprint;
                let boot = std::fs::read_to_string(dir.join("bootstrap.token"))
                    .context("reading the bootstrap token")?;
                c.token = cairn_cli::local::exchange_bootstrap(&c.addrs[0], &c.ca, boot.trim())
                    .await
                    .context("exchanging the bootstrap token")?;
            }
        }
        c.wait_healthy().await?;
        Ok(c)
    }

    async fn join_token(&self) -> anyhow::Result<String> {
        let s = rpc::connect(&cairn_dial(&self.addrs[0], &self.ca, &self.token))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let r = rpc::call(
            &s.conn,
            &ClientRequest::CreateToken {
                scope: TokenScope::Join,
                name: "cluster-bench".into(),
                ttl_s: Some(600),
            },
        )
        .await
        .map_err(|e| anyhow!("CreateToken: {e}"))?;
        s.conn.close(0u32.into(), b"done");
        match r {
            ClientResponse::Token { token } => Ok(token),
            other => bail!("CreateToken answered {other:?}"),
        }
    }

    /// Spawn Cairn member `i` and wait for its ready file.
    async fn spawn_cairn(&mut self, i: usize) -> anyhow::Result<Ready> {
        let ready = self.ready[i].clone();
        let _ = std::fs::remove_file(&ready);
        self.members[i].spawn()?;
        let t0 = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                    return Ok(r);
                }
            }
            self.members[i].check_alive()?;
            if t0.elapsed() > START_TIMEOUT {
                bail!(
                    "not ready within {} s; {}",
                    START_TIMEOUT.as_secs(),
                    self.members[i].log_tail(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Three etcd members with one static initial cluster. Every setting not
    /// named here is etcd's default (WAL fsync on, heartbeat 100 ms,
    /// election timeout 1000 ms).
    pub async fn start_etcd(etcd_bin: &Path, root: &Path) -> anyhow::Result<Cluster> {
        let ports = free_ports(2 * MEMBERS, true)?;
        let (client, peer) = ports.split_at(MEMBERS);
        let initial: Vec<String> = (0..MEMBERS)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peer[i]))
            .collect();
        let initial = initial.join(",");
        let token = format!("cluster-bench-{}", std::process::id());
        let mut c = Cluster {
            kind: Kind::Etcd,
            members: Vec::new(),
            addrs: client.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            ids: Vec::new(),
            ready: Vec::new(),
            ca: String::new(),
            token: String::new(),
        };
        for i in 0..MEMBERS {
            let dir = root.join(format!("etcd-{i}"));
            std::fs::create_dir_all(&dir)?;
            let curl = format!("http://127.0.0.1:{}", client[i]);
            let purl = format!("http://127.0.0.1:{}", peer[i]);
            let args: Vec<String> = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                &dir.join("data").display().to_string(),
                "--listen-client-urls",
                &curl,
                "--advertise-client-urls",
                &curl,
                "--listen-peer-urls",
                &purl,
                "--initial-advertise-peer-urls",
                &purl,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            c.members.push(Member::new(
                &format!("etcd-{i}"),
                etcd_bin,
                args,
                Vec::new(),
                dir.join("etcd.log"),
            ));
            c.members[i].spawn()?;
        }
        // Member ids, from each member's own status.
        for i in 0..MEMBERS {
            let addr = c.addrs[i].clone();
            let id = {
                let members = &mut c.members;
                eventually(
                    &format!("etcd member {i} answers Status"),
                    START_TIMEOUT,
                    Duration::from_millis(50),
                    || {
                        let alive = members[i].check_alive();
                        let addr = addr.clone();
                        async move {
                            alive?;
                            let e = EtcdConn::connect(&addr).await?;
                            let s = within(PROBE_TIMEOUT, e.status()).await?;
                            Ok(s.header.map(|h| h.member_id))
                        }
                    },
                )
                .await
                .map_err(|e| anyhow!("{e}\n{}", c.members[i].log_tail(25)))?
            };
            c.ids.push(id);
        }
        c.wait_healthy().await?;
        Ok(c)
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// A client connection to member `i`, connected now.
    pub async fn connect(&self, i: usize) -> anyhow::Result<Conn> {
        match self.kind {
            Kind::Cairn => {
                CairnConn::connect(cairn_dial(&self.addrs[i], &self.ca, &self.token)).await
            }
            Kind::Etcd => Ok(Conn::Etcd(EtcdConn::connect(&self.addrs[i]).await?)),
        }
    }

    /// A client connection to member `i` that connects on first use.
    pub fn lazy(&self, i: usize) -> anyhow::Result<Conn> {
        match self.kind {
            Kind::Cairn => Ok(CairnConn::lazy(cairn_dial(
                &self.addrs[i],
                &self.ca,
                &self.token,
            ))),
            Kind::Etcd => Ok(Conn::Etcd(EtcdConn::lazy(&self.addrs[i])?)),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(Member::pid).collect()
    }

    /// The member index of the leader, as the running members agree on it.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let conns: Vec<Conn> = (0..MEMBERS)
            .filter(|&i| self.members[i].running())
            .map(|i| self.lazy(i))
            .collect::<anyhow::Result<_>>()?;
        let ids = self.ids.clone();
        let r = eventually(
            &format!("{}: running members agree on a leader", self.name()),
            HEALTHY_TIMEOUT,
            Duration::from_millis(20),
            || {
                let conns = conns.clone();
                let ids = ids.clone();
                async move {
                    let mut seen = None;
                    for c in &conns {
                        let Some(l) = within(PROBE_TIMEOUT, c.leader_view()).await? else {
                            return Ok(None);
                        };
                        if seen.is_some_and(|s| s != l) {
                            return Ok(None);
                        }
                        seen = Some(l);
                    }
                    Ok(seen.and_then(|l| ids.iter().position(|&x| x == l)))
                }
            },
        )
        .await;
        for c in &conns {
            c.close();
        }
        r
    }

    /// Restart a killed member on its data dir and ports. Returns the
    /// start-ups that failed (the process exited by itself) before one
    /// succeeded; each is retried, at most 3 times.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<Vec<String>> {
        self.members[i].reap();
        let mut failed = Vec::new();
        loop {
            match self.kind {
                Kind::Cairn => match self.spawn_cairn(i).await {
                    Ok(_) => return Ok(failed),
                    Err(e) if !self.members[i].running() && failed.len() < 3 => {
                        let last = format!("{e:#}").lines().last().unwrap_or("").to_string();
                        eprintln!(
                            "  warning: {} exited during start-up, starting it again: {last}",
                            self.members[i].name
                        );
                        failed.push(last);
                    }
                    Err(e) => return Err(e),
                },
                Kind::Etcd => {
                    self.members[i].spawn()?;
                    return Ok(failed);
                }
            }
        }
    }

    /// Healthy: every member answers, all agree on one leader, all have the
    /// same log (Cairn: every member a voter with the leader's matched
    /// index; etcd: equal raft index), and a write through every member is
    /// acknowledged.
    pub async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let conns: Vec<Conn> = (0..MEMBERS)
            .map(|i| self.lazy(i))
            .collect::<anyhow::Result<_>>()?;
        let ids = self.ids.clone();
        let kind = self.kind;
        let value = "h".repeat(crate::VALUE_BYTES);
        let r = eventually(
            &format!("{}: cluster healthy", kind.name()),
            HEALTHY_TIMEOUT,
            Duration::from_millis(50),
            || {
                let conns = conns.clone();
                let ids = ids.clone();
                let value = value.clone();
                async move {
                    let mut leader = None;
                    for c in &conns {
                        let Some(l) = within(PROBE_TIMEOUT, c.leader_view()).await? else {
                            return Ok(None);
                        };
                        if leader.is_some_and(|x| x != l) || !ids.contains(&l) {
                            return Ok(None);
                        }
                        leader = Some(l);
                    }
                    if !logs_agree(kind, &conns).await? {
                        return Ok(None);
                    }
                    for (i, c) in conns.iter().enumerate() {
                        within(PROBE_TIMEOUT, c.put(&format!("health{i}"), &value)).await?;
                    }
                    Ok(Some(()))
                }
            },
        )
        .await;
        for c in &conns {
            c.close();
        }
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                let logs: Vec<String> = self.members.iter().map(|m| m.log_tail(8)).collect();
                Err(e.context(logs.join("\n")))
            }
        }
    }

    /// Fail if a member died by itself.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            m.check_alive()?;
        }
        Ok(())
    }
}

async fn logs_agree(kind: Kind, conns: &[Conn]) -> anyhow::Result<bool> {
    match kind {
        Kind::Cairn => {
            let Conn::Cairn(_) = &conns[0] else {
                bail!("not a Cairn connection");
            };
            let r = within(PROBE_TIMEOUT, cairn_members(&conns[0])).await?;
            if r.len() != MEMBERS || r.iter().any(|m| m.role != MemberRole::Voter) {
                return Ok(false);
            }
            let idx: Vec<Option<u64>> = r.iter().map(|m| m.matched_index).collect();
            Ok(idx.iter().all(|x| x.is_some() && *x == idx[0]))
        }
        Kind::Etcd => {
            let mut idx = Vec::new();
            for c in conns {
                let Conn::Etcd(e) = c else {
                    bail!("not an etcd connection");
                };
                let s = within(PROBE_TIMEOUT, e.status()).await?;
                idx.push(s.raft_index);
            }
            Ok(idx.iter().all(|&x| x == idx[0]))
        }
    }
}

async fn cairn_members(c: &Conn) -> anyhow::Result<Vec<cairn_protocol::api::MemberInfo>> {
    let Conn::Cairn(c) = c else {
        bail!("not a Cairn connection");
    };
    match c.raw_call(&ClientRequest::Members).await? {
        ClientResponse::Members(m) => Ok(m),
        other => bail!("Members answered {other:?}"),
    }
}
