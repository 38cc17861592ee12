//! Real `cairn-node` processes (the binary of this crate): a follower that
//! fell behind the leader's purged log catches up by snapshot, and a whole
//! cluster comes back after every member stopped, started in reverse order
//! (the join target last).

mod common;
use common::{call, connect, eventually, user_token, var};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse, MemberRole, ServerInfo};
use cairn_protocol::rpc::Session;
use cairn_protocol::types::{ConfigScope, TokenScope};
use tempfile::TempDir;

/// Bound for anything that should happen "soon" on a loaded 2-core box.
const SOON: Duration = Duration::from_secs(60);

/// What `--ready-file` holds.
#[derive(serde::Deserialize)]
struct Ready {
    addr: SocketAddr,
    ca_fingerprint: String,
    node_id: u64,
    pid: u32,
}

/// One `cairn-node` process: its data dir, log and address outlive restarts.
struct Proc {
    name: String,
    dir: PathBuf,
    /// Flags of every start (`--listen` is added: port 0 first, then the
    /// address of the first start, so the membership's address stays right).
    args: Vec<String>,
    listen: String,
    child: Option<Child>,
    ready: Option<Ready>,
}

impl Proc {
    fn new(root: &Path, name: &str, args: Vec<String>) -> Proc {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("proc dir");
        Proc {
            name: name.into(),
            dir,
            args,
            listen: "127.0.0.1:0".into(),
            child: None,
            ready: None,
        }
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.join("ready.json")
    }

    fn bootstrap_file(&self) -> PathBuf {
        self.dir.join("bootstrap.token")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Start the process; do not wait until it is ready.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let _ = std::fs::remove_file(self.ready_file());
        self.ready = None;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn-node"))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen")
            .arg(&self.listen)
            // Several nodes share loopback: any free port for each ingress.
            .args(["--ingress", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(self.ready_file())
            .arg("--bootstrap-file")
            .arg(self.bootstrap_file())
            .args(&self.args)
            .env_remove("CAIRN_DATA_DIR")
            .env_remove("CAIRN_JOIN_TOKEN")
            .env("CAIRN_LOG", "warn,cairn_node=info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn cairn-node");
        self.child = Some(child);
    }

    /// Wait until the process wrote its ready file (it is a member).
    async fn wait_ready(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let ready = loop {
            if let Ok(text) = std::fs::read_to_string(self.ready_file()) {
                if let Ok(r) = serde_json::from_str::<Ready>(&text) {
                    break r;
                }
            }
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready within {within:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(Some(ready.pid), self.child.as_ref().map(Child::id));
        self.listen = ready.addr.to_string();
        self.ready = Some(ready);
    }

    async fn start(&mut self) {
        self.spawn();
        self.wait_ready(SOON).await;
    }

    fn ready(&self) -> &Ready {
        self.ready.as_ref().expect("ready")
    }

    fn addr(&self) -> SocketAddr {
        self.ready().addr
    }

    fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `kill -9`, as a crash.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send SIGTERM (a graceful stop: a joined node leaves the membership first).
    fn term(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Wait for a process sent SIGTERM to exit by itself.
    async fn wait_exit(&mut self) {
        let mut c = self.child.take().expect("running");
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop on SIGTERM:\n{}", self.name, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        // A failed test shows what each node said.
        if std::thread::panicking() || std::env::var_os("CAIRN_TEST_SHOW_LOGS").is_some() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
    }
}

/// Three processes: n1 bootstraps, n2 and n3 join through n1.
struct Cluster {
    /// Dropped (killed) before `_root`, their data and logs, is removed.
    procs: Vec<Proc>,
    ca: String,
    user: String,
    _root: TempDir,
}

impl Cluster {
    async fn start(extra: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut n1 = Proc::new(root.path(), "n1", extra.clone());
        n1.start().await;
        let ca = n1.ready().ca_fingerprint.clone();
        let boot = std::fs::read_to_string(n1.bootstrap_file()).expect("bootstrap token");
        let user = user_token(n1.addr(), &ca, boot.trim()).await;
        let s = connect(n1.addr(), &ca, &user).await.expect("user connects");
        let mut procs = vec![n1];
        for name in ["n2", "n3"] {
            // A join token admits one node: one each.
            let ClientResponse::Token { token: join } = call(
                &s,
                ClientRequest::CreateToken {
                    scope: TokenScope::Join,
                    name: "test".into(),
                    ttl_s: None,
                },
            )
            .await
            else {
                panic!("no join token")
            };
            let token_file = root.path().join(format!("{name}.join-token"));
            cairn_protocol::private::write(&token_file, join.as_bytes()).expect("token file");
            let mut args = extra.clone();
            args.extend([
                "--join".to_string(),
                procs[0].addr().to_string(),
                "--join-token-file".into(),
                token_file.display().to_string(),
                "--join-ca".into(),
                ca.clone(),
            ]);
            let mut p = Proc::new(root.path(), name, args);
            p.start().await;
            assert_eq!(p.ready().ca_fingerprint, ca);
            procs.push(p);
        }
        s.conn.close(0u32.into(), b"bye");
        let c = Cluster {
            procs,
            ca,
            user,
            _root: root,
        };
        c.wait_healthy().await;
        c
    }

    async fn client(&self, i: usize) -> Session {
        connect(self.procs[i].addr(), &self.ca, &self.user)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.procs[i].name))
    }

    async fn info(&self, i: usize) -> ServerInfo {
        let s = self.client(i).await;
        let r = call(&s, ClientRequest::ServerInfo).await;
        s.conn.close(0u32.into(), b"bye");
        match r {
            ClientResponse::ServerInfo(info) => *info,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Every member agrees on one leader, and the leader lists three voters.
    async fn wait_healthy(&self) -> u64 {
        eventually("three voters agree on a leader", SOON, || async {
            let mut leaders = Vec::new();
            for i in 0..self.procs.len() {
                leaders.push(self.info(i).await.leader?);
            }
            if leaders.iter().any(|l| *l != leaders[0]) {
                return None;
            }
            let s = self.client(0).await;
            let ms = match call(&s, ClientRequest::Members).await {
                ClientResponse::Members(ms) => ms,
                other => panic!("unexpected {other:?}"),
            };
            s.conn.close(0u32.into(), b"bye");
            (ms.len() == 3 && ms.iter().all(|m| m.role == MemberRole::Voter)).then_some(leaders[0])
        })
        .await
    }

    fn index_of(&self, node_id: u64) -> usize {
        self.procs
            .iter()
            .position(|p| p.ready.as_ref().map(|r| r.node_id) == Some(node_id))
            .expect("a member")
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
    assert_eq!(r, ClientResponse::Ok, "set {name}");
}

/// A linearizable read of one variable of project `p` through `s`.
async fn get(s: &Session, name: &str) -> Option<String> {
    match call(
        s,
        ClientRequest::ListConfig {
            scope: Some(ConfigScope::Project("p".into())),
        },
    )
    .await
    {
        ClientResponse::Config(vars) => vars.into_iter().find(|v| v.name == name).map(|v| v.value),
        other => panic!("unexpected {other:?}"),
    }
}

/// Snapshot every 20 entries, keep 5 after it: a few hundred writes purge
/// the leader's log far past a stopped follower.
const SMALL_SNAPSHOTS: &[&str] = &["--raft-snapshot-every", "20", "--raft-logs-to-keep", "5"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(SMALL_SNAPSHOTS).await;
    let leader = c.index_of(c.wait_healthy().await);
    let f = (leader + 1) % 3;
    let other = 3 - leader - f;

    let s = c.client(leader).await;
    set(&s, "before", "1").await;
    let f_info = eventually("the follower has the first write", SOON, || async {
        let info = c.info(f).await;
        let leader_applied = c.info(leader).await.raft.last_applied;
        (info.raft.last_applied == leader_applied).then_some(info)
    })
    .await;
    assert_eq!(f_info.raft.snapshots_installed, 0, "{:?}", f_info.raft);
    let f_last = f_info.raft.last_log_index.expect("follower has a log");
    c.procs[f].kill9();

    // 300 writes: the leader snapshots every 20 and purges all but 5.
    for i in 0..300 {
        set(&s, &format!("k{i}"), &i.to_string()).await;
    }
    s.conn.close(0u32.into(), b"bye");
    let purged = eventually(
        "the leader purged its log past the follower",
        SOON,
        || async {
            let p = c.info(leader).await.raft;
            p.purged_index.filter(|p| *p > f_last + 100)
        },
    )
    .await;
    let leader_progress = c.info(leader).await.raft;
    assert!(
        leader_progress.snapshot_index >= Some(purged),
        "{leader_progress:?}"
    );
    // The snapshot knob is in force: the log was compacted many times over.
    let last = leader_progress.last_log_index.expect("log");
    assert!(
        last - purged <= 20 + 5 + 5,
        "log of {} entries: {leader_progress:?}",
        last - purged
    );

    // The follower comes back on its old address and data dir. Its log ends
    // before anything the leader still has: only a snapshot can catch it up.
    c.procs[f].start().await;
    let caught_up = eventually("the follower installed a snapshot", SOON, || async {
        let p = c.info(f).await.raft;
        (p.snapshots_installed >= 1).then_some(p)
    })
    .await;
    assert!(
        caught_up.snapshot_index >= Some(purged),
        "installed snapshot {caught_up:?}, leader purged up to {purged}"
    );
    assert!(
        c.procs[f].log().contains("installing snapshot"),
        "{}",
        c.procs[f].log()
    );
    // A linearizable read through it sees the last write.
    let s = c.client(f).await;
    assert_eq!(get(&s, "k299").await.as_deref(), Some("299"));
    assert_eq!(get(&s, "before").await.as_deref(), Some("1"));
    // And it keeps serving writes (forwarded), seen through the other node.
    set(&s, "after", "2").await;
    s.conn.close(0u32.into(), b"bye");
    let s = c.client(other).await;
    assert_eq!(get(&s, "after").await.as_deref(), Some("2"));
    s.conn.close(0u32.into(), b"bye");
}

#[test]
fn the_test_knobs_are_hidden_from_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-node"))
        .arg("--help")
        .output()
        .expect("cairn-node --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--data-dir"), "{help}");
    assert!(!help.contains("raft-snapshot-every"), "{help}");
    assert!(!help.contains("raft-logs-to-keep"), "{help}");
    // …but accepted: a bad value is refused by the parser, not as unknown.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-node"))
        .args(["--data-dir", "/nonexistent", "--raft-snapshot-every", "x"])
        .output()
        .expect("cairn-node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value"), "{err}");
}

/// How the whole cluster is stopped before it is started again.
#[derive(Debug, Clone, Copy)]
enum StopAll {
    /// `kill -9` all three (a power cut).
    Crash,
    /// SIGTERM to all three at once (e.g. every host shutting down): the
    /// joined nodes try to leave while the others stop.
    TermAtOnce,
    /// SIGTERM one after the other, n3, n2, then n1: n3 and n2 leave the
    /// membership for sure, so on restart they must ask to be added back,
    /// through n1, which is down until last.
    TermInTurn,
}

/// Stop the three, start them in the order n3, n2, n1 (n1, the join target,
/// last; each started before the previous one is necessarily ready), then
/// check the cluster elects a leader and serves a write and a linearizable
/// read through each node.
async fn whole_cluster_restart(stop: StopAll) {
    let mut c = Cluster::start(&[]).await;
    set(&c.client(0).await, "before", "1").await;
    match stop {
        StopAll::Crash => {
            for p in &mut c.procs {
                p.kill9();
            }
        }
        StopAll::TermAtOnce => {
            for p in &c.procs {
                p.term();
            }
            for p in &mut c.procs {
                p.wait_exit().await;
            }
        }
        StopAll::TermInTurn => {
            for i in [2, 1, 0] {
                c.procs[i].term();
                c.procs[i].wait_exit().await;
            }
        }
    }
    let mut n3 = c.procs.pop().expect("n3");
    // n3 comes back without its join flags (it remembers where it joined),
    // n2 with the command line it was first started with.
    n3.args.clear();
    n3.spawn();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.procs[1].spawn();
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let StopAll::TermInTurn = stop {
        // n2 and n3 left; their join target is down: they wait for it,
        // saying so, instead of exiting.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(n3.running(), "n3 exited:\n{}", n3.log());
        assert!(c.procs[1].running(), "n2 exited:\n{}", c.procs[1].log());
        for p in [&n3, &c.procs[1]] {
            let log = p.log();
            assert!(
                log.contains("asking") && log.contains("to add it back"),
                "{}: no clear line about waiting:\n{log}",
                p.name
            );
        }
    }
    c.procs[0].spawn();
    c.procs.push(n3);
    for p in &mut c.procs {
        p.wait_ready(Duration::from_secs(150)).await;
    }
    let leader = c.wait_healthy().await;
    assert!(c.procs.iter().any(|p| p.ready().node_id == leader));
    for i in 0..3 {
        let s = c.client(i).await;
        set(&s, &format!("after-{i}"), "yes").await;
        s.conn.close(0u32.into(), b"bye");
    }
    for i in 0..3 {
        let s = c.client(i).await;
        assert_eq!(get(&s, "before").await.as_deref(), Some("1"), "via {i}");
        for w in 0..3 {
            assert_eq!(
                get(&s, &format!("after-{w}")).await.as_deref(),
                Some("yes"),
                "node {i} misses the write through node {w}"
            );
        }
        s.conn.close(0u32.into(), b"bye");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_cluster_restarts_in_reverse_order() {
    whole_cluster_restart(StopAll::Crash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_stopped_at_once_restarts_in_reverse_order() {
    whole_cluster_restart(StopAll::TermAtOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_nodes_that_left_wait_for_their_join_target_on_restart() {
    whole_cluster_restart(StopAll::TermInTurn).await;
}
