//! `status`: the node, and for each app its latest build, its deployments
//! (with live instance counts) and what is released.

use cairn_protocol::types::{OpKind, OpStatus, ResourceState};

use super::list::operations;
use super::Global;

pub async fn run(g: &Global, json: bool) -> anyhow::Result<i32> {
    // No config here: the whole cluster. A config that does not load is an
    // error (file:line), not something to skip silently.
    let cfg = match crate::config::find(&g.dir()) {
        Ok(path) => Some(crate::config::load(&path)?),
        Err(_) => None,
    };
    let builds = operations(g, OpKind::Build, None).await?;
    let deps = operations(g, OpKind::Deployment, None).await?;
    let rels = operations(g, OpKind::Release, None).await?;
    let catalog = &g.catalog;
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
        let mut dep_rows = Vec::new();
        for d in deps.iter().filter(|d| {
            d.app == app
                && d.project == project
                && d.status == OpStatus::Success
                && d.state == ResourceState::Active
        }) {
            let health = d.result.as_ref().and_then(|r| {
                let data = serde_json::from_str(&r.json).ok()?;
                let v = crate::plugins::Value {
                    type_name: r.type_name.clone(),
                    data,
                };
                let platform = catalog
                    .platform(&d.plugin, &serde_json::json!({"command": ["-"]}))
                    .ok()?;
                platform.status(&v).ok()
            });
            dep_rows.push(serde_json::json!({
                "sequence": d.sequence,
                "url": d.url,
                "released": released.and_then(|r| r.input_seq) == Some(d.sequence),
                "instances": health.as_ref().map(|h| h.total),
                "alive": health.as_ref().map(|h| h.alive),
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
            println!(
                "  deployment v{}: {}/{} instances up{}  {}",
                d["sequence"],
                d["alive"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                d["instances"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                if d["released"].as_bool() == Some(true) {
                    " (released)"
                } else {
                    ""
                },
                d["url"].as_str().unwrap_or("")
            );
        }
    }
    Ok(0)
}
