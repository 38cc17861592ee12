//! `var set|list|delete`: values of the config's input variables (`variable "NAME" {}`)
//! stored on the cluster, for the project or for one workspace of it (Waypoint kept such
//! values on its server too). The CLI and every runner read them before evaluating the
//! config: they rank above a variable's default and below everything given where the
//! config is evaluated (the variable's `env`, auto files, `CAIRN_VAR_`, `--var-file`,
//! `--var`). They are stored as reserved config variables (`cairn.var.NAME`), so they
//! are never an instance's environment; sensitive ones are secrets, and no command prints
//! them.

use std::io::Read as _;

use anyhow::bail;
use cairn_protocol::config::{self as cfgvars, input_name, input_var, SECRET_MASK};
use cairn_protocol::types::{ConfigScope, ConfigVar};

use super::{table, Global};
use crate::appconfig::{self, Change};
use crate::ui::Style;
use crate::{client, config};

const VAR_HELP: &str = "\
Precedence, lowest first: the variable's default < the value stored here (a workspace's
value over the project's) < the variable's `env` list < *.auto.cairnvars files <
CAIRN_VAR_NAME / WP_VAR_NAME < --var-file < --var.

The project is --project P, or else the `project` of the config in the current directory
(or -C DIR). When that config is here, the variable must be declared in it, and the value
must fit its type.";

#[derive(Debug, Clone, clap::Args)]
pub struct VarScope {
    /// The project (default: the one of the config in the current directory or -C DIR).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// For this workspace only (default: the project's value, for every workspace).
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum VarCmd {
    /// Store a value for an input variable. VALUE `-` (or none) reads it from stdin, so a
    /// secret stays out of the shell's history and the process list.
    #[command(after_help = VAR_HELP)]
    Set {
        #[command(flatten)]
        scope: VarScope,
        /// Store it as a secret: never printed (a variable declared `sensitive = true`
        /// is stored so anyway).
        #[arg(long)]
        sensitive: bool,
        /// The variable's name, as declared: variable "NAME" { … }.
        name: String,
        /// The value, as -var takes it: text for a string, number or bool; an HCL literal
        /// for a list, map or object, e.g. '["a", "b"]'.
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
    },
    /// List the stored values of the project (every workspace), sensitive ones masked.
    #[command(after_help = VAR_HELP)]
    List {
        #[command(flatten)]
        scope: VarScope,
        /// Print JSON (sensitive values masked too).
        #[arg(long)]
        json: bool,
    },
    /// Delete stored values (the project's, or the workspace's with --workspace).
    #[command(after_help = VAR_HELP)]
    Delete {
        #[command(flatten)]
        scope: VarScope,
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
}

/// What the config here says: its file, project and declared variables.
struct Here {
    file: Option<std::path::PathBuf>,
    project: String,
    declared: Vec<(String, bool)>,
}

fn here(g: &Global, s: &VarScope) -> anyhow::Result<Here> {
    for (flag, v) in [("--project", &s.project), ("--workspace", &s.workspace)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            bail!("{flag} must not be empty");
        }
    }
    let path = config::find(&g.dir()).ok();
    let names = match &path {
        Some(p) => Some(super::config_names(p)?),
        None => None,
    };
    let from_file = names.as_ref().and_then(|n| n.project.clone());
    let project = match (&s.project, &from_file) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => match &path {
            // The file's own error says why it has no project.
            Some(p) => config::load(p)?.project,
            None => bail!(
                "no project: pass --project NAME, or run where the config is (or -C DIR); {} has none",
                g.dir().display()
            ),
        },
    };
    // The file's declarations count only when it is the project's file.
    let ours = s.project.is_none() || s.project == from_file;
    Ok(Here {
        file: path.filter(|_| ours),
        project,
        declared: names
            .filter(|_| ours)
            .map(|n| n.variables)
            .unwrap_or_default(),
    })
}

fn scope_of(h: &Here, s: &VarScope) -> ConfigScope {
    ConfigScope::of(h.project.clone(), None, s.workspace.clone())
}

/// An HCL identifier: what a variable's name can be.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= cfgvars::MAX_NAME - cfgvars::INPUT_PREFIX.len();
    if !ok {
        bail!("{name:?} is not a variable name: letters, digits, '_' and '-', starting with a letter or '_'");
    }
    Ok(())
}

pub async fn run(g: &Global, cmd: &VarCmd) -> anyhow::Result<i32> {
    match cmd {
        VarCmd::Set {
            scope,
            sensitive,
            name,
            value,
        } => {
            check_name(name)?;
            let h = here(g, scope)?;
            let declared_sensitive = match (&h.file, h.declared.iter().find(|(n, _)| n == name)) {
                (Some(file), None) => {
                    let names: Vec<&str> = h.declared.iter().map(|(n, _)| n.as_str()).collect();
                    bail!(
                        "no variable \"{name}\" is declared in {} (declared: {}): declare it with variable \"{name}\" {{ type = string }}",
                        file.display(),
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    );
                }
                (_, Some((_, s))) => *s,
                (None, None) => false,
            };
            let value = match value.as_deref() {
                Some("-") | None => {
                    let mut v = String::new();
                    std::io::stdin().read_to_string(&mut v)?;
                    v.strip_suffix('\n')
                        .map(|v| v.strip_suffix('\r').unwrap_or(v))
                        .unwrap_or(&v)
                        .to_string()
                }
                Some(v) => v.to_string(),
            };
            if value.len() > cfgvars::MAX_VALUE {
                bail!(
                    "{name}: the value is {} bytes, over the {}-byte limit",
                    value.len(),
                    cfgvars::MAX_VALUE
                );
            }
            let secret = *sensitive || declared_sensitive;
            let s = scope_of(&h, scope);
            let var = ConfigVar {
                scope: s.clone(),
                name: input_var(name),
                value,
                secret,
            };
            if let Some(file) = &h.file {
                check_fits(file, scope, &h.project, name, &var)?;
            }
            let mut c = connect(g).await?;
            appconfig::apply(&mut c, &[Change::Set(var)]).await?;
            c.close();
            println!(
                "{} Stored {name}{} for {s}",
                Style::detect().ok(),
                if secret { " (sensitive)" } else { "" }
            );
            Ok(0)
        }
        VarCmd::List { scope, json } => {
            let h = here(g, scope)?;
            let mut c = connect(g).await?;
            let all = appconfig::list_all(&mut c).await?;
            c.close();
            let mut rows: Vec<(String, String, String, bool)> = all
                .iter()
                .filter_map(|v| {
                    let name = input_name(&v.name)?;
                    let (project, workspace) = match &v.scope {
                        ConfigScope::Project(p) => (p, String::new()),
                        ConfigScope::Workspace { project, workspace } => {
                            (project, workspace.clone())
                        }
                        _ => return None,
                    };
                    if *project != h.project
                        || scope.workspace.as_ref().is_some_and(|w| *w != workspace)
                    {
                        return None;
                    }
                    let shown = if v.secret { SECRET_MASK } else { &v.value };
                    Some((name.to_string(), workspace, shown.to_string(), v.secret))
                })
                .collect();
            rows.sort();
            if *json {
                let out: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(n, w, v, s)| {
                        serde_json::json!({
                            "name": n,
                            "workspace": if w.is_empty() { None } else { Some(w) },
                            "value": v,
                            "sensitive": s,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if rows.is_empty() {
                println!("no variable values are stored for project {}", h.project);
            } else {
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|(n, w, v, _)| vec![n, if w.is_empty() { "(all)".into() } else { w }, v])
                    .collect();
                table(&["NAME", "WORKSPACE", "VALUE"], &rows);
            }
            Ok(0)
        }
        VarCmd::Delete { scope, names } => {
            for n in names {
                check_name(n)?;
            }
            let h = here(g, scope)?;
            let s = scope_of(&h, scope);
            let mut c = connect(g).await?;
            let current = appconfig::list(&mut c, &s).await?;
            let (present, absent): (Vec<&String>, Vec<&String>) = names
                .iter()
                .partition(|n| current.iter().any(|v| v.name == input_var(n)));
            let changes: Vec<Change> = present
                .iter()
                .map(|n| Change::Delete {
                    scope: s.clone(),
                    name: input_var(n),
                })
                .collect();
            appconfig::apply(&mut c, &changes).await?;
            c.close();
            for n in &absent {
                eprintln!("note: no value of {n} is stored for {s}");
            }
            if !present.is_empty() {
                let shown: Vec<&str> = present.iter().map(|n| n.as_str()).collect();
                println!(
                    "{} Deleted {} for {s}",
                    Style::detect().ok(),
                    shown.join(", ")
                );
            }
            Ok(if absent.is_empty() { 0 } else { 1 })
        }
    }
}

/// Refuses a value that does not fit the variable's type, evaluating the config here with
/// it (other errors of the file, a variable still without a value say, are not this
/// command's business). The error never shows the value.
fn check_fits(
    file: &std::path::Path,
    scope: &VarScope,
    project: &str,
    name: &str,
    var: &ConfigVar,
) -> anyhow::Result<()> {
    let inputs = config::Inputs {
        workspace: scope.workspace.clone(),
        server: Some(config::ServerValues {
            project: project.to_string(),
            vars: vec![var.clone()],
        }),
        ..Default::default()
    };
    let (result, _) = config::attempt(file, &inputs)?;
    if let Err(e) = result {
        let prefix = format!("variable \"{name}\" is of type");
        for e in e.each() {
            let text = e.to_string();
            if text.contains(&prefix) {
                bail!("{text}");
            }
        }
    }
    Ok(())
}

async fn connect(g: &Global) -> anyhow::Result<client::Client> {
    let ctx = client::resolve(g.context.as_deref(), true).await?;
    Ok(client::connect(&ctx).await?)
}
