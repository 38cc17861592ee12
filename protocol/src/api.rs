//! Messages, grouped by service. One bidirectional stream per RPC: the
//! caller writes one request frame; the node answers with one response frame,
//! or with a stream of frames for streaming calls (`AttachJob`,
//! `RegisterRunner`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::{DeploymentRef, ExecSpec, LogEntry, LogsQuery};
use crate::types::{
    ConfigScope, ConfigVar, Hostname, Instance, Job, JobId, JobSpec, JobState, OpCompletion, OpId,
    OpKind, Operation, Removed, ResourceState, Runner, RunnerKind, Stream, TokenScope,
};

/// Requests a CLI (or a runner on the CLI's connection) sends to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientRequest {
    // -- server service --
    ServerInfo,
    /// Only on a connection authenticated with the one-time bootstrap token:
    /// consumes it and returns the first user token.
    ExchangeBootstrap {
        name: String,
    },

    // -- catalog service --
    ListOperations {
        kind: OpKind,
        project: Option<String>,
        app: Option<String>,
    },
    ListRunners,

    // -- job service --
    QueueJob {
        spec: JobSpec,
    },
    ListJobs {
        limit: u32,
    },
    InspectJob {
        id: JobId,
    },
    CancelJob {
        id: JobId,
    },
    /// Streaming: answered by `JobEvent` frames, history first, ending with
    /// `JobEvent::Finished`.
    AttachJob {
        id: JobId,
    },

    // -- runner service --
    /// Streaming: the node answers `Registered`, then keeps the stream open;
    /// the registration lasts while the stream (and connection) lives. Job
    /// offers arrive on new streams the node opens on this connection.
    RegisterRunner {
        id: String,
        kind: RunnerKind,
        labels: BTreeMap<String, String>,
    },
    BeginOperation {
        job_id: JobId,
        kind: OpKind,
        plugin: String,
        input_seq: Option<u64>,
    },
    CompleteOperation(OpCompletion),
    SetResourceState {
        op_id: OpId,
        state: ResourceState,
    },

    // -- config service --
    SetConfig {
        var: ConfigVar,
    },
    DeleteConfig {
        scope: ConfigScope,
        name: String,
    },
    /// Linearizable read of the variables in `scope` (all scopes if `None`).
    ListConfig {
        scope: Option<ConfigScope>,
    },

    // -- cluster service --
    /// Mint a token (users only). `ttl_s`: lifetime in seconds; `None` takes
    /// the scope's default (join tokens expire, user tokens do not).
    CreateToken {
        scope: TokenScope,
        name: String,
        ttl_s: Option<u64>,
    },
    /// Only on a connection authenticated with a join token: the cluster CA
    /// signs `csr` for node `node_id`, whose peer address is `peer_addr`.
    /// Answered by `Joined`. The node then adds itself over the peer ALPN.
    JoinCluster {
        csr: String,
        node_id: u64,
        peer_addr: String,
    },
    /// The members as the leader sees them.
    Members,
    /// Take a node out of the cluster (voter or learner).
    RemoveMember {
        id: u64,
    },

    // -- any service --
    /// A write the client may retry (see [`ClientRequest::is_retryable_write`]),
    /// tagged with the client's id and a request id unique for that client.
    /// The cluster applies it at most once: a retry whose first answer was
    /// lost gets the first answer. Build with [`ClientRequest::idempotent`].
    Idempotent {
        client: u64,
        request: u64,
        req: Box<ClientRequest>,
    },

    // -- server service --
    /// A consistent copy of the replicated state (users only), read at the
    /// leader's read index. Streaming: answered by `SnapshotChunk` frames
    /// (each under `frame::MAX_FRAME_SIZE`), the last with `last: true`; the
    /// concatenated bytes are a snapshot file: the magic `CAIRNSNP`, a format
    /// version (u32 LE), then the bincode of the node's state. See
    /// [`crate::rpc::snapshot_save`].
    SnapshotSave,

    // -- entrypoint service (ALPN `cairn-entrypoint`, entrypoint tokens) --
    /// Streaming: registers one app instance of the token's deployment. The
    /// node answers `InstanceRegistered { env }` (the deployment's resolved
    /// configuration), then writes `Env { env }` whenever that configuration
    /// changes. The instance stays connected while the stream (and its
    /// connection) lives.
    RegisterInstance(EntrypointHello),

    // -- catalog service --
    /// The app instances the cluster knows (connected or recently gone).
    ListInstances,

    // -- instance service (users) --
    /// Streaming: the log lines of a deployment's instances, gathered from
    /// every node that holds some. Answered by `LogLines` frames (history
    /// first, oldest first); without `follow` the last frame is `LogsEnd`.
    Logs(LogsQuery),
    /// Streaming: run a command in an instance of a deployment (any
    /// connected one unless `instance` names one, by id or unique prefix).
    /// Answered by `ExecOpened` or `Error`; then the stream carries
    /// `ExecInput` frames from the client and `ExecOutput` frames back (see
    /// [`crate::instance`]).
    Exec {
        target: DeploymentRef,
        instance: Option<String>,
        spec: ExecSpec,
    },

    // -- hostname service (users) --
    /// Serve `target` (its release, or deployment `target.sequence`) at the
    /// custom host name `name` too. Answered `Ok`.
    RegisterHostname {
        name: String,
        target: DeploymentRef,
    },
    DeleteHostname {
        name: String,
    },
    /// Answered `Hostnames`.
    ListHostnames,
    /// Remove an app (`app: Some`) or a whole project (`None`) from the
    /// cluster's records: operations, jobs, instances, routes, hostnames and
    /// config scoped to it. Refused while any of its deployments is still
    /// active or any of its jobs unfinished. Answered `Removed`. (Appended
    /// last: the other requests keep their bincode indices.)
    RemoveApps {
        project: String,
        app: Option<String>,
    },
    /// Protocol 5: the members' releases and the cluster version (answered
    /// `Upgrade`). With `finish`, end the rollback window of an upgrade now:
    /// the cluster moves to the highest version every voter speaks (users
    /// only; refused, naming them, while a voter runs an older release).
    Upgrade {
        finish: bool,
    },

    // -- runner identity (protocol 5, issue 19) --
    /// Mint a runner token (users only): it can do nothing but enroll
    /// runners, which it adopts at once and gives `labels`. Answered `Token`.
    CreateRunnerToken {
        name: String,
        labels: BTreeMap<String, String>,
        ttl_s: Option<u64>,
    },
    /// On a runner connection without a certificate: enroll runner `id`
    /// with the key of `csr`. With a runner token, or once a user adopted
    /// it, answered `RunnerEnrolled` (the certificate the cluster CA signed
    /// for it); else `RunnerPending`. The same id and key may ask again
    /// (that is how a pending runner learns it was adopted).
    EnrollRunner {
        id: String,
        csr: String,
        labels: BTreeMap<String, String>,
    },
    /// Adopt, reject or forget an enrolled runner (users only). Answered `Ok`.
    DecideRunner {
        id: String,
        decision: RunnerDecision,
    },
    /// The enrolled runners with what the cluster knows of them (answered
    /// `RunnerDetails`); `id`: only that one.
    InspectRunners {
        id: Option<String>,
    },

    // -- sources (protocol 5, issue 19) --
    /// Upload a job's source tarball, named by its content. Answered
    /// `SourceStored { already: true }` when the cluster holds it already
    /// (send nothing more), else `SourceReady`: then the caller writes the
    /// `size` bytes raw and finishes its side, and the node answers
    /// `SourceStored { already: false }` once they are checked and kept.
    UploadSource {
        digest: String,
        size: u64,
    },
    /// Fetch a source (a runner, for a job of its): answered `SourceFound
    /// { size }`, then the bytes raw until the node finishes the stream.
    FetchSource {
        digest: String,
    },

    // -- runners (protocol 5, issue 19) --
    /// `RegisterRunner`, saying how many jobs the runner takes at once and
    /// which jobs it carries back from another node (the leader resumes
    /// their streams on this connection).
    RegisterRunnerWith {
        id: String,
        kind: RunnerKind,
        labels: BTreeMap<String, String>,
        status: RunnerStatus,
    },
}

/// What a user decides about an enrolled runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerDecision {
    /// It may run jobs: its next enrollment request gets its certificate.
    Adopt,
    /// It is refused, now and whenever it asks again, until forgotten.
    Reject,
    /// Its record is deleted: its certificate is refused at once on every
    /// node; it may enroll again (and wait for adoption) with a new key.
    Forget,
}

impl ClientRequest {
    /// The protocol version that brought this request: a connection that
    /// speaks an older one must not send it (the node could not decode it).
    pub fn since_version(&self) -> u32 {
        match self {
            ClientRequest::Upgrade { .. }
            | ClientRequest::CreateRunnerToken { .. }
            | ClientRequest::EnrollRunner { .. }
            | ClientRequest::DecideRunner { .. }
            | ClientRequest::InspectRunners { .. }
            | ClientRequest::UploadSource { .. }
            | ClientRequest::FetchSource { .. }
            | ClientRequest::RegisterRunnerWith { .. } => 5,
            ClientRequest::QueueJob { spec } => spec.since_version(),
            ClientRequest::Idempotent { req, .. } => req.since_version(),
            _ => 4,
        }
    }
}

/// What an entrypoint says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrypointHello {
    /// The deployment operation's id (must be the token's).
    pub deployment_id: OpId,
    /// Random, chosen once per entrypoint process: kept across reconnects.
    pub instance_id: String,
    pub pid: u32,
    pub started_ms: u64,
}

/// Longest `EntrypointHello::instance_id` accepted.
pub const MAX_INSTANCE_ID: usize = 128;

impl ClientRequest {
    /// Wrap this write so that retrying it (same `client` and `request`) is
    /// safe. `client`: random per client process; `request`: never reused by
    /// that client.
    pub fn idempotent(self, client: u64, request: u64) -> ClientRequest {
        ClientRequest::Idempotent {
            client,
            request,
            req: Box::new(self),
        }
    }

    /// Requests that change nothing, so sending one again is harmless.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            ClientRequest::ServerInfo
                | ClientRequest::ListOperations { .. }
                | ClientRequest::ListRunners
                | ClientRequest::ListJobs { .. }
                | ClientRequest::InspectJob { .. }
                | ClientRequest::ListConfig { .. }
                | ClientRequest::Members
                | ClientRequest::ListInstances
                | ClientRequest::ListHostnames
                | ClientRequest::Upgrade { finish: false }
                | ClientRequest::InspectRunners { .. }
        )
    }

    /// This request as a client that may send it again sends it: a
    /// retryable write wrapped as idempotent with (`client`, `request`),
    /// anything else as it is; and whether sending it again is safe (a read,
    /// or an idempotent write).
    pub fn for_resending(self, client: u64, request: u64) -> (ClientRequest, bool) {
        let req = if self.is_retryable_write() {
            self.idempotent(client, request)
        } else {
            self
        };
        let safe = matches!(req, ClientRequest::Idempotent { .. }) || req.is_read();
        (req, safe)
    }

    /// Writes that are one state-machine command each, and so may be sent
    /// as [`ClientRequest::Idempotent`].
    pub fn is_retryable_write(&self) -> bool {
        matches!(
            self,
            ClientRequest::QueueJob { .. }
                | ClientRequest::CancelJob { .. }
                | ClientRequest::BeginOperation { .. }
                | ClientRequest::CompleteOperation(_)
                | ClientRequest::SetResourceState { .. }
                | ClientRequest::SetConfig { .. }
                | ClientRequest::DeleteConfig { .. }
                | ClientRequest::CreateToken { .. }
                | ClientRequest::RegisterHostname { .. }
                | ClientRequest::DeleteHostname { .. }
                | ClientRequest::RemoveApps { .. }
                | ClientRequest::CreateRunnerToken { .. }
                | ClientRequest::DecideRunner { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    Ok,
    Error {
        message: String,
    },
    ServerInfo(Box<ServerInfo>),
    Token {
        token: String,
    },
    Operations(Vec<Operation>),
    Runners(Vec<Runner>),
    JobQueued {
        id: JobId,
    },
    Jobs(Vec<Job>),
    Job(Box<Job>),
    Registered,
    OperationStarted {
        id: OpId,
        sequence: u64,
    },
    Config(Vec<ConfigVar>),
    Joined(Box<JoinGrant>),
    Members(Vec<MemberInfo>),
    /// One piece of a `SnapshotSave` answer.
    SnapshotChunk {
        data: Vec<u8>,
        last: bool,
    },
    /// First answer to `RegisterInstance`: the resolved environment, and
    /// the addresses of the cluster's members (where to reconnect).
    InstanceRegistered {
        env: BTreeMap<String, String>,
        members: Vec<String>,
    },
    /// Pushed on a `RegisterInstance` stream: the configuration changed.
    Env {
        env: BTreeMap<String, String>,
    },
    Instances(Vec<Instance>),
    /// Lines of a `Logs` answer.
    LogLines(Vec<LogEntry>),
    /// The end of a `Logs` answer without `follow`. `unavailable`: the
    /// nodes whose lines could not be had (down or unreachable), one reason
    /// each.
    LogsEnd {
        unavailable: Vec<String>,
    },
    Hostnames(Vec<Hostname>),
    /// The exec session is open on `instance` (connected to `node`); exec
    /// frames follow.
    ExecOpened {
        instance: String,
        node: u64,
    },
    /// This node could not serve the request for want of a reachable leader
    /// (it is cut off from the majority, or no leader answered in time), and
    /// nothing was done that asking another member could repeat: the
    /// request was a read or an idempotent write, or it never reached a
    /// leader. The client may send the same request to another member.
    Unavailable {
        message: String,
    },
    /// What `RemoveApps` removed.
    Removed(Removed),
    /// Answer to `Upgrade` (protocol 5).
    Upgrade(UpgradeStatus),
    /// Answer to `EnrollRunner`: the runner's certificate (PEM), signed by
    /// the cluster CA for the common name `runner:ID`.
    RunnerEnrolled {
        cert_pem: String,
    },
    /// Answer to `EnrollRunner`: the runner waits for a user to adopt it.
    RunnerPending {
        message: String,
    },
    /// Answer to `InspectRunners`.
    RunnerDetails(Vec<crate::types::RunnerDetails>),
    /// Answer to `UploadSource`: send the bytes.
    SourceReady,
    /// Answer to `UploadSource`: the cluster holds the source
    /// (`already`: it did before this upload).
    SourceStored {
        already: bool,
    },
    /// Answer to `FetchSource`: `size` bytes follow, raw.
    SourceFound {
        size: u64,
    },
}

/// What one member runs, as the answering node learnt it from its last
/// handshake with that member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRelease {
    pub id: u64,
    /// e.g. "0.2.0"; `None` when the answering node has not spoken with it.
    pub release: Option<String>,
    pub versions: Option<crate::handshake::Versions>,
    /// How long ago that handshake was.
    pub learnt_ms_ago: Option<u64>,
}

/// The state of an upgrade, as the leader sees it (`cairn server upgrade`,
/// `cairn server members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    pub members: Vec<MemberInfo>,
    pub releases: Vec<MemberRelease>,
    /// The protocol version the cluster uses (what every voter speaks, as
    /// recorded in the replicated state).
    pub cluster_version: u32,
    /// The highest version every voter speaks now: what the cluster moves
    /// to when the upgrade finishes.
    pub next_version: Option<u32>,
    /// When the cluster moves there by itself (the rollback window), if
    /// every voter is up and speaks it.
    pub finishes_in_ms: Option<u64>,
    /// For how long the voters have run different releases, if they do.
    pub mixed_for_ms: Option<u64>,
    /// From how long of mixed releases on members warns.
    pub mixed_warn_after_ms: u64,
    /// Which node answered (the leader, or the node asked when the leader
    /// runs a release without this request).
    pub answered_by: u64,
}

/// Largest `SnapshotChunk::data`: well under `frame::MAX_FRAME_SIZE`.
pub const SNAPSHOT_CHUNK: usize = 4 * 1024 * 1024;

/// What a joining node gets: its certificate and the cluster's CA and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGrant {
    pub cert_pem: String,
    pub ca_pem: String,
    /// (node id, peer address) of the current members.
    pub members: Vec<(u64, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRole {
    Voter,
    Learner,
}

/// One cluster member, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub addr: String,
    pub role: MemberRole,
    pub leader: bool,
    /// The highest log index known to be stored on this member (the
    /// leader's own last log index for itself); `None` if unknown.
    pub matched_index: Option<u64>,
    /// Milliseconds since the leader last heard from this member; `None` when
    /// unknown (openraft 0.9 reports it only for the quorum as a whole).
    pub last_contact_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub node_id: u64,
    pub version: String,
    pub protocol: u32,
    pub ca_fingerprint: String,
    pub leader: Option<u64>,
    pub members: Vec<(u64, String)>,
    /// This node's own Raft log and snapshot positions (no round trip: a
    /// follower may lag).
    pub raft: RaftProgress,
    /// This node's URL-service ingress, if it serves one.
    pub ingress: Option<IngressInfo>,
}

/// Where a node's URL-service ingress answers, and for which domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressInfo {
    /// `http` or `https`.
    pub scheme: String,
    /// The address it listens on (`ip:port`).
    pub addr: String,
    /// Apps answer at `APP.DOMAIN`, deployments at `APP--vN.DOMAIN`.
    pub domain: String,
}

impl IngressInfo {
    /// `SCHEME://HOST[:PORT]/`, without the port when it is the scheme's
    /// default.
    pub fn url(&self, host: &str) -> String {
        let port = self
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok());
        match (self.scheme.as_str(), port) {
            ("http", Some(80)) | ("https", Some(443)) | (_, None) => {
                format!("{}://{host}/", self.scheme)
            }
            (_, Some(p)) => format!("{}://{host}:{p}/", self.scheme),
        }
    }

    /// The URL of an app's release.
    pub fn release_url(&self, app: &str) -> String {
        self.url(&format!("{}.{}", app.to_ascii_lowercase(), self.domain))
    }

    /// The release URL of an app in `workspace`: `APP.DOMAIN` in the default one,
    /// `APP.WORKSPACE.DOMAIN` in another.
    pub fn release_url_in(&self, app: &str, workspace: &str) -> String {
        if workspace == crate::types::DEFAULT_WORKSPACE {
            return self.release_url(app);
        }
        self.url(&format!(
            "{}.{}.{}",
            app.to_ascii_lowercase(),
            workspace.to_ascii_lowercase(),
            self.domain
        ))
    }

    /// The URL of deployment `sequence` of an app in `workspace` (see [`Self::release_url_in`]).
    pub fn deployment_url_in(&self, app: &str, workspace: &str, sequence: u64) -> String {
        if workspace == crate::types::DEFAULT_WORKSPACE {
            return self.deployment_url(app, sequence);
        }
        self.url(&format!(
            "{}--v{sequence}.{}.{}",
            app.to_ascii_lowercase(),
            workspace.to_ascii_lowercase(),
            self.domain
        ))
    }

    /// The URL of deployment `sequence` of an app.
    pub fn deployment_url(&self, app: &str, sequence: u64) -> String {
        self.url(&format!(
            "{}--v{sequence}.{}",
            app.to_ascii_lowercase(),
            self.domain
        ))
    }
}

/// Where one node's Raft log, state machine and snapshot are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftProgress {
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Last log index included in the node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index purged from the node's log (it is in the snapshot).
    pub purged_index: Option<u64>,
    /// Snapshots the node received from a leader and installed since it
    /// started (a follower that fell behind the leader's purged log).
    pub snapshots_installed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    Started,
    Succeeded,
    Failed,
    Skipped,
}

/// What happens during a job, as the CLI renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    State {
        state: JobState,
        runner: Option<String>,
    },
    Step {
        step: u32,
        name: String,
        status: StepStatus,
        detail: Option<String>,
    },
    Output {
        step: u32,
        stream: Stream,
        line: String,
    },
    /// An operation was recorded (or completed).
    Operation { op: Box<Operation> },
    /// Free-form result lines, e.g. ("Release URL", "http://…").
    Result { key: String, value: String },
    Finished {
        state: JobState,
        error: Option<String>,
    },
}

/// Frames the node writes on a job-offer stream it opened toward a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeToRunner {
    Offer {
        job: Box<Job>,
    },
    /// The node recorded the job as running: the runner may begin work.
    Started,
    Cancel,
    /// Protocol 5 (issue 19), sent only by the node the runner is connected
    /// to and only to a runner that speaks 5: `Started`, and the runner
    /// sends `Heartbeat` every `heartbeat_ms` until the job ends; a node
    /// that hears nothing from it for its lease fails the job ("runner lost").
    StartedWithLease {
        heartbeat_ms: u64,
    },
    /// Protocol 5: the runner's job stream is open again, on a new stream
    /// (its old one broke: its node died or it moved to another). The
    /// runner answers `Accept` if it still holds `job` (then sends again
    /// every event from the `received`-th on, as the node got `received` of
    /// them, and carries on) or `Decline` if it does not.
    Resume {
        job: JobId,
        received: u64,
    },
}

/// Protocol 5: what a runner says of itself when it registers
/// (`RegisterRunnerWith`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerStatus {
    /// How many jobs it takes at once (at least 1).
    pub capacity: u32,
    /// Jobs it is still running whose streams broke (it moved from another
    /// node): the leader resumes them on this connection.
    pub carrying: Vec<JobId>,
}

/// Most jobs a runner may take at once.
pub const MAX_RUNNER_CAPACITY: u32 = 64;

/// Frames a runner writes back on a job-offer stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunnerToNode {
    Accept,
    Decline {
        reason: String,
    },
    Event(JobEvent),
    Done {
        state: JobState,
        error: Option<String>,
    },
    /// Protocol 5: the runner holds its job (see `StartedWithLease`). Never
    /// passed to another node.
    Heartbeat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn writes_are_resent_as_idempotent_and_reads_as_they_are() {
        let write = ClientRequest::CancelJob { id: 3 };
        let (sent, safe) = write.clone().for_resending(7, 9);
        assert!(safe);
        assert_eq!(sent, write.idempotent(7, 9));
        let (sent, safe) = ClientRequest::ServerInfo.for_resending(7, 10);
        assert!(safe);
        assert_eq!(sent, ClientRequest::ServerInfo);
        // A streaming request is neither: sent once, as it is.
        let attach = ClientRequest::AttachJob { id: 3 };
        let (sent, safe) = attach.clone().for_resending(7, 11);
        assert!(!safe);
        assert_eq!(sent, attach);
    }

    /// Wire compatibility with the previous release: `Unavailable` was
    /// appended, so every answer that release knows keeps its encoding (a
    /// bincode variant index is its position), and the new answer takes the
    /// next index. Golden bytes of the frame bodies as that release wrote
    /// them.
    #[test]
    fn answers_keep_their_encoding_and_unavailable_comes_last() {
        let hex = |r: &ClientResponse| {
            frame::encode_body(r)
                .expect("encode")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(hex(&ClientResponse::Ok), "00");
        assert_eq!(
            hex(&ClientResponse::Error {
                message: "no".into()
            }),
            "01026e6f"
        );
        let opened = hex(&ClientResponse::ExecOpened {
            instance: "i".into(),
            node: 7,
        });
        let unavailable = hex(&ClientResponse::Unavailable {
            message: "no".into(),
        });
        // ExecOpened was the last of the previous release's 22 answers.
        assert_eq!(opened, "15016907");
        assert_eq!(unavailable, "16026e6f");
        // And both ways: the new node's old answers decode as before.
        let back: ClientResponse = frame::decode_body(&[1, 2, b'n', b'o']).expect("decode");
        assert_eq!(
            back,
            ClientResponse::Error {
                message: "no".into()
            }
        );
    }
}
