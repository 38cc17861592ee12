//! The environment size limit on config changes.
//!
//! Every instance of an app is started with its resolved configuration as
//! environment variables, and the kernel refuses to start a process whose
//! environment is too large (E2BIG): values that are each fine can add up
//! past it and take every instance down at its next (re)start. So a
//! [`Command::SetConfig`](super::Command::SetConfig) is refused when the
//! environment of an app it applies to would resolve to more than
//! [`MAX_ENV_BYTES`], naming the app, the size and the limit.
//!
//! Which apps: those the project has (plus the one the variable names, and
//! a project without apps is checked as an app with no app-scoped values),
//! in the default workspace and the variable's own workspace (jobs run in
//! the default workspace today). Each check reads only the four scopes that
//! apply to that app (range scans), not the whole catalog.

use cairn_protocol::config::{env_size, is_reserved, resolve_env, scopes_for, MAX_ENV_BYTES};
use cairn_protocol::types::{ConfigScope, ConfigVar, DEFAULT_WORKSPACE};

use super::State;

impl State {
    /// Why setting `var` would push an app's environment past
    /// [`MAX_ENV_BYTES`].
    pub(super) fn check_env_size(&self, var: &ConfigVar) -> Result<(), String> {
        if is_reserved(&var.name) {
            return Ok(()); // Cairn's bookkeeping: never in an environment.
        }
        let project = var.scope.project();
        let (apps, workspaces) = self.affected(&var.scope);
        for app in &apps {
            for workspace in &workspaces {
                let mut vars: Vec<ConfigVar> = scopes_for(project, app, workspace)
                    .iter()
                    .flat_map(|scope| self.config_in(Some(scope)))
                    .filter(|v| !(v.scope == var.scope && v.name == var.name))
                    .collect();
                vars.push(var.clone());
                let env = resolve_env(&vars, project, app, workspace);
                let size = env_size(&env);
                if size > MAX_ENV_BYTES {
                    let whose = if app.is_empty() {
                        format!("the apps of project {project}")
                    } else {
                        format!("app {app}")
                    };
                    return Err(format!(
                        "config change refused: with {} set, the environment of {whose} (workspace {workspace}) would be {size} bytes, over the limit of {MAX_ENV_BYTES} bytes; a process cannot start with an environment that large. Delete or shorten other values (`cairn config list`), or keep large data in a file",
                        var.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The (apps, workspaces) whose environment `scope` feeds.
    fn affected(&self, scope: &ConfigScope) -> (Vec<String>, Vec<String>) {
        let project = scope.project();
        let apps_of_project = || {
            let mut apps: Vec<String> = self
                .apps
                .range((project.to_string(), String::new())..)
                .take_while(|((p, _), _)| p == project)
                .map(|((_, a), _)| a.clone())
                .collect();
            if apps.is_empty() {
                apps.push(String::new());
            }
            apps
        };
        let mut workspaces = vec![DEFAULT_WORKSPACE.to_string()];
        match scope {
            ConfigScope::Project(_) => (apps_of_project(), workspaces),
            ConfigScope::App { app, .. } => (vec![app.clone()], workspaces),
            ConfigScope::Workspace { workspace, .. } => {
                (apps_of_project(), vec![workspace.clone()])
            }
            ConfigScope::WorkspaceApp { app, workspace, .. } => {
                if workspace != DEFAULT_WORKSPACE {
                    workspaces = vec![workspace.clone()];
                }
                (vec![app.clone()], workspaces)
            }
        }
    }
}
