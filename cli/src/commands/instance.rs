//! `instance list`: the app instances (entrypoints) the cluster knows.

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::types::Instance;

use super::{table, when, Global};
use crate::client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum InstanceCmd {
    /// List the instances: deployment, instance, node, since, last seen, state.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(g: &Global, cmd: &InstanceCmd) -> anyhow::Result<i32> {
    let InstanceCmd::List { json } = cmd;
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s.call(&ClientRequest::ListInstances).await?;
    s.conn.close(0u32.into(), b"bye");
    let instances = match r {
        ClientResponse::Instances(v) => v,
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    };
    if *json {
        let items: Vec<serde_json::Value> = instances.iter().map(to_json).collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(0);
    }
    if instances.is_empty() {
        println!("No instances.");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                format!("{}/{} v{}", i.project, i.app, i.sequence),
                i.id.clone(),
                format!("{:x}", i.node),
                when(i.since_ms),
                when(i.last_seen_ms),
                i.state.word().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "DEPLOYMENT",
            "INSTANCE",
            "NODE",
            "SINCE (UTC)",
            "LAST SEEN (UTC)",
            "STATE",
        ],
        &rows,
    );
    Ok(0)
}

fn to_json(i: &Instance) -> serde_json::Value {
    serde_json::json!({
        "deployment_id": i.deployment,
        "project": i.project,
        "app": i.app,
        "workspace": i.workspace,
        "deployment": format!("v{}", i.sequence),
        "instance": i.id,
        "pid": i.pid,
        "node": format!("{:x}", i.node),
        "since_ms": i.since_ms,
        "last_seen_ms": i.last_seen_ms,
        "state": i.state.word(),
    })
}
