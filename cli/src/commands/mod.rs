//! One module per CLI command group.

pub mod cluster;
pub mod config;
pub mod context;
pub mod exec;
pub mod fmt;
pub mod hostname;
pub mod init;
pub mod instance;
pub mod job;
pub mod lifecycle;
pub mod list;
pub mod logs;
pub mod pipeline;
pub mod remove;
pub mod runner;
pub mod server;
pub mod status;
pub mod ui;
pub mod validate;
pub mod var;

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Use this context instead of the current one (also: CAIRN_CONTEXT).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The directory holding cairn.hcl (default: the current directory).
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The plugins this program knows: built once, in `main`.
    #[arg(skip)]
    pub catalog: std::sync::Arc<crate::plugins::Catalog>,
}

impl Global {
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from("."))
    }
}

/// What the config is evaluated with: the workspace and input variables. Waypoint's
/// single-dash forms (`-var`, `-var-file`, `-workspace`) work too.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigInputs {
    /// The workspace (default: CAIRN_WORKSPACE, WP_WORKSPACE, else "default"): selects
    /// `workspace "NAME"` scopes and sets `workspace.name`.
    #[arg(long, value_name = "NAME")]
    pub workspace: Option<String>,
    /// Set an input variable, e.g. --var port=8080 (repeatable; the last one wins). Takes
    /// precedence over --var-file, CAIRN_VAR_NAME, *.auto.cairnvars and the default.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read input variables from a file of NAME = VALUE lines (HCL), or a JSON object when
    /// the name ends in .json (repeatable).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

impl ConfigInputs {
    pub fn inputs(&self) -> crate::config::Inputs {
        crate::config::Inputs {
            workspace: self.workspace.clone(),
            vars: self.vars.clone(),
            var_files: self.var_files.clone(),
            env: None,
            artifact: None,
            deploy: None,
            server: None,
        }
    }
}

/// Waypoint's single-dash long flags (`-var x=1`, `-var-file=f`, `-workspace w`) in the
/// double-dash form clap reads.
/// Nothing after `--` is touched (it belongs to another program, e.g. `cairn exec -- …`).
pub fn rewrite_single_dash(args: Vec<String>) -> Vec<String> {
    let mut after_dashes = false;
    args.into_iter()
        .map(|a| {
            if after_dashes {
                return a;
            }
            if a == "--" {
                after_dashes = true;
                return a;
            }
            for flag in ["-var", "-var-file", "-workspace"] {
                if a == flag || a.starts_with(&format!("{flag}=")) {
                    return format!("-{a}");
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn single_dash_flags_are_rewritten_up_to_double_dash() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            super::rewrite_single_dash(v(&[
                "cairn",
                "up",
                "-var",
                "a=1",
                "-var-file=x",
                "-workspace",
                "w",
                "--",
                "tf",
                "-var",
                "b=2"
            ])),
            v(&[
                "cairn",
                "up",
                "--var",
                "a=1",
                "--var-file=x",
                "--workspace",
                "w",
                "--",
                "tf",
                "-var",
                "b=2"
            ])
        );
    }
}

/// Which deployment a command acts on (`cairn logs`, `cairn exec`).
#[derive(Debug, Clone, clap::Args)]
pub struct DeploymentArgs {
    /// The project (default: cairn.hcl's).
    #[arg(long)]
    pub project: Option<String>,
    /// The app (default: cairn.hcl's, when it has only one).
    #[arg(long)]
    pub app: Option<String>,
    /// The workspace.
    #[arg(long, default_value = cairn_protocol::types::DEFAULT_WORKSPACE)]
    pub workspace: String,
    /// The deployment, e.g. 2 or v2 (default: the released one, or the
    /// newest if none was released).
    #[arg(long, short = 'd', value_parser = parse_seq, value_name = "N")]
    pub deployment: Option<u64>,
}

impl DeploymentArgs {
    /// The flags, completed from cairn.hcl (in -C DIR) where they are not given.
    pub fn target(&self, g: &Global) -> anyhow::Result<cairn_protocol::instance::DeploymentRef> {
        for (flag, v) in [("--project", &self.project), ("--app", &self.app)] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                anyhow::bail!("{flag} must not be empty");
            }
        }
        let (project, app) = match (&self.project, &self.app) {
            (Some(p), Some(a)) => (p.clone(), a.clone()),
            _ => {
                let dir = g.dir();
                let Ok(path) = crate::config::find(&dir) else {
                    anyhow::bail!(
                        "which app? pass --project P --app A, or run where cairn.hcl is (or -C DIR); {} has no cairn.hcl",
                        dir.display()
                    );
                };
                let names = config_names(&path)?;
                let app = match (&self.app, names.apps.as_slice()) {
                    (Some(a), _) => a.clone(),
                    (None, [one]) => one.clone(),
                    (None, _) => crate::config::load(&path)?.app(None)?.name.clone(),
                };
                let project = match (&self.project, names.project) {
                    (Some(p), _) => p.clone(),
                    (None, Some(p)) => p,
                    (None, None) => crate::config::load(&path)?.project,
                };
                (project, app)
            }
        };
        Ok(cairn_protocol::instance::DeploymentRef {
            project,
            app,
            workspace: self.workspace.clone(),
            sequence: self.deployment,
        })
    }
}

/// One request to the context's cluster on a connection of its own (a
/// retry-safe write or a read moves to another member if its node fails).
pub async fn call(
    g: &Global,
    req: cairn_protocol::api::ClientRequest,
) -> anyhow::Result<cairn_protocol::api::ClientResponse> {
    let ctx = crate::client::resolve(g.context.as_deref(), true).await?;
    let mut s = crate::client::connect(&ctx).await?;
    let r = s.call(&req).await;
    s.conn.close(0u32.into(), b"bye");
    Ok(r?)
}

/// Load the config in `dir` with `inputs` (workspace, input variables).
pub fn load_config_with(dir: &Path, inputs: &crate::config::Inputs) -> anyhow::Result<Config> {
    let path = crate::config::find(dir)?;
    Ok(crate::config::load_with(&path, inputs)?)
}

/// The project and app names of the config at `path`, even when it has errors that do not
/// touch them (a variable with no value here, say): what commands that only point at an app
/// need.
pub fn config_names(path: &Path) -> anyhow::Result<crate::config::Names> {
    Ok(crate::config::attempt(path, &crate::config::Inputs::default())?.1)
}

/// The config in `dir` checked before connecting: an error other than variables without a
/// value (which the cluster may store) fails here. Gives the file and the names to read the
/// cluster's values for.
pub fn precheck_config(
    dir: &Path,
    inputs: &crate::config::Inputs,
) -> anyhow::Result<(std::path::PathBuf, crate::config::Names)> {
    let path = crate::config::find(dir)?;
    let (result, names) = crate::config::attempt(&path, inputs)?;
    if let Err(e) = result {
        if e.only_missing_values().is_none() || names.project.is_none() {
            return Err(e.into());
        }
    }
    Ok((path, names))
}

/// The config at `path` evaluated with what the cluster stores for its project (input
/// variable values set with `cairn var set`, the config `dynamic("cairn", …)` reads), read
/// on `conn`.
pub async fn load_config_from_cluster(
    conn: &mut impl crate::client::Call,
    path: &Path,
    names: &crate::config::Names,
    inputs: &crate::config::Inputs,
) -> anyhow::Result<Config> {
    let Some(project) = &names.project else {
        return Ok(crate::config::load_with(path, inputs)?);
    };
    let server = crate::appconfig::server_values(conn, project, &names.apps, &inputs.workspace())
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the project's config from the cluster: {e}"))?;
    let inputs = crate::config::Inputs {
        server: Some(server),
        ..inputs.clone()
    };
    Ok(crate::config::load_with(path, &inputs)?)
}

/// The config in `dir` evaluated with what the context's cluster stores for its project, on
/// a connection of its own (see [`load_config_from_cluster`]).
pub async fn load_config_connected(
    g: &Global,
    inputs: &crate::config::Inputs,
) -> anyhow::Result<Config> {
    let (path, names) = precheck_config(&g.dir(), inputs)?;
    let ctx = crate::client::resolve(g.context.as_deref(), false).await?;
    let mut c = crate::client::connect(&ctx).await?;
    let cfg = load_config_from_cluster(&mut c, &path, &names, inputs).await;
    c.close();
    cfg
}

/// Parse "v3" or "3".
pub fn parse_seq(s: &str) -> Result<u64, String> {
    let t = s.strip_prefix('v').unwrap_or(s);
    t.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a sequence number (use 3 or v3)"))
}

/// Format milliseconds since the epoch as UTC "YYYY-MM-DD HH:MM:SS".
pub fn when(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).unwrap_or_else(|_| ms.to_string())
}

/// Print rows as aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}
