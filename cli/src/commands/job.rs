//! `job list|inspect|cancel|attach`.

use cairn_protocol::api::{ClientRequest, ClientResponse};

use super::{table, when, Global};
use crate::client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobCmd {
    /// List recent jobs, newest first.
    List {
        /// How many jobs to show (0 = all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Inspect {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job.
    Cancel { id: u64 },
    /// Follow a job's events until it ends.
    Attach { id: u64 },
}

pub async fn run(g: &Global, cmd: &JobCmd) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let code = match cmd {
        JobCmd::List { limit, json } => {
            match s.call(&ClientRequest::ListJobs { limit: *limit }).await? {
                ClientResponse::Jobs(jobs) if *json => {
                    println!("{}", serde_json::to_string_pretty(&jobs)?);
                    0
                }
                ClientResponse::Jobs(jobs) => {
                    let rows: Vec<Vec<String>> = jobs
                        .iter()
                        .map(|j| {
                            vec![
                                j.id.to_string(),
                                j.spec.kind.name().into(),
                                format!("{}/{}", j.spec.project, j.spec.app),
                                j.state.word().into(),
                                when(j.queued_ms),
                                j.runner.clone().unwrap_or_default(),
                                j.error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table(
                        &[
                            "ID",
                            "KIND",
                            "APP",
                            "STATE",
                            "QUEUED (UTC)",
                            "RUNNER",
                            "ERROR",
                        ],
                        &rows,
                    );
                    0
                }
                other => anyhow::bail!("unexpected answer from the node: {other:?}"),
            }
        }
        JobCmd::Inspect { id, json } => {
            match s.call(&ClientRequest::InspectJob { id: *id }).await? {
                ClientResponse::Job(j) if *json => {
                    println!("{}", serde_json::to_string_pretty(&j)?);
                    0
                }
                ClientResponse::Job(j) => {
                    println!("Job:        {}", j.id);
                    println!("Kind:       {}", j.spec.kind.name());
                    println!(
                        "App:        {}/{} (workspace {})",
                        j.spec.project, j.spec.app, j.spec.workspace
                    );
                    println!("State:      {}", j.state.word());
                    println!("Requested:  {} by {}", when(j.queued_ms), j.requested_by);
                    if let Some(r) = &j.runner {
                        println!("Runner:     {r}");
                    }
                    if let Some(t) = j.completed_ms {
                        println!("Completed:  {}", when(t));
                    }
                    if let Some(e) = &j.error {
                        println!("Error:      {e}");
                    }
                    0
                }
                other => anyhow::bail!("unexpected answer from the node: {other:?}"),
            }
        }
        JobCmd::Cancel { id } => {
            s.call(&ClientRequest::CancelJob { id: *id }).await?;
            println!("Cancellation of job {id} requested.");
            0
        }
        JobCmd::Attach { id } => super::lifecycle::follow(&ctx, &s.conn, *id, true).await?,
    };
    s.conn.close(0u32.into(), b"bye");
    Ok(code)
}
