//! `artifact list`, `deployment list`, `release list`.

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::types::{OpKind, OpStatus, Operation, ResourceState};

use super::{table, when, Global};
use crate::client;

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only this app (default: every app of the project in the current directory, or everything).
    #[arg(long)]
    pub app: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn operations(
    g: &Global,
    kind: OpKind,
    app: Option<String>,
) -> anyhow::Result<Vec<Operation>> {
    let project = crate::config::find(&g.dir())
        .ok()
        .and_then(|p| super::config_names(&p).ok())
        .and_then(|n| n.project);
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s
        .call(&ClientRequest::ListOperations { kind, project, app })
        .await?;
    s.conn.close(0u32.into(), b"bye");
    match r {
        ClientResponse::Operations(ops) => Ok(ops),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
}

fn status(op: &Operation) -> String {
    match (op.status, op.state) {
        (OpStatus::Success, ResourceState::Destroyed) => "destroyed".into(),
        (s, _) => s.word().into(),
    }
}

pub async fn run(g: &Global, kind: OpKind, args: &ListArgs) -> anyhow::Result<i32> {
    let ops = operations(g, kind, args.app.clone()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ops)?);
        return Ok(0);
    }
    if ops.is_empty() {
        println!("No {}s yet.", kind.noun());
        return Ok(0);
    }
    let released: std::collections::BTreeMap<(String, String), u64> = if kind == OpKind::Deployment
    {
        operations(g, OpKind::Release, args.app.clone())
            .await?
            .into_iter()
            .filter(|r| r.status == OpStatus::Success)
            .filter_map(|r| Some(((r.project.clone(), r.app.clone()), r.input_seq?)))
            .collect()
    } else {
        Default::default()
    };
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            let mut st = status(o);
            if released.get(&(o.project.clone(), o.app.clone())) == Some(&o.sequence)
                && o.state == ResourceState::Active
            {
                st.push_str(" (released)");
            }
            let input = match (kind, o.input_seq) {
                (OpKind::Release, Some(s)) => format!("deployment v{s}"),
                (_, Some(s)) => format!("build v{s}"),
                (_, None) => String::new(),
            };
            vec![
                format!("v{}", o.sequence),
                o.app.clone(),
                st,
                o.plugin.clone(),
                when(o.started_ms),
                input,
                o.url.clone().or(o.error.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "SEQ",
            "APP",
            "STATUS",
            "PLUGIN",
            "STARTED (UTC)",
            "FROM",
            "URL / ERROR",
        ],
        &rows,
    );
    Ok(0)
}
