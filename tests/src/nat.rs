//! A NAT topology in network namespaces (issue 19): a "cloud" namespace for
//! the cluster and an "edge" namespace for a runner that can only dial out.
//!
//! ```text
//!  root ns (the CLI)                 cloud ns (the node)
//!  veth C: 10.250.N.1/24  <──────>  eth0 10.250.N.2/24, default via .1
//!  veth E: 10.251.N.1/24  <──────>  edge ns (the runner): eth0 10.251.N.2/24, default via .1
//! ```
//!
//! The root namespace forwards edge → cloud and masquerades it (the cloud
//! sees the edge as 10.250.N.1), and lets back only what answers the edge's
//! own connections; the edge's own firewall drops every new connection
//! coming in. So nothing can connect to the edge, from anywhere.
//!
//! Every name carries this process's id; every iptables rule in the root
//! namespace a comment with it. [`Nat`]'s drop removes the namespaces (and
//! with them the veths) and those rules.

use std::process::Command;

/// Run a command; its failure panics with stderr.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

pub struct Nat {
    tag: String,
    pub cloud_ns: String,
    pub edge_ns: String,
    /// The node's address in the cloud namespace.
    pub cloud_ip: String,
    /// The runner's address in the edge namespace (nothing reaches it).
    pub edge_ip: String,
    /// What the cloud sees the edge's connections come from.
    pub masquerade_ip: String,
}

impl Nat {
    /// Make the topology (needs root, `ip` and `iptables`).
    pub fn setup() -> Nat {
        let pid = std::process::id();
        let n = pid % 250 + 1;
        let tag = format!("cnat{}", pid % 100_000);
        let nat = Nat {
            cloud_ns: format!("{tag}-cloud"),
            edge_ns: format!("{tag}-edge"),
            cloud_ip: format!("10.250.{n}.2"),
            edge_ip: format!("10.251.{n}.2"),
            masquerade_ip: format!("10.250.{n}.1"),
            tag,
        };
        nat.teardown();
        let comment = nat.comment();
        let (vc, ve) = (format!("{}c", nat.tag), format!("{}e", nat.tag));
        for (ns, veth, net) in [
            (&nat.cloud_ns, &vc, format!("10.250.{n}")),
            (&nat.edge_ns, &ve, format!("10.251.{n}")),
        ] {
            sh(&["ip", "netns", "add", ns]);
            sh(&[
                "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            sh(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", veth]);
            sh(&["ip", "link", "set", veth, "up"]);
            let exec = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", ns];
                all.extend_from_slice(args);
                sh(&all);
            };
            exec(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", "eth0"]);
            exec(&["ip", "link", "set", "eth0", "up"]);
            exec(&["ip", "link", "set", "lo", "up"]);
            exec(&["ip", "route", "add", "default", "via", &format!("{net}.1")]);
        }
        sh(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        // Edge → cloud, masqueraded; cloud → edge only as answers.
        sh(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            &format!("10.251.{n}.0/24"),
            "-o",
            &vc,
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            &comment,
        ]);
        sh(&[
            "iptables",
            "-I",
            "FORWARD",
            "1",
            "-i",
            &ve,
            "-o",
            &vc,
            "-j",
            "ACCEPT",
            "-m",
            "comment",
            "--comment",
            &comment,
        ]);
        sh(&[
            "iptables",
            "-I",
            "FORWARD",
            "1",
            "-i",
            &vc,
            "-o",
            &ve,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
            "-m",
            "comment",
            "--comment",
            &comment,
        ]);
        sh(&[
            "iptables",
            "-A",
            "FORWARD",
            "-i",
            &vc,
            "-o",
            &ve,
            "-j",
            "DROP",
            "-m",
            "comment",
            "--comment",
            &comment,
        ]);
        // The edge's own firewall: answers and loopback in, nothing new.
        for rule in [
            &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"][..],
            &[
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ][..],
            &["-A", "INPUT", "-j", "DROP"][..],
        ] {
            let mut all = vec!["ip", "netns", "exec", &nat.edge_ns, "iptables"];
            all.extend_from_slice(rule);
            sh(&all);
        }
        nat
    }

    fn comment(&self) -> String {
        format!("cairn-nat-{}", self.tag)
    }

    /// `ip netns exec NS` (a wrapper for a command to run there).
    pub fn exec_in(ns: &str) -> [&str; 4] {
        ["ip", "netns", "exec", ns]
    }

    /// Run `args` in namespace `ns`; its output, or `None` when it failed.
    pub fn run_in(ns: &str, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn teardown(&self) {
        sh_quiet(&["ip", "netns", "del", &self.cloud_ns]);
        sh_quiet(&["ip", "netns", "del", &self.edge_ns]);
        let comment = self.comment();
        for table in ["filter", "nat"] {
            let rules = Command::new("iptables")
                .args(["-t", table, "-S"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for rule in rules.lines().filter(|r| r.contains(&comment)) {
                // "-A CHAIN spec…" → "-D CHAIN spec…"
                let mut args: Vec<String> = vec!["-t".into(), table.into()];
                let spec = rule.trim_start_matches("-A ");
                args.push("-D".into());
                args.extend(shell_words(spec));
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let mut all = vec!["iptables"];
                all.extend(refs);
                sh_quiet(&all);
            }
        }
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Split an `iptables -S` line into words (quoted comments kept whole).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
