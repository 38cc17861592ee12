//! `cairn`: build, deploy and release apps; inspect what ran.

use std::process::ExitCode;

use cairn_cli::commands::{
    self,
    config::ConfigCmd,
    context::ContextCmd,
    job::JobCmd,
    lifecycle::{AppArg, PruneArgs},
    list::ListArgs,
    runner::RunnerCmd,
    server::ServerCmd,
    Global,
};
use cairn_protocol::types::{JobKind, OpKind};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn takes an app from source to live traffic: build → push → deploy → release.",
    long_about = "Cairn takes an app from source to live traffic with one config file (cairn.hcl or \
waypoint.hcl) and one command, `cairn up`. With no context configured, the first command starts a \
local node in the background and uses it."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build, push, deploy and release the app in one go.
    Up {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        prune: PruneArgs,
        /// Stop after deploying: do not release.
        #[arg(long)]
        no_release: bool,
    },
    /// Build the app (and push the artifact when a registry is configured).
    Build {
        #[command(flatten)]
        app: AppArg,
        /// Do not run the registry step.
        #[arg(long)]
        no_push: bool,
    },
    /// Deploy the latest build (or --build N) as a new deployment.
    Deploy {
        #[command(flatten)]
        app: AppArg,
        /// Deploy this build instead of the latest.
        #[arg(long, value_parser = commands::parse_seq)]
        build: Option<u64>,
    },
    /// Point the release at a deployment (the latest by default); releasing an older one rolls back.
    Release {
        /// The deployment to release, e.g. 2 or v2.
        #[arg(value_parser = commands::parse_seq)]
        deployment: Option<u64>,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        prune: PruneArgs,
        /// Send only this percentage (1-99) of the app's traffic to the deployment (a canary);
        /// the rest stays on the deployment released in full. A later full release, or a
        /// rollback, moves all of it.
        #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100), conflicts_with = "prune")]
        weight: Option<u8>,
    },
    /// Stop one deployment, or every deployment of the app.
    Destroy {
        /// The deployment to destroy (default: all of the app's deployments).
        #[arg(value_parser = commands::parse_seq)]
        deployment: Option<u64>,
        #[command(flatten)]
        app: AppArg,
    },
    /// Builds and pushed artifacts.
    #[command(subcommand)]
    Artifact(ArtifactCmd),
    /// Deployments.
    #[command(subcommand)]
    Deployment(ListCmd),
    /// Releases. (`cairn release [N]` releases; `cairn release list` lists.)
    #[command(name = "releases", alias = "release-list")]
    Releases(ListArgs),
    /// Jobs: list, inspect, cancel, attach.
    #[command(subcommand)]
    Job(JobCmd),
    /// App configuration: env vars for deployments, by project, app and workspace.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Input variable values stored on the cluster (`variable "NAME" {}` in the config),
    /// for the project or one workspace: read by `cairn up` and every runner.
    #[command(subcommand)]
    Var(commands::var::VarCmd),
    /// Each app's latest build, its running deployments and what is released.
    /// For the apps of the config here, the platform plugin reports how each
    /// deployment's instances are doing (a status job, run by this CLI or by
    /// the runner chosen with --runner / --runner-label); for every app, how
    /// many of its instances' entrypoints are connected to the cluster.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        runner: commands::runner::RunnerSelect,
    },
    /// Pipelines: the config's `pipeline` blocks (Waypoint's form), listed or run step by
    /// step (exec commands here; build, deploy, release and up steps as those commands do).
    #[command(subcommand)]
    Pipeline(commands::pipeline::PipelineCmd),
    /// Check the config here without running anything: every app's plugins
    /// and fields, and how each stage's value reaches the next (through
    /// which mappers); prints the plan (secrets masked) and every error at
    /// once, each with its file:line:column. Needs no node.
    Validate {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Do not read what the cluster stores (input variable values set with `cairn var
        /// set`, config read by `dynamic("cairn", …)`). Without it they are read when the
        /// context's cluster is at hand (the local node only when it is already running).
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        inputs: commands::ConfigInputs,
    },
    /// Write a starting cairn.hcl for the app in this directory.
    ///
    /// Looks at what the directory (or -C DIR) holds — a Dockerfile, a Procfile,
    /// package.json, app.py, main.go, Cargo.toml… — writes a cairn.hcl that `cairn
    /// validate` accepts, and says what it chose and why. Writes nothing next to a
    /// waypoint.hcl (Cairn reads it as it is), nor over a cairn.hcl without --force.
    Init(commands::init::InitArgs),
    /// Rewrite config files in the canonical layout, like `terraform fmt`.
    ///
    /// Indentation, aligned `=`, blank lines and trailing spaces, keeping every comment;
    /// refuses to write a result that would not mean the same. With --check, writes
    /// nothing and exits 1 if a file would change. Needs no node.
    Fmt(commands::fmt::FmtArgs),
    /// Contexts: which node to talk to.
    #[command(subcommand)]
    Context(ContextCmd),
    /// Run or manage a server node.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Runners: `cairn runner agent` runs jobs for the cluster on this machine.
    #[command(subcommand)]
    Runner(RunnerCmd),
    /// App instances: each deployed process's entrypoint and its node.
    #[command(subcommand)]
    Instance(commands::instance::InstanceCmd),
    /// Custom host names of the URL service.
    #[command(subcommand)]
    Hostname(commands::hostname::HostnameCmd),
    /// Apps: `cairn app destroy` removes one from the cluster.
    #[command(subcommand)]
    App(commands::remove::AppCmd),
    /// Projects: `cairn project destroy` removes one with all its apps.
    #[command(subcommand)]
    Project(commands::remove::ProjectCmd),
    /// Show the output of a deployment's instances (all of them, from every node).
    Logs(commands::logs::LogsArgs),
    /// Where the node serves its web UI (projects, apps, deployments, live logs, jobs, runners, cluster), and with --token the token to sign in with.
    Ui(commands::ui::UiArgs),
    /// Run a command in an instance of a deployment (its env and working dir).
    #[command(
        after_help = "Examples:\n  cairn exec -- env\n  cairn exec -it -- sh\n  cairn exec --instance 3f2a -d 2 -- cat /proc/1/status"
    )]
    Exec(commands::exec::ExecArgs),
    #[command(name = "__supervise", hide = true)]
    Supervise { spec: std::path::PathBuf },
    #[command(name = "__entrypoint", hide = true)]
    Entrypoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ArtifactCmd {
    /// List builds.
    List(ListArgs),
    /// List pushed artifacts.
    Pushed(ListArgs),
}

#[derive(Debug, Subcommand)]
enum ListCmd {
    /// List them.
    List(ListArgs),
}

fn main() -> ExitCode {
    // The supervisor must not start a tokio runtime or print anything.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__supervise") {
        // The app's processes create files with the usual umask.
        cairn_protocol::private::usual_umask();
        let Some(spec) = args.get(2) else {
            return ExitCode::from(2);
        };
        return cairn_cli::plugins::run_supervisor(std::path::Path::new(spec));
    }
    // The entrypoint compiled into the CLI (used when no cairn-entrypoint
    // binary is installed next to it): the same program, same arguments.
    if args.get(1).map(String::as_str) == Some("__entrypoint") {
        return cairn_entrypoint::program::main_with_args(std::env::args_os().skip(2));
    }
    // Contexts, the local node's data, runner files, logs: private.
    cairn_protocol::private::restrict_umask();
    // `cairn release list` reads naturally; route it to the listing.
    let args = commands::rewrite_single_dash(rewrite_release_list(args));
    let cli = Cli::parse_from(args);
    init_tracing(matches!(cli.cmd, Cmd::Server(ServerCmd::Run(_))));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Plugin work runs on blocking threads; once the command is over (e.g.
    // the node's connection was lost mid-job, so nothing it does would be
    // recorded) do not wait for it to finish.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn rewrite_release_list(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "release") {
        if args.get(i + 1).map(String::as_str) == Some("list") {
            args[i] = "releases".into();
            args.remove(i + 1);
        }
    }
    args
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn init_tracing(server: bool) {
    let default = if server {
        "warn,cairn_node=info"
    } else {
        "error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(mut cli: Cli) -> anyhow::Result<i32> {
    // The one catalog of plugins, handed to every command and runner.
    cli.global.catalog = std::sync::Arc::new(cairn_cli::plugins::Catalog::builtin());
    let g = &cli.global;
    match &cli.cmd {
        Cmd::Up {
            app,
            prune,
            no_release,
        } => {
            let kind = JobKind::Up {
                release: !no_release,
                prune: prune.prune,
                retain: prune.prune_retain,
            };
            commands::lifecycle::run(g, app, kind).await
        }
        Cmd::Build { app, no_push } => {
            commands::lifecycle::run(g, app, JobKind::Build { push: !no_push }).await
        }
        Cmd::Deploy { app, build } => {
            commands::lifecycle::run(g, app, JobKind::Deploy { build: *build }).await
        }
        Cmd::Release {
            deployment,
            app,
            prune,
            weight,
        } => {
            let kind = JobKind::Release {
                deployment: *deployment,
                prune: prune.prune,
                retain: prune.prune_retain,
                weight: *weight,
            };
            commands::lifecycle::run(g, app, kind).await
        }
        Cmd::Destroy { deployment, app } => {
            commands::lifecycle::run(
                g,
                app,
                JobKind::Destroy {
                    deployment: *deployment,
                },
            )
            .await
        }
        Cmd::Artifact(ArtifactCmd::List(a)) => commands::list::run(g, OpKind::Build, a).await,
        Cmd::Artifact(ArtifactCmd::Pushed(a)) => commands::list::run(g, OpKind::Artifact, a).await,
        Cmd::Deployment(ListCmd::List(a)) => commands::list::run(g, OpKind::Deployment, a).await,
        Cmd::Releases(a) => commands::list::run(g, OpKind::Release, a).await,
        Cmd::Job(j) => commands::job::run(g, j).await,
        Cmd::Config(c) => commands::config::run(g, c).await,
        Cmd::Var(v) => commands::var::run(g, v).await,
        Cmd::Status { json, runner } => commands::status::run(g, *json, runner).await,
        Cmd::Validate {
            json,
            offline,
            inputs,
        } => commands::validate::run(g, *json, *offline, inputs).await,
        Cmd::Init(a) => commands::init::run(g, a),
        Cmd::Fmt(a) => commands::fmt::run(g, a),
        Cmd::Pipeline(p) => commands::pipeline::run(g, p).await,
        Cmd::Context(c) => commands::context::run(c).await,
        Cmd::Server(s) => commands::server::run(g, s).await,
        Cmd::Runner(r) => commands::runner::run(g, r).await,
        Cmd::Instance(i) => commands::instance::run(g, i).await,
        Cmd::Logs(l) => commands::logs::run(g, l).await,
        Cmd::Hostname(h) => commands::hostname::run(g, h).await,
        Cmd::App(c) => commands::remove::run_app(g, c).await,
        Cmd::Project(c) => commands::remove::run_project(g, c).await,
        Cmd::Exec(e) => commands::exec::run(g, e).await,
        Cmd::Ui(a) => commands::ui::run(g, a).await,
        Cmd::Supervise { .. } | Cmd::Entrypoint { .. } => Ok(2),
    }
}
