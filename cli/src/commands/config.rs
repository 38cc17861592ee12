//! `config set|get|delete|list`: app configuration variables, by scope.
//!
//! Every argument is checked before anything is written: a bad one fails the
//! whole command with a one-line error naming it. Listings mask secrets
//! (`********`, in `--json` too); `get` prints the value itself.

use anyhow::bail;
use cairn_protocol::config::{self as cfgvars, check_env_name, rank, shown_value, MAX_VALUE};
use cairn_protocol::types::{ConfigScope, ConfigVar, DEFAULT_WORKSPACE};

use super::{table, Global};
use crate::appconfig::{self, Change};
use crate::ui::Style;
use crate::{client, config};

/// Shown under every `config` command's help.
pub const SCOPES_HELP: &str = "\
Scopes (a variable belongs to exactly one, chosen with the flags):
  (no flag)                  the project: every app, every workspace
  --app A                    one app, every workspace
  --workspace W              every app of the project, in workspace W
  --app A --workspace W      one app, in workspace W
The project is --project P, or else the `project` of the cairn.hcl in the current
directory (or -C DIR).

Precedence: a deployment gets, for each name, the value of its most specific scope:
  workspace-app > app > workspace > project
Deployments run in the workspace `cairn up --workspace W` names (default \"default\").

`config { env = { … } }` in cairn.hcl declares project (top level) and app (inside
`app`) variables, and `config { workspace \"W\" { env = { … } } }` workspace and
workspace-app ones: `cairn up` and `cairn deploy` set them to the file's values and
delete the ones the file no longer declares (never a variable set with
`cairn config set`). A value that reads a sensitive input variable is stored as a secret.";

#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// The project (default: the one of cairn.hcl in the current directory or -C DIR).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Scope to this app.
    #[arg(long, value_name = "A")]
    pub app: Option<String>,
    /// Scope to this workspace.
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCmd {
    /// Set variables (NAME=VALUE…) in one scope; deployments get them as env vars.
    #[command(after_help = SCOPES_HELP)]
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Store the values as secrets: masked in `cairn config list` (`get` still shows them).
        #[arg(long)]
        secret: bool,
        /// NAME=VALUE pairs. NAME is an env var name: letters, digits and '_', not starting
        /// with a digit.
        #[arg(value_name = "NAME=VALUE", required = true, allow_hyphen_values = true)]
        vars: Vec<String>,
    },
    /// Print the value a variable resolves to (secrets too).
    ///
    /// With an app (--app, or the only app of cairn.hcl when --project is not given), the
    /// value that app's deployments get in the workspace (--workspace, default "default"),
    /// by precedence. Without one, the project's value (or the workspace's, with
    /// --workspace). Exits 1 when the variable is not set.
    #[command(after_help = SCOPES_HELP)]
    Get {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The variable's name.
        name: String,
    },
    /// Delete variables from one scope (the scope the flags name; others are untouched).
    #[command(after_help = SCOPES_HELP)]
    Delete {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The variables' names.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// List the project's variables at every scope, secrets masked.
    ///
    /// --app A keeps the variables that apply to app A (project, workspace, app A and
    /// app A in a workspace); --workspace W keeps those that apply in workspace W.
    #[command(after_help = SCOPES_HELP)]
    List {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Print JSON (secrets masked too).
        #[arg(long)]
        json: bool,
    },
}

/// Where a command points: a project, maybe an app and a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    project: String,
    app: Option<String>,
    workspace: Option<String>,
}

impl Target {
    /// The exact scope the flags name.
    fn scope(&self) -> ConfigScope {
        ConfigScope::of(
            self.project.clone(),
            self.app.clone(),
            self.workspace.clone(),
        )
    }
}

/// The target of a command: the flags, else cairn.hcl's project (and, with
/// `default_app`, its app when it has only one).
fn target(g: &Global, s: &ScopeArgs, default_app: bool) -> anyhow::Result<Target> {
    for (flag, v) in [
        ("--project", &s.project),
        ("--app", &s.app),
        ("--workspace", &s.workspace),
    ] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            bail!("{flag} must not be empty");
        }
    }
    let (project, only_app) = match &s.project {
        Some(p) => (p.clone(), None),
        None => {
            let dir = g.dir();
            let Ok(path) = config::find(&dir) else {
                bail!(
                    "no project: pass --project NAME, or run where cairn.hcl is (or -C DIR); {} has no cairn.hcl",
                    dir.display()
                );
            };
            let names = super::config_names(&path)?;
            let only = match names.apps.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            };
            match names.project {
                Some(p) => (p, only),
                // The file's error says why there is no project.
                None => (config::load(&path)?.project, only),
            }
        }
    };
    let app = match &s.app {
        Some(a) => Some(a.clone()),
        None if default_app => only_app,
        None => None,
    };
    Ok(Target {
        project,
        app,
        workspace: s.workspace.clone(),
    })
}

/// `NAME=VALUE` arguments, all checked before anything is written. With
/// `secret`, errors never echo a value.
fn parse_assignments(args: &[String], secret: bool) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let Some((name, value)) = arg.split_once('=') else {
            if secret {
                bail!(
                    "argument {}: expected NAME=VALUE (not shown: --secret)",
                    i + 1
                );
            }
            bail!("{arg:?}: expected NAME=VALUE");
        };
        let shown = if secret {
            format!("{name}=…")
        } else {
            arg.clone()
        };
        if name.is_empty() {
            bail!("{shown:?}: the name is empty; expected NAME=VALUE");
        }
        if let Err(why) = check_env_name(name) {
            bail!("{shown:?}: invalid variable name {name:?}: {why}");
        }
        if value.len() > MAX_VALUE {
            bail!(
                "{name}: the value is {} bytes, over the {MAX_VALUE}-byte limit",
                value.len()
            );
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if let Err(why) = check_env_name(name) {
        bail!("{name:?}: invalid variable name: {why}");
    }
    Ok(())
}

pub async fn run(g: &Global, cmd: &ConfigCmd) -> anyhow::Result<i32> {
    match cmd {
        ConfigCmd::Set {
            scope,
            secret,
            vars,
        } => {
            let assignments = parse_assignments(vars, *secret)?;
            let t = target(g, scope, false)?;
            set(g, &t, &assignments, *secret).await
        }
        ConfigCmd::Get { scope, name } => {
            check_name(name)?;
            let t = target(g, scope, true)?;
            get(g, &t, name).await
        }
        ConfigCmd::Delete { scope, names } => {
            for n in names {
                check_name(n)?;
            }
            let t = target(g, scope, false)?;
            delete(g, &t, names).await
        }
        ConfigCmd::List { scope, json } => {
            let t = target(g, scope, false)?;
            list(g, &t, *json).await
        }
    }
}

async fn connect(g: &Global) -> anyhow::Result<client::Client> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    Ok(client::connect(&ctx).await?)
}

async fn set(
    g: &Global,
    t: &Target,
    assignments: &[(String, String)],
    secret: bool,
) -> anyhow::Result<i32> {
    let scope = t.scope();
    let mut s = connect(g).await?;
    let current = appconfig::list(&mut s, &scope).await?;
    let mut changes: Vec<Change> = assignments
        .iter()
        .map(|(name, value)| {
            Change::Set(ConfigVar {
                scope: scope.clone(),
                name: name.clone(),
                value: value.clone(),
                secret,
            })
        })
        .collect();
    let names: Vec<&str> = assignments.iter().map(|(n, _)| n.as_str()).collect();
    // Set by hand now: a later sync of cairn.hcl must not delete them.
    changes.extend(appconfig::disown(&scope, &current, &names));
    appconfig::apply(&mut s, &changes).await?;
    s.close();
    if !secret {
        for v in current
            .iter()
            .filter(|v| v.secret && names.contains(&v.name.as_str()))
        {
            eprintln!(
                "note: {} was a secret; it is now a plain value (set it with --secret to keep it masked)",
                v.name
            );
        }
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    println!(
        "{} Set {}{} in {scope}",
        Style::detect().ok(),
        unique.join(", "),
        if secret { " (secret)" } else { "" }
    );
    Ok(0)
}

/// The scopes `get` reads for a target, least specific first.
fn get_scopes(t: &Target) -> Vec<ConfigScope> {
    let project = t.project.clone();
    match (&t.app, &t.workspace) {
        (Some(app), ws) => {
            cfgvars::scopes_for(&project, app, ws.as_deref().unwrap_or(DEFAULT_WORKSPACE)).to_vec()
        }
        (None, Some(workspace)) => vec![
            ConfigScope::Project(project.clone()),
            ConfigScope::Workspace {
                project,
                workspace: workspace.clone(),
            },
        ],
        (None, None) => vec![ConfigScope::Project(project)],
    }
}

/// What `get` resolves `name` to among `vars` (the variables of [`get_scopes`]).
fn resolve_one<'a>(t: &Target, vars: &'a [ConfigVar], name: &str) -> Option<&'a ConfigVar> {
    let ws = t.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE);
    // No app: an app name no scope can hold, so only project and workspace rank.
    let app = t.app.as_deref().unwrap_or("");
    vars.iter()
        .filter(|v| v.name == name)
        .filter_map(|v| rank(&v.scope, &t.project, app, ws).map(|r| (r, v)))
        .max_by_key(|(r, _)| *r)
        .map(|(_, v)| v)
}

async fn get(g: &Global, t: &Target, name: &str) -> anyhow::Result<i32> {
    let mut s = connect(g).await?;
    let mut vars = Vec::new();
    for scope in get_scopes(t) {
        vars.extend(appconfig::list(&mut s, &scope).await?);
    }
    s.close();
    match resolve_one(t, &vars, name) {
        Some(v) => {
            println!("{}", v.value);
            Ok(0)
        }
        None => {
            let for_what = match (&t.app, &t.workspace) {
                (Some(app), ws) => format!(
                    "app \"{}/{app}\" in workspace \"{}\"",
                    t.project,
                    ws.as_deref().unwrap_or(DEFAULT_WORKSPACE)
                ),
                (None, Some(ws)) => {
                    format!("project \"{}\" in workspace \"{ws}\"", t.project)
                }
                (None, None) => format!("project \"{}\"", t.project),
            };
            bail!("config variable {name} is not set for {for_what} (see `cairn config list`)")
        }
    }
}

async fn delete(g: &Global, t: &Target, names: &[String]) -> anyhow::Result<i32> {
    let scope = t.scope();
    let mut s = connect(g).await?;
    let current = appconfig::list(&mut s, &scope).await?;
    // Every name must be there before anything is deleted.
    for n in names {
        if !current.iter().any(|v| v.name == *n) {
            bail!("config variable {n} is not set in {scope} (see `cairn config list`)");
        }
    }
    let mut unique: Vec<&str> = names.iter().map(String::as_str).collect();
    unique.sort();
    unique.dedup();
    let mut changes: Vec<Change> = unique
        .iter()
        .map(|n| Change::Delete {
            scope: scope.clone(),
            name: n.to_string(),
        })
        .collect();
    changes.extend(appconfig::disown(&scope, &current, &unique));
    appconfig::apply(&mut s, &changes).await?;
    s.close();
    println!(
        "{} Deleted {} from {scope}",
        Style::detect().ok(),
        unique.join(", ")
    );
    Ok(0)
}

/// The variables of `all` that `list` shows for `t`, in precedence order
/// (project, workspace, app, workspace-app), then by scope and name.
fn listed<'a>(t: &Target, all: &'a [ConfigVar]) -> Vec<&'a ConfigVar> {
    let mut vars: Vec<&ConfigVar> = all
        .iter()
        .filter(|v| v.scope.project() == t.project && !cfgvars::is_reserved(&v.name))
        .filter(|v| match (&t.app, v.scope.app()) {
            (Some(want), Some(a)) => want == a,
            _ => true,
        })
        .filter(|v| match (&t.workspace, v.scope.workspace()) {
            (Some(want), Some(w)) => want == w,
            _ => true,
        })
        .collect();
    let order = |s: &ConfigScope| match s {
        ConfigScope::Project(_) => 0,
        ConfigScope::Workspace { .. } => 1,
        ConfigScope::App { .. } => 2,
        ConfigScope::WorkspaceApp { .. } => 3,
    };
    vars.sort_by(|a, b| {
        (order(&a.scope), &a.scope, &a.name).cmp(&(order(&b.scope), &b.scope, &b.name))
    });
    vars
}

fn scope_label(s: &ConfigScope) -> String {
    match s {
        ConfigScope::Project(_) => "project".into(),
        ConfigScope::App { app, .. } => format!("app {app}"),
        ConfigScope::Workspace { workspace, .. } => format!("workspace {workspace}"),
        ConfigScope::WorkspaceApp { app, workspace, .. } => {
            format!("app {app}, workspace {workspace}")
        }
    }
}

async fn list(g: &Global, t: &Target, json: bool) -> anyhow::Result<i32> {
    let mut s = connect(g).await?;
    let all = appconfig::list_all(&mut s).await?;
    s.close();
    let vars = listed(t, &all);
    let source = |v: &ConfigVar| {
        if appconfig::from_file(v, &all) {
            "file"
        } else {
            "cli"
        }
    };
    if json {
        let out: Vec<serde_json::Value> = vars
            .iter()
            .map(|v| {
                serde_json::json!({
                    "scope": v.scope.kind(),
                    "project": v.scope.project(),
                    "app": v.scope.app(),
                    "workspace": v.scope.workspace(),
                    "name": v.name,
                    "value": shown_value(v),
                    "secret": v.secret,
                    "source": source(v),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if vars.is_empty() {
        println!("No config variables in project \"{}\".", t.project);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = vars
        .iter()
        .map(|v| {
            vec![
                scope_label(&v.scope),
                v.name.clone(),
                shown_value(v).to_string(),
                source(v).to_string(),
            ]
        })
        .collect();
    table(&["SCOPE", "NAME", "VALUE", "SOURCE"], &rows);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn err(a: &[&str], secret: bool) -> String {
        parse_assignments(&args(a), secret)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn assignments_split_at_the_first_equals_sign() {
        let got = parse_assignments(&args(&["A=1", "B=x=y", "C=", "_D=-v"]), false).expect("valid");
        let want = [("A", "1"), ("B", "x=y"), ("C", ""), ("_D", "-v")];
        assert_eq!(
            got,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_assignments_name_the_argument_on_one_line() {
        let e = err(&["A=1", "NOPE"], false);
        assert_eq!(e, "\"NOPE\": expected NAME=VALUE");
        let e = err(&["=x"], false);
        assert!(e.starts_with("\"=x\": the name is empty"), "{e}");
        let e = err(&["1A=x"], false);
        assert!(
            e.starts_with("\"1A=x\": invalid variable name \"1A\""),
            "{e}"
        );
        let e = err(&["MY-VAR=x"], false);
        assert!(e.contains("\"MY-VAR=x\"") && e.contains("'-'"), "{e}");
        let big = format!("A={}", "x".repeat(MAX_VALUE + 1));
        assert!(err(&[&big], false).contains("over the"), "value too long");
        for e in [
            err(&["1A=x"], false),
            err(&["NOPE"], false),
            err(&[&big], false),
        ] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn errors_about_secrets_never_echo_the_value() {
        let e = err(&["1A=hunter2"], true);
        assert!(!e.contains("hunter2") && e.contains("1A=…"), "{e}");
        let e = err(&["A=ok", "hunter2"], true);
        assert!(!e.contains("hunter2") && e.contains("argument 2"), "{e}");
    }

    fn t(app: Option<&str>, ws: Option<&str>) -> Target {
        Target {
            project: "p".into(),
            app: app.map(Into::into),
            workspace: ws.map(Into::into),
        }
    }

    fn var(scope: ConfigScope, name: &str, value: &str, secret: bool) -> ConfigVar {
        ConfigVar {
            scope,
            name: name.into(),
            value: value.into(),
            secret,
        }
    }

    #[test]
    fn flags_name_the_scope() {
        assert_eq!(t(None, None).scope(), ConfigScope::Project("p".into()));
        assert_eq!(t(Some("a"), None).scope().kind(), "app");
        assert_eq!(t(None, Some("w")).scope().kind(), "workspace");
        assert_eq!(t(Some("a"), Some("w")).scope().kind(), "workspace-app");
    }

    #[test]
    fn get_resolves_by_precedence_for_the_app_or_the_project() {
        let app = |a: &str| ConfigScope::App {
            project: "p".into(),
            app: a.into(),
        };
        let vars = vec![
            var(ConfigScope::Project("p".into()), "A", "project", false),
            var(app("web"), "A", "app", true),
            var(
                ConfigScope::WorkspaceApp {
                    project: "p".into(),
                    app: "web".into(),
                    workspace: "prod".into(),
                },
                "A",
                "prod-app",
                false,
            ),
        ];
        let value = |t: &Target| resolve_one(t, &vars, "A").map(|v| v.value.clone());
        assert_eq!(value(&t(None, None)).as_deref(), Some("project"));
        assert_eq!(value(&t(Some("web"), None)).as_deref(), Some("app"));
        assert_eq!(
            value(&t(Some("web"), Some("prod"))).as_deref(),
            Some("prod-app")
        );
        assert_eq!(value(&t(Some("api"), None)).as_deref(), Some("project"));
        assert_eq!(resolve_one(&t(None, None), &vars, "B"), None);
        // `get` reads every scope it may resolve from.
        assert_eq!(get_scopes(&t(Some("web"), None)).len(), 4);
        assert_eq!(get_scopes(&t(None, Some("prod"))).len(), 2);
    }

    #[test]
    fn list_filters_by_project_app_and_workspace_and_hides_reserved_names() {
        let all = vec![
            var(
                ConfigScope::App {
                    project: "p".into(),
                    app: "web".into(),
                },
                "B",
                "1",
                false,
            ),
            var(ConfigScope::Project("p".into()), "A", "1", false),
            var(
                ConfigScope::Project("p".into()),
                cfgvars::FROM_FILE,
                "{}",
                false,
            ),
            var(ConfigScope::Project("other".into()), "A", "1", false),
            var(
                ConfigScope::App {
                    project: "p".into(),
                    app: "api".into(),
                },
                "C",
                "1",
                false,
            ),
            var(
                ConfigScope::Workspace {
                    project: "p".into(),
                    workspace: "prod".into(),
                },
                "D",
                "1",
                false,
            ),
        ];
        let names = |t: &Target| {
            listed(t, &all)
                .iter()
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&t(None, None)), vec!["A", "D", "C", "B"]);
        assert_eq!(names(&t(Some("web"), None)), vec!["A", "D", "B"]);
        assert_eq!(names(&t(None, Some("dev"))), vec!["A", "C", "B"]);
    }
}
