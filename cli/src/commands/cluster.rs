//! `server join-token`, `server members`, `server remove`: the cluster's
//! membership, as the leader sees it.

use cairn_protocol::api::{ClientRequest, ClientResponse, MemberRole, UpgradeStatus};
use cairn_protocol::rpc;
use cairn_protocol::types::TokenScope;

use super::Global;
use crate::client;

/// Mint a join token and print the `cairn-node` command that uses it. The
/// command passes the token through the environment (or a 0600 file with
/// `out`), never as an argument: any local user can read a process's
/// arguments in /proc while it runs.
pub async fn join_token(
    g: &Global,
    name: &str,
    ttl_s: Option<u64>,
    out: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s
        .call(&ClientRequest::CreateToken {
            scope: TokenScope::Join,
            name: name.to_string(),
            ttl_s,
        })
        .await?;
    s.conn.close(0u32.into(), b"bye");
    let ClientResponse::Token { token } = r else {
        anyhow::bail!("unexpected answer from the node: {r:?}")
    };
    println!(
        "Join token (admits one node, valid for {}):",
        ttl_text(ttl_s)
    );
    println!("  {token}");
    let node = format!(
        "cairn-node --data-dir DIR --listen ADDR --join {} --join-ca {}",
        ctx.address, ctx.ca_fingerprint
    );
    match out {
        Some(path) => {
            cairn_protocol::private::write(path, format!("{token}\n").as_bytes())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!(
                "Written to {} (mode 0600). Start the new node with:",
                path.display()
            );
            println!("  {node} --join-token-file {}", path.display());
        }
        None => {
            println!("Start the new node with (the token goes in through the environment, not the command line):");
            println!("  CAIRN_JOIN_TOKEN={token} {node}");
        }
    }
    Ok(0)
}

fn ttl_text(ttl_s: Option<u64>) -> String {
    let s = ttl_s.unwrap_or(10 * 60);
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

pub async fn members(g: &Global, json: bool) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    // A node of release 0.1.0 (protocol 4) knows no releases: plain members.
    let (ms, status) = if s.node.version >= 5 {
        let r = s.call(&ClientRequest::Upgrade { finish: false }).await?;
        let ClientResponse::Upgrade(st) = r else {
            anyhow::bail!("unexpected answer from the node: {r:?}")
        };
        (st.members.clone(), Some(st))
    } else {
        let r = s.call(&ClientRequest::Members).await?;
        let ClientResponse::Members(ms) = r else {
            anyhow::bail!("unexpected answer from the node: {r:?}")
        };
        (ms, None)
    };
    s.conn.close(0u32.into(), b"bye");
    let release_of = |id: u64| -> String {
        match &status {
            Some(st) => st
                .releases
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| r.release.clone())
                .unwrap_or_else(|| "?".into()),
            None => "?".into(),
        }
    };
    if json {
        let v: Vec<serde_json::Value> = ms
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": format!("{:x}", m.id), "address": m.addr,
                    "role": role(m.role), "leader": m.leader,
                    "matched_index": m.matched_index, "last_contact_ms": m.last_contact_ms,
                    "release": release_of(m.id),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<18} {:<24} {:<8} {:<7} {:>8} {:>13}  RELEASE",
        "ID", "ADDRESS", "ROLE", "LEADER", "MATCHED", "LAST CONTACT"
    );
    for m in &ms {
        println!(
            "{:<18} {:<24} {:<8} {:<7} {:>8} {:>13}  {}",
            format!("{:x}", m.id),
            m.addr,
            role(m.role),
            if m.leader { "yes" } else { "" },
            m.matched_index
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            m.last_contact_ms
                .map(|ms| format!("{ms} ms ago"))
                .unwrap_or_else(|| "-".into()),
            release_of(m.id),
        );
    }
    match &status {
        Some(st) => {
            println!("Cluster version: protocol {}", st.cluster_version);
            if let Some(w) = mixed_warning(st) {
                eprintln!("{w}");
            }
        }
        None => println!(
            "Cluster version: protocol {} (the node at {} runs cairn-node {}, which does not report releases)",
            s.node.version, s.addr(), s.node.release
        ),
    }
    Ok(0)
}

/// The warning when the members have run different releases for longer
/// than an upgrade takes.
fn mixed_warning(st: &UpgradeStatus) -> Option<String> {
    let mixed = st.mixed_for_ms?;
    if mixed < st.mixed_warn_after_ms {
        return None;
    }
    let mut releases: Vec<&str> = st
        .releases
        .iter()
        .filter_map(|r| r.release.as_deref())
        .collect();
    releases.sort();
    releases.dedup();
    Some(format!(
        "warning: the members have run different releases ({}) for {} min; an upgrade takes minutes. Finish it or roll back: `cairn server upgrade` says what is left (docs/upgrading.md)",
        releases.join(", "),
        mixed / 60_000
    ))
}

/// `cairn server upgrade [--finish]`: where a rolling upgrade stands and
/// what to do next.
pub async fn upgrade(g: &Global, finish: bool, json: bool) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s.call(&ClientRequest::Upgrade { finish }).await?;
    s.conn.close(0u32.into(), b"bye");
    let ClientResponse::Upgrade(st) = r else {
        anyhow::bail!("unexpected answer from the node: {r:?}")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&upgrade_json(&st))?);
        return Ok(0);
    }
    print!("{}", upgrade_text(&st, finish));
    Ok(0)
}

fn upgrade_json(st: &UpgradeStatus) -> serde_json::Value {
    serde_json::json!({
        "cluster_version": st.cluster_version,
        "next_version": st.next_version,
        "finishes_in_ms": st.finishes_in_ms,
        "mixed_for_ms": st.mixed_for_ms,
        "members": st.members.iter().map(|m| {
            let r = st.releases.iter().find(|r| r.id == m.id);
            serde_json::json!({
                "id": format!("{:x}", m.id),
                "address": m.addr,
                "role": role(m.role),
                "leader": m.leader,
                "release": r.and_then(|r| r.release.clone()),
                "protocol_min": r.and_then(|r| r.versions).map(|v| v.min),
                "protocol_max": r.and_then(|r| r.versions).map(|v| v.max),
            })
        }).collect::<Vec<_>>(),
    })
}

fn upgrade_text(st: &UpgradeStatus, finished_now: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Cluster version: protocol {}", st.cluster_version);
    let _ = writeln!(
        out,
        "{:<18} {:<24} {:<8} {:<7} {:<14} PROTOCOL",
        "ID", "ADDRESS", "ROLE", "LEADER", "RELEASE"
    );
    let newest = st
        .releases
        .iter()
        .filter_map(|r| r.versions.map(|v| v.max))
        .max()
        .unwrap_or(st.cluster_version);
    let mut behind = Vec::new();
    for m in &st.members {
        let r = st.releases.iter().find(|r| r.id == m.id);
        let versions = r.and_then(|r| r.versions);
        let release = r
            .and_then(|r| r.release.clone())
            .unwrap_or_else(|| "?".into());
        if versions.is_none_or(|v| v.max < newest) {
            behind.push(format!("{:x} ({}, {release})", m.id, m.addr));
        }
        let _ = writeln!(
            out,
            "{:<18} {:<24} {:<8} {:<7} {:<14} {}",
            format!("{:x}", m.id),
            m.addr,
            role(m.role),
            if m.leader { "yes" } else { "" },
            release,
            versions
                .map(|v| format!("{}-{}", v.min, v.max))
                .unwrap_or_else(|| "?".into()),
        );
    }
    if finished_now {
        let _ = writeln!(
            out,
            "The upgrade is finished: the cluster uses protocol version {}. Nodes can no longer go back to an older release.",
            st.cluster_version
        );
    } else if !behind.is_empty() {
        let _ = writeln!(
            out,
            "Next: upgrade {} — one node at a time: stop it, replace its cairn-node, start it, and wait until `cairn server members` shows it with its MATCHED index at the leader's before the next (docs/upgrading.md).",
            behind.join(", ")
        );
    } else if st.next_version.is_some_and(|v| v > st.cluster_version) {
        let v = st.next_version.unwrap_or_default();
        let when = st
            .finishes_in_ms
            .map(|ms| format!("in {} min by itself", ms.div_ceil(60_000)))
            .unwrap_or_else(|| "once every voter has answered".into());
        let _ = writeln!(
            out,
            "Every voter speaks protocol version {v}. The cluster moves to it {when}; until then any node can be rolled back to the release it came from. `cairn server upgrade --finish` moves it now (no going back after)."
        );
    } else {
        let _ = writeln!(out, "Nothing to do: every member runs the same release.");
    }
    if let Some(w) = mixed_warning(st) {
        let _ = writeln!(out, "{w}");
    }
    out
}

fn role(r: MemberRole) -> &'static str {
    match r {
        MemberRole::Voter => "voter",
        MemberRole::Learner => "learner",
    }
}

/// Parse a node id as printed by `cairn server members` (hex, `0x` optional).
pub fn parse_node_id(s: &str) -> Result<u64, String> {
    let t = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(t, 16)
        .map_err(|_| format!("{s:?} is not a node id (hex, as `cairn server members` shows)"))
}

pub async fn remove(g: &Global, id: u64) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s.call(&ClientRequest::RemoveMember { id }).await?;
    s.conn.close(0u32.into(), b"bye");
    match r {
        ClientResponse::Ok => {
            println!("Node {id:x} removed from the cluster.");
            Ok(0)
        }
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `server snapshot save FILE`: the state as of the leader's read index,
/// written atomically (temp file, fsync, rename) with mode 0600.
pub async fn snapshot_save(g: &Global, file: &std::path::Path) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let s = client::connect(&ctx).await?;
    let bytes = rpc::snapshot_save(&s.conn).await;
    s.conn.close(0u32.into(), b"bye");
    let bytes = bytes?;
    cairn_node::identity::write_atomic(file, &bytes, true)
        .map_err(|e| anyhow::anyhow!("cannot write the snapshot: {e}"))?;
    println!(
        "Saved a snapshot of the cluster state ({} bytes) to {}",
        bytes.len(),
        file.display()
    );
    println!("Restore it into a new cluster with:");
    println!(
        "  cairn-node --restore {} --data-dir NEW_DIR --listen ADDR",
        file.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use cairn_protocol::api::{MemberInfo, MemberRelease};
    use cairn_protocol::handshake::Versions;

    use super::*;

    fn status(releases: &[(&str, u32, u32)], cluster_version: u32) -> UpgradeStatus {
        let members = (0..releases.len())
            .map(|i| MemberInfo {
                id: i as u64 + 1,
                addr: format!("10.0.0.{}:9701", i + 1),
                role: MemberRole::Voter,
                leader: i == 0,
                matched_index: Some(10),
                last_contact_ms: Some(0),
            })
            .collect();
        let rel = releases
            .iter()
            .enumerate()
            .map(|(i, (r, min, max))| MemberRelease {
                id: i as u64 + 1,
                release: Some(r.to_string()),
                versions: Some(Versions {
                    min: *min,
                    max: *max,
                }),
                learnt_ms_ago: Some(5),
            })
            .collect();
        let next = releases.iter().map(|r| r.2).min();
        UpgradeStatus {
            members,
            releases: rel,
            cluster_version,
            next_version: next,
            finishes_in_ms: None,
            mixed_for_ms: None,
            mixed_warn_after_ms: 1_800_000,
            answered_by: 1,
        }
    }

    #[test]
    fn the_guidance_names_what_is_left_then_the_window_then_nothing() {
        let mid = status(&[("0.2.0", 4, 5), ("0.1.0", 4, 4), ("0.1.0", 4, 4)], 4);
        let text = upgrade_text(&mid, false);
        assert!(
            text.contains("Next: upgrade 2 (10.0.0.2:9701, 0.1.0), 3 (10.0.0.3:9701, 0.1.0)"),
            "{text}"
        );
        let mut all = status(&[("0.2.0", 4, 5), ("0.2.0", 4, 5), ("0.2.0", 4, 5)], 4);
        all.finishes_in_ms = Some(540_000);
        let text = upgrade_text(&all, false);
        assert!(
            text.contains(
                "Every voter speaks protocol version 5. The cluster moves to it in 9 min by itself"
            ),
            "{text}"
        );
        let done = status(&[("0.2.0", 4, 5), ("0.2.0", 4, 5)], 5);
        assert!(upgrade_text(&done, false).contains("Nothing to do"));
        assert!(upgrade_text(&done, true).contains("The upgrade is finished"));
    }

    #[test]
    fn members_warn_only_after_an_upgrade_took_too_long() {
        let mut st = status(&[("0.2.0", 4, 5), ("0.1.0", 4, 4)], 4);
        assert_eq!(mixed_warning(&st), None);
        st.mixed_for_ms = Some(60_000);
        assert_eq!(
            mixed_warning(&st),
            None,
            "a minute is an upgrade in progress"
        );
        st.mixed_for_ms = Some(2_400_000);
        let w = mixed_warning(&st).expect("warns");
        assert!(
            w.contains("different releases (0.1.0, 0.2.0) for 40 min"),
            "{w}"
        );
    }
}
