//! `cairn-entrypoint`: the wrapper around every app instance.
//!
//! Today this is the local process core; the outbound cluster connection
//! (config, log shipping, exec, instance tracking) plugs in around
//! [`run::supervise`].
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
//! - [`logqueue`]: the bounded line queue for the future log shipper.
//! - [`run`]: the supervision loop and the `CAIRN_DISABLE` exec.

pub mod args;
pub mod child;
pub mod env;
pub mod logqueue;
pub mod output;
pub mod reaper;
pub mod run;
pub mod signals;

pub use child::{Child, ChildHandle, ChildSpec, SpawnError};
pub use env::{ClusterConfig, EntrypointEnv, EnvError};
pub use logqueue::{LogLine, LogQueue, Stream, LOG_QUEUE_BYTES, LOG_QUEUE_LINES, MAX_LINE_BYTES};
pub use reaper::ExitStatus;
