//! `runner agent` (a standalone runner, see [`crate::runner::agent`]),
//! `runner list`, and the `--runner` / `--runner-label` options that aim a
//! lifecycle job at another runner, with the wait for that runner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc;
use cairn_protocol::types::{Job, JobId, JobState, RunnerKind, RunnerTarget};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{table, when, Global};
use crate::client;
use crate::runner::agent::{self, Agent};
use crate::ui::Style;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RunnerCmd {
    /// Run a standalone runner here: take jobs from the cluster and run them.
    #[command(
        long_about = "Run a standalone runner on this machine. It connects to the current \
context's cluster (any member: offers are relayed from the leader), registers as a runner of kind \
agent, and runs the jobs queued for it one at a time, e.g. `cairn up --runner ID` or \
`cairn up --runner-label KEY=VALUE`. A job's app directory is read on this machine, and its \
deployments run here.

It prints one line per job (id, kind, app, result). When its node dies or stops answering (it \
is probed every 2 s), it moves to another member of the cluster and registers again, retrying \
with backoff for as long as it runs, and prints one line per move.

Ctrl-C or SIGTERM stops it: it takes no more offers, cancels the job in hand, waits up to 30 s \
for that job to end (a second Ctrl-C stops waiting), and exits 0."
    )]
    Agent(AgentArgs),
    /// List the runners the cluster has registered (CLIs and agents).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The runner id that jobs name with --runner (default: an id made from
    /// the host name the first time and kept in the CLI's data dir).
    #[arg(long, env = "CAIRN_RUNNER_ID")]
    pub id: Option<String>,
    /// A label jobs can select this runner by with --runner-label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

/// Which runner a lifecycle job goes to (default: this CLI's own runner).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunnerSelect {
    /// Queue the job for this runner (e.g. a `cairn runner agent`) instead of
    /// running it here; the runner reads the app's directory on its machine.
    #[arg(long, value_name = "ID", conflicts_with = "runner_labels")]
    pub runner: Option<String>,
    /// Queue the job for any runner with this label (repeatable: all must match).
    #[arg(long = "runner-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub runner_labels: Vec<(String, String)>,
}

impl RunnerSelect {
    /// The target asked for, or `None` for this CLI's own runner.
    pub fn target(&self) -> Option<RunnerTarget> {
        if let Some(id) = &self.runner {
            return Some(RunnerTarget::Id(id.clone()));
        }
        if !self.runner_labels.is_empty() {
            return Some(RunnerTarget::Labels(
                self.runner_labels.iter().cloned().collect(),
            ));
        }
        None
    }
}

/// Parse "key=value".
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} is not a label: use KEY=VALUE")),
    }
}

pub async fn run(g: &Global, cmd: &RunnerCmd) -> anyhow::Result<i32> {
    match cmd {
        RunnerCmd::Agent(a) => run_agent(g, a).await,
        RunnerCmd::List { json } => list(g, *json).await,
    }
}

async fn run_agent(g: &Global, a: &AgentArgs) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), false).await?;
    let id = match &a.id {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        Some(_) => anyhow::bail!("--id must not be empty"),
        None => agent::stable_id()?,
    };
    let labels: BTreeMap<String, String> = a.labels.iter().cloned().collect();
    let opts = Arc::new(agent::options(id.clone(), labels, g.catalog.clone()));
    let stop = CancellationToken::new();
    let force = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(stop.clone(), force.clone()));
    agent::say(&format!(
        "runner agent {id} starting (context {}, work dir {})",
        ctx.name,
        opts.data_dir.display()
    ));
    let r = Agent::new(ctx, opts).run(stop, force).await;
    signals.abort();
    r?;
    agent::say(&format!("runner agent {id} stopped"));
    Ok(0)
}

/// The first Ctrl-C or SIGTERM cancels `stop`, the next one `force`.
async fn watch_signals(stop: CancellationToken, force: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if r.is_err() {
                    // No Ctrl-C handler: SIGTERM still works.
                    std::future::pending::<()>().await;
                }
            }
            _ = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        if stop.is_cancelled() {
            force.cancel();
            return;
        }
        agent::say("stopping (again to stop at once) …");
        stop.cancel();
    }
}

async fn list(g: &Global, json: bool) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s.call(&ClientRequest::ListRunners).await?;
    s.conn.close(0u32.into(), b"bye");
    let ClientResponse::Runners(runners) = r else {
        anyhow::bail!("unexpected answer from the node: {r:?}")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&runners)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = runners
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                kind_word(r.kind).into(),
                r.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                // (`registered_ms` is not filled in by the node.)
                when(r.last_seen_ms),
            ]
        })
        .collect();
    table(&["ID", "KIND", "LABELS", "LAST REGISTERED (UTC)"], &rows);
    Ok(0)
}

fn kind_word(k: RunnerKind) -> &'static str {
    match k {
        RunnerKind::Cli => "cli",
        RunnerKind::Agent => "agent",
    }
}

/// The header of a job queued for another runner: "→ job 12 (up hello/web)
/// for runner agent-1".
pub fn queued_for(target: &RunnerTarget, id: JobId, kind: &str, project: &str, app: &str) {
    let style = Style::detect();
    let whom = match target {
        RunnerTarget::Id(r) => format!("runner {r}"),
        RunnerTarget::Labels(want) => {
            let l: Vec<String> = want.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("a runner with labels {}", l.join(", "))
        }
        RunnerTarget::Any => "any runner".to_string(),
    };
    println!(
        "{} job {id} ({kind} {project}/{app}) for {whom}",
        style.bold("→")
    );
}

/// How often the wait for a runner looks at the job.
pub const WAIT_POLL: Duration = Duration::from_millis(500);
/// How long a job may sit in the queue before the wait says why.
pub const WAIT_QUIET: Duration = Duration::from_secs(1);

/// Wait while job `id`, aimed at `target`, is still queued, saying why
/// (the node keeps a job for an agent or an unknown runner queued until
/// such a runner connects and is free). Ctrl-C asks the node to cancel the
/// job. Returns when the job left the queue, was cancelled, or the node
/// stopped answering: following the job (with its reconnects) takes over.
pub async fn wait_for_runner(conn: &quinn::Connection, id: JobId, target: &RunnerTarget) {
    let style = Style::detect();
    let spinner = style.tty.then(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let started = tokio::time::Instant::now();
    let mut shown: Option<String> = None;
    let mut tick = tokio::time::interval(WAIT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                if let Some(pb) = &spinner {
                    pb.finish_and_clear();
                }
                eprintln!("Cancelling job {id} …");
                let _ = rpc::call(conn, &ClientRequest::CancelJob { id }).await;
                return;
            }
        }
        let job = match rpc::call(conn, &ClientRequest::InspectJob { id }).await {
            Ok(ClientResponse::Job(j)) => j,
            _ => break,
        };
        if job.state != JobState::Queued {
            break;
        }
        let known = known_runner(conn, target).await;
        // A runner that is connected and free takes the job at once: only
        // say something when it is unknown or the job lingers.
        if known && started.elapsed() < WAIT_QUIET {
            continue;
        }
        let why = why_queued(conn, &job, target, known).await;
        let msg = format!("{why}; job {id} stays queued until then (Ctrl-C cancels it)");
        if shown.as_deref() != Some(msg.as_str()) {
            match &spinner {
                Some(pb) => pb.set_message(msg.clone()),
                None => println!("{msg}"),
            }
            shown = Some(msg);
        }
    }
    if let Some(pb) = &spinner {
        pb.finish_and_clear();
    }
}

/// Whether the cluster has ever registered a runner `target` can name.
async fn known_runner(conn: &quinn::Connection, target: &RunnerTarget) -> bool {
    let Ok(ClientResponse::Runners(runners)) = rpc::call(conn, &ClientRequest::ListRunners).await
    else {
        return true;
    };
    runners.iter().any(|r| match target {
        RunnerTarget::Any => true,
        RunnerTarget::Id(want) => &r.id == want,
        RunnerTarget::Labels(want) => want.iter().all(|(k, v)| r.labels.get(k) == Some(v)),
    })
}

/// One phrase: why `job` is still queued.
async fn why_queued(
    conn: &quinn::Connection,
    job: &Job,
    target: &RunnerTarget,
    known: bool,
) -> String {
    let active: Vec<Job> = match rpc::call(conn, &ClientRequest::ListJobs { limit: 500 }).await {
        Ok(ClientResponse::Jobs(jobs)) => jobs
            .into_iter()
            .filter(|j| matches!(j.state, JobState::Assigned | JobState::Running))
            .collect(),
        _ => Vec::new(),
    };
    if let Some(other) = active
        .iter()
        .find(|j| j.spec.project == job.spec.project && j.spec.app == job.spec.app)
    {
        return format!(
            "waiting for job {} ({}) on {}/{} to end: jobs on one app run one at a time",
            other.id,
            other.spec.kind.name(),
            job.spec.project,
            job.spec.app
        );
    }
    match target {
        RunnerTarget::Id(r) => {
            if let Some(other) = active.iter().find(|j| j.runner.as_deref() == Some(r)) {
                format!("waiting for runner {r}: it is busy with job {}", other.id)
            } else if !known {
                format!("no runner {r} has registered with this cluster yet (start one with `cairn runner agent --id {r}`): waiting for it to connect")
            } else {
                format!("waiting for runner {r} to connect")
            }
        }
        RunnerTarget::Labels(want) => {
            let l: Vec<String> = want.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let l = l.join(", ");
            if known {
                format!("waiting for a free runner with labels {l} to connect")
            } else {
                format!("no runner with labels {l} has registered with this cluster yet: waiting for one to connect")
            }
        }
        RunnerTarget::Any => "waiting for a runner to connect".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("zone=a"), Ok(("zone".into(), "a".into())));
        assert_eq!(parse_label("k="), Ok(("k".into(), String::new())));
        assert!(parse_label("zone").is_err());
        assert!(parse_label("=a").is_err());
    }

    #[test]
    fn the_default_target_is_this_cli() {
        assert_eq!(RunnerSelect::default().target(), None);
        let s = RunnerSelect {
            runner: Some("a1".into()),
            runner_labels: Vec::new(),
        };
        assert_eq!(s.target(), Some(RunnerTarget::Id("a1".into())));
        let s = RunnerSelect {
            runner: None,
            runner_labels: vec![("zone".into(), "a".into())],
        };
        let want: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert_eq!(s.target(), Some(RunnerTarget::Labels(want)));
    }
}
