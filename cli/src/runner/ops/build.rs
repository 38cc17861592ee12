//! build (and push): source → artifact, recorded as a build and, with a
//! registry stage, as a pushed artifact.

use cairn_protocol::types::OpKind;

use super::Loaded;
use crate::plugins::Value;
use crate::runner::hooks;
use crate::runner::job::{plugin_err, JobFailure, JobRun, OpSpec};

/// Returns (build sequence, value) and, when pushed, (artifact sequence, value).
pub async fn run(
    run: &mut JobRun,
    l: &Loaded,
    push: bool,
) -> Result<((u64, Value), Option<(u64, Value)>), JobFailure> {
    let app = &l.app;
    let stage = app.build_stage().map_err(JobFailure::new)?;
    let name = stage.builder.name.clone();
    let builder = l.stages.builder.clone();
    let hook_list = stage.hooks.clone();
    let dir = l.source_dir.clone();
    let built = run
        .op_step(
            OpSpec {
                kind: OpKind::Build,
                plugin: name.clone(),
                input_seq: None,
                env: app.config_env.clone(),
                source_dir: dir.clone(),
                undo: None,
            },
            |s| format!("Building v{s} with {name}"),
            move |mut ctx| async move {
                hooks::before(&hook_list, &mut ctx).await?;
                let v = builder.build(&mut ctx).await.map_err(plugin_err)?;
                hooks::after(&hook_list, &mut ctx).await?;
                Ok((v, None))
            },
        )
        .await?;
    let build = (built.sequence, built.value);
    let (Some(stage), Some(registry), true) = (&stage.registry, &l.stages.registry, push) else {
        return Ok((build, None));
    };
    let name = stage.plugin.name.clone();
    // A registry stage reading `artifact.*` is made for this build.
    let registry = if stage.plugin.deferred.is_empty() {
        registry.clone()
    } else {
        super::registry_with_artifact(run, l, &build.1)?
    };
    let hook_list = stage.hooks.clone();
    let input = l
        .catalog
        .plan(std::slice::from_ref(&build.1), registry.input_types())
        .map_err(|e| JobFailure::new(format!("{}: {e}", stage.plugin.location)))?;
    let pushed = run
        .op_step(
            OpSpec {
                kind: OpKind::Artifact,
                plugin: name.clone(),
                input_seq: Some(build.0),
                env: app.config_env.clone(),
                source_dir: dir,
                undo: None,
            },
            |s| format!("Pushing artifact v{s} with {name}"),
            move |mut ctx| async move {
                hooks::before(&hook_list, &mut ctx).await?;
                let input = input.run(&mut ctx).await.map_err(plugin_err)?;
                let v = registry.push(&mut ctx, &input).await.map_err(plugin_err)?;
                hooks::after(&hook_list, &mut ctx).await?;
                Ok((v, None))
            },
        )
        .await?;
    Ok((build, Some((pushed.sequence, pushed.value))))
}
