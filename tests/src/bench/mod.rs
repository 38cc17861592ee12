//! Helpers shared by the benchmark binaries (`cairn-bench`, `cluster-bench`,
//! `entrypoint-bench`, `url-bench`): the command line,
//! process signals and guards, statistics and tables, and the report header.

pub mod args;
pub mod load;
pub mod node;
pub mod procs;
pub mod report;
pub mod stats;
