//! `cairn app destroy` and `cairn project destroy`: stop every active
//! deployment (a destroy job on this CLI's runner, with the app's config),
//! then remove the app's or project's records from the cluster: builds,
//! deployments, releases, jobs, routes, hostnames and config. The name is
//! then free for any project.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::types::{JobKind, OpKind, Removed, ResourceState};

use super::lifecycle::AppArg;
use super::runner::RunnerSelect;
use super::{call, Global};
use crate::config::Config;
use crate::ui::Style;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AppCmd {
    /// Destroy all of an app's deployments, then remove the app from the
    /// cluster: its builds, deployments, releases, jobs, routes, hostnames and
    /// app config. Its name is then free for any project.
    Destroy {
        /// The project (default: cairn.hcl's).
        #[arg(long)]
        project: Option<String>,
        /// The app (default: cairn.hcl's, when it has only one).
        #[arg(long)]
        app: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProjectCmd {
    /// Destroy the deployments of every app of a project, then remove the
    /// project, its apps and all their records and config from the cluster.
    Destroy {
        /// The project (default: cairn.hcl's).
        #[arg(long)]
        project: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

pub async fn run_app(g: &Global, cmd: &AppCmd) -> anyhow::Result<i32> {
    let AppCmd::Destroy { project, app, yes } = cmd;
    let cfg = local_config(g);
    let project = match project {
        Some(p) => p.clone(),
        None => cfg_or_bail(&cfg, "--project")?.project.clone(),
    };
    let app = match app {
        Some(a) => a.clone(),
        None => cfg_or_bail(&cfg, "--app")?.app(None)?.name.clone(),
    };
    let active = active_deployments(g, &project, Some(&app)).await?;
    let n = active.get(&app).map_or(0, Vec::len);
    confirm(
        *yes,
        &format!(
            "Destroy app {project}/{app}{} and remove all its records (builds, deployments, releases, routes, hostnames, config)?",
            if n > 0 { format!(" ({n} active deployments)") } else { String::new() }
        ),
    )?;
    destroy_deployments(g, &cfg, &project, &active).await?;
    let removed = remove(g, &project, Some(app.clone())).await?;
    print_removed(&format!("app {project}/{app}"), &removed);
    Ok(0)
}

pub async fn run_project(g: &Global, cmd: &ProjectCmd) -> anyhow::Result<i32> {
    let ProjectCmd::Destroy { project, yes } = cmd;
    let cfg = local_config(g);
    let project = match project {
        Some(p) => p.clone(),
        None => cfg_or_bail(&cfg, "--project")?.project.clone(),
    };
    let active = active_deployments(g, &project, None).await?;
    let n: usize = active.values().map(Vec::len).sum();
    confirm(
        *yes,
        &format!(
            "Destroy project {project}{}, remove all its apps and their records and config?",
            if n > 0 {
                format!(" ({n} active deployments)")
            } else {
                String::new()
            }
        ),
    )?;
    destroy_deployments(g, &cfg, &project, &active).await?;
    let removed = remove(g, &project, None).await?;
    print_removed(&format!("project {project}"), &removed);
    Ok(0)
}

/// The config in `-C DIR`, if there is one (an invalid one is kept as its
/// error: it matters only when deployments must be destroyed).
fn local_config(g: &Global) -> Option<anyhow::Result<Config>> {
    let path = crate::config::find(&g.dir()).ok()?;
    Some(crate::config::load(&path).map_err(anyhow::Error::from))
}

fn cfg_or_bail<'a>(
    cfg: &'a Option<anyhow::Result<Config>>,
    flag: &str,
) -> anyhow::Result<&'a Config> {
    match cfg {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => anyhow::bail!("{e:#} (or pass {flag})"),
        None => anyhow::bail!("pass {flag}, or run where cairn.hcl is (or -C DIR)"),
    }
}

/// Active deployment sequences by app.
async fn active_deployments(
    g: &Global,
    project: &str,
    app: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let req = ClientRequest::ListOperations {
        kind: OpKind::Deployment,
        project: Some(project.to_string()),
        app: app.map(str::to_string),
    };
    let ops = match call(g, req).await? {
        ClientResponse::Operations(ops) => ops,
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    };
    let mut by_app: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for o in ops {
        if o.state == ResourceState::Active {
            by_app.entry(o.app).or_default().push(o.sequence);
        }
    }
    Ok(by_app)
}

/// Run a destroy job for each app with active deployments. Destroying needs
/// the platform the app was deployed with, so the app must be in the local
/// config; nothing is removed unless every destroy succeeded.
async fn destroy_deployments(
    g: &Global,
    cfg: &Option<anyhow::Result<Config>>,
    project: &str,
    active: &BTreeMap<String, Vec<u64>>,
) -> anyhow::Result<()> {
    for (app, seqs) in active {
        let list = seqs
            .iter()
            .map(|s| format!("v{s}"))
            .collect::<Vec<_>>()
            .join(", ");
        let need = || {
            format!(
                "app {app} has active deployments ({list}); stopping them needs the platform in the app's config: run this where the cairn.hcl of project {project} with app {app} is (or -C DIR). Nothing was removed"
            )
        };
        let c = match cfg {
            Some(Ok(c)) => c,
            Some(Err(e)) => anyhow::bail!("{}: {e:#}", need()),
            None => anyhow::bail!(need()),
        };
        if c.project != project || c.app(Some(app)).is_err() {
            anyhow::bail!(need());
        }
        let arg = AppArg {
            app: Some(app.clone()),
            runner: RunnerSelect::default(),
            inputs: Default::default(),
        };
        let code = super::lifecycle::run(g, &arg, JobKind::Destroy { deployment: None }).await?;
        if code != 0 {
            anyhow::bail!(
                "destroying the deployments of app {app} failed (see above); nothing was removed"
            );
        }
    }
    Ok(())
}

async fn remove(g: &Global, project: &str, app: Option<String>) -> anyhow::Result<Removed> {
    let req = ClientRequest::RemoveApps {
        project: project.to_string(),
        app,
    };
    match call(g, req).await? {
        ClientResponse::Removed(r) => Ok(r),
        ClientResponse::Error { message } => anyhow::bail!(message),
        other => anyhow::bail!("unexpected answer from the node: {other:?}"),
    }
}

fn print_removed(what: &str, r: &Removed) {
    let style = Style::detect();
    let mut parts = vec![format!(
        "{} operation{}",
        r.operations,
        if r.operations == 1 { "" } else { "s" }
    )];
    parts.push(format!(
        "{} job{}",
        r.jobs,
        if r.jobs == 1 { "" } else { "s" }
    ));
    parts.push(format!(
        "{} config variable{}",
        r.config,
        if r.config == 1 { "" } else { "s" }
    ));
    if !r.hostnames.is_empty() {
        parts.push(format!("hostnames {}", r.hostnames.join(", ")));
    }
    if r.project && !r.apps.is_empty() {
        parts.push(format!("apps {}", r.apps.join(", ")));
    }
    println!("{} Removed {what}: {}", style.ok(), parts.join(", "));
}

/// Ask on a terminal; elsewhere demand `--yes`.
fn confirm(yes: bool, question: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} Pass --yes to confirm (stdin is not a terminal).");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("not confirmed; nothing was changed")
    }
}
