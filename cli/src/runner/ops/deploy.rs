//! deploy: artifact → a staged deployment with its own URL.

use cairn_protocol::types::OpKind;

use super::Loaded;
use crate::plugins::Value;
use crate::runner::hooks;
use crate::runner::job::{plugin_err, JobFailure, JobRun, OpSpec};

/// `values` are what the build (and push) produced. Returns (deployment sequence, value).
pub async fn run(
    run: &mut JobRun,
    l: &Loaded,
    build_seq: u64,
    values: Vec<Value>,
) -> Result<(u64, Value), JobFailure> {
    let stage = &l.app.deploy;
    let name = stage.plugin.name.clone();
    let platform = l.stages.platform.clone();
    let input = run
        .opts
        .catalog
        .convert(&values, platform.input_types())
        .map_err(|e| JobFailure::new(format!("{}: {e}", stage.plugin.location)))?;
    let hook_list = stage.hooks.clone();
    let ingress = run.ingress().await;
    let dep = run
        .op_step(
            OpSpec {
                kind: OpKind::Deployment,
                plugin: name.clone(),
                input_seq: Some(build_seq),
                env: l.env.clone(),
                source_dir: l.source_dir.clone(),
            },
            |s| format!("Deploying v{s} with {name}"),
            move |ctx| {
                let undo = platform.clone();
                let v = hooks::around(
                    &hook_list,
                    ctx,
                    |ctx| platform.deploy(ctx, &input).map_err(plugin_err),
                    // Nothing left running when an after hook fails.
                    move |ctx, v| {
                        let _ = undo.destroy(ctx, v);
                    },
                )?;
                // The URL service's address for it, else the platform's own.
                let url = match &ingress {
                    Some(i) => Some(i.deployment_url(&ctx.app, ctx.sequence)),
                    None => platform.url(&v),
                };
                Ok((v, url))
            },
        )
        .await?;
    let url = match run.ingress().await {
        Some(i) => Some(i.deployment_url(&run.job.spec.app, dep.sequence)),
        None => l.stages.platform.url(&dep.value),
    };
    if let Some(url) = url {
        run.result("Deployment URL", &url);
    }
    Ok((dep.sequence, dep.value))
}
