//! `server run` (a node in this process), `server stop-local`, `server info`;
//! the cluster subcommands (`join-token`, `members`, `remove`) are in `cluster`.

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc;

use super::Global;
use crate::{client, local};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServerCmd {
    /// Run a Cairn node in this process (the same code as `cairn-node`).
    Run(Box<cairn_node::NodeConfig>),
    /// Stop the local node the CLI started for the embedded default.
    StopLocal,
    /// Show the node this context talks to.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Mint a token that lets one new node join this cluster (it is used up
    /// when that node gets its certificate) and print the command to start it.
    JoinToken {
        /// A name to recognise the token by.
        #[arg(long, default_value = "join")]
        name: String,
        /// Lifetime in seconds (default: 10 minutes).
        #[arg(long)]
        ttl: Option<u64>,
        /// Also write the token to FILE (mode 0600), for `cairn-node --join-token-file FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// List the cluster's members (id, address, role, leader, progress).
    Members {
        #[arg(long)]
        json: bool,
    },
    /// Where a rolling upgrade stands: each member's release, the cluster
    /// version, and what to do next (docs/upgrading.md). With --finish, move
    /// the cluster to the newest protocol every voter speaks now instead of
    /// at the end of the rollback window (after that, no node can go back).
    Upgrade {
        #[arg(long)]
        finish: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove a node from the cluster (its id as `server members` shows it).
    Remove {
        #[arg(value_parser = super::cluster::parse_node_id)]
        node: u64,
    },
    /// Snapshots of the cluster's replicated state.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCmd {
    /// Save a consistent copy of the cluster's state to FILE (it holds the
    /// CA key and token hashes: keep it secret). Restore it into a new
    /// cluster with `cairn-node --restore FILE --data-dir NEW_DIR`.
    Save { file: std::path::PathBuf },
}

pub async fn run(g: &Global, cmd: &ServerCmd) -> anyhow::Result<i32> {
    match cmd {
        ServerCmd::Run(cfg) => {
            let node = cairn_node::start((**cfg).clone()).await?;
            println!("cairn node listening on {} (QUIC)", node.addr);
            println!("CA fingerprint: {}", node.ca_fingerprint);
            if let Some(tok) = &node.bootstrap_token {
                if cfg.bootstrap_file.is_none() {
                    println!("Bootstrap token (shown once; use it with `cairn context create --bootstrap-token`):");
                    println!("  {tok}");
                }
            }
            let leave = node.leaves_on_shutdown(cfg);
            node.run_until(shutdown_signal(), leave).await;
            Ok(0)
        }
        ServerCmd::StopLocal => {
            if local::stop()? {
                println!("Local node stopped.");
            } else {
                println!("No local node is running.");
            }
            Ok(0)
        }
        ServerCmd::JoinToken { name, ttl, out } => {
            super::cluster::join_token(g, name, *ttl, out.as_deref()).await
        }
        ServerCmd::Members { json } => super::cluster::members(g, *json).await,
        ServerCmd::Upgrade { finish, json } => super::cluster::upgrade(g, *finish, *json).await,
        ServerCmd::Remove { node } => super::cluster::remove(g, *node).await,
        ServerCmd::Snapshot(SnapshotCmd::Save { file }) => {
            super::cluster::snapshot_save(g, file).await
        }
        ServerCmd::Info { json } => {
            let ctx = client::resolve(g.context.as_deref(), true).await?;
            let s = client::connect(&ctx).await?;
            let r = rpc::call(&s.conn, &ClientRequest::ServerInfo).await?;
            s.conn.close(0u32.into(), b"bye");
            let ClientResponse::ServerInfo(info) = r else {
                anyhow::bail!("unexpected answer from the node: {r:?}")
            };
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "node_id": info.node_id, "version": info.version, "protocol": info.protocol,
                        "ca_fingerprint": info.ca_fingerprint, "leader": info.leader, "members": info.members,
                    }))?
                );
            } else {
                println!(
                    "Node:     {:x} (cairn {}, protocol {})",
                    info.node_id, info.version, info.protocol
                );
                println!("Address:  {}", ctx.address);
                println!("CA:       {}", info.ca_fingerprint);
                println!(
                    "Leader:   {}",
                    info.leader
                        .map(|l| format!("{l:x}"))
                        .unwrap_or_else(|| "none".into())
                );
                for (id, addr) in info.members {
                    println!("Member:   {id:x} at {addr}");
                }
            }
            Ok(0)
        }
    }
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
    }
}
