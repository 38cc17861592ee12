//! destroy: stop one deployment, or every active deployment of the app.

use cairn_protocol::types::{OpKind, OpStatus, ResourceState};

use super::Loaded;
use crate::runner::job::{value_of, JobFailure, JobRun};

pub async fn run(run: &mut JobRun, l: &Loaded, which: Option<u64>) -> Result<(), JobFailure> {
    let deployments = run.operations(OpKind::Deployment).await?;
    let targets: Vec<_> = deployments
        .into_iter()
        .filter(|d| d.status == OpStatus::Success && d.state == ResourceState::Active)
        .filter(|d| which.is_none_or(|w| d.sequence == w))
        .collect();
    if targets.is_empty() {
        return match which {
            Some(w) => Err(JobFailure::new(format!(
                "app {:?} has no active deployment v{w}",
                run.job.spec.app
            ))),
            None => {
                run.result("Destroyed", "nothing: no active deployments");
                Ok(())
            }
        };
    }
    for d in targets {
        let value = value_of(&d)?;
        let platform = l.stages.platform.clone();
        let seq = d.sequence;
        run.plain_step(
            &format!("Destroying deployment v{seq}"),
            seq,
            l.source_dir.clone(),
            move |mut ctx| async move {
                platform
                    .destroy(&mut ctx, &value)
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await?;
        run.set_destroyed(d.id).await?;
    }
    Ok(())
}
