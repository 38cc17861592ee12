//! Catalog types shared by node, CLI and runner: what the cluster records.
//!
//! Results are stored as JSON text (`TypedValue::json`): bincode cannot carry
//! self-describing values such as `serde_json::Value`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most bytes of captured output kept per operation; older lines are dropped
/// first and counted in `Operation::output_dropped`.
pub const MAX_OP_OUTPUT_BYTES: usize = 64 * 1024;

pub const DEFAULT_WORKSPACE: &str = "default";

pub type JobId = u64;
pub type OpId = u64;

/// A plugin result: its type name (e.g. "process.Deployment") and JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypedValue {
    pub type_name: String,
    pub json: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OpKind {
    Build,
    /// A pushed artifact (the registry step).
    Artifact,
    Deployment,
    Release,
}

impl OpKind {
    pub fn noun(self) -> &'static str {
        match self {
            OpKind::Build => "build",
            OpKind::Artifact => "artifact",
            OpKind::Deployment => "deployment",
            OpKind::Release => "release",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpStatus {
    Running,
    Success,
    Error,
}

impl OpStatus {
    pub fn word(self) -> &'static str {
        match self {
            OpStatus::Running => "running",
            OpStatus::Success => "success",
            OpStatus::Error => "error",
        }
    }
}

/// Lifecycle of what an operation created (a deployment's processes…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceState {
    Active,
    Destroyed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
    Info,
}

/// One recorded build, pushed artifact, deployment or release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: OpId,
    pub kind: OpKind,
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// Per app and kind: v1, v2…
    pub sequence: u64,
    pub status: OpStatus,
    pub plugin: String,
    pub job_id: JobId,
    pub requested_by: String,
    pub started_ms: u64,
    pub completed_ms: Option<u64>,
    pub result: Option<TypedValue>,
    pub error: Option<String>,
    /// Captured output, bounded by [`MAX_OP_OUTPUT_BYTES`].
    pub output: Vec<String>,
    pub output_dropped: u64,
    pub url: Option<String>,
    /// The sequence of the operation this one consumed (artifact → build,
    /// deployment → build, release → deployment).
    pub input_seq: Option<u64>,
    pub state: ResourceState,
}

/// How an operation ended, as its runner reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpCompletion {
    pub op_id: OpId,
    pub status: OpStatus,
    pub result: Option<TypedValue>,
    pub error: Option<String>,
    /// Captured output; the node keeps at most [`MAX_OP_OUTPUT_BYTES`].
    pub output: Vec<String>,
    /// Lines the runner already dropped.
    pub output_dropped: u64,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// build → push → deploy → release
    Up {
        release: bool,
        prune: bool,
        retain: Option<u64>,
    },
    Build {
        push: bool,
    },
    /// Deploy the latest build (or `build` if given).
    Deploy {
        build: Option<u64>,
    },
    /// Release a deployment (the latest if `None`). `weight`: the share of
    /// the app's traffic (1–100 %) it gets; below 100 it is a canary next
    /// to the deployment released in full before (`None` = 100).
    Release {
        deployment: Option<u64>,
        prune: bool,
        retain: Option<u64>,
        weight: Option<u8>,
    },
    /// Destroy one deployment, or every active one.
    Destroy {
        deployment: Option<u64>,
    },
    /// Protocol 5: ask the app's platform plugin how its active deployments
    /// are doing; the runner answers with one `Result` per deployment
    /// ("status vN" = a JSON health report). Queued only once the cluster
    /// version is 5 (release 0.1.0 nodes could not read it).
    Status,
}

impl JobKind {
    /// The protocol version that brought this kind of job.
    pub fn since_version(&self) -> u32 {
        match self {
            JobKind::Status => 5,
            _ => 4,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Up { .. } => "up",
            JobKind::Build { .. } => "build",
            JobKind::Deploy { .. } => "deploy",
            JobKind::Release { .. } => "release",
            JobKind::Destroy { .. } => "destroy",
            JobKind::Status => "status",
        }
    }
}

/// Where the runner gets the app's source and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A directory on the runner's machine; `config` is the config file in it.
    Local { dir: String, config: String },
    /// Protocol 5 (issue 19): a tarball the CLI uploaded (`UploadSource`),
    /// named by its content; the runner fetches it from its node
    /// (`FetchSource`) and unpacks it. `config` is the config file in it.
    Upload {
        digest: String,
        size: u64,
        config: String,
    },
    /// Protocol 5 (issue 19): a git repository the runner clones with its
    /// own credentials (`runner { data_source "git" { url, ref, path } }`);
    /// `path` is the app's directory in it, `config` the config file there.
    Git {
        url: String,
        git_ref: Option<String>,
        path: Option<String>,
        config: String,
    },
}

/// The hex of an uploaded source's digest (`sha256:<64 lowercase hex>`), or why it is not
/// one: what names its file on nodes and runners, so it is checked before any path is made.
pub fn source_digest_hex(digest: &str) -> Result<&str, String> {
    let hex = digest.strip_prefix("sha256:").filter(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    hex.ok_or_else(|| format!("{digest:?} is not a source digest (sha256:<64 lowercase hex>)"))
}

impl Source {
    /// The protocol version that brought this kind of source.
    pub fn since_version(&self) -> u32 {
        match self {
            Source::Local { .. } => 4,
            Source::Upload { .. } | Source::Git { .. } => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerTarget {
    Any,
    Id(String),
    Labels(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub source: Source,
    pub target: RunnerTarget,
}

impl JobSpec {
    /// The protocol version a node or runner must speak to read this spec:
    /// its kind's and its source's.
    pub fn since_version(&self) -> u32 {
        self.kind.since_version().max(self.source.since_version())
    }

    /// A small valid spec (tests and fuzz seeds).
    pub fn example() -> JobSpec {
        JobSpec {
            kind: JobKind::Up {
                release: true,
                prune: false,
                retain: None,
            },
            project: "hello".into(),
            app: "web".into(),
            workspace: DEFAULT_WORKSPACE.into(),
            source: Source::Local {
                dir: "/src".into(),
                config: "cairn.hcl".into(),
            },
            target: RunnerTarget::Id("r1".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Assigned,
    Running,
    Success,
    Error,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Error | JobState::Cancelled
        )
    }
    pub fn word(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Success => "success",
            JobState::Error => "error",
            JobState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub runner: Option<String>,
    pub requested_by: String,
    pub queued_ms: u64,
    pub assigned_ms: Option<u64>,
    pub completed_ms: Option<u64>,
    pub error: Option<String>,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerKind {
    /// A CLI acting as a runner for its own jobs.
    Cli,
    /// `cairn runner agent`.
    Agent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub id: String,
    pub kind: RunnerKind,
    pub labels: BTreeMap<String, String>,
    pub registered_ms: u64,
    pub last_seen_ms: u64,
}

/// Where an enrolled runner stands (issue 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerState {
    /// Enrolled without a runner token: waits for `cairn runner adopt`.
    Pending,
    /// May connect with its certificate and run jobs.
    Adopted,
    /// Refused until forgotten.
    Rejected,
}

impl RunnerState {
    pub fn word(self) -> &'static str {
        match self {
            RunnerState::Pending => "pending",
            RunnerState::Adopted => "adopted",
            RunnerState::Rejected => "rejected",
        }
    }
}

/// An enrolled runner as the replicated state records it (issue 19). Its
/// identity is its id and its key: a certificate is admitted only while the
/// record is adopted and names the certificate's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub id: String,
    pub state: RunnerState,
    pub labels: BTreeMap<String, String>,
    /// `sha256:<hex>` of the runner's public key ([`crate::pki::key_fingerprint`]).
    pub key_fingerprint: String,
    pub enrolled_ms: u64,
    /// Who adopted or rejected it (`token:NAME` for a runner token).
    pub decided_by: Option<String>,
    pub decided_ms: Option<u64>,
}

/// What `cairn runner inspect` shows: the record and what the cluster sees
/// of the runner now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerDetails {
    pub record: RunnerRecord,
    /// The node it is connected to, if it is.
    pub node: Option<u64>,
    /// When it last registered (or was last seen registered).
    pub last_seen_ms: Option<u64>,
    /// The job it holds (assigned or running).
    pub current_job: Option<JobId>,
    /// Jobs it ran that are over (as far as the records keep them).
    pub jobs_run: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenScope {
    /// One-time: exchanged for the first user token.
    Bootstrap,
    User,
    Runner,
    /// Bound to one deployment (issue 4): `deployment` is the id
    /// ([`OpId`]) of that deployment's operation, unique in the cluster (the
    /// `CAIRN_DEPLOYMENT_ID` an entrypoint is given); `app` is for display.
    /// It may only register instances of that deployment and receive its
    /// configuration.
    Entrypoint {
        app: String,
        deployment: OpId,
    },
    /// Lets a new node join the cluster (`cairn-node --join`): the
    /// connection it authenticates can only ask for a node certificate.
    /// Reusable until it expires or is revoked.
    Join,
}

/// A token's stored record. The secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub hash: String,
    pub scope: TokenScope,
    pub name: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub revoked: bool,
}

/// Where a config variable applies. When an app's environment is resolved
/// (`crate::config::resolve_env`), the most specific scope wins:
/// `WorkspaceApp` > `App` > `Workspace` > `Project`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigScope {
    /// Every app of the project, in every workspace.
    Project(String),
    /// One app, in every workspace.
    App { project: String, app: String },
    /// Every app of the project, in one workspace.
    Workspace { project: String, workspace: String },
    /// One app in one workspace. (Added after the others: variants keep
    /// their bincode indices.)
    WorkspaceApp {
        project: String,
        app: String,
        workspace: String,
    },
}

impl ConfigScope {
    /// The project this scope belongs to.
    pub fn project(&self) -> &str {
        match self {
            ConfigScope::Project(p)
            | ConfigScope::App { project: p, .. }
            | ConfigScope::Workspace { project: p, .. }
            | ConfigScope::WorkspaceApp { project: p, .. } => p,
        }
    }

    /// The app, for app scopes.
    pub fn app(&self) -> Option<&str> {
        match self {
            ConfigScope::App { app, .. } | ConfigScope::WorkspaceApp { app, .. } => Some(app),
            _ => None,
        }
    }

    /// The workspace, for workspace scopes.
    pub fn workspace(&self) -> Option<&str> {
        match self {
            ConfigScope::Workspace { workspace, .. }
            | ConfigScope::WorkspaceApp { workspace, .. } => Some(workspace),
            _ => None,
        }
    }

    /// The kind of scope: "project", "app", "workspace" or "workspace-app".
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigScope::Project(_) => "project",
            ConfigScope::App { .. } => "app",
            ConfigScope::Workspace { .. } => "workspace",
            ConfigScope::WorkspaceApp { .. } => "workspace-app",
        }
    }
}

impl ConfigScope {
    /// The scope a project, and maybe an app and a workspace, name.
    pub fn of(project: String, app: Option<String>, workspace: Option<String>) -> ConfigScope {
        match (app, workspace) {
            (None, None) => ConfigScope::Project(project),
            (Some(app), None) => ConfigScope::App { project, app },
            (None, Some(workspace)) => ConfigScope::Workspace { project, workspace },
            (Some(app), Some(workspace)) => ConfigScope::WorkspaceApp {
                project,
                app,
                workspace,
            },
        }
    }
}

impl std::fmt::Display for ConfigScope {
    /// `project "p"`, `app "p/a"`, `project "p" in workspace "w"`, `app "p/a" in workspace "w"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigScope::Project(p) => write!(f, "project \"{p}\""),
            ConfigScope::App { project, app } => write!(f, "app \"{project}/{app}\""),
            ConfigScope::Workspace { project, workspace } => {
                write!(f, "project \"{project}\" in workspace \"{workspace}\"")
            }
            ConfigScope::WorkspaceApp {
                project,
                app,
                workspace,
            } => write!(f, "app \"{project}/{app}\" in workspace \"{workspace}\""),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVar {
    pub scope: ConfigScope,
    pub name: String,
    pub value: String,
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub project: String,
    pub name: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Its entrypoint holds a connection to `Instance::node`.
    Connected,
    /// Its connection dropped (or its node stopped reporting it); the
    /// leader forgets it after a while (`cairn_node` `INSTANCE_EXPIRY`).
    Disconnected,
}

impl InstanceState {
    pub fn word(self) -> &'static str {
        match self {
            InstanceState::Connected => "connected",
            InstanceState::Disconnected => "disconnected",
        }
    }
}

/// Where an app's release URL sends traffic: the deployment released in
/// full, and maybe a canary that takes `weight` % of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Deployment sequence (vN).
    pub primary: u64,
    /// (deployment sequence, percent of the requests, 1–99).
    pub canary: Option<(u64, u8)>,
}

/// What a custom hostname serves: an app's release, or one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hostname {
    /// Lowercase, without a trailing dot.
    pub name: String,
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// A deployment sequence; `None`: follow the app's release.
    pub deployment: Option<u64>,
    pub created_ms: u64,
}

/// What removing apps (`cairn app destroy`, `cairn project destroy`) took
/// out of the cluster's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The apps removed, by name.
    pub apps: Vec<String>,
    /// Whether the project's own record (and its project-wide config) went too.
    pub project: bool,
    /// Builds, artifacts, deployments and releases.
    pub operations: u64,
    pub jobs: u64,
    /// Custom hostnames that served the removed apps.
    pub hostnames: Vec<String>,
    /// Config variables scoped to what was removed.
    pub config: u64,
}

/// One app instance: a `cairn-entrypoint` and the node it is connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Chosen by the entrypoint; unique within its deployment.
    pub id: String,
    /// The deployment operation's id.
    pub deployment: OpId,
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// The deployment's per-app sequence (vN).
    pub sequence: u64,
    /// The node its entrypoint is (or was last) connected to.
    pub node: u64,
    pub pid: u32,
    /// When the entrypoint started, by its own clock.
    pub started_ms: u64,
    /// When it (re)connected.
    pub since_ms: u64,
    /// Refreshed at most every `cairn_node` `INSTANCE_SEEN_INTERVAL` while
    /// connected; the time it disconnected once disconnected.
    pub last_seen_ms: u64,
    pub state: InstanceState,
}
