//! `cairn-entrypoint`: the wrapper around every app instance.
//!
//! The local process core, plus the outbound cluster connection
//! ([`cluster`]: instance registration, configuration and its changes, log
//! shipping, and the exec sessions and URL tunnels the node opens on it).
//!
//! Code map (each module states its invariant):
//! - [`args`]: `cairn-entrypoint [--] CMD ARGS…`, `--help`.
//! - [`env`]: [`env::EntrypointEnv`] from `CAIRN_*` variables.
//! - [`reaper`]: the only `waitpid` in the process; reaps orphans as PID 1
//!   without stealing the child's status.
//! - [`child`]: the app in its own process group; signalling,
//!   [`child::ChildHandle::stop_gracefully`].
//! - [`signals`]: which signals are forwarded, to the group or the child.
//! - [`output`]: pass-through pumps for the child's stdout/stderr.
//! - [`logqueue`]: the bounded line queue between the output pumps and the
//!   log shipper.
//! - [`cluster`]: the outbound connection: registration, configuration
//!   pushes, reconnection with backoff; never in the child's way.
//! - [`exec`]: exec sessions (pipes or a pty) in the app's context.
//! - [`program`]: the whole program (`cairn-entrypoint`'s `main`).
//! - [`tunnel`]: URL tunnels: a node's stream spliced to the app's port.
//! - [`run`]: the supervision loop (restarts on configuration changes) and
//!   the `CAIRN_DISABLE` exec.

pub mod args;
pub mod child;
pub mod cluster;
pub mod env;
pub mod exec;
pub mod logqueue;
pub mod output;
pub mod program;
pub mod reaper;
pub mod run;
pub mod signals;
pub mod tunnel;

pub use child::{Child, ChildHandle, ChildSpec, SpawnError};
pub use env::{ClusterConfig, EntrypointEnv, EnvError};
pub use logqueue::{LogLine, LogQueue, Stream, LOG_QUEUE_BYTES, LOG_QUEUE_LINES, MAX_LINE_BYTES};
pub use reaper::ExitStatus;
