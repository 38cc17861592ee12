//! `up`, `build`, `deploy`, `release`, `destroy`: check the config locally,
//! queue a job for this CLI's own runner, render its events.

use std::sync::Arc;

use anyhow::Context as _;
use cairn_protocol::api::{ClientRequest, ClientResponse, JobEvent};
use cairn_protocol::frame;
use cairn_protocol::rpc;
use cairn_protocol::types::{JobKind, JobSpec, JobState, RunnerTarget, Source, DEFAULT_WORKSPACE};

use super::{load_config, Global};
use crate::plugins::Catalog;
use crate::runner::{self, RunnerOptions};
use crate::ui::{Renderer, Style};
use crate::{client, lifecycle};

#[derive(Debug, Clone, clap::Args)]
pub struct AppArg {
    /// The app to operate on (needed when the config has several).
    #[arg(long)]
    pub app: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// After releasing, destroy older deployments (keeping --prune-retain of them).
    #[arg(long)]
    pub prune: bool,
    /// How many older deployments --prune keeps (default 2).
    #[arg(long, value_name = "N", requires = "prune")]
    pub prune_retain: Option<u64>,
}

/// Run a lifecycle job end to end. Returns the process exit code.
pub async fn run(g: &Global, app: Option<&str>, kind: JobKind) -> anyhow::Result<i32> {
    // 1. The config is found and evaluated here, so a bad one fails before anything is queued.
    let cfg = load_config(&g.dir())?;
    let app_cfg = cfg.app(app)?;
    lifecycle::instantiate(app_cfg, &Catalog::builtin()).map_err(anyhow::Error::msg)?;
    let dir =
        std::fs::canonicalize(cfg.dir()).with_context(|| format!("{}", cfg.dir().display()))?;
    let file = cfg
        .file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();

    // 2. Connect, and be our own runner on the same connection.
    let ctx = client::resolve(g.context.as_deref(), false).await?;
    let session = client::connect(&ctx).await?;
    let opts = Arc::new(RunnerOptions::for_cli());
    let _registration = runner::register(&session.conn, &opts)
        .await
        .context("registering this CLI as a runner")?;
    tokio::spawn(runner::serve(session.conn.clone(), opts.clone()));

    // 3. Queue the job for our runner id.
    let spec = JobSpec {
        kind,
        project: cfg.project.clone(),
        app: app_cfg.name.clone(),
        workspace: DEFAULT_WORKSPACE.into(),
        source: Source::Local {
            dir: dir.to_string_lossy().to_string(),
            config: file,
        },
        target: RunnerTarget::Id(opts.id.clone()),
    };
    let id = match rpc::call(&session.conn, &ClientRequest::QueueJob { spec }).await? {
        ClientResponse::JobQueued { id } => id,
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    };
    let code = attach(&session.conn, id, true).await?;
    session.conn.close(0u32.into(), b"bye");
    Ok(code)
}

/// Stream a job's events to the terminal until it ends. Ctrl-C asks the node
/// to cancel the job (a second Ctrl-C leaves).
pub async fn attach(conn: &quinn::Connection, id: u64, show_id: bool) -> anyhow::Result<i32> {
    let (_send, mut recv) = rpc::open(conn, &ClientRequest::AttachJob { id }).await?;
    match frame::read_required::<_, ClientResponse>(&mut recv).await? {
        ClientResponse::Job(job) => {
            if show_id {
                let style = Style::detect();
                println!(
                    "{} job {} ({} {}/{})",
                    style.bold("→"),
                    job.id,
                    job.spec.kind.name(),
                    job.spec.project,
                    job.spec.app
                );
            }
        }
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
    let mut r = Renderer::new(Style::detect());
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            ev = frame::read::<_, JobEvent>(&mut recv) => {
                match ev {
                    Ok(Some(ev)) => {
                        r.handle(&ev);
                        if matches!(ev, JobEvent::Finished { .. }) {
                            break;
                        }
                    }
                    Ok(None) => anyhow::bail!("the node closed the job stream before the job finished (job {id}; see `cairn job inspect {id}`)"),
                    Err(e) => anyhow::bail!("lost the connection to the node while following job {id}: {e}"),
                }
            }
            _ = tokio::signal::ctrl_c() => {
                if cancel_sent {
                    anyhow::bail!("stopped following job {id}");
                }
                cancel_sent = true;
                eprintln!("Cancelling job {id} (Ctrl-C again to leave) …");
                let _ = rpc::call(conn, &ClientRequest::CancelJob { id }).await;
            }
        }
    }
    r.print_results();
    match r.finished {
        Some((JobState::Success, _)) => Ok(0),
        Some((state, error)) => {
            eprintln!(
                "{} job {id} {}: {}",
                Style::detect().fail(),
                state.word(),
                error.unwrap_or_else(|| "no reason given".into())
            );
            Ok(1)
        }
        None => Ok(1),
    }
}
