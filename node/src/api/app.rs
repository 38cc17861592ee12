//! One app, as the web UI's app page and the HTTP API show it, and the actions a person takes
//! on it there: release a deployment (a rollback when it is older than the released one, a
//! canary when given a weight below 100) and destroy one.
//!
//! Those actions are jobs, because only a runner can run the app's release and platform
//! plugins (a Kubernetes releaser, an external plugin, the app's own config). The job goes to
//! the runner the app's last job went to, with that job's source: a standing runner
//! (`cairn runner agent`, or a label that picks one) takes it when it is free. A `cairn`
//! command's own runner lives only as long as the command, so an app last deployed that way
//! gets a refusal that says what to do instead.

use cairn_protocol::types::{
    ConfigVar, Instance, Job, JobId, JobKind, JobSpec, OpKind, Operation, Route, RunnerKind,
    RunnerTarget,
};
use serde::Serialize;

use super::{queue_job, ApiError, Caller};
use crate::ctx::Ctx;

/// Everything the app page shows, read in one linearizable query.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// The workspaces the app has operations in.
    pub workspaces: Vec<String>,
    /// What the app's URL serves: the deployment released in full and the canary.
    pub route: Option<Route>,
    /// Builds, artifacts, deployments and releases of this workspace, oldest first.
    pub operations: Vec<Operation>,
    pub instances: Vec<Instance>,
    /// The config variables that apply to the app (project, app, workspace scopes), secrets
    /// unmasked: each transport masks them.
    pub config: Vec<ConfigVar>,
    /// The app's jobs in this workspace, newest first (at most [`APP_JOBS`]).
    pub jobs: Vec<Job>,
}

/// How many of an app's jobs its view carries.
pub const APP_JOBS: usize = 50;

pub async fn app_view(
    ctx: &Ctx,
    project: String,
    app: String,
    workspace: String,
) -> Result<AppView, ApiError> {
    ctx.query(move |st| {
        if !st.apps.contains_key(&(project.clone(), app.clone())) {
            return Err(ApiError::not_found(format!(
                "no app {app} in project {project}"
            )));
        }
        let of_app = |o: &&Operation| o.project == project && o.app == app;
        let mut workspaces: Vec<String> = st
            .operations
            .values()
            .filter(of_app)
            .map(|o| o.workspace.clone())
            .collect();
        workspaces.sort();
        workspaces.dedup();
        let operations = st
            .operations
            .values()
            .filter(of_app)
            .filter(|o| o.workspace == workspace)
            .cloned()
            .collect();
        let instances = st
            .instances
            .values()
            .filter(|i| i.project == project && i.app == app && i.workspace == workspace)
            .cloned()
            .collect();
        let config = st
            .config_in(None)
            .into_iter()
            .filter(|v| {
                cairn_protocol::config::rank(&v.scope, &project, &app, &workspace).is_some()
            })
            .collect();
        let jobs = st
            .jobs
            .values()
            .rev()
            .filter(|j| j.spec.project == project && j.spec.app == app)
            .filter(|j| j.spec.workspace == workspace)
            .take(APP_JOBS)
            .cloned()
            .collect();
        Ok(AppView {
            route: st
                .routes
                .get(&(project.clone(), app.clone(), workspace.clone()))
                .cloned(),
            project,
            app,
            workspace,
            workspaces,
            operations,
            instances,
            config,
            jobs,
        })
    })
    .await
    .map_err(|e| e.context("cannot read the catalog"))?
}

/// What a person asks of one of an app's deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentAction {
    /// Release it: in full (`None`, 100) or as a canary with this share of the requests.
    Release {
        weight: Option<u8>,
    },
    Destroy,
}

/// Queue `action` on deployment `sequence` of the app for the runner that ran the app's
/// last job, with that job's source. Refused when the deployment is not there to act on,
/// or when no runner could take the job (see the module's note).
pub async fn deployment_job(
    ctx: &Ctx,
    caller: &Caller,
    project: String,
    app: String,
    workspace: String,
    sequence: u64,
    action: DeploymentAction,
) -> Result<JobId, ApiError> {
    if let DeploymentAction::Release { weight: Some(w) } = action {
        if !(1..=100).contains(&w) {
            return Err(ApiError::invalid(format!(
                "a release's weight is a share of the requests, 1 to 100 %, not {w}"
            )));
        }
    }
    let (p, a, w) = (project.clone(), app.clone(), workspace.clone());
    let (last, runner) = ctx
        .query(move |st| {
            let dep = st
                .operations
                .values()
                .find(|o| {
                    o.kind == OpKind::Deployment
                        && o.project == p
                        && o.app == a
                        && o.workspace == w
                        && o.sequence == sequence
                })
                .cloned();
            let last = st
                .jobs
                .values()
                .rev()
                .find(|j| j.spec.project == p && j.spec.app == a && j.spec.workspace == w)
                .cloned();
            let runner = match last.as_ref().map(|j| &j.spec.target) {
                Some(RunnerTarget::Id(id)) => st.runners.get(id).cloned(),
                _ => None,
            };
            (dep, last, runner)
        })
        .await
        .map_err(|e| e.context("cannot read the catalog"))
        .and_then(|(dep, last, runner)| {
            let Some(dep) = dep else {
                return Err(ApiError::not_found(format!(
                    "app {app} (project {project}, workspace {workspace}) has no deployment v{sequence}"
                )));
            };
            if dep.state != cairn_protocol::types::ResourceState::Active {
                return Err(ApiError::conflict(format!(
                    "deployment v{sequence} of {app} is destroyed"
                )));
            }
            if dep.status != cairn_protocol::types::OpStatus::Success {
                return Err(ApiError::conflict(format!(
                    "deployment v{sequence} of {app} did not succeed, so there is nothing to {}",
                    match action {
                        DeploymentAction::Release { .. } => "release",
                        DeploymentAction::Destroy => "destroy",
                    }
                )));
            }
            Ok((last, runner))
        })?;
    let Some(last) = last else {
        return Err(ApiError::conflict(format!(
            "app {app} has no job to take a runner and source from"
        )));
    };
    // A job meant for one `cairn` command's own runner cannot be repeated: that runner took
    // only the command's jobs and left with it.
    if let RunnerTarget::Id(id) = &last.spec.target {
        let cli = match &runner {
            Some(r) => r.kind == RunnerKind::Cli,
            // Its record is gone: a `cairn` command's runner is named cli-HOST-….
            None => id.starts_with("cli-"),
        };
        if cli {
            return Err(ApiError::conflict(format!(
                "app {app}'s last job (job {}) ran on the runner of a `cairn` command ({id}), which left with it. \
                 Run `cairn {}` in the app's directory, or start a standing runner there \
                 (`cairn runner agent`) and deploy through it (`cairn up --runner ID`), so the UI and API can act on the app",
                last.id,
                match action {
                    DeploymentAction::Release { weight: None } => format!("release {sequence}"),
                    DeploymentAction::Release { weight: Some(w) } => format!("release {sequence} --weight {w}"),
                    DeploymentAction::Destroy => format!("destroy {sequence}"),
                }
            )));
        }
    }
    let kind = match action {
        DeploymentAction::Release { weight } => JobKind::Release {
            deployment: Some(sequence),
            prune: false,
            retain: None,
            weight: weight.filter(|w| *w < 100),
        },
        DeploymentAction::Destroy => JobKind::Destroy {
            deployment: Some(sequence),
        },
    };
    let spec = JobSpec {
        kind,
        project,
        app,
        workspace,
        source: last.spec.source.clone(),
        target: last.spec.target.clone(),
    };
    queue_job(ctx, caller, spec).await
}

/// One app in one workspace, as the UI's overview lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AppSummary {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub route: Option<Route>,
    /// Deployments not destroyed.
    pub active_deployments: usize,
    /// The newest operation: what happened last.
    pub last: Option<Operation>,
}

/// Every app, in every workspace it has operations in (an app without any, in the default
/// workspace), sorted by project, app and workspace.
pub async fn overview(ctx: &Ctx) -> Result<Vec<AppSummary>, ApiError> {
    ctx.query(|st| {
        use std::collections::BTreeMap;
        let mut out: BTreeMap<(String, String, String), AppSummary> = BTreeMap::new();
        for (project, app) in st.apps.keys() {
            let key = (
                project.clone(),
                app.clone(),
                cairn_protocol::types::DEFAULT_WORKSPACE.to_string(),
            );
            if st
                .operations
                .values()
                .any(|o| o.project == *project && o.app == *app)
            {
                continue;
            }
            out.insert(
                key.clone(),
                AppSummary {
                    project: key.0,
                    app: key.1,
                    workspace: key.2,
                    route: None,
                    active_deployments: 0,
                    last: None,
                },
            );
        }
        for o in st.operations.values() {
            let key = (o.project.clone(), o.app.clone(), o.workspace.clone());
            let s = out.entry(key.clone()).or_insert_with(|| AppSummary {
                route: st.routes.get(&key).cloned(),
                project: key.0,
                app: key.1,
                workspace: key.2,
                active_deployments: 0,
                last: None,
            });
            if o.kind == OpKind::Deployment
                && o.state == cairn_protocol::types::ResourceState::Active
                && o.status == cairn_protocol::types::OpStatus::Success
            {
                s.active_deployments += 1;
            }
            if s.last.as_ref().is_none_or(|l| l.started_ms <= o.started_ms) {
                s.last = Some(o.clone());
            }
        }
        out.into_values().collect()
    })
    .await
    .map_err(|e| e.context("cannot read the catalog"))
}
