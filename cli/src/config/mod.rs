//! The config loader: finds, parses and evaluates `cairn.hcl` (or a Waypoint `waypoint.hcl`).
//!
//! ```hcl
//! project = "hello"
//! app "web" {
//!   path   = "./web"                      # optional, relative to the config's dir; default "."
//!   labels = { team = "x" }               # optional
//!   config { env = { GREETING = "hi" } }  # optional; also at top level (project scope; app wins)
//!   build {
//!     use "files" { path = "." }
//!     hook { when = "before" command = ["echo", "hi"] on_failure = "continue" }
//!     registry { use "files" { directory = "/tmp/x" } }
//!   }
//!   deploy  { use "process" { command = ["python3", "app.py"] count = 2 } }
//!   release { use "process" {} }          # optional
//! }
//! ```
//!
//! `labels = { … }` (string map) may be written at the top level (the project's, which apps
//! inherit key by key), in an app, and in each stage (Waypoint's operation labels).
//!
//! Both the native syntax and the HCL JSON form (`cairn.hcl.json`) are read. Waypoint blocks
//! Cairn does not use yet (`runner`, `variable`, `url`, `plugin` at top level; `url`, `runner`
//! in apps) are accepted and ignored; anything else unknown is an error naming its location and
//! what is allowed there.
//!
//! Expressions are evaluated at load time, so plugin configs come out as plain JSON. They may
//! call the [`FUNCTIONS`] `gitrefpretty()` (`git describe --tags --always --dirty`),
//! `gitrefhash()` (the HEAD commit), `timestamp()` (RFC 3339, UTC, whole seconds; one instant
//! per load), `file()` / `filebase64()` (relative to the config's directory), and the
//! encoding and string functions (`jsonencode`, `base64decode`, `upper`, …), and read `path.project`, `path.app` and `path.pwd`. hcl-rs functions are plain
//! `fn` pointers, so the config's directory reaches the git functions through a thread-local
//! set for the duration of [`parse_str`]: git runs in the config's directory, never in the
//! process's cwd. Outside a git repository the git functions fail with a located error rather
//! than inventing a value (an artifact tagged "unknown" would silently overwrite the last one).
//!
//! Nested blocks inside a `use` body become object values: `auth { user = "u" }` →
//! `"auth": {"user": "u"}`; a labeled block nests by label (`a "x" {…}` → `"a": {"x": {…}}`);
//! a block repeated → an array of those objects. The plugin checks the types of its fields,
//! pointing at [`PluginUse::field_locations`].

mod decode;
mod error;
mod eval;
mod funcs;
mod json;
mod nesting;
mod selector;
mod syntax;
#[cfg(test)]
mod tests;
pub mod vars;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use decode::Names;
pub use error::{ConfigError, Location};
pub use eval::FUNCTIONS;
pub use funcs::duration;
pub use vars::{Inputs, Origin, ServerValues, Variable};

/// The file names [`find`] looks for, in order.
pub const FILE_NAMES: &[&str] = &[
    "cairn.hcl",
    "cairn.hcl.json",
    "waypoint.hcl",
    "waypoint.hcl.json",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The file this config was read from (as given to [`load`] / [`parse_str`]).
    pub file: PathBuf,
    pub project: String,
    /// In the order of the file.
    pub apps: Vec<AppConfig>,
    /// The top-level `config { env = { … } }`: project-scope variables, synced to the cluster
    /// by `cairn up` and `cairn deploy`.
    pub env: BTreeMap<String, String>,
    /// The top-level `config { workspace "W" { env } }` (and matching `label` scopes) for this
    /// load's workspace: workspace-scope variables.
    pub workspace_env: BTreeMap<String, String>,
    /// Names in `env` and `workspace_env` whose value reads a sensitive variable: synced as
    /// secrets.
    pub secret_env: std::collections::BTreeSet<String>,
    /// The top-level `labels = { … }`: the project's, which every app inherits.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The workspace this config was evaluated for (`-workspace`, else "default").
    pub workspace: String,
    /// The input variables, in the order declared, with their values (sensitive ones are
    /// masked when serialized).
    pub variables: Vec<Variable>,
    /// The top-level `config { file = { … } }`: files every app's instances get (project
    /// scope).
    pub files: BTreeMap<String, String>,
    /// The top-level `config { workspace "W" { file } }` for this load's workspace.
    pub workspace_files: BTreeMap<String, String>,
    /// The top-level `config { runner { env = { … } } }`: what runners run this project's
    /// jobs with.
    pub runner_env: BTreeMap<String, String>,
    /// The top-level `runner { … }`.
    pub runner: Option<RunnerConfig>,
    /// The top-level `url { … }`.
    pub url: Option<UrlConfig>,
    /// `plugin "NAME" { … }` blocks.
    pub plugins: Vec<PluginDecl>,
    /// `pipeline "NAME" { … }` blocks.
    pub pipelines: Vec<Pipeline>,
    /// What `cairn up` needs that the file leaves out (no project, no app, a stage without
    /// `use`…): valid for `cairn validate`, refused by the commands that run an app.
    pub gaps: Vec<Gap>,
    /// What stops every operation but not the evaluation: values read by `dynamic()` from
    /// sources that cannot be reached from here (what reads them is left out), names Cairn
    /// cannot hold. `cairn validate` reports them as errors with the plan; commands that run
    /// an app refuse the file.
    pub blockers: Vec<Gap>,
    /// What Cairn took differently from what the file says, harmlessly (a project or app
    /// name with '/', which Cairn's names cannot hold, gets '-' instead): `cairn validate`
    /// and the commands that run an app print them.
    #[serde(default)]
    pub notes: Vec<Gap>,
}

/// Something the file may leave out but an operation needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub location: Location,
    pub message: String,
    /// The app it is about (`None`: the file's).
    pub app: Option<String>,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// `runner { … }` (Waypoint's form; what runs jobs for the project or app).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerConfig {
    pub enabled: Option<bool>,
    pub profile: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `data_source "git" { url, ref, path }`: the source type and its fields.
    pub data_source: Option<(String, serde_json::Value)>,
    pub poll: Option<serde_json::Value>,
    pub location: Location,
}

/// `url { auto_hostname = … }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlConfig {
    pub auto_hostname: Option<bool>,
}

/// `plugin "NAME" { … }` at the top level: selects (and may pin) a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDecl {
    pub name: String,
    pub config: serde_json::Value,
    pub location: Location,
}

/// `pipeline "NAME" { step "S" { … } … }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    pub steps: Vec<Step>,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub image_url: Option<String>,
    /// The workspace the step runs in (default: the pipeline's).
    pub workspace: Option<String>,
    pub action: StepAction,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepAction {
    /// `use "exec" { … }`, `use "build" {}`, `use "deploy" {}`, `use "release" {}`, `use "up" {}`.
    Use(PluginUse),
    /// A nested `pipeline "NAME" { … }`.
    Pipeline(Box<Pipeline>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppConfig {
    pub name: String,
    /// The app's source directory, relative to the config's directory (as written; default ".").
    /// See [`Config::app_dir`] for the resolved path.
    pub path: PathBuf,
    /// `None` when the app has no build stage, or no `use` in it for this workspace (a
    /// [`Gap`] says so).
    pub build: Option<BuildStage>,
    /// `None` like `build`.
    pub deploy: Option<Stage>,
    pub release: Option<Stage>,
    /// From `config { env = { … } }` at top level, overridden key by key by the workspace's,
    /// the app's own and the app's workspace's (the cluster's precedence).
    /// What build and push steps run with. Deployments get the cluster's resolved config
    /// instead (which holds these after `cairn up` syncs them, plus `cairn config set`'s).
    pub config_env: BTreeMap<String, String>,
    /// The app's own `config { env = { … } }`: app-scope variables, synced to the cluster by
    /// `cairn up` and `cairn deploy`.
    pub app_env: BTreeMap<String, String>,
    /// The app's `config { workspace "W" { env } }` (and matching `label` scopes) for this
    /// load's workspace: workspace-app-scope variables.
    pub workspace_app_env: BTreeMap<String, String>,
    /// Names in `app_env` and `workspace_app_env` whose value reads a sensitive variable.
    pub secret_env: std::collections::BTreeSet<String>,
    /// The project's `labels`, overridden key by key by the app's own.
    pub labels: BTreeMap<String, String>,
    /// `config { file = { PATH = CONTENT } }`, every scope's by precedence: the files the
    /// entrypoint writes into each instance (a relative path is under the instance's working
    /// directory).
    pub files: BTreeMap<String, String>,
    /// The app's own `config { file }` (app scope).
    pub app_files: BTreeMap<String, String>,
    /// The app's `config { workspace "W" { file } }` for this load's workspace.
    pub workspace_app_files: BTreeMap<String, String>,
    /// The app's `config { runner { env } }`.
    pub runner_env: BTreeMap<String, String>,
    /// The app's `runner { … }`.
    pub runner: Option<RunnerConfig>,
    /// The app's `url { … }`.
    pub url: Option<UrlConfig>,
    /// Of the `app` block.
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildStage {
    pub builder: PluginUse,
    pub registry: Option<Stage>,
    pub hooks: Vec<Hook>,
    /// The stage's own `labels = { … }` (Waypoint's operation labels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub plugin: PluginUse,
    pub hooks: Vec<Hook>,
    /// The stage's own `labels = { … }` (Waypoint's operation labels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginUse {
    /// The label of the `use` block, e.g. `"docker"`.
    pub name: String,
    /// The evaluated body of the `use` block: always a JSON object.
    pub config: serde_json::Value,
    /// Of the `use` block.
    pub location: Location,
    /// Top-level field name → where it is written, for the plugin's own type errors.
    pub field_locations: BTreeMap<String, Location>,
    /// Fields that read a sensitive variable: never shown.
    #[serde(default)]
    pub sensitive_fields: std::collections::BTreeSet<String>,
    /// Fields left out of `config` because a variable they read has no value (its error is
    /// reported once, for the variable).
    #[serde(default)]
    pub pending: std::collections::BTreeSet<String>,
    /// Fields that read `artifact.*` or `deploy.*`, known only while an operation runs: left
    /// out of `config` here.
    #[serde(default)]
    pub deferred: std::collections::BTreeSet<String>,
}

impl AppConfig {
    /// The build stage, or an error saying the app has none (for this workspace).
    pub fn build_stage(&self) -> Result<&BuildStage, String> {
        self.build.as_ref().ok_or_else(|| {
            format!(
                "{}: app \"{}\" has no build stage to run",
                self.location, self.name
            )
        })
    }

    /// The deploy stage, or an error saying the app has none (for this workspace).
    pub fn deploy_stage(&self) -> Result<&Stage, String> {
        self.deploy.as_ref().ok_or_else(|| {
            format!(
                "{}: app \"{}\" has no deploy stage to run",
                self.location, self.name
            )
        })
    }
}

impl PluginUse {
    /// Where `field` is written, or the `use` block when it is not (a missing field).
    pub fn location_of(&self, field: &str) -> &Location {
        self.field_locations.get(field).unwrap_or(&self.location)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub when: HookWhen,
    /// Program and arguments (never empty); run without a shell.
    pub command: Vec<String>,
    pub on_failure: OnFailure,
    /// Of the `hook` block.
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookWhen {
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The operation fails when the hook fails (the default).
    #[default]
    Fail,
    /// The hook's failure is reported and the operation goes on.
    Continue,
}

impl Config {
    /// The app named `name`, or — with `None` — the only app (an error listing them when there
    /// are several).
    pub fn app(&self, name: Option<&str>) -> Result<&AppConfig, ConfigError> {
        let names = || self.apps.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
        match name {
            Some(name) => {
                self.apps
                    .iter()
                    .find(|a| a.name == name)
                    .ok_or_else(|| ConfigError::NoSuchApp {
                        file: self.file.clone(),
                        name: name.to_string(),
                        available: names(),
                    })
            }
            None => match self.apps.as_slice() {
                [only] => Ok(only),
                [] => Err(ConfigError::invalid(
                    &Location::start_of(&self.file),
                    "no app defined",
                )),
                _ => Err(ConfigError::AppRequired {
                    file: self.file.clone(),
                    available: names(),
                }),
            },
        }
    }

    /// Fails with the first [`Gap`] an operation on `app` cannot do without: a project name,
    /// the app's build and deploy stages.
    pub fn runnable(&self, app: &AppConfig) -> Result<(), ConfigError> {
        if let Some(u) = self
            .blockers
            .iter()
            .find(|b| b.app.is_none() || b.app.as_deref() == Some(&app.name))
        {
            return Err(ConfigError::invalid(&u.location, u.message.clone()));
        }
        let gap = |g: &Gap| ConfigError::invalid(&g.location, g.message.clone());
        if self.project.is_empty() {
            if let Some(g) = self.gaps.iter().find(|g| g.app.is_none()) {
                return Err(gap(g));
            }
        }
        match self
            .gaps
            .iter()
            .find(|g| g.app.as_deref() == Some(&app.name))
        {
            Some(g) => Err(gap(g)),
            None => Ok(()),
        }
    }

    /// The directory holding the config file (`.` for a bare file name).
    pub fn dir(&self) -> PathBuf {
        config_dir(&self.file)
    }

    /// An app's source directory: its `path` joined to [`Config::dir`].
    pub fn app_dir(&self, app: &AppConfig) -> PathBuf {
        self.dir().join(&app.path)
    }
}

fn config_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The config file in `dir`: the first of [`FILE_NAMES`] that exists.
pub fn find(dir: &Path) -> Result<PathBuf, ConfigError> {
    FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ConfigError::NotFound {
            dir: dir.to_path_buf(),
            tried: FILE_NAMES.to_vec(),
        })
}

/// Reads, parses and evaluates the config at `path` for the default inputs (workspace and
/// variables from the environment and the config's directory).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &Inputs::default())
}

/// Reads, parses and evaluates the config at `path` with `inputs` (`-workspace`, `-var`,
/// `-var-file`).
pub fn load_with(path: &Path, inputs: &Inputs) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str_with(&src, path, inputs)
}

/// Parses and evaluates a config whose text is `src`; `file` names it in errors and locations,
/// chooses the format (`.json` → the HCL JSON form, anything else → native HCL), and its
/// directory is where the git functions run.
pub fn parse_str(src: &str, file: &Path) -> Result<Config, ConfigError> {
    parse_str_with(src, file, &Inputs::default())
}

/// [`parse_str`] with `inputs`. Every error of the file is reported at once
/// ([`ConfigError::Many`] when there are several), except a syntax error that stops the
/// parser.
pub fn parse_str_with(src: &str, file: &Path, inputs: &Inputs) -> Result<Config, ConfigError> {
    attempt_str(src, file, inputs)?.0
}

/// [`load_with`], and the names of the project (when it could be evaluated) and apps, kept
/// even when the file has other errors (a variable whose value the cluster stores, say):
/// `Err` only when the file cannot be read or parsed.
#[allow(clippy::type_complexity)]
pub fn attempt(
    path: &Path,
    inputs: &Inputs,
) -> Result<(Result<Config, ConfigError>, Names), ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    attempt_str(&src, path, inputs)
}

#[allow(clippy::type_complexity)]
fn attempt_str(
    src: &str,
    file: &Path,
    inputs: &Inputs,
) -> Result<(Result<Config, ConfigError>, Names), ConfigError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut errs = Vec::new();
    let body = if is_json {
        decode::parse_json(src, file, &mut errs)?
    } else {
        decode::parse_hcl(src, file, &mut errs)?
    };
    let dir = config_dir(file);
    let _env = eval::enter(&dir, inputs);
    Ok(decode::decode(&body, file, &dir, inputs, errs))
}
