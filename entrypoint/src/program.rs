//! The `cairn-entrypoint` program: parse the command line and the
//! environment, then supervise the app (with the cluster when configured).
//! The binary's `main` and the CLI's hidden `cairn __entrypoint` both call
//! [`main_with_args`].

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use crate::args::{self, Invocation, HELP, USAGE};
use crate::env::{self, EntrypointEnv};
use crate::run::CurrentApp;
use crate::{cluster, run, ChildSpec, LogQueue};

/// Exit status for a command line we cannot use.
const USAGE_EXIT: u8 = 2;

/// Runs the entrypoint with `args` (without the program name) and returns
/// the exit status to exit with.
pub fn main_with_args(args: impl Iterator<Item = OsString>) -> ExitCode {
    let (program, args) = match args::parse(args) {
        Ok(Invocation::Run { program, args }) => (program, args),
        Ok(Invocation::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("cairn-entrypoint {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cairn-entrypoint: {e}\n{USAGE}\n(see cairn-entrypoint --help)");
            return ExitCode::from(USAGE_EXIT);
        }
    };

    let cluster = match EntrypointEnv::from_env() {
        Ok(EntrypointEnv { disable: true, .. }) => {
            let err = run::exec_direct(&program, &args);
            eprintln!("cairn-entrypoint: {err}");
            return exit_code(err.exit_code());
        }
        Ok(EntrypointEnv { cluster: None, .. }) => {
            warn(&format!(
                "{} are not set: running without the cluster",
                env::CONNECTION_VARS.join(", ")
            ));
            None
        }
        Ok(EntrypointEnv { cluster, .. }) => cluster,
        Err(e) => {
            warn(&format!("{e}: running without the cluster"));
            None
        }
    };
    // The deployment id is the deployment operation's number.
    let cluster = cluster.and_then(|c| match c.deployment_id.parse::<u64>() {
        Ok(id) => Some((c, id)),
        Err(_) => {
            warn(&format!(
                "{}={:?} is not a deployment id (a number): running without the cluster",
                env::DEPLOYMENT_ID,
                c.deployment_id
            ));
            None
        }
    });
    let logs = cluster.as_ref().map(|_| Arc::new(LogQueue::new()));

    let mut spec = ChildSpec::new(program, args);
    spec.env_remove = env::HIDDEN_FROM_CHILD.iter().map(OsString::from).collect();

    // One thread for signals, reaping and the network; the output
    // pumps have their own. A small runtime keeps the RSS low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cairn-entrypoint: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let supervised = runtime.block_on(async {
        match cluster {
            Some((cfg, deployment)) => {
                let current = Arc::new(CurrentApp::new(spec.clone()));
                let fixed = cfg.fixed_env.clone();
                let services = cluster::Services {
                    logs: logs.clone(),
                    app: current.clone(),
                };
                let (config, link) = cluster::spawn(cfg, cluster::hello(deployment), services);
                let status =
                    run::supervise_with_config(&spec, logs, config, &current, &fixed).await;
                // The watch is gone: the link closes its connection.
                let _ = tokio::time::timeout(cluster::CLOSE_WAIT * 2, link).await;
                status
            }
            None => run::supervise(&spec, logs).await,
        }
    });
    match supervised {
        Ok(status) => exit_code(status.exit_code()),
        Err(e) => {
            eprintln!("cairn-entrypoint: {e}");
            exit_code(e.exit_code())
        }
    }
}

fn warn(message: &str) {
    eprintln!("cairn-entrypoint: warning: {message}");
}

fn exit_code(code: i32) -> ExitCode {
    // Exit statuses are 0..=255 and 128 + a signal number stays below 256.
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
