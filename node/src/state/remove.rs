//! App names and removing apps and projects.
//!
//! Every app answers at `APP.DOMAIN`, so an app's name must be unique in the
//! cluster whatever its project: the first job of an app whose name another
//! project already uses (ignoring case) is refused, so nothing another
//! project does can change an app's routes. Apps and projects can be removed
//! once none of their deployments is active and none of their jobs is
//! unfinished; removing takes every record of them (operations, jobs,
//! instances, routes, hostnames, config), so the name is free again.

use cairn_protocol::types::{ConfigScope, OpKind, OpStatus, Removed, ResourceState};

use super::{Response, State};

/// Longest project name, in bytes.
pub const MAX_PROJECT_NAME: usize = 128;
/// Longest app name, in bytes: `APP--vN` must stay one DNS label (63).
pub const MAX_APP_NAME: usize = 48;

/// Why `name` cannot name a project or an app (`what`): empty, too long, or
/// holding control characters, spaces or `/` (which would be printed raw
/// into terminals and paths).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let max = if what == "app" {
        MAX_APP_NAME
    } else {
        MAX_PROJECT_NAME
    };
    if name.is_empty() {
        return Err(format!("the {what} name is empty"));
    }
    if name.len() > max {
        return Err(format!(
            "the {what} name {:?} is {} bytes long; the limit is {max}",
            name.escape_debug().to_string(),
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '/')
    {
        return Err(format!(
            "the {what} name {:?} holds {:?}: names cannot hold control characters, spaces or '/'",
            name.escape_debug().to_string(),
            c
        ));
    }
    Ok(())
}

impl State {
    /// Refuses `app` for `project` when an app of that name (ignoring case)
    /// exists under another key: another project, or another spelling.
    pub(super) fn check_app_name_free(&self, project: &str, app: &str) -> Result<(), String> {
        if self
            .apps
            .contains_key(&(project.to_string(), app.to_string()))
        {
            return Ok(());
        }
        match self
            .apps
            .keys()
            .find(|(_, a)| a.eq_ignore_ascii_case(app))
        {
            None => Ok(()),
            Some((p, a)) if p == project => Err(format!(
                "project {project} already has an app named {a:?}; app names differ by more than case (each answers at APP.DOMAIN)"
            )),
            Some((p, a)) => Err(format!(
                "an app named {a:?} already exists in project {p:?}: app names are unique in a cluster, since each answers at APP.DOMAIN whatever its project. Rename this app, or remove the other one (`cairn app destroy --project {p} --app {a}`)"
            )),
        }
    }

    /// [`Command::RemoveApps`](super::Command::RemoveApps).
    pub(super) fn remove_apps(&mut self, project: &str, app: Option<&str>) -> Response {
        let apps: Vec<String> = self
            .apps
            .keys()
            .filter(|(p, a)| p == project && app.is_none_or(|want| a == want))
            .map(|(_, a)| a.clone())
            .collect();
        let has_config = self.config.keys().any(|(scope, _)| {
            scope.project() == project && app.is_none_or(|want| scope_app(scope) == Some(want))
        });
        let known_project = self.projects.contains_key(project);
        match app {
            Some(want) if apps.is_empty() && !has_config => {
                return Response::Error(format!("project {project:?} has no app {want:?}"));
            }
            None if apps.is_empty() && !known_project && !has_config => {
                return Response::Error(format!("there is no project {project:?}"));
            }
            _ => {}
        }
        if let Err(e) = self.check_removable(project, &apps) {
            return Response::Error(e);
        }

        let mut removed = Removed {
            apps: apps.clone(),
            project: app.is_none(),
            ..Removed::default()
        };
        let of = |p: &str, a: &str| p == project && apps.iter().any(|x| x == a);
        let ops_before = self.operations.len();
        let gone_ops: Vec<_> = self
            .operations
            .values()
            .filter(|o| of(&o.project, &o.app))
            .map(|o| o.id)
            .collect();
        for id in &gone_ops {
            self.operations.remove(id);
        }
        removed.operations = (ops_before - self.operations.len()) as u64;
        self.instances.retain(|(dep, _), _| !gone_ops.contains(dep));
        self.sequences.retain(|(p, a, _), _| !of(p, a));
        let jobs_before = self.jobs.len();
        self.jobs.retain(|_, j| !of(&j.spec.project, &j.spec.app));
        removed.jobs = (jobs_before - self.jobs.len()) as u64;
        self.routes.retain(|(p, a, _), _| !of(p, a));
        let hostnames: Vec<String> = self
            .hostnames
            .values()
            .filter(|h| of(&h.project, &h.app))
            .map(|h| h.name.clone())
            .collect();
        for h in &hostnames {
            self.hostnames.remove(h);
        }
        removed.hostnames = hostnames;
        let config_before = self.config.len();
        self.config.retain(|(scope, _), _| {
            if scope.project() != project {
                return true;
            }
            match (app, scope_app(scope)) {
                // The whole project: all of its config goes.
                (None, _) => false,
                (Some(want), Some(a)) => a != want,
                (Some(_), None) => true,
            }
        });
        removed.config = (config_before - self.config.len()) as u64;
        for a in &apps {
            self.apps.remove(&(project.to_string(), a.clone()));
        }
        if app.is_none() {
            self.projects.remove(project);
        }
        Response::Removed(removed)
    }

    /// Why `apps` of `project` cannot be removed yet: deployments still
    /// active (their processes or containers would be orphaned), or jobs
    /// still queued or running.
    fn check_removable(&self, project: &str, apps: &[String]) -> Result<(), String> {
        let mut why = Vec::new();
        for app in apps {
            let active: Vec<String> = self
                .operations
                .values()
                .filter(|o| o.project == project && &o.app == app)
                .filter(|o| {
                    o.kind == OpKind::Deployment
                        && o.status == OpStatus::Success
                        && o.state == ResourceState::Active
                })
                .map(|o| format!("v{}", o.sequence))
                .collect();
            if !active.is_empty() {
                why.push(format!(
                    "app {app} has active deployments ({}): destroy them first (`cairn destroy --app {app}` from its directory, or `cairn app destroy`, which does both)",
                    active.join(", ")
                ));
            }
            let unfinished: Vec<String> = self
                .jobs
                .values()
                .filter(|j| j.spec.project == project && &j.spec.app == app)
                .filter(|j| !j.state.is_final())
                .map(|j| format!("{} ({}, {})", j.id, j.spec.kind.name(), j.state.word()))
                .collect();
            if !unfinished.is_empty() {
                why.push(format!(
                    "app {app} has unfinished jobs: {} (wait for them or `cairn job cancel N`)",
                    unfinished.join(", ")
                ));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cannot remove from project {project}: {}",
                why.join("; ")
            ))
        }
    }
}

/// The app a config scope belongs to, if it is app-scoped.
fn scope_app(scope: &ConfigScope) -> Option<&str> {
    match scope {
        ConfigScope::App { app, .. } | ConfigScope::WorkspaceApp { app, .. } => Some(app),
        ConfigScope::Project(_) | ConfigScope::Workspace { .. } => None,
    }
}
