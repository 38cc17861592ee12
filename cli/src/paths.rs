//! Where the CLI keeps things. `CAIRN_HOME` moves everything under one
//! directory (tests use it); otherwise the platform's config and data dirs.

use std::path::PathBuf;

fn home_override() -> Option<PathBuf> {
    std::env::var_os("CAIRN_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Contexts live here.
pub fn config_dir() -> PathBuf {
    match home_override() {
        Some(h) => h.join("config"),
        None => dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("cairn"),
    }
}

/// Local node data, runner artifacts and deployments live here.
pub fn data_dir() -> PathBuf {
    match home_override() {
        Some(h) => h.join("data"),
        None => dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("cairn"),
    }
}

/// The embedded local node's data directory.
pub fn local_node_dir() -> PathBuf {
    data_dir().join("local-node")
}

/// Where this machine's runner keeps artifacts and deployments.
pub fn runner_dir() -> PathBuf {
    data_dir().join("runner")
}
