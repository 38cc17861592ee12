//! status: the platform plugin's view of each active deployment, one
//! `Result` per deployment ("status vN" = the health report as JSON).

use cairn_protocol::types::{OpKind, OpStatus, ResourceState};

use super::Loaded;
use crate::runner::job::{value_of, JobFailure, JobRun};

/// The key of deployment `sequence`'s report among a status job's results.
pub fn result_key(sequence: u64) -> String {
    format!("status v{sequence}")
}

pub async fn run(run: &mut JobRun, l: &Loaded) -> Result<(), JobFailure> {
    let deployments = run.operations(OpKind::Deployment).await?;
    let active: Vec<_> = deployments
        .into_iter()
        .filter(|d| d.status == OpStatus::Success && d.state == ResourceState::Active)
        .collect();
    let name = l.stages.platform_name.clone();
    for d in active {
        let value = value_of(&d)?;
        let platform = super::platform_for(run, l, &d).await?;
        let seq = d.sequence;
        let health = run
            .plain_step(
                &format!("Checking deployment v{seq} with {name}"),
                seq,
                l.source_dir.clone(),
                move |mut ctx| async move {
                    let h = platform
                        .status(&mut ctx, &value)
                        .await
                        .map_err(|e| e.to_string())?;
                    ctx.info(&format!(
                        "{}/{} instances up ({:?})",
                        h.alive,
                        h.total,
                        h.state()
                    ));
                    Ok(h)
                },
            )
            .await?;
        let json = serde_json::to_string(&health)
            .map_err(|e| JobFailure::new(format!("encoding the report of v{seq}: {e}")))?;
        run.result(&result_key(seq), &json);
    }
    Ok(())
}
