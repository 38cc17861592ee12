//! Helpers shared by the benchmark binaries (`cairn-bench`, `cluster-bench`):
//! process signals and guards, statistics and tables, and the report header.

pub mod load;
pub mod node;
pub mod procs;
pub mod report;
pub mod stats;
