//! `cairn hostname register|list|delete`: custom host names of the URL
//! service (point the name's DNS at the nodes' ingress).

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::types::Hostname;

use super::{call, table, when, DeploymentArgs, Global};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HostnameCmd {
    /// Serve the app's release (or, with -d N, deployment N) at HOST too.
    /// Point HOST's DNS at the cluster's nodes.
    Register {
        /// The host name, e.g. shop.example.com.
        host: String,
        #[command(flatten)]
        target: DeploymentArgs,
    },
    /// List the registered host names.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop serving HOST.
    Delete { host: String },
}

pub async fn run(g: &Global, cmd: &HostnameCmd) -> anyhow::Result<i32> {
    match cmd {
        HostnameCmd::Register { host, target } => {
            let target = target.target(g)?;
            let what = match target.sequence {
                Some(n) => format!("deployment v{n} of {}", target.app),
                None => format!("the release of {}", target.app),
            };
            let req = ClientRequest::RegisterHostname {
                name: host.clone(),
                target,
            };
            call(g, req).await?;
            println!("{host} now serves {what}.");
            Ok(0)
        }
        HostnameCmd::Delete { host } => {
            call(g, ClientRequest::DeleteHostname { name: host.clone() }).await?;
            println!("{host} is no longer served.");
            Ok(0)
        }
        HostnameCmd::List { json } => {
            let list = match call(g, ClientRequest::ListHostnames).await? {
                ClientResponse::Hostnames(v) => v,
                other => anyhow::bail!("unexpected answer from the node: {other:?}"),
            };
            if *json {
                let items: Vec<serde_json::Value> = list.iter().map(to_json).collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else if list.is_empty() {
                println!("No hostnames.");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            format!("{}/{}", h.project, h.app),
                            h.deployment
                                .map_or_else(|| "release".to_string(), |n| format!("v{n}")),
                            when(h.created_ms),
                        ]
                    })
                    .collect();
                table(&["HOSTNAME", "APP", "SERVES", "CREATED (UTC)"], &rows);
            }
            Ok(0)
        }
    }
}

fn to_json(h: &Hostname) -> serde_json::Value {
    serde_json::json!({
        "hostname": h.name,
        "project": h.project,
        "app": h.app,
        "workspace": h.workspace,
        "deployment": h.deployment.map(|n| format!("v{n}")),
        "created_ms": h.created_ms,
    })
}
