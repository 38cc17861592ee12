//! `server join-token`, `server members`, `server remove`: the cluster's
//! membership, as the leader sees it.

use cairn_protocol::api::{ClientRequest, ClientResponse, MemberRole};
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
    let r = s.call(&ClientRequest::Members).await?;
    s.conn.close(0u32.into(), b"bye");
    let ClientResponse::Members(ms) = r else {
        anyhow::bail!("unexpected answer from the node: {r:?}")
    };
    if json {
        let v: Vec<serde_json::Value> = ms
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": format!("{:x}", m.id), "address": m.addr,
                    "role": role(m.role), "leader": m.leader,
                    "matched_index": m.matched_index, "last_contact_ms": m.last_contact_ms,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<18} {:<24} {:<8} {:<7} {:>8} {:>13}",
        "ID", "ADDRESS", "ROLE", "LEADER", "MATCHED", "LAST CONTACT"
    );
    for m in &ms {
        println!(
            "{:<18} {:<24} {:<8} {:<7} {:>8} {:>13}",
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
        );
    }
    Ok(0)
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
