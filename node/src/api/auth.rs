//! Who may do what: one table, checked before any request is served, whatever transport
//! brought it (QUIC or HTTP).

use cairn_protocol::api::ClientRequest;
use cairn_protocol::types::TokenScope;

use super::ApiError;

/// What a request does, as far as permission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The node's identity and version (any authenticated caller).
    ServerInfo,
    /// Exchange the one-time bootstrap token for the first user token.
    ExchangeBootstrap,
    /// Join a new node to the cluster.
    JoinCluster,
    /// Read what the cluster records: projects, apps, operations, jobs, runners, config,
    /// hostnames, members.
    Read,
    /// List the instances connected to the cluster.
    ListInstances,
    /// Queue a job.
    QueueJob,
    /// Cancel a job.
    CancelJob,
    /// Follow a job's events.
    AttachJob,
    /// Be a runner: register, record operations and their resources.
    RunJobs,
    /// Set or delete config variables.
    WriteConfig,
    /// Create a token; `entrypoint`: for one deployment's entrypoint.
    CreateToken { entrypoint: bool },
    /// Finish an upgrade, remove a member.
    ManageCluster,
    /// Watch an upgrade's progress.
    UpgradeStatus,
    /// Save a snapshot of the state (it holds the CA key).
    SnapshotSave,
    /// Register an instance (an entrypoint).
    RegisterInstance,
    /// Read instances' logs.
    Logs,
    /// Run a command in an instance.
    Exec,
    /// Register and delete custom hostnames.
    ManageHostnames,
    /// Remove apps and projects from the records.
    RemoveApps,
    /// Enroll a runner (a runner connection without a certificate yet).
    EnrollRunner,
    /// Mint runner tokens; adopt, reject and forget runners.
    ManageRunners,
}

impl Action {
    /// What a QUIC request does.
    pub fn of(req: &ClientRequest) -> Action {
        match req {
            ClientRequest::Idempotent { req, .. } => Action::of(req),
            ClientRequest::ServerInfo => Action::ServerInfo,
            ClientRequest::ExchangeBootstrap { .. } => Action::ExchangeBootstrap,
            ClientRequest::JoinCluster { .. } => Action::JoinCluster,
            ClientRequest::ListOperations { .. }
            | ClientRequest::ListRunners
            | ClientRequest::ListJobs { .. }
            | ClientRequest::InspectJob { .. }
            | ClientRequest::ListConfig { .. }
            | ClientRequest::ListHostnames
            | ClientRequest::Members => Action::Read,
            ClientRequest::ListInstances => Action::ListInstances,
            ClientRequest::QueueJob { .. } => Action::QueueJob,
            ClientRequest::CancelJob { .. } => Action::CancelJob,
            ClientRequest::AttachJob { .. } => Action::AttachJob,
            ClientRequest::RegisterRunner { .. }
            | ClientRequest::RegisterRunnerWith { .. }
            | ClientRequest::BeginOperation { .. }
            | ClientRequest::CompleteOperation(_)
            | ClientRequest::SetResourceState { .. } => Action::RunJobs,
            ClientRequest::SetConfig { .. } | ClientRequest::DeleteConfig { .. } => {
                Action::WriteConfig
            }
            ClientRequest::CreateToken { scope, .. } => Action::CreateToken {
                entrypoint: matches!(scope, TokenScope::Entrypoint { .. }),
            },
            ClientRequest::Upgrade { finish: true } | ClientRequest::RemoveMember { .. } => {
                Action::ManageCluster
            }
            ClientRequest::Upgrade { finish: false } => Action::UpgradeStatus,
            ClientRequest::SnapshotSave => Action::SnapshotSave,
            ClientRequest::RegisterInstance(_) => Action::RegisterInstance,
            ClientRequest::Logs(_) => Action::Logs,
            ClientRequest::Exec { .. } => Action::Exec,
            ClientRequest::RegisterHostname { .. } | ClientRequest::DeleteHostname { .. } => {
                Action::ManageHostnames
            }
            ClientRequest::RemoveApps { .. } => Action::RemoveApps,
            ClientRequest::EnrollRunner { .. } => Action::EnrollRunner,
            ClientRequest::CreateRunnerToken { .. } | ClientRequest::DecideRunner { .. } => {
                Action::ManageRunners
            }
            ClientRequest::InspectRunners { .. } => Action::Read,
            ClientRequest::UploadSource { .. } => Action::QueueJob,
            ClientRequest::FetchSource { .. } => Action::RunJobs,
        }
    }
}

/// How a token's holder is named in records (`requested_by`) and logs: `user:NAME`…
pub fn principal_name(rec: &cairn_protocol::types::TokenRecord) -> String {
    match &rec.scope {
        TokenScope::Bootstrap => "bootstrap".to_string(),
        TokenScope::User => format!("user:{}", rec.name),
        TokenScope::Runner => format!("runner:{}", rec.name),
        TokenScope::Entrypoint { app, deployment } => format!("entrypoint:{app}/v{deployment}"),
        TokenScope::Join => format!("join:{}", rec.name),
    }
}

/// The name of a QUIC request's kind (metrics and tracing).
pub fn request_name(req: &ClientRequest) -> &'static str {
    match req {
        ClientRequest::Idempotent { req, .. } => request_name(req),
        ClientRequest::ServerInfo => "ServerInfo",
        ClientRequest::ExchangeBootstrap { .. } => "ExchangeBootstrap",
        ClientRequest::JoinCluster { .. } => "JoinCluster",
        ClientRequest::ListOperations { .. } => "ListOperations",
        ClientRequest::ListRunners => "ListRunners",
        ClientRequest::ListJobs { .. } => "ListJobs",
        ClientRequest::InspectJob { .. } => "InspectJob",
        ClientRequest::ListConfig { .. } => "ListConfig",
        ClientRequest::ListHostnames => "ListHostnames",
        ClientRequest::Members => "Members",
        ClientRequest::ListInstances => "ListInstances",
        ClientRequest::QueueJob { .. } => "QueueJob",
        ClientRequest::CancelJob { .. } => "CancelJob",
        ClientRequest::AttachJob { .. } => "AttachJob",
        ClientRequest::RegisterRunner { .. } => "RegisterRunner",
        ClientRequest::RegisterRunnerWith { .. } => "RegisterRunnerWith",
        ClientRequest::BeginOperation { .. } => "BeginOperation",
        ClientRequest::CompleteOperation(_) => "CompleteOperation",
        ClientRequest::SetResourceState { .. } => "SetResourceState",
        ClientRequest::SetConfig { .. } => "SetConfig",
        ClientRequest::DeleteConfig { .. } => "DeleteConfig",
        ClientRequest::CreateToken { .. } => "CreateToken",
        ClientRequest::Upgrade { .. } => "Upgrade",
        ClientRequest::RemoveMember { .. } => "RemoveMember",
        ClientRequest::SnapshotSave => "SnapshotSave",
        ClientRequest::RegisterInstance(_) => "RegisterInstance",
        ClientRequest::Logs(_) => "Logs",
        ClientRequest::Exec { .. } => "Exec",
        ClientRequest::RegisterHostname { .. } => "RegisterHostname",
        ClientRequest::DeleteHostname { .. } => "DeleteHostname",
        ClientRequest::RemoveApps { .. } => "RemoveApps",
        ClientRequest::CreateRunnerToken { .. } => "CreateRunnerToken",
        ClientRequest::EnrollRunner { .. } => "EnrollRunner",
        ClientRequest::DecideRunner { .. } => "DecideRunner",
        ClientRequest::InspectRunners { .. } => "InspectRunners",
        ClientRequest::UploadSource { .. } => "UploadSource",
        ClientRequest::FetchSource { .. } => "FetchSource",
    }
}

/// Whether a token of `scope` may do `action`: `Ok`, or the refusal saying why.
///
/// - The bootstrap token is exchanged for a user token, and nothing else.
/// - A join token joins a node, and nothing else.
/// - An entrypoint token registers its instance (and receives its config), and nothing
///   else.
/// - A runner token runs jobs and reads and writes what jobs need (it mints its
///   deployments' entrypoint tokens); it cannot read logs, exec, manage hostnames,
///   members or tokens, remove apps or save snapshots.
/// - A user token does everything but the three single-purpose actions above.
pub fn check(scope: &TokenScope, action: Action) -> Result<(), ApiError> {
    use Action as A;
    let refuse = |why: &str| Err(ApiError::refused(why));
    match (scope, action) {
        (_, A::ServerInfo) => Ok(()),
        (TokenScope::Bootstrap, A::ExchangeBootstrap) => Ok(()),
        (_, A::ExchangeBootstrap) => {
            refuse("only a connection made with the bootstrap token can exchange it")
        }
        (TokenScope::Bootstrap, _) => {
            refuse("the bootstrap token can only be exchanged for a user token")
        }
        (TokenScope::Join, A::JoinCluster) => Ok(()),
        (_, A::JoinCluster) => refuse("joining needs a join token (`cairn server join-token`)"),
        (TokenScope::Join, _) => refuse("a join token can only be used to join a node to the cluster"),
        (TokenScope::Runner, A::EnrollRunner) => Ok(()),
        (_, A::EnrollRunner) => refuse(
            "only a runner connection (`cairn runner agent`) enrolls a runner",
        ),
        (TokenScope::Entrypoint { .. }, A::RegisterInstance) => Ok(()),
        (_, A::RegisterInstance) => refuse("only an entrypoint token registers an instance"),
        (TokenScope::Entrypoint { .. }, _) => refuse(
            "an entrypoint token can only register an instance of its own deployment and receive that deployment's configuration",
        ),
        (TokenScope::User, _) => Ok(()),
        (TokenScope::Runner, a) => match a {
            A::Read
            | A::ListInstances
            | A::QueueJob
            | A::CancelJob
            | A::AttachJob
            | A::RunJobs
            | A::WriteConfig
            | A::UpgradeStatus
            | A::CreateToken { entrypoint: true } => Ok(()),
            A::CreateToken { entrypoint: false } => refuse(
                "only a user token can create tokens (and runner tokens entrypoint tokens)",
            ),
            A::Logs | A::Exec => refuse("logs and exec need a user token"),
            A::ManageHostnames => refuse("hostnames are managed with a user token"),
            A::RemoveApps => refuse("apps and projects are removed with a user token"),
            A::ManageCluster => {
                refuse("only a user token can finish an upgrade or remove members")
            }
            A::SnapshotSave => refuse("only a user token can save a snapshot"),
            A::ManageRunners => refuse(
                "runner tokens are minted, and runners adopted, rejected and forgotten, with a user token",
            ),
            A::ServerInfo
            | A::ExchangeBootstrap
            | A::JoinCluster
            | A::RegisterInstance
            | A::EnrollRunner => {
                unreachable!("matched above")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 22] = [
        Action::ServerInfo,
        Action::ExchangeBootstrap,
        Action::JoinCluster,
        Action::Read,
        Action::ListInstances,
        Action::QueueJob,
        Action::CancelJob,
        Action::AttachJob,
        Action::RunJobs,
        Action::WriteConfig,
        Action::CreateToken { entrypoint: true },
        Action::CreateToken { entrypoint: false },
        Action::ManageCluster,
        Action::UpgradeStatus,
        Action::SnapshotSave,
        Action::RegisterInstance,
        Action::Logs,
        Action::Exec,
        Action::ManageHostnames,
        Action::RemoveApps,
        Action::EnrollRunner,
        Action::ManageRunners,
    ];

    fn allowed(scope: &TokenScope) -> Vec<Action> {
        ALL.iter()
            .copied()
            .filter(|a| check(scope, *a).is_ok())
            .collect()
    }

    #[test]
    fn single_purpose_tokens_do_their_one_thing() {
        assert_eq!(
            allowed(&TokenScope::Bootstrap),
            vec![Action::ServerInfo, Action::ExchangeBootstrap]
        );
        assert_eq!(
            allowed(&TokenScope::Join),
            vec![Action::ServerInfo, Action::JoinCluster]
        );
        let ep = TokenScope::Entrypoint {
            app: "p/a".into(),
            deployment: 1,
        };
        assert_eq!(
            allowed(&ep),
            vec![Action::ServerInfo, Action::RegisterInstance]
        );
        let e = check(&ep, Action::Read).expect_err("refused");
        assert_eq!(e.kind, super::super::ErrorKind::Refused);
    }

    #[test]
    fn users_do_all_but_the_single_purpose_actions_and_runners_less() {
        let user = allowed(&TokenScope::User);
        for a in [
            Action::ExchangeBootstrap,
            Action::JoinCluster,
            Action::RegisterInstance,
            Action::EnrollRunner,
        ] {
            assert!(!user.contains(&a), "{a:?}");
        }
        assert_eq!(user.len(), ALL.len() - 4);
        let runner = allowed(&TokenScope::Runner);
        for a in [
            Action::Logs,
            Action::Exec,
            Action::ManageHostnames,
            Action::RemoveApps,
            Action::ManageCluster,
            Action::SnapshotSave,
            Action::CreateToken { entrypoint: false },
            Action::ManageRunners,
        ] {
            assert!(!runner.contains(&a), "{a:?}");
        }
        assert!(runner.contains(&Action::CreateToken { entrypoint: true }));
        assert!(runner.contains(&Action::RunJobs));
    }

    #[test]
    fn every_quic_request_has_its_action() {
        use cairn_protocol::api::ClientRequest as R;
        assert_eq!(Action::of(&R::ListHostnames), Action::Read);
        assert_eq!(
            Action::of(&R::Upgrade { finish: true }),
            Action::ManageCluster
        );
        assert_eq!(
            Action::of(&R::Idempotent {
                client: 1,
                request: 2,
                req: Box::new(R::CancelJob { id: 3 })
            }),
            Action::CancelJob
        );
    }
}
