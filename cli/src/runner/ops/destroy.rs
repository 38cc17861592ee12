//! destroy: stop one deployment, or every active deployment of the app.
//!
//! A deployment whose deploy failed or never returned (its runner or node
//! died mid-deploy: the record says `error`, or still `running` from a job
//! that is over) has no deployment value to go by; the platform finds what it
//! left by its identity ([`Platform::destroy_interrupted`]). Such records stay
//! active until a destroy has looked, so nothing half-deployed is forgotten.
//!
//! [`Platform::destroy_interrupted`]: crate::plugins::Platform::destroy_interrupted

use cairn_protocol::types::{OpKind, OpStatus, Operation, ResourceState};

use super::Loaded;
use crate::runner::job::{value_of, JobFailure, JobRun};

pub async fn run(run: &mut JobRun, l: &Loaded, which: Option<u64>) -> Result<(), JobFailure> {
    let deployments = run.operations(OpKind::Deployment).await?;
    // No other job of this app runs while this one does (one job per app at
    // a time), so a deployment still `running` belongs to a job that is over.
    let targets: Vec<_> = deployments
        .into_iter()
        .filter(|d| d.state == ResourceState::Active)
        .filter(|d| which.is_none_or(|w| d.sequence == w))
        .collect();
    if targets.is_empty() {
        return match which {
            Some(w) => Err(JobFailure::new(format!(
                "app {:?} has no active deployment v{w}",
                run.job.spec.app
            ))),
            None => {
                destroy_release(run, l).await?;
                run.result("Destroyed", "nothing: no active deployments");
                Ok(())
            }
        };
    }
    for d in targets {
        let seq = d.sequence;
        if d.status == OpStatus::Success {
            destroy_recorded(run, l, &d, &format!("Destroying deployment v{seq}")).await?;
            continue;
        }
        let what = match d.status {
            OpStatus::Running => "interrupted",
            _ => "failed",
        };
        let platform = super::platform_for(run, l, &d).await?;
        run.plain_step(
            &format!("Cleaning up {what} deployment v{seq}"),
            seq,
            l.source_dir.clone(),
            move |mut ctx| async move {
                let done = platform
                    .destroy_interrupted(&mut ctx)
                    .await
                    .map_err(|e| e.to_string())?;
                ctx.info(&done);
                Ok(())
            },
        )
        .await?;
        run.set_destroyed(d.id).await?;
    }
    if which.is_none() {
        destroy_release(run, l).await?;
    }
    Ok(())
}

/// With every deployment gone, what the app's releaser made of its own (a Kubernetes
/// Service, say) goes too: the releaser is given the last release it made.
async fn destroy_release(run: &mut JobRun, l: &Loaded) -> Result<(), JobFailure> {
    let Some((name, releaser)) = l.stages.releaser.clone() else {
        return Ok(());
    };
    let releases = run.operations(OpKind::Release).await?;
    let Some(last) = releases
        .iter()
        .rev()
        .find(|r| r.status == OpStatus::Success && r.plugin == name)
    else {
        return Ok(());
    };
    // A release stage reading `deploy.*` or `artifact.*` is made with the deployment (and
    // its artifact) the last release released, as the release was.
    let releaser = match l.app.release.as_ref() {
        Some(stage) if !stage.plugin.deferred.is_empty() => {
            let deployments = run.operations(OpKind::Deployment).await?;
            let Some(d) = deployments
                .iter()
                .find(|d| Some(d.sequence) == last.input_seq)
            else {
                return Ok(());
            };
            let artifact = match d.input_seq {
                Some(b) => super::latest_build_values(run, Some(b)).await?.1.pop(),
                None => None,
            };
            super::releaser_with_deployment(run, l, artifact.as_ref(), &value_of(d)?)?
        }
        _ => releaser,
    };
    if !releaser.owns_objects() {
        return Ok(());
    }
    let value = value_of(last)?;
    run.plain_step(
        &format!("Destroying release v{} with {name}", last.sequence),
        last.sequence,
        l.source_dir.clone(),
        move |mut ctx| async move {
            releaser
                .destroy(&mut ctx, &value)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// Destroys a deployment that succeeded, through the platform and by its
/// recorded value, as step `title`; then records it destroyed.
pub(super) async fn destroy_recorded(
    run: &mut JobRun,
    l: &Loaded,
    d: &Operation,
    title: &str,
) -> Result<(), JobFailure> {
    let value = value_of(d)?;
    let platform = super::platform_for(run, l, d).await?;
    run.plain_step(
        title,
        d.sequence,
        l.source_dir.clone(),
        move |mut ctx| async move {
            platform
                .destroy(&mut ctx, &value)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    run.set_destroyed(d.id).await
}
