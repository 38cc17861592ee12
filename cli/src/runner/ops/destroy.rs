//! destroy: stop one deployment, or every active deployment of the app.

use cairn_protocol::types::{OpKind, OpStatus, ResourceState};

use super::Loaded;
use crate::plugins::OpContext;
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
        let spec = run.job.spec.clone();
        let opts = run.opts.clone();
        let source_dir = l.source_dir.clone();
        let seq = d.sequence;
        run.plain_step(&format!("Destroying deployment v{seq}"), move |out| {
            let mut ctx = OpContext {
                project: spec.project,
                app: spec.app,
                workspace: spec.workspace,
                sequence: seq,
                source_dir,
                data_dir: opts.data_dir.clone(),
                self_exe: opts.self_exe.clone(),
                env: Default::default(),
                entrypoint: None,
                out,
            };
            platform
                .destroy(&mut ctx, &value)
                .map_err(|e| e.to_string())
        })
        .await?;
        run.set_destroyed(d.id).await?;
    }
    Ok(())
}
