//! The test network: one network namespace per node, each with a veth pair
//! whose other end is on a bridge in the root namespace; the bridge has an
//! address so the workload can run from the root namespace. Faults are
//! iptables rules and tc qdiscs inside the nodes' namespaces, so nothing
//! outside the namespaces we create is touched, except one FORWARD rule that
//! lets traffic cross our bridge (Docker hosts drop bridged traffic by
//! default) and is removed with the bridge.
//!
//! Several runs may go on side by side, each in its own [`Lane`] (0–9): its
//! own names, subnet and lock. Invariant: every name starts with [`PREFIX`]
//! followed by the lane digit, so `cleanup` finds everything a crashed run
//! left behind, of one lane or of all.

use std::net::Ipv4Addr;
use std::process::Command;

/// Every name of ours starts with this (then the lane digit).
pub const PREFIX: &str = "cchaos";
const FORWARD_COMMENT: &str = "cairn-chaos";
/// Lanes 0..MAX_LANES.
pub const MAX_LANES: u8 = 10;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `{cmd}`: {source}")]
    Spawn { cmd: String, source: std::io::Error },
}

/// Run a command; its failure is an error carrying stderr.
pub fn sh(args: &[&str]) -> Result<String, NetError> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| NetError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command and ignore its failure (teardown of what may not exist).
fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// One run's slot on this machine: namespaces `cchaos<L>-1`, `cchaos<L>-2`,
/// …, host-side veths `cchaos<L>-v1`, …, bridge `cchaos<L>-br`, and the
/// private subnet 10.237.(77+L).0/24, used only inside what we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lane(pub u8);

impl Lane {
    fn prefix(self) -> String {
        format!("{PREFIX}{}-", self.0)
    }

    pub fn ns_name(self, node: usize) -> String {
        format!("{}{}", self.prefix(), node + 1)
    }

    fn veth_host(self, node: usize) -> String {
        format!("{}v{}", self.prefix(), node + 1)
    }

    pub fn bridge(self) -> String {
        format!("{}br", self.prefix())
    }

    fn subnet(self) -> [u8; 3] {
        [10, 237, 77 + self.0]
    }

    /// Node `i` (0-based) lives at .11, .12, …; the bridge is .1.
    pub fn node_ip(self, node: usize) -> Ipv4Addr {
        let s = self.subnet();
        Ipv4Addr::new(s[0], s[1], s[2], 11 + node as u8)
    }

    pub fn bridge_ip(self) -> Ipv4Addr {
        let s = self.subnet();
        Ipv4Addr::new(s[0], s[1], s[2], 1)
    }

    fn forward_rule(self, op: &str) -> Vec<String> {
        let br = self.bridge();
        [
            "iptables",
            op,
            "FORWARD",
            "-i",
            &br,
            "-o",
            &br,
            "-m",
            "comment",
            "--comment",
            &format!("{FORWARD_COMMENT}-{}", self.0),
            "-j",
            "ACCEPT",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    }
}

/// Check the tools we need exist; the message names the Debian package.
pub fn preflight() -> Result<(), String> {
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("iptables", "iptables"),
    ] {
        if Command::new(tool)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!(
                "`{tool}` not found: install the `{pkg}` package (apt-get install {pkg})"
            ));
        }
    }
    Ok(())
}

/// The namespaces and bridge of one run; torn down on drop.
pub struct Net {
    pub lane: Lane,
    pub nodes: usize,
    /// Whether this kernel has `sch_netem` (delay faults fall back to `tbf`).
    pub netem: bool,
    torn_down: bool,
}

impl Net {
    pub fn setup(lane: Lane, nodes: usize) -> Result<Net, NetError> {
        // Whatever a crashed run of this lane left behind goes first.
        cleanup(Some(lane));
        let mut net = Net {
            lane,
            nodes,
            netem: false,
            torn_down: false,
        };
        let cidr = |ip: Ipv4Addr| format!("{ip}/24");
        let bridge = lane.bridge();
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &cidr(lane.bridge_ip()), "dev", &bridge])?;
        sh(&["ip", "link", "set", &bridge, "up"])?;
        // Bridged frames pass through iptables FORWARD when br_netfilter is
        // loaded; let ours through.
        let rule = lane.forward_rule("-I");
        sh_quiet(&rule.iter().map(String::as_str).collect::<Vec<_>>());
        for i in 0..nodes {
            let ns = lane.ns_name(i);
            let vh = lane.veth_host(i);
            sh(&["ip", "netns", "add", &ns])?;
            sh(&[
                "ip", "link", "add", &vh, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "link", "set", &vh, "master", &bridge])?;
            sh(&["ip", "link", "set", &vh, "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &cidr(lane.node_ip(i)),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        // Probe netem once (some kernels lack sch_netem).
        let ns = lane.ns_name(0);
        net.netem = sh(&[
            "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
            "delay", "1ms",
        ])
        .is_ok();
        if net.netem {
            sh_quiet(&[
                "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ]);
        }
        Ok(net)
    }

    fn in_ns(&self, node: usize, args: &[&str]) -> Result<String, NetError> {
        let ns = self.lane.ns_name(node);
        let mut full = vec!["ip", "netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Drop all traffic between `node` and each of `others` (both ways,
    /// rules on `node`'s side only; call it for both sides to be sure).
    pub fn block(&self, node: usize, others: &[usize]) -> Result<(), NetError> {
        for &o in others {
            let ip = self.lane.node_ip(o).to_string();
            self.in_ns(node, &["iptables", "-A", "INPUT", "-s", &ip, "-j", "DROP"])?;
            self.in_ns(node, &["iptables", "-A", "OUTPUT", "-d", &ip, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Split the cluster: no traffic between `side` and the other nodes.
    /// Clients (the bridge address) still reach every node.
    pub fn partition(&self, side: &[usize]) -> Result<(), NetError> {
        let other: Vec<usize> = (0..self.nodes).filter(|i| !side.contains(i)).collect();
        for &a in side {
            self.block(a, &other)?;
        }
        for &b in &other {
            self.block(b, side)?;
        }
        Ok(())
    }

    /// Drop `pct`% of the packets `node` sends and receives (all peers and
    /// clients).
    pub fn loss(&self, node: usize, pct: u32) -> Result<(), NetError> {
        let p = format!("{:.2}", f64::from(pct) / 100.0);
        for chain in ["INPUT", "OUTPUT"] {
            self.in_ns(
                node,
                &[
                    "iptables",
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Delay `node`'s outgoing packets by `ms` (± 25 % jitter) with netem;
    /// without netem, throttle the link with tbf so packets queue (and
    /// past `ms` of queueing, drop).
    pub fn delay(&self, node: usize, ms: u32) -> Result<(), NetError> {
        if self.netem {
            let d = format!("{ms}ms");
            let j = format!("{}ms", ms / 4);
            self.in_ns(
                node,
                &[
                    "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &d, &j,
                ],
            )?;
        } else {
            let lat = format!("{ms}ms");
            self.in_ns(
                node,
                &[
                    "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "256kbit", "burst",
                    "4kb", "latency", &lat,
                ],
            )?;
        }
        Ok(())
    }

    /// Remove every rule and qdisc from `node`'s namespace.
    pub fn heal(&self, node: usize) {
        let ns = self.lane.ns_name(node);
        sh_quiet(&["ip", "netns", "exec", &ns, "iptables", "-F"]);
        sh_quiet(&[
            "ip", "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
        ]);
    }

    pub fn heal_all(&self) {
        for i in 0..self.nodes {
            self.heal(i);
        }
    }

    pub fn teardown(&mut self) {
        if !self.torn_down {
            self.torn_down = true;
            cleanup(Some(self.lane));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Remove every namespace, veth, bridge and FORWARD rule of one lane (or,
/// with `None`, of every lane), killing any process still inside those
/// namespaces. Safe to run at any time, but `None` also tears down the runs
/// of other lanes in progress.
pub fn cleanup(lane: Option<Lane>) -> Vec<String> {
    let ours = |name: &str| match lane {
        Some(l) => name.starts_with(&l.prefix()),
        None => (0..MAX_LANES).any(|l| name.starts_with(&Lane(l).prefix())),
    };
    let mut removed = Vec::new();
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if !ours(ns) {
            continue;
        }
        let pids = sh(&["ip", "netns", "pids", ns]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            sh_quiet(&["kill", "-CONT", pid]);
            sh_quiet(&["kill", "-9", pid]);
            removed.push(format!("process {pid} in {ns}"));
        }
        sh_quiet(&["ip", "netns", "del", ns]);
        removed.push(format!("namespace {ns}"));
    }
    let links = sh(&["ip", "-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: cchaos0-v1@if2: <…"
        let Some(name) = line.split(':').nth(1) else {
            continue;
        };
        let name = name.trim().split('@').next().unwrap_or("");
        if ours(name) {
            sh_quiet(&["ip", "link", "del", name]);
            removed.push(format!("link {name}"));
        }
    }
    let lanes: Vec<Lane> = match lane {
        Some(l) => vec![l],
        None => (0..MAX_LANES).map(Lane).collect(),
    };
    for l in lanes {
        let rule = l.forward_rule("-D");
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        while sh(&rule).is_ok() {
            removed.push(format!("FORWARD rule of lane {}", l.0));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_names_fit_and_stay_apart() {
        for l in 0..MAX_LANES {
            let lane = Lane(l);
            // Linux interface names are at most 15 bytes.
            assert!(lane.veth_host(8).len() <= 15, "{}", lane.veth_host(8));
            assert!(lane.bridge().len() <= 15);
            for m in 0..MAX_LANES {
                if m != l {
                    let other = Lane(m);
                    assert!(!lane.ns_name(0).starts_with(&other.prefix()));
                    assert_ne!(lane.node_ip(0), other.node_ip(0));
                }
            }
        }
        assert_eq!(Lane(0).ns_name(0), "cchaos0-1");
        assert_eq!(Lane(3).node_ip(1), Ipv4Addr::new(10, 237, 80, 12));
    }
}
