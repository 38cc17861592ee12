//! The plugin framework and the built-in plugins.
//!
//! A lifecycle step (build, push, deploy, release) is carried out by a plugin of the
//! matching [`Kind`]. Plugins exchange [`Value`]s that carry their type name
//! ("files.Artifact", "process.Deployment", …), built and read by type
//! ([`Value::of`], [`Value::get`]: each exchanged type implements [`Typed`]); the [`Catalog`] knows the built-in
//! plugins and the [`Mapper`]s between types, and finds the shortest chain of mappers
//! from the values at hand to the type the next plugin takes.
//!
//! Invariants:
//! - Plugin operations and mappers are async (`async_trait`); a built-in whose work is
//!   blocking file or process work runs it under `tokio::task::block_in_place`, so the
//!   runner's runtime must be multi-threaded.
//! - A plugin's configuration is parsed (and rejected with the offending field named)
//!   when the plugin is instantiated, before any work is done.
//! - A failed `deploy` leaves nothing running.

mod catalog;
pub mod command;
#[cfg(feature = "docker")]
pub mod docker;
pub mod exec;
pub mod external;
pub mod files;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod null;
pub mod process;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub use async_trait::async_trait;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use catalog::{Catalog, Conversion, ExternalWanted};

/// A boxed future that may be sent between threads (what mappers return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub use process::run_supervisor;

/// A value carrying its type name, e.g. "files.Artifact", "process.Deployment".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub type_name: String,
    pub data: serde_json::Value,
}

/// A type plugins exchange as a [`Value`]: it knows its own type name, so a
/// value is built and read by its type, never by a name paired by hand.
pub trait Typed: Serialize + DeserializeOwned {
    /// e.g. "files.Artifact".
    const TYPE_NAME: &'static str;
}

impl Value {
    /// The value of `data`, named by its type.
    pub fn of<T: Typed>(data: &T) -> Result<Value, PluginError> {
        Value::named(T::TYPE_NAME, data)
    }

    /// The data of a value that must be a `T`.
    pub fn get<T: Typed>(&self) -> Result<T, PluginError> {
        if self.type_name != T::TYPE_NAME {
            return Err(PluginError::WrongType {
                wanted: vec![T::TYPE_NAME.to_string()],
                got: self.type_name.clone(),
            });
        }
        serde_json::from_value(self.data.clone()).map_err(|e| PluginError::InvalidValue {
            type_name: self.type_name.clone(),
            message: e.to_string(),
        })
    }

    /// Whether the value is a `T`.
    pub fn is<T: Typed>(&self) -> bool {
        self.type_name == T::TYPE_NAME
    }

    /// A value of type `type_name` holding `data` as it is (tests give a
    /// type data that does not fit it).
    #[cfg(test)]
    pub(crate) fn named<T: Serialize>(type_name: &str, data: &T) -> Result<Value, PluginError> {
        Value::build(type_name, data)
    }

    #[cfg(not(test))]
    fn named<T: Serialize>(type_name: &str, data: &T) -> Result<Value, PluginError> {
        Value::build(type_name, data)
    }

    fn build<T: Serialize>(type_name: &str, data: &T) -> Result<Value, PluginError> {
        let data = serde_json::to_value(data).map_err(|e| PluginError::InvalidValue {
            type_name: type_name.to_string(),
            message: e.to_string(),
        })?;
        Ok(Value {
            type_name: type_name.to_string(),
            data,
        })
    }
}

/// Where a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// The standard output of a command a plugin ran.
    Stdout,
    /// The standard error of a command a plugin ran.
    Stderr,
    /// A progress message from the plugin itself.
    Info,
}

/// Receives the output of a plugin, line by line (without the trailing newline).
pub trait OutputSink: Send {
    fn line(&mut self, stream: Stream, text: &str);
}

/// Everything a plugin operation may use besides its configuration and input.
/// It owns its output sink, so an operation's future can be spawned.
pub struct OpContext {
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// The per-app number of this build/deployment (v1, v2…).
    pub sequence: u64,
    /// The app's source directory.
    pub source_dir: PathBuf,
    /// Where this runner keeps artifacts and deployments.
    pub data_dir: PathBuf,
    /// The `cairn` binary, spawned as `cairn __supervise SPEC` to supervise processes.
    pub self_exe: PathBuf,
    /// Config env vars for the app (hooks get them; processes under the
    /// entrypoint get the cluster's current ones from it).
    pub env: BTreeMap<String, String>,
    /// How to run an instance of this deployment under `cairn-entrypoint`
    /// (deploy only; `None` elsewhere and in plugin tests).
    pub entrypoint: Option<EntrypointLaunch>,
    pub out: Box<dyn OutputSink>,
}

/// How a platform starts a deployment's instances under `cairn-entrypoint`,
/// which registers them with the cluster (config, logs, exec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointLaunch {
    /// The entrypoint program and its arguments before `--` and the app's
    /// command: `[…/cairn-entrypoint]`, or `[…/cairn, __entrypoint]`.
    pub argv: Vec<String>,
    /// `CAIRN_ADDRS`, `CAIRN_CA_FINGERPRINT`, `CAIRN_DEPLOYMENT_ID`,
    /// `CAIRN_ENTRYPOINT_TOKEN` (a secret: keep files holding it private).
    pub env: BTreeMap<String, String>,
}

impl EntrypointLaunch {
    /// The entrypoint's command line around `command`.
    pub fn wrap(&self, command: &[String]) -> Vec<String> {
        let mut argv = self.argv.clone();
        argv.push("--".into());
        argv.extend(command.iter().cloned());
        argv
    }
}

impl OpContext {
    /// Reports a progress message.
    pub fn info(&mut self, text: &str) {
        self.out.line(Stream::Info, text);
    }
}

/// The kinds of plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Builder,
    Registry,
    Platform,
    Releaser,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Builder => "builder",
            Kind::Registry => "registry",
            Kind::Platform => "platform",
            Kind::Releaser => "releaser",
        })
    }
}

/// Turns source into an artifact.
#[async_trait]
pub trait Builder: Send + Sync {
    fn output_type(&self) -> &'static str;
    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError>;
}

/// Pushes an artifact where a platform can fetch it.
#[async_trait]
pub trait Registry: Send + Sync {
    fn input_types(&self) -> &[&'static str];
    fn output_type(&self) -> &'static str;
    async fn push(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError>;
}

/// Runs an artifact as a deployment.
#[async_trait]
pub trait Platform: Send + Sync {
    fn input_types(&self) -> &[&'static str];
    fn output_type(&self) -> &'static str;
    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError>;
    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError>;
    /// Removes whatever deployment `ctx.sequence` of `ctx.app` left when its
    /// deploy never returned (the runner or node died mid-deploy), so there
    /// is no deployment value to go by: found by its identity (labels, paths).
    /// Idempotent; finding nothing is fine. Returns what it removed.
    async fn destroy_interrupted(&self, ctx: &mut OpContext) -> Result<String, PluginError>;
    /// How the deployment's instances are doing, as the platform sees them
    /// (run on a runner, like every operation).
    async fn status(
        &self,
        ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError>;
    fn url(&self, deployment: &Value) -> Option<String>;
}

/// Points public traffic at a deployment.
#[async_trait]
pub trait Releaser: Send + Sync {
    fn input_types(&self) -> &[&'static str];
    fn output_type(&self) -> &'static str;
    /// `others` are the app's other deployments, by sequence.
    async fn release(
        &self,
        ctx: &mut OpContext,
        target: &Value,
        others: &[(u64, Value)],
        opts: &ReleaseOptions,
    ) -> Result<ReleaseOutcome, PluginError>;
    /// Whether a release makes objects of its own, outside the deployments (a Service, an
    /// Ingress), which [`Releaser::destroy`] removes. Most releasers make none.
    fn owns_objects(&self) -> bool {
        false
    }
    /// Removes what a release made outside the deployments, when the app's deployments are
    /// all destroyed (only called when [`Releaser::owns_objects`]).
    async fn destroy(&self, _ctx: &mut OpContext, _release: &Value) -> Result<(), PluginError> {
        Ok(())
    }
}

/// What a mapper runs: the value to convert and the operation's context (for
/// output, and the runner's data directory).
pub type MapFn =
    for<'a> fn(&'a Value, &'a mut OpContext) -> BoxFuture<'a, Result<Value, PluginError>>;

/// Converts a value of type `from` into a value of type `to`.
#[derive(Clone, Copy)]
pub struct Mapper {
    pub from: &'static str,
    pub to: &'static str,
    pub f: MapFn,
}

impl fmt::Debug for Mapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapper({} -> {})", self.from, self.to)
    }
}

/// Options of a release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOptions {
    /// Destroy older deployments after releasing.
    pub prune: bool,
    /// How many older (lower-sequence) deployments to keep when pruning; the released
    /// deployment is never pruned and is not counted.
    pub retain: usize,
}

/// What a release produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseOutcome {
    pub value: Value,
    pub urls: Vec<String>,
    /// Sequences of the deployments destroyed by pruning, ascending.
    pub pruned: Vec<u64>,
}

/// How a deployment's instances are doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentHealth {
    pub total: usize,
    pub alive: usize,
    pub instances: Vec<InstanceHealth>,
}

impl DeploymentHealth {
    /// Summarizes: every instance alive, some, or none.
    pub fn state(&self) -> HealthState {
        if self.total > 0 && self.alive == self.total {
            HealthState::Ready
        } else if self.alive > 0 {
            HealthState::Partial
        } else {
            HealthState::Down
        }
    }
}

/// One instance of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceHealth {
    pub index: usize,
    pub alive: bool,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub restarts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthState {
    Ready,
    Partial,
    Down,
}

/// What Cairn offers instead of a plugin it does not have (Waypoint's names first), for the
/// "is not available" error. Empty for names nobody knows.
pub fn nearest(name: &str) -> Option<&'static str> {
    Some(match name {
        "pack" => "docker with a Dockerfile (Cloud Native Buildpacks are not built in); or an external plugin cairn-plugin-pack",
        "docker-ref" => "docker-pull, which uses an image that already exists",
        "aws-ecr-pull" => "docker-pull with the ECR image and an auth block",
        "aws-ecr" => "the docker registry with the ECR address and an auth block",
        "aws-ami" | "aws-ec2" | "aws-ecs" | "aws-lambda" | "aws-alb" | "lambda-function-url"
        | "azure-container-instance" | "google-cloud-run" => {
            "a cloud service Cairn does not deploy to: docker (or process) on a host of yours, with a Cairn runner there; or an external plugin cairn-plugin-NAME"
        }
        "nomad" | "nomad-jobspec" | "nomad-jobspec-canary" => {
            "docker (or process): Cairn schedules onto its own runners, not onto Nomad"
        }
        "helm" => {
            "kubernetes-apply, which applies a directory of manifests (templatedir() puts the image in); Helm charts are not built in"
        }
        "kubernetes" | "kubernetes-apply" => {
            "none in this build of Cairn (it was built without the kubernetes feature)"
        }
        "exec" => "the exec platform (`use \"exec\"` in deploy)",
        _ => return None,
    })
}

fn nearest_hint(name: &str) -> String {
    match nearest(name) {
        Some(n) => format!("; nearest in Cairn: {n}"),
        None => format!("; or install an external plugin cairn-plugin-{name}"),
    }
}

/// Errors of the plugin framework and of the built-in plugins. Display is one line.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "{kind} plugin \"{name}\" is not available (available: {}){}",
        list(available),
        nearest_hint(name)
    )]
    UnknownPlugin {
        kind: Kind,
        name: String,
        available: Vec<String>,
    },
    #[error("plugin \"{plugin}\": field \"{field}\": {message}")]
    Config {
        plugin: String,
        /// Dotted path of the offending field, e.g. `exclude[1]`.
        field: String,
        message: String,
    },
    #[error(
        "no value of type {} can be produced: the values at hand are {}, and no chain of mappers leads from them",
        alternatives(wanted),
        have_list(have)
    )]
    MissingType {
        wanted: Vec<String>,
        have: Vec<String>,
    },
    #[error("expected a value of type {}, got {got}", alternatives(wanted))]
    WrongType { wanted: Vec<String>, got: String },
    #[error("malformed {type_name} value: {message}")]
    InvalidValue { type_name: String, message: String },
    #[error("command `{command}` {}", exit_text(*code))]
    CommandFailed { command: String, code: Option<i32> },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl PluginError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> PluginError {
        PluginError::Io {
            context: context.into(),
            source,
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn alternatives(items: &[String]) -> String {
    match items {
        [] => "(none)".to_string(),
        [one] => one.clone(),
        _ => format!("any of [{}]", items.join(", ")),
    }
}

fn have_list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        format!("[{}]", items.join(", "))
    }
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exited with code {code}"),
        None => "was killed by a signal".to_string(),
    }
}

/// Parses a plugin's configuration (`null` counts as an empty block), naming the
/// offending field on error.
pub(crate) fn parse_config<T: DeserializeOwned>(
    plugin: &str,
    config: &serde_json::Value,
) -> Result<T, PluginError> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let config = if config.is_null() { &empty } else { config };
    // HCL converts between strings, numbers and bools where the schema wants one (cty does
    // for Waypoint's plugins: `port = "${var.port}"` is a number in HCL, and a string field
    // takes it). Each such mismatch is converted and the decode tried again.
    let mut config = std::borrow::Cow::Borrowed(config);
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(config.as_ref()) {
            Ok(v) => return Ok(v),
            Err(err) => {
                let path = err.path().to_string();
                let message = err.inner().to_string();
                match converted(config.as_ref(), &path, &message) {
                    Some(fixed) => config = std::borrow::Cow::Owned(fixed),
                    None => break,
                }
            }
        }
    }
    serde_path_to_error::deserialize::<_, T>(config.as_ref()).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().to_string();
        let field = if path == "." {
            // Errors at the top level: missing or unknown fields name themselves.
            backticked(&message).unwrap_or(path)
        } else {
            path
        };
        PluginError::Config {
            plugin: plugin.to_string(),
            field,
            message,
        }
    })
}

/// `config` with the value at `path` converted the way HCL converts, when `message` is a
/// serde type mismatch HCL would have resolved (a number or bool where a string is wanted,
/// a numeric string where a number is, "true"/"false" where a bool is); else `None`.
fn converted(config: &serde_json::Value, path: &str, message: &str) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    let mut fixed = config.clone();
    let at = value_at_mut(&mut fixed, path)?;
    let new = match (&*at, message) {
        (J::Number(n), m) if m.ends_with("expected a string") => J::String(n.to_string()),
        (J::Bool(b), m) if m.ends_with("expected a string") => J::String(b.to_string()),
        (J::String(s), m) if m.ends_with("expected a boolean") && (s == "true" || s == "false") => {
            J::Bool(s == "true")
        }
        (J::String(s), m)
            if m.contains("expected u")
                || m.contains("expected i")
                || m.contains("expected f")
                || m.contains("expected a number") =>
        {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                J::from(i)
            } else {
                J::Number(
                    t.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)?,
                )
            }
        }
        _ => return None,
    };
    *at = new;
    Some(fixed)
}

/// The value at a serde_path_to_error path such as `command[3]` or `auth.username`.
fn value_at_mut<'a>(v: &'a mut serde_json::Value, path: &str) -> Option<&'a mut serde_json::Value> {
    if path == "." || path.is_empty() {
        return Some(v);
    }
    let mut cur = v;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.as_object_mut()?.get_mut(key)?;
        }
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.as_array_mut()?.get_mut(n)?;
        }
    }
    Some(cur)
}

/// The first `…`-quoted word of a serde message ("missing field `command`").
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// A configuration error found after parsing (e.g. an empty command).
pub(crate) fn config_error(plugin: &str, field: &str, message: &str) -> PluginError {
    PluginError::Config {
        plugin: plugin.to_string(),
        field: field.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
