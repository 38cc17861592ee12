//! The node's metrics, in Prometheus's text format at `/metrics` on the HTTP API
//! (prometheus-client). Two kinds:
//! - counted as things happen: ingress requests (by app, deployment and status) and their
//!   latency, HTTP API and QUIC requests, job durations, log bytes and dropped lines, exec
//!   sessions;
//! - read from the node's state when scraped: Raft term, leader, log, commit and applied
//!   indexes, snapshot size, jobs by state, connected runners and entrypoints.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use cairn_protocol::types::JobState;

/// An app's deployment, as ingress metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// `v3`; empty for requests that reached no deployment.
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressLabels {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub deployment: String,
    /// The status code answered.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `http` or `quic`.
    pub transport: String,
    /// The route (HTTP: method and path pattern) or request kind (QUIC).
    pub request: String,
    /// The status: the HTTP code, or `ok`/`error` for QUIC.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    pub ingress_requests: Family<IngressLabels, Counter>,
    pub ingress_latency: Family<DeploymentLabels, Histogram>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub job_duration: Family<JobLabels, Histogram>,
    pub log_bytes: Counter,
    pub log_lines_dropped: Counter,
    pub exec_sessions: Counter,
    pub exec_active: Gauge,
    raft_term: Gauge,
    raft_is_leader: Gauge,
    raft_leader: Gauge,
    raft_last_log_index: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    raft_snapshot_index: Gauge,
    raft_snapshot_bytes: Gauge,
    raft_members: Gauge,
    jobs: Family<StateLabel, Gauge>,
    runners_connected: Gauge,
    entrypoints_connected: Gauge,
    /// Requests the ingress routed, per app (project, app, workspace) and deployment
    /// sequence: what the UI's chart reads (the family above cannot be read by label).
    traffic: std::sync::Mutex<Traffic>,
}

type Traffic =
    std::collections::HashMap<(String, String, String), std::collections::BTreeMap<u64, u64>>;

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

const JOB_STATES: [JobState; 6] = [
    JobState::Queued,
    JobState::Assigned,
    JobState::Running,
    JobState::Success,
    JobState::Error,
    JobState::Cancelled,
];

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("cairn");
        let ingress_requests = Family::<IngressLabels, Counter>::default();
        r.register(
            "ingress_requests",
            "Requests the URL-service ingress answered, by app, deployment and status code",
            ingress_requests.clone(),
        );
        let ingress_latency = Family::<DeploymentLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        r.register(
            "ingress_request_duration_seconds",
            "Time from a request's arrival to its response's head, by app and deployment",
            ingress_latency.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        r.register(
            "api_requests",
            "Requests served by the node's API (HTTP and QUIC), by request and status",
            api_requests.clone(),
        );
        let job_duration = Family::<JobLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        r.register(
            "job_duration_seconds",
            "Time from a job's assignment to its end, by kind and final state (jobs driven by this node)",
            job_duration.clone(),
        );
        let log_bytes = Counter::default();
        r.register(
            "log_bytes",
            "Bytes of log lines received from the instances connected to this node",
            log_bytes.clone(),
        );
        let log_lines_dropped = Counter::default();
        r.register(
            "log_lines_dropped",
            "Log lines the instances reported dropped (their buffer was full while disconnected)",
            log_lines_dropped.clone(),
        );
        let exec_sessions = Counter::default();
        r.register(
            "exec_sessions",
            "Exec sessions opened through this node",
            exec_sessions.clone(),
        );
        let exec_active = Gauge::default();
        r.register(
            "exec_sessions_active",
            "Exec sessions open through this node now",
            exec_active.clone(),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let raft_term = gauge(&mut r, "raft_term", "This node's current Raft term");
        let raft_is_leader = gauge(&mut r, "raft_is_leader", "1 when this node is the leader");
        let raft_leader = gauge(
            &mut r,
            "raft_leader",
            "The leader's node id as this node knows it (-1: none)",
        );
        let raft_last_log_index = gauge(
            &mut r,
            "raft_last_log_index",
            "The last index of this node's Raft log",
        );
        let raft_commit_index = gauge(
            &mut r,
            "raft_commit_index",
            "On the leader, the highest index a quorum holds; elsewhere the applied index (openraft 0.9 does not tell a follower's commit index)",
        );
        let raft_applied_index = gauge(
            &mut r,
            "raft_applied_index",
            "The last index applied to this node's state",
        );
        let raft_snapshot_index = gauge(
            &mut r,
            "raft_snapshot_index",
            "The last index in this node's current snapshot",
        );
        let raft_snapshot_bytes = gauge(
            &mut r,
            "raft_snapshot_bytes",
            "The size of this node's current snapshot",
        );
        let raft_members = gauge(&mut r, "raft_members", "Members of the cluster");
        let jobs = Family::<StateLabel, Gauge>::default();
        r.register("jobs", "Jobs the cluster records, by state", jobs.clone());
        let runners_connected = gauge(
            &mut r,
            "runners_connected",
            "Runners connected to this node",
        );
        let entrypoints_connected = gauge(
            &mut r,
            "entrypoints_connected",
            "Instances' entrypoints connected to this node",
        );
        Metrics {
            registry: r,
            ingress_requests,
            ingress_latency,
            api_requests,
            job_duration,
            log_bytes,
            log_lines_dropped,
            exec_sessions,
            exec_active,
            raft_term,
            raft_is_leader,
            raft_leader,
            raft_last_log_index,
            raft_commit_index,
            raft_applied_index,
            raft_snapshot_index,
            raft_snapshot_bytes,
            raft_members,
            jobs,
            runners_connected,
            entrypoints_connected,
            traffic: Default::default(),
        }
    }

    /// The requests this node's ingress routed to each deployment of an app, by sequence,
    /// since the node started.
    pub fn traffic(
        &self,
        project: &str,
        app: &str,
        workspace: &str,
    ) -> std::collections::BTreeMap<u64, u64> {
        let key = (project.to_string(), app.to_string(), workspace.to_string());
        self.traffic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    /// One request the ingress answered: `routed` the deployment it reached, if any.
    pub fn ingress(&self, routed: Option<DeploymentLabels>, code: u16, took: Duration) {
        let d = routed.unwrap_or(DeploymentLabels {
            project: String::new(),
            app: String::new(),
            workspace: String::new(),
            deployment: String::new(),
        });
        self.ingress_requests
            .get_or_create(&IngressLabels {
                project: d.project.clone(),
                app: d.app.clone(),
                workspace: d.workspace.clone(),
                deployment: d.deployment.clone(),
                code: code.to_string(),
            })
            .inc();
        self.ingress_latency
            .get_or_create(&d)
            .observe(took.as_secs_f64());
        if let Some(seq) = d.deployment.strip_prefix('v').and_then(|n| n.parse().ok()) {
            *self
                .traffic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((d.project, d.app, d.workspace))
                .or_default()
                .entry(seq)
                .or_default() += 1;
        }
    }

    /// One API request served.
    pub fn api(&self, transport: &str, request: &str, status: &str) {
        self.api_requests
            .get_or_create(&ApiLabels {
                transport: transport.into(),
                request: request.into(),
                status: status.into(),
            })
            .inc();
    }

    /// The text exposition, with the gauges read from Raft and the state first (and the
    /// runners and entrypoints connected to this node, as given).
    pub fn render(
        &self,
        raft: &crate::raft::RaftNode,
        runners_connected: usize,
        entrypoints_connected: usize,
    ) -> String {
        let m = raft.metrics();
        let p = raft.progress();
        let me = raft.id();
        let as_i64 = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        self.raft_term
            .set(i64::try_from(m.current_term).unwrap_or(i64::MAX));
        let leader = m.current_leader;
        self.raft_is_leader.set(i64::from(leader == Some(me)));
        self.raft_leader
            .set(leader.map_or(-1, |l| i64::try_from(l).unwrap_or(-1)));
        self.raft_last_log_index.set(as_i64(p.last_log_index));
        self.raft_applied_index.set(as_i64(p.last_applied));
        self.raft_snapshot_index.set(as_i64(p.snapshot_index));
        self.raft_snapshot_bytes
            .set(i64::try_from(p.snapshot_bytes).unwrap_or(i64::MAX));
        let commit = match (&m.replication, leader == Some(me)) {
            (Some(repl), true) => {
                // The highest index held by a quorum of voters (the leader holds its log).
                let voters = raft.voter_ids();
                let mut matched: Vec<u64> = voters
                    .iter()
                    .map(|v| {
                        if *v == me {
                            p.last_log_index.unwrap_or(0)
                        } else {
                            repl.get(v)
                                .and_then(|l| l.as_ref().map(|l| l.index))
                                .unwrap_or(0)
                        }
                    })
                    .collect();
                matched.sort_unstable_by(|a, b| b.cmp(a));
                matched.get(matched.len() / 2).copied().or(p.last_applied)
            }
            _ => p.last_applied,
        };
        self.raft_commit_index.set(as_i64(commit));
        self.raft_members
            .set(i64::try_from(raft.members().len()).unwrap_or(0));
        let counts = raft.read_local(|st| {
            let mut c = [0i64; JOB_STATES.len()];
            for j in st.jobs.values() {
                if let Some(i) = JOB_STATES.iter().position(|s| *s == j.state) {
                    c[i] += 1;
                }
            }
            c
        });
        for (state, n) in JOB_STATES.iter().zip(counts) {
            self.jobs
                .get_or_create(&StateLabel {
                    state: format!("{state:?}").to_ascii_lowercase(),
                })
                .set(n);
        }
        self.runners_connected
            .set(i64::try_from(runners_connected).unwrap_or(0));
        self.entrypoints_connected
            .set(i64::try_from(entrypoints_connected).unwrap_or(0));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        to_prometheus_text(&out)
    }
}

/// prometheus-client writes OpenMetrics text, where a counter family `x` has samples
/// `x_total` and the text ends with `# EOF`. Prometheus's own text format (0.0.4, what
/// `promtool check metrics` and most scrapers read as text/plain) names the family
/// `x_total` and has no `# EOF`: the same samples, with the family renamed.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_as_prometheus_text_names_them() {
        let om = "# HELP cairn_x Things.\n# TYPE cairn_x counter\ncairn_x_total{a=\"b\"} 3\n# HELP cairn_g A gauge.\n# TYPE cairn_g gauge\ncairn_g 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP cairn_x_total Things.\n# TYPE cairn_x_total counter\ncairn_x_total{a=\"b\"} 3\n# HELP cairn_g A gauge.\n# TYPE cairn_g gauge\ncairn_g 1\n"
        );
    }

    #[test]
    fn traffic_counts_routed_requests_per_deployment() {
        let m = Metrics::new();
        let to = |seq: &str| DeploymentLabels {
            project: "p".into(),
            app: "web".into(),
            workspace: "default".into(),
            deployment: seq.into(),
        };
        for _ in 0..3 {
            m.ingress(Some(to("v1")), 200, Duration::from_millis(1));
        }
        m.ingress(Some(to("v2")), 502, Duration::from_millis(1));
        m.ingress(Some(to("")), 404, Duration::from_millis(1));
        m.ingress(None, 404, Duration::from_millis(1));
        let t = m.traffic("p", "web", "default");
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![(1, 3), (2, 1)]);
        assert!(m.traffic("p", "api", "default").is_empty());
    }
}
