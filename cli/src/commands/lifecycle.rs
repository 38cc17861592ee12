//! `up`, `build`, `deploy`, `release`, `destroy`: check the config locally,
//! queue a job for this CLI's own runner (or, with `--runner` /
//! `--runner-label`, for another one: see `commands::runner`), render its events.

use std::sync::Arc;

use anyhow::Context as _;
use cairn_protocol::api::{ClientRequest, ClientResponse, JobEvent};
use cairn_protocol::frame;
use cairn_protocol::rpc;
use cairn_protocol::types::{JobKind, JobSpec, JobState, RunnerTarget, Source};
use indicatif::{ProgressBar, ProgressStyle};

use super::Global;
use crate::runner::{self, RunnerOptions};
use crate::ui::{Renderer, Style};
use crate::{appconfig, client, lifecycle};

#[derive(Debug, Clone, clap::Args)]
pub struct AppArg {
    /// The app to operate on (needed when the config has several).
    #[arg(long)]
    pub app: Option<String>,
    #[command(flatten)]
    pub runner: super::runner::RunnerSelect,
    #[command(flatten)]
    pub inputs: super::ConfigInputs,
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
pub async fn run(g: &Global, app: &AppArg, kind: JobKind) -> anyhow::Result<i32> {
    let q = queue(g, app, kind, true).await?;
    let code = match &q.other_runner {
        None => follow(&q.ctx, &q.session.conn, q.id, true).await?,
        Some(t) if app.runner.detach => {
            super::runner::queued_for(t, q.id, q.kind_name, &q.project, &q.app);
            println!(
                "Job {} queued; follow it with `cairn job attach {}`",
                q.id, q.id
            );
            0
        }
        Some(t) => {
            super::runner::queued_for(t, q.id, q.kind_name, &q.project, &q.app);
            super::runner::wait_for_runner(&q.session.conn, q.id, t).await;
            follow(&q.ctx, &q.session.conn, q.id, false).await?
        }
    };
    q.session.conn.close(0u32.into(), b"bye");
    Ok(code)
}

/// A job queued by this CLI, with the connection it was queued on (which
/// also serves this CLI's own runner, unless the job is for another one).
pub struct Queued {
    pub ctx: crate::context::Context,
    pub session: client::Client,
    pub other_runner: Option<RunnerTarget>,
    pub id: u64,
    pub kind_name: &'static str,
    pub project: String,
    pub app: String,
    _registration: Option<runner::Registration>,
}

/// Check the config, connect, be our own runner (unless the job is for
/// another one), and queue the job. `chatty` prints what a config sync changed.
pub async fn queue(
    g: &Global,
    app: &AppArg,
    kind: JobKind,
    chatty: bool,
) -> anyhow::Result<Queued> {
    // 1. The config is found and evaluated here, so a bad one fails before anything is
    //    queued (variables without a value wait for what the cluster stores).
    let inputs = app.inputs.inputs();
    let (path, names) = super::precheck_config(&g.dir(), &inputs)?;

    // 2. Connect, read what the cluster stores for the project, and evaluate the config
    //    with it.
    let ctx = client::resolve(g.context.as_deref(), false).await?;
    let session = client::connect(&ctx).await?;
    let cfg =
        super::load_config_from_cluster(&mut session.conn.clone(), &path, &names, &inputs).await?;
    let app_cfg = cfg.app(app.app.as_deref())?;
    cfg.runnable(app_cfg)?;
    for n in &cfg.notes {
        eprintln!("note: {n}");
    }
    let catalog = lifecycle::catalog_for(&cfg, &g.catalog)
        .await
        .map_err(anyhow::Error::msg)?;
    lifecycle::instantiate(app_cfg, &catalog).map_err(anyhow::Error::msg)?;
    let dir =
        std::fs::canonicalize(cfg.dir()).with_context(|| format!("{}", cfg.dir().display()))?;
    let file = cfg
        .file
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();

    // 3. Be our own runner on the same connection (unless the job is for another runner:
    //    --runner, --runner-label, or the config's `runner { labels }`, app over project;
    //    --local keeps it here).
    let runner_cfg = app_cfg.runner.as_ref().or(cfg.runner.as_ref());
    let other_runner = if app.runner.local {
        None
    } else {
        app.runner.target().or_else(|| {
            runner_cfg
                .filter(|r| !r.labels.is_empty())
                .map(|r| RunnerTarget::Labels(r.labels.clone()))
        })
    };
    if app.runner.detach && other_runner.is_none() {
        anyhow::bail!("--detach is for a job another runner runs: give --runner ID or --runner-label KEY=VALUE (or `runner {{ labels = {{…}} }}` in the config) too; this CLI runs its own jobs only while it lives");
    }
    if other_runner.is_some() && inputs.gives_values() {
        anyhow::bail!(
            "--var and --var-file reach only this CLI's own runner; the job is for another runner, which reads variables from its own environment (CAIRN_VAR_NAME) and *.auto.cairnvars files in the source directory"
        );
    }
    let mut registration = None;
    let target = match &other_runner {
        Some(t) => t.clone(),
        None => {
            let mut opts = RunnerOptions::for_cli(g.catalog.clone());
            opts.inputs = Arc::new(inputs.clone());
            let opts = Arc::new(opts);
            registration = Some(
                runner::register(&session.conn, &opts, None)
                    .await
                    .context("registering this CLI as a runner")?,
            );
            tokio::spawn(runner::serve(session.conn.clone(), opts.clone()));
            RunnerTarget::Id(opts.id.clone())
        }
    };

    // 4. `up` and `deploy` make the cluster hold the file's `config { env }`
    //    first, so the deployment they queue resolves what the file says.
    if matches!(kind, JobKind::Up { .. } | JobKind::Deploy { .. }) {
        let synced = appconfig::sync(&mut session.conn.clone(), &cfg, app_cfg)
            .await
            .context("syncing config { env } to the cluster")?;
        if chatty {
            print_synced(&synced, &file);
        }
    }

    // 5. A job for another runner carries its source: packed and uploaded (a cluster of
    //    an older release cannot hold it: the runner then reads the same path on its
    //    machine, as before).
    let git = runner_cfg.and_then(|r| {
        r.data_source
            .as_ref()
            .map(|(kind, fields)| (kind.clone(), fields.clone(), r.location.clone()))
    });
    let source = match (&other_runner, session.node.version >= 5) {
        (Some(_), true) if git.as_ref().is_some_and(|(k, _, _)| k == "git") => {
            let (_, fields, at) = git.expect("matched");
            let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let Some(url) = text("url").filter(|u| !u.is_empty()) else {
                anyhow::bail!("{at}: `data_source \"git\"` needs `url`");
            };
            let git_ref = text("ref").filter(|r| !r.is_empty());
            let path = text("path").filter(|p| !p.is_empty());
            println!(
                "{} Source: {url}{}{} (the runner clones it)",
                Style::detect().ok(),
                git_ref
                    .as_deref()
                    .map(|r| format!(" at {r}"))
                    .unwrap_or_default(),
                path.as_deref()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default()
            );
            Source::Git {
                url,
                git_ref,
                path,
                config: file.clone(),
            }
        }
        (Some(_), true) if git.as_ref().is_some_and(|(k, _, _)| k != "local") => {
            let (kind, _, at) = git.expect("matched");
            anyhow::bail!("{at}: data_source {kind:?} is not one Cairn knows: use \"git\" (the runner clones the repository) or leave it out (the CLI uploads the app's directory)");
        }
        (Some(_), true) => match upload_source(&session.conn, &dir, &file).await? {
            Some(s) => s,
            None => Source::Local {
                dir: dir.to_string_lossy().to_string(),
                config: file.clone(),
            },
        },
        _ => Source::Local {
            dir: dir.to_string_lossy().to_string(),
            config: file.clone(),
        },
    };

    // 6. Queue the job for our runner id (or the one asked for).
    let kind_name = kind.name();
    let spec = JobSpec {
        kind,
        project: cfg.project.clone(),
        app: app_cfg.name.clone(),
        workspace: cfg.workspace.clone(),
        source,
        target,
    };
    let needs = spec.since_version();
    if needs > session.node.version {
        anyhow::bail!(
            "the node at {} runs cairn-node {}, and a {kind_name} job needs protocol version {needs}: upgrade that node (docs/upgrading.md)",
            session.addr(),
            session.node.release
        );
    }
    let id = match rpc::call(&session.conn, &ClientRequest::QueueJob { spec }).await? {
        ClientResponse::JobQueued { id } => id,
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    };
    Ok(Queued {
        ctx,
        session,
        other_runner,
        id,
        kind_name,
        project: cfg.project.clone(),
        app: app_cfg.name.clone(),
        _registration: registration,
    })
}

/// Pack `dir` and upload it (see [`crate::upload`]), saying how it went on stdout.
/// `None` when the cluster cannot hold uploads yet (an upgrade not finished).
async fn upload_source(
    conn: &quinn::Connection,
    dir: &std::path::Path,
    file: &str,
) -> anyhow::Result<Option<Source>> {
    let style = Style::detect();
    let started = std::time::Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("Packing {}", dir.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let d = dir.to_path_buf();
    let packed = tokio::task::spawn_blocking(move || {
        crate::upload::pack(&d, crate::upload::MAX_SOURCE_BYTES)
    })
    .await??;
    spinner.finish_and_clear();
    let mb = |n: u64| n as f64 / (1024.0 * 1024.0);
    let req = ClientRequest::UploadSource {
        digest: packed.digest.clone(),
        size: packed.size,
    };
    let (mut send, mut recv) = rpc::open(conn, &req).await?;
    let already = match frame::read_required::<_, ClientResponse>(&mut recv).await? {
        ClientResponse::SourceStored { already } => already,
        ClientResponse::SourceReady => {
            use tokio::io::AsyncReadExt;
            let bar = ProgressBar::new(packed.size);
            bar.set_style(
                ProgressStyle::with_template(
                    "Uploading the source {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let mut f = tokio::fs::File::open(packed.file.path()).await?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                send.write_all(&buf[..n]).await?;
                bar.inc(n as u64);
            }
            let _ = send.finish();
            bar.finish_and_clear();
            match frame::read_required::<_, ClientResponse>(&mut recv).await? {
                ClientResponse::SourceStored { .. } => false,
                ClientResponse::Error { message } => {
                    anyhow::bail!("uploading the source: {message}")
                }
                other => anyhow::bail!("unexpected answer from the node: {other:?}"),
            }
        }
        ClientResponse::Error { message } if message.contains("cluster version") => {
            eprintln!(
                "note: {message}; the runner reads {} on its own machine",
                dir.display()
            );
            return Ok(None);
        }
        ClientResponse::Error { message } => anyhow::bail!("uploading the source: {message}"),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    };
    let short = &packed.digest[..19];
    println!(
        "{} Source {short}… ({} files, {:.1} MB packed from {:.1} MB){}",
        style.ok(),
        packed.files,
        mb(packed.size),
        mb(packed.raw_bytes),
        if already {
            " already in the cluster".to_string()
        } else {
            format!(" uploaded in {:.1} s", started.elapsed().as_secs_f64())
        }
    );
    Ok(Some(Source::Upload {
        digest: packed.digest,
        size: packed.size,
        config: file.to_string(),
    }))
}

/// Wait for job `id` without printing it: its end state, error and results.
pub async fn collect(
    conn: &quinn::Connection,
    id: u64,
) -> anyhow::Result<(JobState, Option<String>, Vec<(String, String)>)> {
    let (_send, mut recv) = rpc::open(conn, &ClientRequest::AttachJob { id }).await?;
    match frame::read_required::<_, ClientResponse>(&mut recv).await? {
        ClientResponse::Job(_) => {}
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
    let mut results = Vec::new();
    loop {
        match frame::read::<_, JobEvent>(&mut recv).await? {
            Some(JobEvent::Result { key, value }) => results.push((key, value)),
            Some(JobEvent::Finished { state, error }) => return Ok((state, error, results)),
            Some(_) => {}
            None => anyhow::bail!("the node closed the job stream before job {id} finished"),
        }
    }
}

/// One line per scope a config sync changed; nothing when nothing changed.
fn print_synced(synced: &[(cairn_protocol::types::ConfigScope, appconfig::Synced)], file: &str) {
    let style = Style::detect();
    for (scope, s) in synced {
        let mut parts = Vec::new();
        if !s.set.is_empty() {
            parts.push(format!("set {}", s.set.join(", ")));
        }
        if !s.deleted.is_empty() {
            parts.push(format!("deleted {}", s.deleted.join(", ")));
        }
        println!(
            "{} Config of {scope} from {file}: {}",
            style.ok(),
            parts.join("; ")
        );
    }
}

/// How many times following a job reconnects after losing its node.
pub const MAX_REATTACH: u32 = 3;

/// [`attach`], and when the connection to the node is lost, connect again
/// (to any member, see [`client::connect`]) and attach again, so the job's
/// end is shown even across a failover.
pub async fn follow(
    ctx: &crate::context::Context,
    conn: &quinn::Connection,
    id: u64,
    show_id: bool,
) -> anyhow::Result<i32> {
    let mut lost = match attach(conn, id, show_id).await? {
        Attached::Ended(code) => return Ok(code),
        Attached::Lost(why) => why,
    };
    for _ in 0..MAX_REATTACH {
        eprintln!("{lost}; attaching to job {id} again …");
        let session = match client::connect(ctx).await {
            Ok(s) => s,
            Err(e) => {
                lost = format!("cannot reconnect: {e}");
                continue;
            }
        };
        let r = attach(&session.conn, id, false).await;
        session.conn.close(0u32.into(), b"bye");
        match r? {
            Attached::Ended(code) => return Ok(code),
            Attached::Lost(why) => lost = why,
        }
    }
    anyhow::bail!("{lost} (see `cairn job inspect {id}`)")
}

/// How following a job ended.
pub enum Attached {
    /// The job ended (or the user left): the exit code.
    Ended(i32),
    /// The stream to the node broke before the job ended: why.
    Lost(String),
}

/// Stream a job's events to the terminal until it ends. Ctrl-C asks the node
/// to cancel the job (a second Ctrl-C leaves).
pub async fn attach(conn: &quinn::Connection, id: u64, show_id: bool) -> anyhow::Result<Attached> {
    let (_send, mut recv) = match rpc::open(conn, &ClientRequest::AttachJob { id }).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(Attached::Lost(format!(
                "lost the connection to the node while following job {id}: {e}"
            )))
        }
    };
    let first = match frame::read_required::<_, ClientResponse>(&mut recv).await {
        Ok(f) => f,
        Err(e) => {
            return Ok(Attached::Lost(format!(
                "lost the connection to the node while following job {id}: {e}"
            )))
        }
    };
    match first {
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
                    Ok(None) => return Ok(Attached::Lost(format!("the node closed the job stream before job {id} finished"))),
                    Err(e) => return Ok(Attached::Lost(format!("lost the connection to the node while following job {id}: {e}"))),
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
    Ok(Attached::Ended(match r.finished {
        Some((JobState::Success, _)) => 0,
        Some((state, error)) => {
            eprintln!(
                "{} job {id} {}: {}",
                Style::detect().fail(),
                state.word(),
                error.unwrap_or_else(|| "no reason given".into())
            );
            1
        }
        None => 1,
    }))
}
