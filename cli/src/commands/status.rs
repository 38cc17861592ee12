//! `status`: the node, and for each app its latest build, its deployments
//! (with live instance counts) and what is released.

use std::collections::BTreeMap;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::types::{
    Instance, InstanceState, JobKind, JobState, OpKind, OpStatus, Operation, ResourceState,
};

use super::lifecycle::{self, AppArg};
use super::list::operations;
use super::runner::RunnerSelect;
use super::Global;
use crate::client;
use crate::plugins::DeploymentHealth;
use crate::runner::ops::status::result_key;

/// The instances the cluster knows (their entrypoints' registrations).
async fn instances(g: &Global) -> anyhow::Result<Vec<Instance>> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s.call(&ClientRequest::ListInstances).await?;
    s.conn.close(0u32.into(), b"bye");
    match r {
        ClientResponse::Instances(i) => Ok(i),
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
}

/// Runs a status job for one app and reads its reports.
async fn platform_reports(g: &Global, app: &AppArg) -> Reports {
    let q = lifecycle::queue(g, app, JobKind::Status, false)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let r = lifecycle::collect(&q.session.conn, q.id).await;
    q.session.conn.close(0u32.into(), b"bye");
    let (state, error, results) = r.map_err(|e| format!("{e:#}"))?;
    if state != JobState::Success {
        return Err(format!(
            "status job {} {}: {}",
            q.id,
            state.word(),
            error.unwrap_or_else(|| "no reason given".into())
        ));
    }
    let mut reports = BTreeMap::new();
    for (key, value) in results {
        let Some(seq) = key
            .strip_prefix("status v")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| result_key(*s) == key)
        else {
            continue;
        };
        let health: DeploymentHealth =
            serde_json::from_str(&value).map_err(|e| format!("malformed report of v{seq}: {e}"))?;
        reports.insert(seq, health);
    }
    Ok(reports)
}

/// What the app's platform plugin said of its active deployments (a status
/// job run on a runner), by sequence; or why it could not say.
type Reports = Result<BTreeMap<u64, DeploymentHealth>, String>;

pub async fn run(g: &Global, json: bool, runner: &RunnerSelect) -> anyhow::Result<i32> {
    // A config that does not load is an error (file:line), not something to
    // skip silently. Without one: every app the cluster knows, from its records.
    // Variables are read as `up` reads them (values the cluster stores among them).
    let cfg = match crate::config::find(&g.dir()) {
        Ok(_) => Some(super::load_config_connected(g, &crate::config::Inputs::default()).await?),
        Err(_) => None,
    };
    let builds = operations(g, OpKind::Build, None).await?;
    let deps = operations(g, OpKind::Deployment, None).await?;
    let rels = operations(g, OpKind::Release, None).await?;
    let instances = instances(g).await?;
    let active = |d: &&Operation| d.status == OpStatus::Success && d.state == ResourceState::Active;
    // The platform's view comes from its plugin, run on a runner (this CLI,
    // or the one asked for) with the app's own config: only for the apps of
    // the config here.
    let mut reports: BTreeMap<(String, String), Reports> = BTreeMap::new();
    if let Some(c) = &cfg {
        for app in &c.apps {
            if !deps
                .iter()
                .filter(active)
                .any(|d| d.project == c.project && d.app == app.name)
            {
                continue;
            }
            let arg = AppArg {
                app: Some(app.name.clone()),
                runner: runner.clone(),
                inputs: Default::default(),
            };
            reports.insert(
                (c.project.clone(), app.name.clone()),
                platform_reports(g, &arg).await,
            );
        }
    }
    let mut apps: Vec<(String, String)> = deps
        .iter()
        .chain(builds.iter())
        .map(|o| (o.project.clone(), o.app.clone()))
        .collect();
    apps.sort();
    apps.dedup();
    let mut out = Vec::new();
    for (project, app) in apps {
        let latest_build = builds
            .iter()
            .rev()
            .find(|b| b.app == app && b.project == project && b.status == OpStatus::Success);
        let released = rels
            .iter()
            .rev()
            .find(|r| r.app == app && r.project == project && r.status == OpStatus::Success);
        let report = reports.get(&(project.clone(), app.clone()));
        let mut dep_rows = Vec::new();
        for d in deps
            .iter()
            .filter(active)
            .filter(|d| d.app == app && d.project == project)
        {
            let connected = instances
                .iter()
                .filter(|i| i.deployment == d.id && i.state == InstanceState::Connected)
                .count();
            let platform = match report {
                None => serde_json::Value::Null,
                Some(Err(e)) => serde_json::json!({ "error": e }),
                Some(Ok(r)) => match r.get(&d.sequence) {
                    Some(h) => serde_json::json!({
                        "instances": h.total,
                        "alive": h.alive,
                        "state": format!("{:?}", h.state()).to_lowercase(),
                    }),
                    None => serde_json::json!({ "error": "no report" }),
                },
            };
            dep_rows.push(serde_json::json!({
                "sequence": d.sequence,
                "plugin": d.plugin,
                "url": d.url,
                "released": released.and_then(|r| r.input_seq) == Some(d.sequence),
                "entrypoints_connected": connected,
                "platform": platform,
            }));
        }
        out.push(serde_json::json!({
            "project": project, "app": app,
            "latest_build": latest_build.map(|b| b.sequence),
            "released_deployment": released.and_then(|r| r.input_seq),
            "release_url": released.and_then(|r| r.url.clone()),
            "deployments": dep_rows,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if let Some(c) = &cfg {
        println!("Project {} ({})", c.project, c.file.display());
    }
    if out.is_empty() {
        println!("Nothing deployed yet. Run `cairn up`.");
    }
    for a in &out {
        println!();
        println!(
            "App {}/{}",
            a["project"].as_str().unwrap_or(""),
            a["app"].as_str().unwrap_or("")
        );
        println!(
            "  latest build:  {}",
            a["latest_build"]
                .as_u64()
                .map(|s| format!("v{s}"))
                .unwrap_or_else(|| "none".into())
        );
        println!(
            "  released:      {}",
            a["released_deployment"]
                .as_u64()
                .map(|s| format!("deployment v{s}"))
                .unwrap_or_else(|| "nothing".into())
        );
        if let Some(u) = a["release_url"].as_str() {
            println!("  release URL:   {u}");
        }
        for d in a["deployments"].as_array().into_iter().flatten() {
            let platform = &d["platform"];
            let health = if let Some(e) = platform["error"].as_str() {
                format!("platform status unavailable: {e}")
            } else if platform.is_null() {
                "platform not asked (no config for this app here)".to_string()
            } else {
                format!(
                    "{}/{} instances up ({})",
                    platform["alive"],
                    platform["instances"],
                    platform["state"].as_str().unwrap_or("?")
                )
            };
            println!(
                "  deployment v{} ({}){}: {health}; {} entrypoint(s) connected  {}",
                d["sequence"],
                d["plugin"].as_str().unwrap_or("?"),
                if d["released"].as_bool() == Some(true) {
                    " released"
                } else {
                    ""
                },
                d["entrypoints_connected"],
                d["url"].as_str().unwrap_or("")
            );
        }
    }
    Ok(0)
}
