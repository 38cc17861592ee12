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
    let stage = l.app.deploy_stage().map_err(JobFailure::new)?;
    let name = stage.plugin.name.clone();
    let platform = match (stage.plugin.deferred.is_empty(), values.last()) {
        (false, Some(artifact)) => super::platform_with_artifact(run, l, artifact)?,
        _ => l.stages.platform.clone(),
    };
    let input = l
        .catalog
        .plan(&values, platform.input_types())
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
                undo: Some(platform.clone()),
            },
            |s| format!("Deploying v{s} with {name}"),
            move |mut ctx| async move {
                hooks::before(&hook_list, &mut ctx).await?;
                let input = input.run(&mut ctx).await.map_err(plugin_err)?;
                let v = platform
                    .deploy(&mut ctx, &input)
                    .await
                    .map_err(plugin_err)?;
                if let Err(e) = hooks::after(&hook_list, &mut ctx).await {
                    // Nothing left running when an after hook fails.
                    let _ = platform.destroy(&mut ctx, &v).await;
                    return Err(e);
                }
                // The URL service's address for it, else the platform's own.
                let url = match &ingress {
                    Some(i) => Some(i.deployment_url_in(&ctx.app, &ctx.workspace, ctx.sequence)),
                    None => platform.url(&v),
                };
                Ok((v, url))
            },
        )
        .await?;
    let url = match run.ingress().await {
        Some(i) => {
            Some(i.deployment_url_in(&run.job.spec.app, &run.job.spec.workspace, dep.sequence))
        }
        None => l.stages.platform.url(&dep.value),
    };
    if let Some(url) = url {
        run.result("Deployment URL", &url);
    }
    Ok((dep.sequence, dep.value))
}
