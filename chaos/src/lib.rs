//! Chaos harness (issue 3): real `cairn-node` processes, each in its own
//! network namespace, a recorded client workload, faults from a seeded
//! schedule, and checks after healing (acknowledged writes present,
//! per-register linearizability).
//!
//! Module map:
//! - `net`: namespaces, veths, the bridge; partitions, loss, delay; cleanup.
//! - `cluster`: node processes (bootstrap, join, kill -9, restart, SIGSTOP).
//! - `schedule`: the fault schedule, a pure function of seed and config.
//! - `workload`: clients and the recorded history.
//! - `jobs`: a headless runner and job queuers; job and sequence checks.
//! - `cli_client`: the real `cairn` binary, one command at a time, no
//!   retries: failed commands and gaps per fault.
//! - `checker`: Wing–Gong/Lowe linearizability for one register.
//! - `verify`: history → per-key checks and the durability check.
//! - `run`: one run, end to end.
//! - `upgrade`: the rolling-upgrade harness (previous release → this build
//!   and one node back, under load).

pub mod checker;
pub mod cli_client;
pub mod cluster;
pub mod jobs;
pub mod net;
pub mod run;
pub mod schedule;
pub mod upgrade;
pub mod verify;
pub mod workload;

/// Work dirs of runs in progress are `$TMPDIR/cairn-chaos-run-<lane>-*`.
pub const WORK_PREFIX: &str = "cairn-chaos-run-";

/// The work-dir prefix of one lane's runs.
pub fn work_prefix(lane: net::Lane) -> String {
    format!("{WORK_PREFIX}{}-", lane.0)
}
