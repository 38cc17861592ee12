//! Cairn server node: Raft member, catalog, job queue.
//!
//! See ARCHITECTURE.md for the code map and invariants.

pub mod api;
pub mod attached;
pub mod cluster;
pub mod ctx;
pub mod http;
pub mod identity;
pub mod ingress;
pub mod jobs;
pub mod logs;
pub mod metrics;
pub mod peer;
pub mod raft;
pub mod server;
pub mod services;
pub mod sources;
pub mod state;
pub mod upgrade;

pub use server::{start, Node, NodeConfig, NodeError};
