//! Failover as a user sees it (issue 12): a 3-node cluster of real
//! `cairn-node` processes, the real `cairn` binary, `cairn config set` one
//! command at a time with no retries. Then the leader fails (`kill -9`, or cut
//! off from everything by a partition) and the very next commands must just
//! work: every one succeeds, the first within [`FIRST_OK_WITHIN`] of the
//! fault, and with a node gone a command is about as fast as with all up.
//!
//! Each test runs [`TRIALS`] faults on one cluster (`CAIRN_FAILOVER_TRIALS`
//! overrides it; the figures in issue 12's note come from 20) and prints each
//! trial's figures and a summary.
//!
//! The partitions are real packet loss: iptables drops every UDP packet to
//! and from the leader's QUIC port (peers, and this test's CLI, lose it
//! alike), or only those between the leader's port and its peers' (the CLI
//! still reaches the old leader, which must tell it to go elsewhere).
//! It needs root and iptables; CI has both (`.ci/run`). Elsewhere that test
//! says it is skipped, unless `CI` is set, where it fails.

use std::process::Command;
use std::time::{Duration, Instant};

use cairn_tests::{assert_eventually, Cli, TestCluster};

/// Faults per test.
const TRIALS: usize = 10;
/// Commands before and after each fault.
const COMMANDS: usize = 30;
/// The first command after the fault must have succeeded this soon after it.
const FIRST_OK_WITHIN: Duration = Duration::from_secs(3);
/// With one node down, the median command may take at most this many times
/// the median with all nodes up (same trial, side by side).
const DOWN_SLOWDOWN_MAX: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `kill -9` of the leader.
    Kill,
    /// The leader cut off from everything (peers and clients).
    Partition,
    /// The leader cut off from its peers only: clients still reach it,
    /// and the CLI's next command goes to it first (it answered last).
    IsolateFromPeers,
}

struct Trial {
    /// From the fault to the end of the first successful command.
    first_ok: Duration,
    /// Latencies of the commands with every node up.
    up: Vec<Duration>,
    /// Latencies of the commands after the first, with the leader gone.
    down: Vec<Duration>,
}

fn trials() -> usize {
    std::env::var("CAIRN_FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRIALS)
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The index of the node that leads, as the cluster says.
fn leader(c: &TestCluster) -> usize {
    let mut found: Option<usize>;
    assert_eventually!(
        {
            found = c
                .members()
                .iter()
                .find(|m| m["leader"] == true)
                .and_then(|m| m["id"].as_str().and_then(|id| c.index_of(id)));
            found.is_some()
        },
        Duration::from_secs(30),
        "no leader: {:?}",
        c.members()
    );
    found.expect("a leader")
}

/// `cairn config set` of one new variable; its latency. Panics (with the
/// command's output) unless it succeeded: no retries.
#[track_caller]
fn set(cli: &Cli, project: &str, name: &str) -> Duration {
    let started = Instant::now();
    let out = cli.run(&["config", "set", "--project", project, &format!("{name}=v")]);
    let took = started.elapsed();
    assert!(
        out.success(),
        "a command failed ({} ms after it began): {out}",
        took.as_millis()
    );
    took
}

/// How many variables `cli` (pinned to one node) reads in `project`.
fn count(cli: &Cli, project: &str) -> Option<usize> {
    let out = cli.run(&["config", "list", "--project", project, "--json"]);
    if !out.success() {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()?
        .as_array()
        .map(Vec::len)
}

/// iptables rules that drop UDP packets while this lives.
struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    fn iptables(op: &str, rule: &[String]) -> bool {
        Command::new("iptables")
            .arg("-w")
            .arg(op)
            .args(rule)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn install(rules: Vec<Vec<String>>) -> Partition {
        let mut p = Partition { rules: Vec::new() };
        for r in rules {
            assert!(Partition::iptables("-I", &r), "iptables -I {r:?} failed");
            p.rules.push(r);
        }
        p
    }

    /// Everything to and from `port`: the node there is cut off from its
    /// peers and from every client.
    fn whole(port: u16) -> Partition {
        let p = port.to_string();
        Partition::install(vec![
            ["INPUT", "-p", "udp", "--dport", &p, "-j", "DROP"]
                .map(String::from)
                .to_vec(),
            ["OUTPUT", "-p", "udp", "--sport", &p, "-j", "DROP"]
                .map(String::from)
                .to_vec(),
        ])
    }

    /// Only what goes between `port` and the `peers` (nodes talk from their
    /// own port): the node there is cut off from the cluster while clients
    /// still reach it.
    fn from_peers(port: u16, peers: &[u16]) -> Partition {
        let p = port.to_string();
        let mut rules = Vec::new();
        for q in peers.iter().map(u16::to_string) {
            for (from, to) in [(&p, &q), (&q, &p)] {
                rules.push(
                    [
                        "INPUT", "-p", "udp", "--sport", from, "--dport", to, "-j", "DROP",
                    ]
                    .map(String::from)
                    .to_vec(),
                );
            }
        }
        Partition::install(rules)
    }

    /// Whether this machine lets the test drop packets.
    fn available() -> bool {
        let probe = ["OUTPUT", "-p", "udp", "--sport", "9", "-j", "DROP"].map(String::from);
        Partition::iptables("-I", &probe) && Partition::iptables("-D", &probe)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for r in &self.rules {
            while Partition::iptables("-D", r) {}
        }
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port")
}

/// One trial: commands with all nodes up, the fault, commands right after
/// it, heal, and wait until the healed node serves (and has every write).
fn trial(c: &mut TestCluster, cli: &Cli, pinned: &[Cli], t: usize, fault: Fault) -> Trial {
    let project = format!("failover-{t}");
    let up: Vec<Duration> = (0..COMMANDS)
        .map(|i| set(cli, &project, &format!("UP_{i}")))
        .collect();
    let l = leader(c);
    let addr = c.nodes[l].addr();
    let at = Instant::now();
    let cut = match fault {
        Fault::Kill => {
            c.nodes[l].kill9();
            None
        }
        Fault::Partition => Some(Partition::whole(port_of(&addr))),
        Fault::IsolateFromPeers => {
            let peers: Vec<u16> = (0..c.nodes.len())
                .filter(|i| *i != l)
                .map(|i| port_of(&c.nodes[i].addr()))
                .collect();
            Some(Partition::from_peers(port_of(&addr), &peers))
        }
    };
    let first = set(cli, &project, "DOWN_0");
    let first_ok = at.elapsed();
    let down: Vec<Duration> = (1..COMMANDS)
        .map(|i| set(cli, &project, &format!("DOWN_{i}")))
        .collect();
    assert!(
        first_ok <= FIRST_OK_WITHIN,
        "trial {t} ({fault:?} of n{l} at {addr}): the first command after the fault succeeded {} ms after it (took {} ms); at most {} ms allowed",
        first_ok.as_millis(),
        first.as_millis(),
        FIRST_OK_WITHIN.as_millis()
    );
    // Heal, and wait until the node that failed serves every write again.
    match fault {
        Fault::Kill => c.nodes[l].restart_same_addr(),
        Fault::Partition | Fault::IsolateFromPeers => drop(cut),
    }
    assert_eventually!(
        count(&pinned[l], &project) == Some(2 * COMMANDS),
        Duration::from_secs(30),
        "trial {t}: n{l} does not serve all {} writes after healing (reads {:?})",
        2 * COMMANDS,
        count(&pinned[l], &project)
    );
    let r = Trial { first_ok, up, down };
    println!(
        "trial {t:>2} {fault:?} n{l}: first command ok {:>6.0} ms after the fault; p50 all up {:>5.1} ms, one down {:>5.1} ms",
        ms(r.first_ok),
        ms(percentile(&r.up, 0.5)),
        ms(percentile(&r.down, 0.5))
    );
    r
}

fn run(fault: Fault) {
    let mut c = TestCluster::start(3);
    // The user's CLI: its context names the first node (which leads at
    // first) and learns the others on its first command.
    let cli = c.cli_on(0);
    let pinned: Vec<Cli> = (0..c.nodes.len()).map(|i| c.cli_on(i)).collect();
    let n = trials();
    let results: Vec<Trial> = (0..n)
        .map(|t| trial(&mut c, &cli, &pinned, t, fault))
        .collect();

    let firsts: Vec<Duration> = results.iter().map(|r| r.first_ok).collect();
    let up: Vec<Duration> = results.iter().flat_map(|r| r.up.clone()).collect();
    let down: Vec<Duration> = results.iter().flat_map(|r| r.down.clone()).collect();
    let (up50, down50) = (percentile(&up, 0.5), percentile(&down, 0.5));
    println!(
        "{fault:?} x{n}: fault -> first successful command p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; command p50 all up {:.1} ms, one down {:.1} ms ({:.2}x)",
        ms(percentile(&firsts, 0.5)),
        ms(percentile(&firsts, 0.99)),
        ms(percentile(&firsts, 1.0)),
        ms(up50),
        ms(down50),
        down50.as_secs_f64() / up50.as_secs_f64()
    );
    assert!(
        down50.as_secs_f64() <= DOWN_SLOWDOWN_MAX * up50.as_secs_f64(),
        "{fault:?}: with one node down the median command took {:.1} ms, against {:.1} ms with all up (at most {DOWN_SLOWDOWN_MAX}x)",
        ms(down50),
        ms(up50)
    );
}

#[test]
fn leader_killed_next_command_just_works() {
    run(Fault::Kill);
}

#[test]
fn leader_partitioned_next_command_just_works() {
    if partitions_unavailable() {
        return;
    }
    run(Fault::Partition);
}

#[test]
fn leader_cut_off_from_its_peers_but_not_from_clients_next_command_just_works() {
    if partitions_unavailable() {
        return;
    }
    run(Fault::IsolateFromPeers);
}

fn partitions_unavailable() -> bool {
    if !Partition::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the partition test: it needs root and iptables"
        );
        eprintln!("SKIPPED: cutting a port off needs root and iptables");
        return true;
    }
    false
}

/// Under the CLI: a follower that forwarded writes to a leader killed a
/// moment ago gives them up at the election instead of waiting out a fixed
/// timeout. The idempotent one is sent again to the new leader and
/// succeeds; the plain one says its outcome is unknown (the dead leader may
/// have committed it), within about the election plus `MOVED_GRACE`.
#[test]
fn writes_forwarded_to_a_killed_leader_are_given_up_at_the_election() {
    use cairn_protocol::api::{ClientRequest, ClientResponse};
    use cairn_protocol::rpc::{self, RpcError};
    use cairn_protocol::types::{ConfigScope, ConfigVar};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = TestCluster::start(3);
    let l = leader(&c);
    let f = (l + 1) % c.nodes.len();
    let set = |name: &str| ClientRequest::SetConfig {
        var: ConfigVar {
            scope: ConfigScope::Project("forwarded".into()),
            name: name.into(),
            value: "v".into(),
            secret: false,
        },
    };
    let s = rt.block_on(async {
        let s = rpc::connect(&c.nodes[f].dial(&c.token))
            .await
            .expect("connect to a follower");
        // The follower's connection to the leader is up and used.
        rpc::call(&s.conn, &set("WARM"))
            .await
            .expect("a write through the follower");
        s
    });
    c.nodes[l].kill9();
    let at = Instant::now();
    let (plain, idempotent) = rt.block_on(async {
        let plain = async {
            let r = rpc::call(&s.conn, &set("PLAIN")).await;
            (r, at.elapsed())
        };
        let idempotent = async {
            let r = rpc::call(&s.conn, &set("IDEMPOTENT").idempotent(0x1d, 1)).await;
            (r, at.elapsed())
        };
        tokio::join!(plain, idempotent)
    });
    assert!(
        matches!(idempotent.0, Ok(ClientResponse::Ok)),
        "the idempotent write: {:?}",
        idempotent.0
    );
    assert!(
        idempotent.1 < FIRST_OK_WITHIN,
        "the idempotent write took {:?}",
        idempotent.1
    );
    match &plain.0 {
        Err(RpcError::Remote(m)) => assert!(m.contains("outcome is unknown"), "{m}"),
        // It may have reached a leader that had not yet been told: fine.
        Ok(ClientResponse::Ok) => {}
        other => panic!("the plain write: {other:?}"),
    }
    assert!(
        plain.1 < Duration::from_secs(4),
        "the plain write was given up only after {:?}",
        plain.1
    );
    println!(
        "forwarded to a killed leader: idempotent write ok after {} ms; plain write {:?} after {} ms",
        idempotent.1.as_millis(),
        plain.0.as_ref().map(|_| "ok"),
        plain.1.as_millis()
    );
}
