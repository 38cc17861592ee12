//! Real QUIC against an in-process node: entrypoints register instances of
//! their own deployment, get its configuration and its changes, are tracked
//! in the replicated state, and can do nothing else.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_node::state::{Command, Response};
use cairn_protocol::api::{ClientRequest, ClientResponse, EntrypointHello};
use cairn_protocol::frame;
use cairn_protocol::handshake::Role;
use cairn_protocol::instance::{DeploymentRef, ExecSpec, LogsQuery};
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial, RpcError, Session};
use cairn_protocol::types::{
    ConfigScope, ConfigVar, InstanceState, JobSpec, OpId, OpKind, TokenScope, DEFAULT_WORKSPACE,
};

use common::eventually;

struct Fixture {
    node: cairn_node::Node,
    user: Session,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cairn_node::NodeConfig::new(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    let node = cairn_node::start(cfg).await.expect("node starts");
    let boot = node.bootstrap_token.clone().expect("bootstrap token");
    let token = common::user_token(node.addr, &node.ca_fingerprint, &boot).await;
    let user = common::connect(node.addr, &node.ca_fingerprint, &token)
        .await
        .expect("user connects");
    Fixture {
        node,
        user,
        _dir: dir,
    }
}

impl Fixture {
    /// Record a deployment of `project/app` as a runner would; its op id.
    async fn deployment(&self, project: &str, app: &str) -> OpId {
        let ctx = &self.node.ctx;
        let mut spec = JobSpec::example();
        spec.project = project.into();
        spec.app = app.into();
        let Ok(Response::JobCreated(job)) = ctx
            .write(Command::CreateJob {
                spec,
                requested_by: "user:test".into(),
            })
            .await
        else {
            panic!("no job")
        };
        // The scheduler may have assigned it already (no runner: it cannot).
        ctx.write(Command::AssignJob {
            id: job,
            runner: "r-test".into(),
        })
        .await
        .expect("assign");
        ctx.write(Command::StartJob { id: job })
            .await
            .expect("start");
        match ctx
            .write(Command::BeginOperation {
                job_id: job,
                kind: OpKind::Deployment,
                plugin: "process".into(),
                input_seq: None,
            })
            .await
        {
            Ok(Response::OperationStarted { id, .. }) => id,
            other => panic!("no deployment: {other:?}"),
        }
    }

    async fn mint(&self, app: &str, deployment: OpId) -> Result<String, RpcError> {
        let req = ClientRequest::CreateToken {
            scope: TokenScope::Entrypoint {
                app: app.into(),
                deployment,
            },
            name: "ep".into(),
            ttl_s: None,
        };
        match rpc::call(&self.user.conn, &req).await? {
            ClientResponse::Token { token } => Ok(token),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn connect(&self, role: Role, token: &str) -> Result<Session, RpcError> {
        rpc::connect(&Dial {
            addr: self.node.addr.to_string(),
            ca_fingerprint: self.node.ca_fingerprint.clone(),
            identity: None,
            role,
            token: token.into(),
            agent: "entrypoint-test".into(),
            limits: TransportLimits::ENTRYPOINT,
        })
        .await
    }

    async fn set(&self, scope: ConfigScope, name: &str, value: &str) {
        let var = ConfigVar {
            scope,
            name: name.into(),
            value: value.into(),
            secret: false,
        };
        let r = common::call(&self.user, ClientRequest::SetConfig { var }).await;
        assert_eq!(r, ClientResponse::Ok);
    }

    async fn instances(&self) -> Vec<cairn_protocol::types::Instance> {
        match common::call(&self.user, ClientRequest::ListInstances).await {
            ClientResponse::Instances(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn hello(deployment_id: OpId, instance: &str) -> ClientRequest {
    ClientRequest::RegisterInstance(EntrypointHello {
        deployment_id,
        instance_id: instance.into(),
        pid: 4242,
        started_ms: 1,
    })
}

fn app_scope(project: &str, app: &str) -> ConfigScope {
    ConfigScope::App {
        project: project.into(),
        app: app.into(),
    }
}

async fn next_frame(recv: &mut quinn::RecvStream) -> ClientResponse {
    tokio::time::timeout(Duration::from_secs(10), frame::read_required(recv))
        .await
        .expect("a frame within 10 s")
        .expect("a frame")
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn an_instance_gets_its_config_and_its_changes_and_is_tracked() {
    let f = fixture().await;
    let dep = f.deployment("p", "web").await;
    let other = f.deployment("p", "api").await;
    f.set(ConfigScope::Project("p".into()), "SHARED", "1").await;
    f.set(app_scope("p", "web"), "GREETING", "hello").await;
    f.set(app_scope("p", "api"), "API_ONLY", "x").await;
    let token = f.mint("web", dep).await.expect("mint");
    let ep = f.connect(Role::Entrypoint, &token).await.expect("connects");
    assert_eq!(ep.principal, format!("entrypoint:web/v{dep}"));

    let (_send, mut recv) = rpc::open(&ep.conn, &hello(dep, "inst-1"))
        .await
        .expect("open");
    assert_eq!(
        next_frame(&mut recv).await,
        ClientResponse::InstanceRegistered {
            env: env(&[("GREETING", "hello"), ("SHARED", "1")]),
            members: vec![f.node.addr.to_string()],
        }
    );
    let listed = f.instances().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let i = &listed[0];
    assert_eq!(
        (i.id.as_str(), i.deployment, i.app.as_str(), i.pid, i.state),
        ("inst-1", dep, "web", 4242, InstanceState::Connected)
    );
    assert_eq!(i.node, f.node.ctx.identity.node_id);

    // Another app's change is not pushed; this app's is.
    f.set(app_scope("p", "api"), "API_ONLY", "y").await;
    f.set(app_scope("p", "web"), "GREETING", "bonjour").await;
    assert_eq!(
        next_frame(&mut recv).await,
        ClientResponse::Env {
            env: env(&[("GREETING", "bonjour"), ("SHARED", "1")])
        }
    );
    // A project-wide change reaches it too.
    f.set(ConfigScope::Project("p".into()), "SHARED", "2").await;
    assert_eq!(
        next_frame(&mut recv).await,
        ClientResponse::Env {
            env: env(&[("GREETING", "bonjour"), ("SHARED", "2")])
        }
    );
    let _ = other;

    // The connection drops: the instance is marked disconnected.
    ep.conn.close(0u32.into(), b"bye");
    let gone = eventually(
        "instance marked disconnected",
        Duration::from_secs(10),
        || async {
            let v = f.instances().await;
            v.into_iter()
                .find(|i| i.id == "inst-1" && i.state == InstanceState::Disconnected)
        },
    )
    .await;
    assert!(gone.last_seen_ms >= gone.since_ms);
    f.node.stop().await;
}

#[tokio::test]
async fn an_entrypoint_token_does_entrypoint_things_for_its_own_deployment_only() {
    let f = fixture().await;
    let dep = f.deployment("p", "web").await;
    let other = f.deployment("p", "api").await;
    f.set(app_scope("p", "api"), "API_SECRET", "s3cret").await;
    let token = f.mint("web", dep).await.expect("mint");
    let ep = f.connect(Role::Entrypoint, &token).await.expect("connects");

    let refused = |r: Result<ClientResponse, RpcError>, what: &str| match r {
        Err(RpcError::Remote(m)) => assert!(m.contains("entrypoint token"), "{what}: {m}"),
        other => panic!("{what} was not refused: {other:?}"),
    };
    let list_ops = ClientRequest::ListOperations {
        kind: OpKind::Deployment,
        project: None,
        app: None,
    };
    refused(rpc::call(&ep.conn, &list_ops).await, "list operations");
    let queue = ClientRequest::QueueJob {
        spec: JobSpec::example(),
    };
    refused(rpc::call(&ep.conn, &queue).await, "queue a job");
    // Wrapped as an idempotent write, too.
    refused(
        rpc::call(&ep.conn, &queue.clone().idempotent(1, 1)).await,
        "queue a job (idempotent)",
    );
    let read_other = ClientRequest::ListConfig {
        scope: Some(app_scope("p", "api")),
    };
    refused(
        rpc::call(&ep.conn, &read_other).await,
        "read another app's config",
    );
    refused(
        rpc::call(&ep.conn, &ClientRequest::ListInstances).await,
        "list instances",
    );
    let mint = ClientRequest::CreateToken {
        scope: TokenScope::Entrypoint {
            app: "api".into(),
            deployment: other,
        },
        name: "x".into(),
        ttl_s: None,
    };
    refused(rpc::call(&ep.conn, &mint).await, "mint a token");
    // No exec session, on another deployment or its own, and no logs.
    for sequence in [None, Some(1)] {
        for app in ["api", "web"] {
            let target = DeploymentRef {
                project: "p".into(),
                app: app.into(),
                workspace: DEFAULT_WORKSPACE.into(),
                sequence,
            };
            let exec = ClientRequest::Exec {
                target: target.clone(),
                instance: None,
                spec: ExecSpec {
                    command: vec!["id".into()],
                    tty: None,
                    stdin: false,
                },
            };
            refused(rpc::call(&ep.conn, &exec).await, "open an exec session");
            let logs = ClientRequest::Logs(LogsQuery {
                target,
                instance: None,
                since_ms: None,
                tail: None,
                follow: false,
            });
            refused(rpc::call(&ep.conn, &logs).await, "read logs");
        }
    }

    // Registering as an instance of another deployment is refused.
    let (_s, mut recv) = rpc::open(&ep.conn, &hello(other, "inst-x"))
        .await
        .expect("open");
    match next_frame(&mut recv).await {
        ClientResponse::Error { message } => {
            assert!(message.contains("not deployment"), "{message}")
        }
        other => panic!("registered as another deployment: {other:?}"),
    }
    // Its own deployment works on the same connection.
    let (_s2, mut recv2) = rpc::open(&ep.conn, &hello(dep, "inst-ok"))
        .await
        .expect("open");
    assert!(matches!(
        next_frame(&mut recv2).await,
        ClientResponse::InstanceRegistered { .. }
    ));
    let ids: Vec<(OpId, String)> = f
        .instances()
        .await
        .into_iter()
        .map(|i| (i.deployment, i.id))
        .collect();
    assert_eq!(ids, vec![(dep, "inst-ok".to_string())]);

    // The entrypoint token does not open a client connection.
    match f.connect(Role::Client, &token).await {
        Err(RpcError::Refused(r)) => assert!(
            r.contains("an entrypoint token cannot be used for a client connection"),
            "{r}"
        ),
        other => panic!("entrypoint token opened a client connection: {other:?}"),
    }
    f.node.stop().await;
}

#[tokio::test]
async fn a_user_token_cannot_use_the_entrypoint_alpn_nor_register() {
    let f = fixture().await;
    let dep = f.deployment("p", "web").await;
    let boot_user = {
        let req = ClientRequest::CreateToken {
            scope: TokenScope::User,
            name: "u2".into(),
            ttl_s: None,
        };
        match common::call(&f.user, req).await {
            ClientResponse::Token { token } => token,
            other => panic!("{other:?}"),
        }
    };
    match f.connect(Role::Entrypoint, &boot_user).await {
        Err(RpcError::Refused(r)) => assert!(r.contains("cannot be used"), "{r}"),
        other => panic!("a user token opened an entrypoint connection: {other:?}"),
    }
    // Nor register an instance on its own client connection.
    let (_s, mut recv) = rpc::open(&f.user.conn, &hello(dep, "inst-u"))
        .await
        .expect("open");
    match next_frame(&mut recv).await {
        ClientResponse::Error { message } => {
            assert!(message.contains("entrypoint token"), "{message}")
        }
        other => panic!("a user registered an instance: {other:?}"),
    }
    assert!(f.instances().await.is_empty());
    f.node.stop().await;
}

#[tokio::test]
async fn entrypoint_tokens_are_minted_only_for_existing_deployments_of_that_app() {
    let f = fixture().await;
    let dep = f.deployment("p", "web").await;
    match f.mint("web", dep + 100).await {
        Err(RpcError::Remote(m)) => assert!(m.contains("no deployment"), "{m}"),
        other => panic!("{other:?}"),
    }
    match f.mint("api", dep).await {
        Err(RpcError::Remote(m)) => assert!(m.contains("belongs to app web"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(f.mint("web", dep).await.is_ok());
    f.node.stop().await;
}
