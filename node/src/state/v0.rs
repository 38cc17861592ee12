//! The replicated state as release 0.1.0 encoded it (bincode has no field
//! names, so what it wrote decodes only through the same shape). Frozen:
//! never change these types; a later release that changes a type reachable
//! from here copies that type's 0.1.0 shape into this module first (see
//! `crate::raft::format` and docs/upgrading.md).
//!
//! Used to read format-0 snapshots (data dirs and snapshot files of 0.1.0),
//! to write the snapshots sent to a 0.1.0 peer during an upgrade, and as
//! the payload of [`super::Command::Restore`], whose wire form 0.1.0 peers
//! decode.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cairn_protocol::types::{
    App, ConfigScope, ConfigVar, Hostname, Instance, Job, JobId, OpId, OpKind, Operation, Project,
    Route, Runner, TokenRecord,
};
use serde::{Deserialize, Serialize};

use super::{ClusterCa, Response};

/// `State` of release 0.1.0, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub registers: BTreeMap<String, String>,
    pub projects: BTreeMap<String, Project>,
    pub apps: BTreeMap<(String, String), App>,
    pub operations: BTreeMap<OpId, Operation>,
    pub sequences: BTreeMap<(String, String, OpKind), u64>,
    pub jobs: BTreeMap<JobId, Job>,
    pub runners: BTreeMap<String, Runner>,
    pub tokens: BTreeMap<String, TokenRecord>,
    pub config: BTreeMap<(ConfigScope, String), ConfigVar>,
    pub next_job: JobId,
    pub next_op: OpId,
    pub cluster_ca: Option<ClusterCa>,
    pub removed_nodes: BTreeSet<u64>,
    pub applied_requests: BTreeMap<(u64, u64), Response>,
    pub applied_order: VecDeque<(u64, u64)>,
    pub instances: BTreeMap<(OpId, String), Instance>,
    pub routes: BTreeMap<(String, String, String), Route>,
    pub hostnames: BTreeMap<String, Hostname>,
}

impl From<State> for super::State {
    fn from(s: State) -> super::State {
        super::State {
            registers: s.registers,
            projects: s.projects,
            apps: s.apps,
            operations: s.operations,
            sequences: s.sequences,
            jobs: s.jobs,
            runners: s.runners,
            tokens: s.tokens,
            config: s.config,
            next_job: s.next_job,
            next_op: s.next_op,
            cluster_ca: s.cluster_ca,
            removed_nodes: s.removed_nodes,
            applied_requests: s.applied_requests,
            applied_order: s.applied_order,
            instances: s.instances,
            routes: s.routes,
            hostnames: s.hostnames,
            // 0.1.0 had no cluster version: the cluster is on 0.1.0's protocol.
            cluster_version: None,
            runner_records: Default::default(),
            runner_token_labels: Default::default(),
            sources: Default::default(),
        }
    }
}

/// What a 0.1.0 member can hold of a state: everything but what later
/// releases added (which is only ever set once no such member is left).
impl From<&super::State> for State {
    fn from(s: &super::State) -> State {
        State {
            registers: s.registers.clone(),
            projects: s.projects.clone(),
            apps: s.apps.clone(),
            operations: s.operations.clone(),
            sequences: s.sequences.clone(),
            jobs: s.jobs.clone(),
            runners: s.runners.clone(),
            tokens: s.tokens.clone(),
            config: s.config.clone(),
            next_job: s.next_job,
            next_op: s.next_op,
            cluster_ca: s.cluster_ca.clone(),
            removed_nodes: s.removed_nodes.clone(),
            applied_requests: s.applied_requests.clone(),
            applied_order: s.applied_order.clone(),
            instances: s.instances.clone(),
            routes: s.routes.clone(),
            hostnames: s.hostnames.clone(),
        }
    }
}
