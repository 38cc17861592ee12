//! release: point public traffic at a deployment; releasing an older one is
//! a rollback. With `prune`, older deployments beyond `retain` are destroyed.

use cairn_protocol::types::{OpKind, OpStatus, ResourceState};

use super::Loaded;
use crate::plugins::{ReleaseOptions, Value};
use crate::runner::hooks;
use crate::runner::job::{plugin_err, value_of, JobFailure, JobRun, OpSpec};

/// How many older deployments `--prune` keeps unless told otherwise.
pub const DEFAULT_RETAIN: u64 = 2;

pub async fn run(
    run: &mut JobRun,
    l: &Loaded,
    target: (u64, Value),
    prune: bool,
    retain: Option<u64>,
) -> Result<(), JobFailure> {
    let Some((name, releaser)) = l.stages.releaser.clone() else {
        return route_only(
            run,
            l,
            target,
            prune.then(|| retain.unwrap_or(DEFAULT_RETAIN)),
        )
        .await;
    };
    let deployments = run.operations(OpKind::Deployment).await?;
    let mut others = Vec::new();
    let mut op_of_seq = std::collections::BTreeMap::new();
    for d in deployments
        .iter()
        .filter(|d| d.status == OpStatus::Success && d.state == ResourceState::Active)
    {
        op_of_seq.insert(d.sequence, d.id);
        if d.sequence != target.0 {
            others.push((d.sequence, value_of(d)?));
        }
    }
    let hook_list = l
        .app
        .release
        .as_ref()
        .map(|s| s.hooks.clone())
        .unwrap_or_default();
    let opts = ReleaseOptions {
        prune,
        retain: retain.unwrap_or(DEFAULT_RETAIN) as usize,
    };
    let (seq, value) = target;
    // A release stage reading `deploy.*` or `artifact.*` is made for this deployment.
    let releaser = match l.app.release.as_ref() {
        Some(stage) if !stage.plugin.deferred.is_empty() => {
            let built = deployments
                .iter()
                .find(|d| d.sequence == seq)
                .and_then(|d| d.input_seq);
            let artifact = match built {
                Some(b) => super::latest_build_values(run, Some(b)).await?.1.pop(),
                None => None,
            };
            super::releaser_with_deployment(run, l, artifact.as_ref(), &value)?
        }
        _ => releaser,
    };
    let ingress = run.ingress().await;
    let auto = l.auto_hostname;
    let app = run.job.spec.app.clone();
    let rel = run
        .op_step(
            OpSpec {
                kind: OpKind::Release,
                plugin: name.clone(),
                input_seq: Some(seq),
                env: l.env.clone(),
                source_dir: l.source_dir.clone(),
                undo: None,
            },
            |s| format!("Releasing deployment v{seq} (release v{s}) with {name}"),
            move |mut ctx| async move {
                hooks::before(&hook_list, &mut ctx).await?;
                let out = releaser
                    .release(&mut ctx, &value, &others, &opts)
                    .await
                    .map_err(plugin_err)?;
                hooks::after(&hook_list, &mut ctx).await?;
                let url = match &ingress {
                    Some(i) if auto => Some(i.release_url_in(&app, &ctx.workspace)),
                    Some(_) => {
                        ctx.info(NO_OWN_NAME);
                        None
                    }
                    None => out.urls.first().cloned(),
                };
                let pruned = serde_json::json!(out.pruned);
                let mut v = out.value;
                if let serde_json::Value::Object(m) = &mut v.data {
                    m.insert("pruned".into(), pruned);
                }
                Ok((v, url))
            },
        )
        .await?;
    if let Some(pruned) = rel.value.data.get("pruned").and_then(|p| p.as_array()) {
        for s in pruned.iter().filter_map(|s| s.as_u64()) {
            if let Some(op) = op_of_seq.get(&s) {
                run.set_destroyed(*op).await?;
            }
        }
    }
    let url = match run.ingress().await {
        Some(i) if l.auto_hostname => {
            Some(i.release_url_in(&run.job.spec.app, &run.job.spec.workspace))
        }
        Some(_) => None,
        None => deployments_url(&rel.value),
    };
    if let Some(url) = url {
        run.result("Release URL", &url);
    }
    Ok(())
}

/// What a release says when the app's config turns its own name off.
const NO_OWN_NAME: &str = "the app does not answer at its own name (url { auto_hostname = false }): its release answers at the hostnames registered for it (`cairn hostname register`)";

fn deployments_url(v: &Value) -> Option<String> {
    v.data
        .get("url")
        .and_then(|u| u.as_str())
        .map(str::to_string)
}

/// What a release through the URL service alone records.
#[derive(serde::Serialize, serde::Deserialize)]
struct UrlRelease {
    sequence: u64,
}

impl crate::plugins::Typed for UrlRelease {
    const TYPE_NAME: &'static str = "url.Release";
}

/// A platform without a releaser and an app without a release stage: the
/// release is the URL service's route (as in Waypoint, where `release` is
/// optional). Without a URL service there is nothing to release. With
/// `prune_retain`, deployments older than the released one beyond that many
/// are then destroyed through the platform.
async fn route_only(
    run: &mut JobRun,
    l: &Loaded,
    target: (u64, Value),
    prune_retain: Option<u64>,
) -> Result<(), JobFailure> {
    let Some(ingress) = run.ingress().await else {
        run.event(cairn_protocol::api::JobEvent::Output {
            step: 0,
            stream: cairn_protocol::types::Stream::Info,
            line: format!("platform {:?} has no releaser, the app has no release stage and the cluster serves no URLs: nothing to release", l.stages.platform_name),
        });
        return Ok(());
    };
    let seq = target.0;
    let url = l
        .auto_hostname
        .then(|| ingress.release_url_in(&run.job.spec.app, &run.job.spec.workspace));
    let shown = url.clone();
    run.op_step(
        OpSpec {
            kind: OpKind::Release,
            plugin: "url-service".into(),
            input_seq: Some(seq),
            env: l.env.clone(),
            source_dir: l.source_dir.clone(),
            undo: None,
        },
        |s| format!("Releasing deployment v{seq} (release v{s}) through the URL service"),
        move |mut ctx| async move {
            match &shown {
                Some(url) => ctx.info(&format!("the release URL {url} now routes to v{seq}")),
                None => {
                    ctx.info(&format!("the release now routes to v{seq}"));
                    ctx.info(NO_OWN_NAME);
                }
            }
            let v = Value::of(&UrlRelease { sequence: seq }).map_err(plugin_err)?;
            Ok((v, shown))
        },
    )
    .await?;
    if let Some(url) = &url {
        run.result("Release URL", url);
    }
    if let Some(retain) = prune_retain {
        prune_older(run, l, seq, retain).await?;
    }
    Ok(())
}

/// Destroys the app's active deployments older than `released`, but the
/// newest `retain` of them (`--prune` when the platform has no releaser to
/// do it).
async fn prune_older(
    run: &mut JobRun,
    l: &Loaded,
    released: u64,
    retain: u64,
) -> Result<(), JobFailure> {
    let mut older: Vec<_> = run
        .operations(OpKind::Deployment)
        .await?
        .into_iter()
        .filter(|d| {
            d.status == OpStatus::Success
                && d.state == ResourceState::Active
                && d.sequence < released
        })
        .collect();
    older.sort_by_key(|d| std::cmp::Reverse(d.sequence));
    for d in older.into_iter().skip(retain as usize) {
        let title = format!("Pruning deployment v{}", d.sequence);
        super::destroy::destroy_recorded(run, l, &d, &title).await?;
    }
    Ok(())
}
