//! `runner agent` (a standalone runner, see [`crate::runner::agent`]),
//! `runner list`, and the `--runner` / `--runner-label` options that aim a
//! lifecycle job at another runner, with the wait for that runner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse, RunnerDecision};
use cairn_protocol::rpc;
use cairn_protocol::types::{Job, JobId, JobState, RunnerKind, RunnerTarget};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{table, when, Global};
use crate::client;
use crate::runner::agent::{self, Agent};
use crate::runner::identity::{self, Identity};
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
    /// List the runners: enrolled ones (with their state) and registered ones (CLIs and agents).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Mint a runner token: it enrolls runners (adopted at once, with its labels) and does nothing else.
    #[command(
        long_about = "Mint a runner token. A `cairn runner agent` started with it (in CAIRN_RUNNER_TOKEN or --token-file, never on the command line) enrolls with the cluster, is adopted at once and gets the token's labels. The token can do nothing but enroll runners: it cannot read, queue or change anything. A runner started without a token waits as pending until `cairn runner adopt ID`.

The token is printed on stdout; the command line that starts an agent with it on stderr."
    )]
    Token {
        /// A label every runner enrolled with this token gets (repeatable); it wins over the runner's own.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A name for the token (shown as `token:NAME` where a runner was adopted).
        #[arg(long, default_value = "runner")]
        name: String,
        /// Lifetime in seconds (default: until revoked).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// Adopt a pending runner: it gets its certificate and may run jobs.
    Adopt { id: String },
    /// Reject a runner: refused now (its connections are closed) and whenever it asks again.
    Reject { id: String },
    /// Forget a runner: its record goes, its certificate is refused at once on every node.
    Forget { id: String },
    /// Show one enrolled runner: state, labels, node, last seen, current job, jobs run.
    Inspect {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// A cluster member's QUIC address: run as an enrolled runner with its own identity (no
    /// CLI context needed). The first start enrolls with the runner token from
    /// CAIRN_RUNNER_TOKEN or --token-file (or none: it then waits for `cairn runner adopt`).
    #[arg(long, value_name = "HOST:PORT", requires = "ca_fingerprint")]
    pub address: Option<String>,
    /// The cluster CA's fingerprint (sha256:…, from `cairn runner token` or `cairn context list`).
    #[arg(long, value_name = "SHA256")]
    pub ca_fingerprint: Option<String>,
    /// A file holding the runner token (instead of CAIRN_RUNNER_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Where an enrolled runner keeps its identity (identity.json) and its work
    /// (default: the CLI's data dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// The runner id that jobs name with --runner (default: an id made from
    /// the host name the first time and kept in the CLI's data dir).
    #[arg(long, env = "CAIRN_RUNNER_ID")]
    pub id: Option<String>,
    /// A label jobs can select this runner by with --runner-label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// How many jobs this runner takes at once (jobs of one app still run one at
    /// a time; with a cluster older than protocol 5, one job at a time).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=cairn_protocol::api::MAX_RUNNER_CAPACITY as i64))]
    pub concurrency: u32,
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
    /// Queue the job (for another runner) and exit at once, printing its number;
    /// `cairn job attach N` follows it later.
    #[arg(long)]
    pub detach: bool,
    /// Run the job here, in this CLI, even when the config's `runner { labels }` names
    /// other runners.
    #[arg(long, conflicts_with_all = ["runner", "runner_labels"])]
    pub local: bool,
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
        RunnerCmd::Token { labels, name, ttl } => token(g, labels, name, *ttl).await,
        RunnerCmd::Adopt { id } => decide(g, id, RunnerDecision::Adopt).await,
        RunnerCmd::Reject { id } => decide(g, id, RunnerDecision::Reject).await,
        RunnerCmd::Forget { id } => decide(g, id, RunnerDecision::Forget).await,
        RunnerCmd::Inspect { id, json } => inspect(g, id, *json).await,
    }
}

async fn token(
    g: &Global,
    labels: &[(String, String)],
    name: &str,
    ttl: Option<u64>,
) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s
        .call(&ClientRequest::CreateRunnerToken {
            name: name.to_string(),
            labels: labels.iter().cloned().collect(),
            ttl_s: ttl,
        })
        .await?;
    s.close();
    let ClientResponse::Token { token } = r else {
        anyhow::bail!("unexpected answer from the node: {r:?}")
    };
    println!("{token}");
    eprintln!(
        "Start a runner with it (the token goes in the environment or a file, never on the command line):\n  CAIRN_RUNNER_TOKEN=… cairn runner agent --address {} --ca-fingerprint {}",
        s.addr(),
        ctx.ca_fingerprint
    );
    Ok(0)
}

async fn decide(g: &Global, id: &str, decision: RunnerDecision) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s
        .call(&ClientRequest::DecideRunner {
            id: id.to_string(),
            decision,
        })
        .await;
    s.close();
    match r? {
        ClientResponse::Ok => {}
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
    let style = Style::detect();
    let what = match decision {
        RunnerDecision::Adopt => "adopted: it gets its certificate at its next enrollment request and may run jobs",
        RunnerDecision::Reject => "rejected: its connections are closed and it is refused until forgotten",
        RunnerDecision::Forget => "forgotten: its certificate is refused on every node; it may enroll again with a new key",
    };
    println!("{} runner {id} {what}", style.ok());
    Ok(0)
}

async fn inspect(g: &Global, id: &str, json: bool) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s
        .call(&ClientRequest::InspectRunners {
            id: Some(id.to_string()),
        })
        .await;
    s.close();
    let details = match r? {
        ClientResponse::RunnerDetails(d) => d,
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    };
    let Some(d) = details.into_iter().next() else {
        anyhow::bail!("no enrolled runner {id} (see `cairn runner list`)")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(0);
    }
    let r = &d.record;
    let rows = [
        ("ID", r.id.clone()),
        ("State", r.state.word().to_string()),
        ("Labels", labels_line(&r.labels)),
        ("Key", r.key_fingerprint.clone()),
        ("Enrolled (UTC)", when(r.enrolled_ms)),
        (
            "Decided by",
            r.decided_by.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "Node",
            d.node
                .map(|n| format!("{n:x}"))
                .unwrap_or_else(|| "not connected".into()),
        ),
        (
            "Last seen (UTC)",
            d.last_seen_ms.map(when).unwrap_or_else(|| "never".into()),
        ),
        (
            "Current job",
            d.current_job
                .map(|j| j.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("Jobs run", d.jobs_run.to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<16} {v}");
    }
    Ok(0)
}

fn labels_line(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn run_agent(g: &Global, a: &AgentArgs) -> anyhow::Result<i32> {
    let ident_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| crate::paths::data_dir().join("runner-agent"));
    let kept = Identity::load(&ident_dir)?;
    if a.address.is_some() || kept.is_some() {
        return run_enrolled_agent(g, a, ident_dir, kept).await;
    }
    if a.token_file.is_some() {
        anyhow::bail!("--token-file enrolls a runner: give --address and --ca-fingerprint too");
    }
    let ctx = client::resolve(g.context.as_deref(), false).await?;
    let id = match &a.id {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        Some(_) => anyhow::bail!("--id must not be empty"),
        None => agent::stable_id()?,
    };
    let labels: BTreeMap<String, String> = a.labels.iter().cloned().collect();
    let mut opts = agent::options(id.clone(), labels, g.catalog.clone());
    opts.capacity = a.concurrency;
    let opts = Arc::new(opts);
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

/// `cairn runner agent --address … --ca-fingerprint …`: a runner with its
/// own identity (kept in `dir`), enrolled first if it has no certificate.
async fn run_enrolled_agent(
    g: &Global,
    a: &AgentArgs,
    dir: std::path::PathBuf,
    kept: Option<Identity>,
) -> anyhow::Result<i32> {
    let labels: BTreeMap<String, String> = a.labels.iter().cloned().collect();
    let mut ident = match kept {
        Some(k) => {
            if let Some(fp) = &a.ca_fingerprint {
                if *fp != k.ca_fingerprint {
                    anyhow::bail!(
                        "{} belongs to the cluster with CA {}, not {fp}: give another --data-dir to enroll with that cluster",
                        Identity::path(&dir).display(),
                        k.ca_fingerprint
                    );
                }
            }
            if let Some(id) = a.id.as_deref().filter(|id| *id != k.id) {
                anyhow::bail!(
                    "{} is runner {}'s identity, not {id}: give another --data-dir for another runner",
                    Identity::path(&dir).display(),
                    k.id
                );
            }
            let mut k = k;
            if let Some(addr) = &a.address {
                // The address given now goes first.
                k.addresses.retain(|x| x != addr);
                k.addresses.insert(0, addr.clone());
            }
            k
        }
        None => {
            let (Some(address), Some(fp)) = (&a.address, &a.ca_fingerprint) else {
                anyhow::bail!("enrolling a runner needs --address and --ca-fingerprint");
            };
            let id = match &a.id {
                Some(id) => id.trim().to_string(),
                None => agent::stable_id()?,
            };
            let ident = Identity::new(id, address.clone(), fp.clone())?;
            // Saved before enrolling: a pending runner that restarts keeps its id and key.
            ident.save(&dir)?;
            ident
        }
    };
    let stop = CancellationToken::new();
    let force = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(stop.clone(), force.clone()));
    if ident.cert_pem.is_none() {
        let token = identity::read_token(a.token_file.as_deref())?;
        agent::say(&format!(
            "runner {} enrolling with the cluster at {} ({})",
            ident.id,
            ident.addresses.join(", "),
            if token.is_some() {
                "with a runner token"
            } else {
                "without a token: it waits to be adopted"
            }
        ));
        if !identity::enroll(&mut ident, &dir, token, &labels, &stop).await? {
            signals.abort();
            return Ok(0);
        }
    }
    let ctx = ident
        .context()
        .ok_or_else(|| anyhow::anyhow!("the runner identity has no certificate"))?;
    let id = ident.id.clone();
    let mut opts = agent::options(id.clone(), labels, g.catalog.clone());
    opts.capacity = a.concurrency;
    if let Some(d) = &a.data_dir {
        opts.data_dir = d.join("work");
    }
    let opts = Arc::new(opts);
    agent::say(&format!(
        "runner agent {id} starting (enrolled runner, identity {}, work dir {})",
        Identity::path(&dir).display(),
        opts.data_dir.display()
    ));
    let r = Agent::new(ctx, opts).run(stop, force).await;
    signals.abort();
    if let Err(e) = r {
        anyhow::bail!(
            "{e}\n(to enroll this machine again, delete {} and start the agent with a runner token)",
            Identity::path(&dir).display()
        );
    }
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

/// (id, kind, state, labels, last seen)
type ListRow = (
    String,
    &'static str,
    String,
    BTreeMap<String, String>,
    Option<u64>,
);

async fn list(g: &Global, json: bool) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    let mut s = client::connect(&ctx).await?;
    let r = s.call(&ClientRequest::ListRunners).await?;
    let ClientResponse::Runners(runners) = r else {
        s.close();
        anyhow::bail!("unexpected answer from the node: {r:?}")
    };
    // Enrolled runners (protocol 5): their state, and the pending ones that never registered.
    let enrolled = if s.node.version >= 5 {
        match s.call(&ClientRequest::InspectRunners { id: None }).await? {
            ClientResponse::RunnerDetails(d) => d,
            ClientResponse::Error { message } => anyhow::bail!(message),
            other => anyhow::bail!("unexpected answer from the node: {other:?}"),
        }
    } else {
        Vec::new()
    };
    s.close();
    // One row per runner id: (id, kind, state, labels, last seen).
    let mut rows: Vec<ListRow> = runners
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                kind_word(r.kind),
                "-".to_string(),
                r.labels.clone(),
                Some(r.last_seen_ms),
            )
        })
        .collect();
    for d in &enrolled {
        let state = d.record.state.word().to_string();
        match rows.iter_mut().find(|row| row.0 == d.record.id) {
            Some(row) => {
                row.2 = state;
                row.3 = d.record.labels.clone();
            }
            None => rows.push((
                d.record.id.clone(),
                "agent",
                state,
                d.record.labels.clone(),
                d.last_seen_ms,
            )),
        }
    }
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, kind, state, labels, seen)| {
                let kind = match *kind {
                    "cli" => "Cli",
                    _ => "Agent",
                };
                serde_json::json!({
                    "id": id,
                    "kind": kind,
                    "state": if state == "-" { None } else { Some(state) },
                    "labels": labels,
                    "last_seen_ms": seen,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(id, kind, state, labels, seen)| {
            vec![
                id,
                kind.into(),
                state,
                labels_line(&labels),
                seen.map(when).unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table(
        &["ID", "KIND", "STATE", "LABELS", "LAST REGISTERED (UTC)"],
        &rows,
    );
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
            detach: false,
            local: false,
        };
        assert_eq!(s.target(), Some(RunnerTarget::Id("a1".into())));
        let s = RunnerSelect {
            runner: None,
            runner_labels: vec![("zone".into(), "a".into())],
            detach: true,
            local: false,
        };
        let want: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert_eq!(s.target(), Some(RunnerTarget::Labels(want)));
    }
}
