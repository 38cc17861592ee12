use super::*;
use cairn_protocol::types::{JobKind, RunnerKind};
use cairn_protocol::types::{OpCompletion, TypedValue};

fn req(now_ms: u64, command: Command) -> Request {
    Request { now_ms, command }
}

fn spec(app: &str) -> JobSpec {
    let mut s = JobSpec::example();
    s.app = app.into();
    s.kind = JobKind::Deploy { build: None };
    s
}

/// Create a job and move it to running; returns its id.
fn running_job(st: &mut State, app: &str) -> JobId {
    let Response::JobCreated(id) = st.apply(&req(
        1,
        Command::CreateJob {
            spec: spec(app),
            requested_by: "user:a".into(),
        },
    )) else {
        panic!("job not created")
    };
    assert_eq!(
        st.apply(&req(
            2,
            Command::AssignJob {
                id,
                runner: "r1".into()
            }
        )),
        Response::Ok
    );
    assert_eq!(st.apply(&req(3, Command::StartJob { id })), Response::Ok);
    id
}

fn begin(st: &mut State, job: JobId, kind: OpKind) -> (OpId, u64) {
    match st.apply(&req(
        4,
        Command::BeginOperation {
            job_id: job,
            kind,
            plugin: "process".into(),
            input_seq: None,
        },
    )) {
        Response::OperationStarted { id, sequence } => (id, sequence),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn put_returns_previous_value() {
    let mut st = State::default();
    assert_eq!(
        st.apply(&req(
            1,
            Command::Put {
                key: "k".into(),
                value: "a".into()
            }
        )),
        Response::Value(None)
    );
    assert_eq!(
        st.apply(&req(
            2,
            Command::Put {
                key: "k".into(),
                value: "b".into()
            }
        )),
        Response::Value(Some("a".into()))
    );
    assert_eq!(st.registers["k"], "b");
}

#[test]
fn job_lifecycle_and_project_app_creation() {
    let mut st = State::default();
    let id = running_job(&mut st, "web");
    let job = &st.jobs[&id];
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.runner.as_deref(), Some("r1"));
    assert_eq!(job.queued_ms, 1);
    assert_eq!(job.assigned_ms, Some(2));
    assert!(st.projects.contains_key("hello"));
    assert!(st
        .apps
        .contains_key(&("hello".to_string(), "web".to_string())));
    assert_eq!(
        st.apply(&req(
            9,
            Command::FinishJob {
                id,
                state: JobState::Success,
                error: None
            }
        )),
        Response::Ok
    );
    assert_eq!(st.jobs[&id].completed_ms, Some(9));
    // A final job never changes again.
    let again = st.apply(&req(
        10,
        Command::FinishJob {
            id,
            state: JobState::Error,
            error: Some("x".into()),
        },
    ));
    assert!(matches!(again, Response::Error(_)));
    assert_eq!(st.jobs[&id].state, JobState::Success);
}

#[test]
fn transitions_out_of_order_are_refused_and_change_nothing() {
    let mut st = State::default();
    let Response::JobCreated(id) = st.apply(&req(
        1,
        Command::CreateJob {
            spec: spec("web"),
            requested_by: "u".into(),
        },
    )) else {
        panic!()
    };
    let before = st.clone();
    assert!(matches!(
        st.apply(&req(2, Command::StartJob { id })),
        Response::Error(_)
    ));
    assert!(matches!(
        st.apply(&req(
            2,
            Command::BeginOperation {
                job_id: id,
                kind: OpKind::Build,
                plugin: "files".into(),
                input_seq: None
            }
        )),
        Response::Error(_)
    ));
    assert!(matches!(
        st.apply(&req(
            2,
            Command::FinishJob {
                id,
                state: JobState::Running,
                error: None
            }
        )),
        Response::Error(_)
    ));
    assert!(matches!(
        st.apply(&req(
            2,
            Command::AssignJob {
                id: 99,
                runner: "r".into()
            }
        )),
        Response::Error(_)
    ));
    assert_eq!(st, before);
}

#[test]
fn sequences_are_per_app_and_kind_and_never_go_back() {
    let mut st = State::default();
    let j1 = running_job(&mut st, "web");
    assert_eq!(begin(&mut st, j1, OpKind::Deployment).1, 1);
    assert_eq!(begin(&mut st, j1, OpKind::Deployment).1, 2);
    assert_eq!(begin(&mut st, j1, OpKind::Build).1, 1);
    let j2 = running_job(&mut st, "api");
    assert_eq!(begin(&mut st, j2, OpKind::Deployment).1, 1);
    let j3 = running_job(&mut st, "web");
    assert_eq!(begin(&mut st, j3, OpKind::Deployment).1, 3);
    let deps = st.operations_of(OpKind::Deployment, Some("hello"), Some("web"));
    assert_eq!(
        deps.iter().map(|o| o.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn complete_operation_records_result_and_bounds_output() {
    let mut st = State::default();
    let j = running_job(&mut st, "web");
    let (op, _) = begin(&mut st, j, OpKind::Deployment);
    let line = "x".repeat(1000);
    let output: Vec<String> = (0..200).map(|_| line.clone()).collect();
    let r = st.apply(&req(
        7,
        Command::CompleteOperation(OpCompletion {
            op_id: op,
            status: OpStatus::Success,
            result: Some(TypedValue {
                type_name: "process.Deployment".into(),
                json: "{}".into(),
            }),
            error: None,
            output,
            output_dropped: 5,
            url: Some("http://127.0.0.1:1/".into()),
        }),
    ));
    assert_eq!(r, Response::Ok);
    let o = &st.operations[&op];
    assert_eq!(o.status, OpStatus::Success);
    assert_eq!(o.completed_ms, Some(7));
    let kept: usize = o.output.iter().map(|l| l.len() + 1).sum();
    assert!(kept <= MAX_OP_OUTPUT_BYTES, "kept {kept}");
    assert_eq!(o.output.len() as u64 + o.output_dropped, 200 + 5);
    // Completing twice is refused.
    assert!(matches!(
        st.apply(&req(
            8,
            Command::CompleteOperation(OpCompletion {
                op_id: op,
                status: OpStatus::Error,
                result: None,
                error: None,
                output: vec![],
                output_dropped: 0,
                url: None
            })
        )),
        Response::Error(_)
    ));
}

#[test]
fn interrupted_jobs_fail_with_reason_and_their_running_ops_too() {
    let mut st = State::default();
    let j1 = running_job(&mut st, "web");
    let (done, _) = begin(&mut st, j1, OpKind::Build);
    st.apply(&req(
        5,
        Command::CompleteOperation(OpCompletion {
            op_id: done,
            status: OpStatus::Success,
            result: None,
            error: None,
            output: vec![],
            output_dropped: 0,
            url: None,
        }),
    ));
    let (running, _) = begin(&mut st, j1, OpKind::Deployment);
    let Response::JobCreated(queued) = st.apply(&req(
        6,
        Command::CreateJob {
            spec: spec("web"),
            requested_by: "u".into(),
        },
    )) else {
        panic!()
    };
    let r = st.apply(&req(
        20,
        Command::FailInterrupted {
            reason: "node restarted".into(),
        },
    ));
    assert_eq!(r, Response::Changed(1));
    assert_eq!(st.jobs[&j1].state, JobState::Error);
    assert_eq!(st.jobs[&j1].error.as_deref(), Some("node restarted"));
    assert_eq!(st.operations[&running].status, OpStatus::Error);
    assert_eq!(
        st.operations[&done].status,
        OpStatus::Success,
        "completed work is kept"
    );
    assert_eq!(
        st.jobs[&queued].state,
        JobState::Queued,
        "queued jobs still run later"
    );
}

#[test]
fn runner_loss_fails_only_its_jobs() {
    let mut st = State::default();
    let j1 = running_job(&mut st, "web");
    let Response::JobCreated(j2) = st.apply(&req(
        1,
        Command::CreateJob {
            spec: spec("api"),
            requested_by: "u".into(),
        },
    )) else {
        panic!()
    };
    st.apply(&req(
        2,
        Command::AssignJob {
            id: j2,
            runner: "r2".into(),
        },
    ));
    let r = st.apply(&req(
        3,
        Command::FailRunnerJobs {
            runner: "r2".into(),
            reason: "runner lost".into(),
        },
    ));
    assert_eq!(r, Response::Changed(1));
    assert_eq!(st.jobs[&j2].state, JobState::Error);
    assert_eq!(st.jobs[&j1].state, JobState::Running);
}

#[test]
fn cancel_queued_is_immediate_running_is_requested() {
    let mut st = State::default();
    let Response::JobCreated(q) = st.apply(&req(
        1,
        Command::CreateJob {
            spec: spec("web"),
            requested_by: "u".into(),
        },
    )) else {
        panic!()
    };
    assert_eq!(
        st.apply(&req(2, Command::RequestCancel { id: q })),
        Response::Ok
    );
    assert_eq!(st.jobs[&q].state, JobState::Cancelled);
    let r = running_job(&mut st, "web");
    assert_eq!(
        st.apply(&req(2, Command::RequestCancel { id: r })),
        Response::Ok
    );
    assert_eq!(st.jobs[&r].state, JobState::Running);
    assert!(st.jobs[&r].cancel_requested);
}

#[test]
fn bootstrap_token_is_one_time_and_tokens_expire() {
    let mut st = State::default();
    let rec = |hash: &str, scope: TokenScope, expires: Option<u64>| TokenRecord {
        id: format!("id-{hash}"),
        hash: hash.into(),
        scope,
        name: "t".into(),
        created_ms: 1,
        expires_ms: expires,
        revoked: false,
    };
    assert_eq!(
        st.apply(&req(
            1,
            Command::CreateToken {
                record: rec("boot", TokenScope::Bootstrap, None)
            }
        )),
        Response::Ok
    );
    assert!(matches!(
        st.apply(&req(
            1,
            Command::CreateToken {
                record: rec("boot2", TokenScope::Bootstrap, None)
            }
        )),
        Response::Error(_)
    ));
    let user = rec("u1", TokenScope::User, Some(100));
    assert_eq!(
        st.apply(&req(
            2,
            Command::ConsumeBootstrap {
                bootstrap_hash: "boot".into(),
                user: user.clone()
            }
        )),
        Response::Ok
    );
    assert!(st.token("boot", 3).is_none(), "bootstrap token is spent");
    assert!(matches!(
        st.apply(&req(
            3,
            Command::ConsumeBootstrap {
                bootstrap_hash: "boot".into(),
                user: rec("u2", TokenScope::User, None)
            }
        )),
        Response::Error(_)
    ));
    assert!(st.token("u1", 50).is_some());
    assert!(st.token("u1", 100).is_none(), "expired");
    assert_eq!(
        st.apply(&req(4, Command::RevokeToken { id: "id-u1".into() })),
        Response::Ok
    );
    assert!(st.token("u1", 50).is_none(), "revoked");
}

#[test]
fn runners_keep_their_first_registration_time() {
    let mut st = State::default();
    let r = Runner {
        id: "r1".into(),
        kind: RunnerKind::Cli,
        labels: Default::default(),
        registered_ms: 0,
        last_seen_ms: 0,
    };
    st.apply(&req(10, Command::RegisterRunner { runner: r.clone() }));
    st.apply(&req(
        20,
        Command::RegisterRunner {
            runner: Runner {
                registered_ms: 20,
                ..r
            },
        },
    ));
    assert_eq!(st.runners["r1"].last_seen_ms, 20);
}

#[test]
fn config_set_and_delete() {
    let mut st = State::default();
    let scope = ConfigScope::Project("hello".into());
    let var = ConfigVar {
        scope: scope.clone(),
        name: "A".into(),
        value: "1".into(),
        secret: false,
    };
    assert_eq!(st.apply(&req(1, Command::SetConfig { var })), Response::Ok);
    assert_eq!(st.config.len(), 1);
    assert_eq!(
        st.apply(&req(
            2,
            Command::DeleteConfig {
                scope: scope.clone(),
                name: "A".into()
            }
        )),
        Response::Ok
    );
    assert!(matches!(
        st.apply(&req(
            3,
            Command::DeleteConfig {
                scope,
                name: "A".into()
            }
        )),
        Response::Error(_)
    ));
}

#[test]
fn state_round_trips_through_the_record_format_and_release_0_1s() {
    use crate::raft::format;
    let mut st = State::default();
    let j = running_job(&mut st, "web");
    begin(&mut st, j, OpKind::Deployment);
    st.apply(&Request {
        now_ms: 1,
        command: Command::Idempotent {
            client: 1,
            request: 2,
            command: Box::new(Command::Put {
                key: "k".into(),
                value: "v".into(),
            }),
        },
    });
    st.cluster_version = Some(5);
    let bytes = format::encode(&st).expect("encode");
    let back: State = format::decode(&bytes).expect("decode");
    assert_eq!(back, st);
    // Release 0.1.0's form holds all but what came later.
    let old = format::encode_legacy(&super::v0::State::from(&st)).expect("encode");
    let back: State = format::decode_or_legacy::<State, super::v0::State>(&old).expect("decode");
    assert_eq!(back.cluster_version, None);
    assert_eq!(
        State {
            cluster_version: Some(5),
            ..back
        },
        st
    );
}

#[test]
fn the_cluster_version_only_goes_forward() {
    let mut st = State::default();
    assert_eq!(st.cluster_version(), 4, "a 0.1.0 cluster is on protocol 4");
    let set = |version| Request {
        now_ms: 1,
        command: Command::SetClusterVersion { version },
    };
    assert_eq!(st.apply(&set(5)), Response::Ok);
    assert_eq!(st.cluster_version(), 5);
    assert_eq!(st.apply(&set(5)), Response::Ok, "the same again is a no-op");
    assert!(matches!(st.apply(&set(4)), Response::Error(e) if e.contains("never goes back")));
    assert_eq!(st.cluster_version(), 5);
}

#[test]
fn config_in_returns_exactly_one_scope() {
    let mut st = State::default();
    let scopes = [
        ConfigScope::Project("a".into()),
        ConfigScope::Project("b".into()),
        ConfigScope::App {
            project: "a".into(),
            app: "web".into(),
        },
    ];
    for (i, sc) in scopes.iter().enumerate() {
        for n in 0..3 {
            let var = ConfigVar {
                scope: sc.clone(),
                name: format!("K{n}"),
                value: format!("{i}"),
                secret: false,
            };
            st.apply(&req(1, Command::SetConfig { var }));
        }
    }
    let b = st.config_in(Some(&scopes[1]));
    assert_eq!(b.len(), 3);
    assert!(b.iter().all(|v| v.scope == scopes[1] && v.value == "1"));
    assert_eq!(st.config_in(None).len(), 9);
    assert!(st
        .config_in(Some(&ConfigScope::Project("zz".into())))
        .is_empty());
}

#[test]
fn cluster_ca_is_set_once_and_removed_nodes_accumulate() {
    use super::ClusterCa;
    let mut st = State::default();
    let ca = ClusterCa {
        cert_pem: "cert".into(),
        key_pem: "secret-key".into(),
    };
    assert_eq!(
        st.apply(&req(1, Command::SetClusterCa { ca: ca.clone() })),
        Response::Ok
    );
    assert_eq!(
        st.apply(&req(2, Command::SetClusterCa { ca: ca.clone() })),
        Response::Ok,
        "the same CA again is a no-op"
    );
    let other = ClusterCa {
        cert_pem: "other".into(),
        key_pem: "k".into(),
    };
    assert!(matches!(
        st.apply(&req(3, Command::SetClusterCa { ca: other })),
        Response::Error(_)
    ));
    assert_eq!(st.cluster_ca, Some(ca.clone()));
    assert!(
        !format!("{ca:?}").contains("secret-key"),
        "Debug hides the key"
    );

    st.apply(&req(4, Command::MarkNodeRemoved { id: 7 }));
    st.apply(&req(5, Command::MarkNodeRemoved { id: 7 }));
    st.apply(&req(6, Command::MarkNodeRemoved { id: 9 }));
    assert_eq!(
        st.removed_nodes.iter().copied().collect::<Vec<_>>(),
        vec![7, 9]
    );
}

fn once(client: u64, request: u64, command: Command) -> Command {
    Command::Idempotent {
        client,
        request,
        command: Box::new(command),
    }
}

#[test]
fn a_retried_idempotent_write_applies_once_and_answers_the_same() {
    let mut st = State::default();
    let create = once(
        7,
        1,
        Command::CreateJob {
            spec: spec("web"),
            requested_by: "user:a".into(),
        },
    );
    let first = st.apply(&req(1, create.clone()));
    assert_eq!(first, Response::JobCreated(1));
    // The answer was lost; the client sends the same request again.
    let again = st.apply(&req(2, create.clone()));
    assert_eq!(again, first);
    assert_eq!(st.jobs.len(), 1, "the retry created nothing");
    assert_eq!(st.next_job, 1);

    // A new request id from the same client is a new write.
    let second = st.apply(&req(
        3,
        once(
            7,
            2,
            Command::CreateJob {
                spec: spec("api"),
                requested_by: "user:a".into(),
            },
        ),
    ));
    assert_eq!(second, Response::JobCreated(2));
    // So is the same request id from another client.
    let other = st.apply(&req(4, once(8, 1, Command::RequestCancel { id: 1 })));
    assert_eq!(other, Response::Ok);
    assert!(st.jobs[&1].state.is_final(), "queued job cancelled");

    // A failed write answers its error again and still changes nothing.
    let bad = once(9, 1, Command::StartJob { id: 99 });
    let e1 = st.apply(&req(5, bad.clone()));
    assert!(matches!(e1, Response::Error(_)), "{e1:?}");
    let before = st.clone();
    assert_eq!(st.apply(&req(6, bad)), e1);
    assert_eq!(st, before);

    // Nesting is refused.
    let nested = once(10, 1, once(10, 2, Command::RequestCancel { id: 2 }));
    assert!(matches!(st.apply(&req(7, nested)), Response::Error(_)));
    assert!(!st.jobs[&2].state.is_final());
}

#[test]
fn a_retried_put_does_not_overwrite_a_later_write() {
    let mut st = State::default();
    let put = |v: &str| Command::Put {
        key: "k".into(),
        value: v.into(),
    };
    assert_eq!(
        st.apply(&req(1, once(1, 1, put("a")))),
        Response::Value(None)
    );
    assert_eq!(
        st.apply(&req(2, once(2, 1, put("b")))),
        Response::Value(Some("a".into()))
    );
    // Client 1's retry of its first write arrives late: it must not undo "b".
    assert_eq!(
        st.apply(&req(3, once(1, 1, put("a")))),
        Response::Value(None)
    );
    assert_eq!(st.registers["k"], "b");
}

#[test]
fn remembered_request_ids_are_bounded_oldest_first() {
    let mut st = State::default();
    let n = MAX_APPLIED_REQUESTS as u64 + 5;
    for i in 0..n {
        st.apply(&req(
            i,
            once(
                1,
                i,
                Command::Put {
                    key: format!("k{i}"),
                    value: "v".into(),
                },
            ),
        ));
    }
    assert_eq!(st.applied_requests.len(), MAX_APPLIED_REQUESTS);
    assert_eq!(st.applied_order.len(), MAX_APPLIED_REQUESTS);
    assert!(
        !st.applied_requests.contains_key(&(1, 0)),
        "oldest forgotten"
    );
    assert!(st.applied_requests.contains_key(&(1, n - 1)));
    // The state (with its memory of ids) survives a snapshot round trip.
    let bytes = cairn_protocol::frame::encode(&st).expect("encodes");
    let (back, _): (State, usize) = cairn_protocol::frame::decode(&bytes)
        .expect("decodes")
        .expect("whole");
    assert_eq!(back, st);
}

#[test]
fn restore_replaces_only_an_empty_state() {
    let mut saved = State::default();
    saved.apply(&req(
        1,
        Command::Put {
            key: "k".into(),
            value: "v".into(),
        },
    ));
    saved.cluster_ca = Some(ClusterCa {
        cert_pem: "cert".into(),
        key_pem: "key".into(),
    });
    let mut fresh = State::default();
    let restore = Command::Restore {
        state: Box::new(super::v0::State::from(&saved)),
    };
    assert_eq!(fresh.apply(&req(2, restore.clone())), Response::Ok);
    assert_eq!(fresh, saved);
    assert!(
        matches!(fresh.apply(&req(3, restore)), Response::Error(_)),
        "a cluster with a CA is not restored over"
    );
    assert_eq!(fresh, saved, "a refused restore changes nothing");
}

#[test]
fn record_count_counts_every_record_and_not_overwrites() {
    let mut st = State::default();
    assert_eq!(st.record_count(), 0);
    for i in 0..5 {
        st.apply(&req(
            1,
            Command::Put {
                key: format!("k{i}"),
                value: "v".into(),
            },
        ));
    }
    assert_eq!(st.record_count(), 5);
    // Overwriting a key adds no record.
    st.apply(&req(
        2,
        Command::Put {
            key: "k0".into(),
            value: "w".into(),
        },
    ));
    assert_eq!(st.record_count(), 5);
    // A job is one record (plus whatever it creates, e.g. its sequence).
    running_job(&mut st, "app");
    assert!(st.record_count() > 5, "{}", st.record_count());
}

fn deployment_op(st: &mut State) -> OpId {
    let job = running_job(st, "web");
    let Response::OperationStarted { id, .. } = st.apply(&req(
        4,
        Command::BeginOperation {
            job_id: job,
            kind: OpKind::Deployment,
            plugin: "process".into(),
            input_seq: None,
        },
    )) else {
        panic!("no deployment")
    };
    id
}

fn instance(deployment: OpId, id: &str, node: u64) -> Instance {
    Instance {
        id: id.into(),
        deployment,
        project: "hello".into(),
        app: "web".into(),
        workspace: DEFAULT_WORKSPACE_NAME.into(),
        sequence: 1,
        node,
        pid: 7,
        started_ms: 1,
        since_ms: 0,
        last_seen_ms: 0,
        state: InstanceState::Disconnected,
    }
}

const DEFAULT_WORKSPACE_NAME: &str = cairn_protocol::types::DEFAULT_WORKSPACE;

#[test]
fn instances_connect_refresh_disconnect_and_expire() {
    let mut st = State::default();
    let dep = deployment_op(&mut st);
    let key = (dep, "i1".to_string());
    let connect = |node| Command::InstanceConnected {
        instance: instance(dep, "i1", node),
    };
    assert_eq!(st.apply(&req(10, connect(1))), Response::Ok);
    let i = &st.instances[&key];
    assert_eq!(
        (i.state, i.since_ms, i.last_seen_ms, i.node),
        (InstanceState::Connected, 10, 10, 1)
    );
    let seen = |node| Command::InstanceSeen {
        deployment: dep,
        id: "i1".into(),
        node,
    };
    st.apply(&req(20, seen(1)));
    assert_eq!(st.instances[&key].last_seen_ms, 20);
    // Another node's report about it changes nothing.
    st.apply(&req(30, seen(2)));
    assert_eq!(st.instances[&key].last_seen_ms, 20);
    // It moved to node 2; node 1's late disconnect must not win.
    st.apply(&req(40, connect(2)));
    let gone = |node| Command::InstanceDisconnected {
        deployment: dep,
        id: "i1".into(),
        node,
    };
    assert_eq!(st.apply(&req(41, gone(1))), Response::Changed(0));
    assert_eq!(st.instances[&key].state, InstanceState::Connected);
    assert_eq!(st.apply(&req(50, gone(2))), Response::Changed(1));
    assert_eq!(st.instances[&key].state, InstanceState::Disconnected);
    assert_eq!(st.instances[&key].last_seen_ms, 50);
    let sweep = Command::SweepInstances {
        stale_ms: 100,
        expire_ms: 1000,
    };
    // Not yet expired.
    assert_eq!(st.apply(&req(1049, sweep.clone())), Response::Changed(0));
    assert!(st.instances.contains_key(&key));
    assert_eq!(st.apply(&req(1050, sweep)), Response::Changed(1));
    assert!(st.instances.is_empty());
}

#[test]
fn a_connected_instance_nobody_refreshes_becomes_disconnected() {
    let mut st = State::default();
    let dep = deployment_op(&mut st);
    st.apply(&req(
        10,
        Command::InstanceConnected {
            instance: instance(dep, "i1", 1),
        },
    ));
    let sweep = Command::SweepInstances {
        stale_ms: 100,
        expire_ms: 1000,
    };
    assert_eq!(st.apply(&req(109, sweep.clone())), Response::Changed(0));
    assert_eq!(st.apply(&req(110, sweep)), Response::Changed(1));
    assert_eq!(
        st.instances[&(dep, "i1".to_string())].state,
        InstanceState::Disconnected
    );
}

#[test]
fn instances_need_a_deployment() {
    let mut st = State::default();
    let r = st.apply(&req(
        10,
        Command::InstanceConnected {
            instance: instance(99, "i1", 1),
        },
    ));
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    assert!(st.instances.is_empty());
}

#[test]
fn deployment_for_follows_the_release_or_the_newest_deployment() {
    let mut st = State::default();
    let job = running_job(&mut st, "web");
    let complete = |st: &mut State, op_id: OpId, status: OpStatus| {
        st.apply(&req(
            5,
            Command::CompleteOperation(OpCompletion {
                op_id,
                status,
                result: None,
                error: None,
                output: vec![],
                output_dropped: 0,
                url: None,
            }),
        ))
    };
    let r = |sequence: Option<u64>| DeploymentRef {
        project: JobSpec::example().project,
        app: "web".into(),
        workspace: JobSpec::example().workspace,
        sequence,
    };
    let err = st.deployment_for(&r(None)).expect_err("nothing deployed");
    assert!(err.contains("has no deployment"), "{err}");
    let (d1, _) = begin(&mut st, job, OpKind::Deployment);
    complete(&mut st, d1, OpStatus::Success);
    let (d2, _) = begin(&mut st, job, OpKind::Deployment);
    complete(&mut st, d2, OpStatus::Success);
    let (d3, _) = begin(&mut st, job, OpKind::Deployment);
    complete(&mut st, d3, OpStatus::Error);
    // Nothing released: the newest successful deployment.
    assert_eq!(st.deployment_for(&r(None)).map(|o| o.id), Ok(d2));
    // A release of v1 makes v1 the default.
    let Response::OperationStarted { id: rel, .. } = st.apply(&req(
        6,
        Command::BeginOperation {
            job_id: job,
            kind: OpKind::Release,
            plugin: "process".into(),
            input_seq: Some(1),
        },
    )) else {
        panic!("no release")
    };
    complete(&mut st, rel, OpStatus::Success);
    assert_eq!(st.deployment_for(&r(None)).map(|o| o.id), Ok(d1));
    assert_eq!(st.deployment_for(&r(Some(2))).map(|o| o.id), Ok(d2));
    let err = st
        .deployment_for(&r(Some(3)))
        .expect_err("failed deployment");
    assert!(err.contains("not a successful deployment"), "{err}");
    let err = st
        .deployment_for(&r(Some(9)))
        .expect_err("no such deployment");
    assert_eq!(err, "app web has no deployment v9");
    st.apply(&req(
        7,
        Command::SetResourceState {
            op_id: d1,
            state: ResourceState::Destroyed,
        },
    ));
    let err = st.deployment_for(&r(None)).expect_err("destroyed");
    assert_eq!(err, "deployment v1 of web is destroyed");
    // Another app's deployments are not this app's.
    let other = DeploymentRef {
        app: "api".into(),
        ..r(Some(2))
    };
    assert!(st.deployment_for(&other).is_err());
}

/// A running job of `kind` for app "web"; its id.
fn job_of_kind(st: &mut State, kind: JobKind) -> JobId {
    let mut spec = spec("web");
    spec.kind = kind;
    let Response::JobCreated(id) = st.apply(&req(
        1,
        Command::CreateJob {
            spec,
            requested_by: "user:a".into(),
        },
    )) else {
        panic!("job not created")
    };
    st.apply(&req(
        2,
        Command::AssignJob {
            id,
            runner: "r1".into(),
        },
    ));
    st.apply(&req(3, Command::StartJob { id }));
    id
}

/// A release of deployment `seq` by a job asking `weight`, completed with `status`.
fn release(st: &mut State, seq: u64, weight: Option<u8>, status: OpStatus) {
    let job = job_of_kind(
        st,
        JobKind::Release {
            deployment: Some(seq),
            prune: false,
            retain: None,
            weight,
        },
    );
    let Response::OperationStarted { id, .. } = st.apply(&req(
        4,
        Command::BeginOperation {
            job_id: job,
            kind: OpKind::Release,
            plugin: "process".into(),
            input_seq: Some(seq),
        },
    )) else {
        panic!("no release")
    };
    st.apply(&req(
        5,
        Command::CompleteOperation(OpCompletion {
            op_id: id,
            status,
            result: None,
            error: None,
            output: vec![],
            output_dropped: 0,
            url: None,
        }),
    ));
    st.apply(&req(
        6,
        Command::FinishJob {
            id: job,
            state: JobState::Success,
            error: None,
        },
    ));
}

#[test]
fn releases_set_the_route_in_full_or_as_a_canary() {
    let mut st = State::default();
    let key = (
        JobSpec::example().project,
        "web".to_string(),
        JobSpec::example().workspace,
    );
    let route = |st: &State| st.routes.get(&key).copied();
    // A canary with nothing released before is the release.
    release(&mut st, 1, Some(10), OpStatus::Success);
    assert_eq!(
        route(&st),
        Some(Route {
            primary: 1,
            canary: None
        })
    );
    release(&mut st, 2, None, OpStatus::Success);
    assert_eq!(
        route(&st),
        Some(Route {
            primary: 2,
            canary: None
        })
    );
    release(&mut st, 3, Some(25), OpStatus::Success);
    assert_eq!(
        route(&st),
        Some(Route {
            primary: 2,
            canary: Some((3, 25))
        })
    );
    // A failed release changes nothing; a new weight replaces the canary's.
    release(&mut st, 4, None, OpStatus::Error);
    release(&mut st, 3, Some(60), OpStatus::Success);
    assert_eq!(
        route(&st),
        Some(Route {
            primary: 2,
            canary: Some((3, 60))
        })
    );
    // 100 % moves the rest; a rollback is a full release of an older one.
    release(&mut st, 3, Some(100), OpStatus::Success);
    assert_eq!(
        route(&st),
        Some(Route {
            primary: 3,
            canary: None
        })
    );
    release(&mut st, 1, None, OpStatus::Success);
    assert_eq!(
        route(&st),
        Some(Route {
            primary: 1,
            canary: None
        })
    );
}

#[test]
fn hostnames_are_checked_registered_once_and_deleted() {
    let mut st = State::default();
    let host = |name: &str| Hostname {
        name: name.into(),
        project: "p".into(),
        app: "web".into(),
        workspace: "default".into(),
        deployment: None,
        created_ms: 0,
    };
    assert_eq!(
        st.apply(&req(
            9,
            Command::RegisterHostname {
                hostname: host("shop.example.com")
            }
        )),
        Response::Ok
    );
    assert_eq!(st.hostnames["shop.example.com"].created_ms, 9);
    let Response::Error(e) = st.apply(&req(
        10,
        Command::RegisterHostname {
            hostname: host("shop.example.com"),
        },
    )) else {
        panic!("registered twice")
    };
    assert!(e.contains("registered already"), "{e}");
    for bad in [
        "",
        "Shop.example.com",
        "-a.b",
        "a..b",
        "a_b.c",
        &"x".repeat(64),
    ] {
        let r = st.apply(&req(
            11,
            Command::RegisterHostname {
                hostname: host(bad),
            },
        ));
        assert!(matches!(r, Response::Error(_)), "{bad:?}: {r:?}");
    }
    assert_eq!(
        st.apply(&req(
            12,
            Command::DeleteHostname {
                name: "shop.example.com".into()
            }
        )),
        Response::Ok
    );
    assert!(st.hostnames.is_empty());
    assert!(matches!(
        st.apply(&req(
            13,
            Command::DeleteHostname {
                name: "shop.example.com".into()
            }
        )),
        Response::Error(_)
    ));
}

fn create_job_in(st: &mut State, project: &str, app: &str) -> Response {
    let mut spec = spec(app);
    spec.project = project.into();
    st.apply(&req(
        1,
        Command::CreateJob {
            spec,
            requested_by: "user:a".into(),
        },
    ))
}

fn finish(st: &mut State, id: JobId) {
    st.apply(&req(
        9,
        Command::FinishJob {
            id,
            state: JobState::Success,
            error: None,
        },
    ));
}

#[test]
fn an_app_name_another_project_uses_is_refused_and_changes_nothing() {
    let mut st = State::default();
    let dep = deployment_op(&mut st);
    release(&mut st, 1, None, OpStatus::Success);
    let before = st.clone();
    for name in ["web", "WEB", "Web"] {
        let Response::Error(e) = create_job_in(&mut st, "other", name) else {
            panic!("{name} in another project was accepted")
        };
        assert!(e.contains("already exists in project \"hello\""), "{e}");
        assert!(e.contains("cairn app destroy"), "{e}");
    }
    // Another spelling in the same project is refused too.
    let Response::Error(e) = create_job_in(&mut st, "hello", "WEB") else {
        panic!("WEB next to web was accepted")
    };
    assert!(e.contains("differ by more than case"), "{e}");
    assert_eq!(st, before, "a refused job changed the state");
    assert!(st.operations.contains_key(&dep));
    // The same app again, and other names, are fine.
    assert!(matches!(
        create_job_in(&mut st, "hello", "web"),
        Response::JobCreated(_)
    ));
    assert!(matches!(
        create_job_in(&mut st, "other", "api"),
        Response::JobCreated(_)
    ));
}

#[test]
fn project_and_app_names_with_control_characters_are_refused() {
    let mut st = State::default();
    for (project, app) in [
        ("hello", "we\u{1b}[31mb"),
        ("hel\nlo", "web"),
        ("hello", ""),
        ("", "web"),
        ("hello", "a b"),
        ("hello", "a/b"),
        ("hello", &"x".repeat(49)),
    ] {
        let r = create_job_in(&mut st, project, app);
        assert!(
            matches!(r, Response::Error(_)),
            "{project:?}/{app:?}: {r:?}"
        );
    }
    assert!(st.apps.is_empty() && st.projects.is_empty() && st.jobs.is_empty());
}

#[test]
fn removing_an_app_waits_for_its_deployments_and_jobs_then_takes_every_record() {
    let mut st = State::default();
    // hello/web: a deployment (its job still running), a release, a
    // hostname, an instance, app config; hello/api and other/x stay.
    let dep = deployment_op(&mut st);
    let web_job = st.operations[&dep].job_id;
    let remove = |app: Option<&str>| Command::RemoveApps {
        project: "hello".into(),
        app: app.map(str::to_string),
    };
    let Response::Error(e) = st.apply(&req(5, remove(Some("web")))) else {
        panic!("removed with a job running")
    };
    assert!(e.contains("unfinished jobs"), "{e}");
    st.apply(&req(
        5,
        Command::CompleteOperation(OpCompletion {
            op_id: dep,
            status: OpStatus::Success,
            result: None,
            error: None,
            output: vec![],
            output_dropped: 0,
            url: None,
        }),
    ));
    finish(&mut st, web_job);
    release(&mut st, 1, None, OpStatus::Success);
    st.apply(&req(
        6,
        Command::InstanceConnected {
            instance: instance(dep, "i1", 1),
        },
    ));
    let hostname = |name: &str, project: &str, app: &str| Hostname {
        name: name.into(),
        project: project.into(),
        app: app.into(),
        workspace: DEFAULT_WORKSPACE_NAME.into(),
        deployment: None,
        created_ms: 0,
    };
    st.apply(&req(
        6,
        Command::RegisterHostname {
            hostname: hostname("shop.example.com", "hello", "web"),
        },
    ));
    let var = |scope: ConfigScope, name: &str| Command::SetConfig {
        var: ConfigVar {
            scope,
            name: name.into(),
            value: "v".into(),
            secret: false,
        },
    };
    st.apply(&req(
        6,
        var(
            ConfigScope::App {
                project: "hello".into(),
                app: "web".into(),
            },
            "A",
        ),
    ));
    st.apply(&req(6, var(ConfigScope::Project("hello".into()), "P")));
    let web_deploy = job_of_kind(&mut st, JobKind::Deploy { build: None });
    finish(&mut st, web_deploy);
    assert!(matches!(
        create_job_in(&mut st, "hello", "api"),
        Response::JobCreated(_)
    ));
    let Response::JobCreated(x) = create_job_in(&mut st, "other", "x") else {
        panic!()
    };
    finish(&mut st, x);
    // The api job is still queued: only web can go.
    let Response::Error(e) = st.apply(&req(7, remove(Some("web")))) else {
        panic!("removed with an active deployment")
    };
    assert!(e.contains("active deployments (v1)"), "{e}");
    st.apply(&req(
        7,
        Command::SetResourceState {
            op_id: dep,
            state: ResourceState::Destroyed,
        },
    ));
    let Response::Removed(r) = st.apply(&req(8, remove(Some("web")))) else {
        panic!("not removed")
    };
    assert_eq!(r.apps, vec!["web".to_string()]);
    assert!(!r.project);
    assert_eq!(r.operations, 2, "{r:?}"); // the deployment and the release
    assert_eq!(r.jobs, 3, "{r:?}"); // the deployment's, the release's, the api's job of app web
    assert_eq!(r.hostnames, vec!["shop.example.com".to_string()]);
    assert_eq!(r.config, 1);
    assert!(!st.apps.contains_key(&("hello".into(), "web".into())));
    assert!(st.operations.values().all(|o| o.app != "web"));
    assert!(st.instances.is_empty() && st.routes.is_empty() && st.hostnames.is_empty());
    assert!(st.sequences.keys().all(|(_, a, _)| a != "web"));
    assert!(st.projects.contains_key("hello"));
    assert_eq!(st.config.len(), 1, "the project's config stays");
    // The name is free for another project now, and sequences start over.
    assert!(matches!(
        create_job_in(&mut st, "other", "web"),
        Response::JobCreated(_)
    ));
    // The whole project: refused while api's job is queued, then all goes.
    let Response::Error(e) = st.apply(&req(9, remove(None))) else {
        panic!("removed with a queued job")
    };
    assert!(e.contains("app api has unfinished jobs"), "{e}");
    let queued: Vec<JobId> = st
        .jobs
        .values()
        .filter(|j| j.spec.project == "hello")
        .map(|j| j.id)
        .collect();
    for id in queued {
        st.apply(&req(9, Command::RequestCancel { id }));
    }
    let Response::Removed(r) = st.apply(&req(10, remove(None))) else {
        panic!("project not removed")
    };
    assert!(r.project && r.apps == vec!["api".to_string()], "{r:?}");
    assert_eq!(r.config, 1);
    assert!(!st.projects.contains_key("hello") && st.config.is_empty());
    assert!(st.apps.keys().all(|(p, _)| p == "other"));
    assert!(matches!(
        st.apply(&req(11, remove(None))),
        Response::Error(e) if e.contains("no project")
    ));
}

#[test]
fn a_config_change_that_would_make_an_apps_environment_too_large_is_refused() {
    use cairn_protocol::config::MAX_ENV_BYTES;
    let mut st = State::default();
    running_job(&mut st, "web"); // hello/web exists
    let app = ConfigScope::App {
        project: "hello".into(),
        app: "web".into(),
    };
    let set = |st: &mut State, scope: &ConfigScope, name: &str, len: usize| {
        st.apply(&req(
            1,
            Command::SetConfig {
                var: ConfigVar {
                    scope: scope.clone(),
                    name: name.into(),
                    value: "x".repeat(len),
                    secret: false,
                },
            },
        ))
    };
    // 60 KB values, one by one: accepted while the total fits.
    let value = 60 * 1024;
    let fit = MAX_ENV_BYTES / (value + 16);
    for i in 0..fit {
        assert_eq!(set(&mut st, &app, &format!("BIG{i}"), value), Response::Ok);
    }
    let before = st.clone();
    let Response::Error(e) = set(&mut st, &app, "ONE_MORE", value) else {
        panic!("an environment past the limit was accepted")
    };
    assert!(
        e.contains("app web") && e.contains(&format!("limit of {MAX_ENV_BYTES} bytes")),
        "{e}"
    );
    assert_eq!(st, before, "a refused change changed the state");
    // Replacing a value with one of the same size is fine (it is not counted
    // twice), and so is a small one.
    assert_eq!(set(&mut st, &app, "BIG0", value), Response::Ok);
    assert_eq!(set(&mut st, &app, "SMALL", 10), Response::Ok);
    // A project-wide value counts for every app of the project…
    let project = ConfigScope::Project("hello".into());
    assert!(matches!(
        set(&mut st, &project, "SHARED", value),
        Response::Error(e) if e.contains("app web")
    ));
    // …unless the app overrides the same name (its value is the one used).
    assert_eq!(set(&mut st, &project, "BIG1", value), Response::Ok);
    // Other projects are not affected.
    assert_eq!(
        set(
            &mut st,
            &ConfigScope::Project("other".into()),
            "SHARED",
            value
        ),
        Response::Ok
    );
}

fn enroll(st: &mut State, now: u64, id: &str, key: &str, token: Option<&str>) -> Response {
    let labels: BTreeMap<String, String> = [("zone".to_string(), "own".to_string())].into();
    st.apply(&req(
        now,
        Command::EnrollRunner {
            id: id.into(),
            key_fingerprint: key.into(),
            labels,
            token: token.map(str::to_string),
        },
    ))
}

fn runner_token(st: &mut State, hash: &str, expires_ms: Option<u64>) {
    let labels: BTreeMap<String, String> = [
        ("zone".to_string(), "shop".to_string()),
        ("gpu".to_string(), "yes".to_string()),
    ]
    .into();
    let record = TokenRecord {
        id: format!("runner-{hash}"),
        hash: hash.into(),
        scope: TokenScope::Runner,
        name: "edge".into(),
        created_ms: 1,
        expires_ms,
        revoked: false,
    };
    assert_eq!(
        st.apply(&req(
            1,
            Command::CreateRunnerToken {
                record: Box::new(record),
                labels
            }
        )),
        Response::Ok
    );
}

#[test]
fn a_runner_without_a_token_waits_until_adopted_and_keeps_its_key() {
    use cairn_protocol::api::RunnerDecision;
    let mut st = State::default();
    let value = |s: &str| Response::Value(Some(s.to_string()));
    assert_eq!(enroll(&mut st, 5, "edge-1", "k1", None), value("pending"));
    assert!(matches!(st.runner_admitted("edge-1", "k1"), Err(e) if e.contains("waits")));
    // Asking again changes nothing; another key cannot take the id.
    assert_eq!(enroll(&mut st, 6, "edge-1", "k1", None), value("pending"));
    let Response::Error(e) = enroll(&mut st, 7, "edge-1", "k2", None) else {
        panic!("another key took the id")
    };
    assert!(e.contains("another key"), "{e}");
    let adopt = |decision| Command::DecideRunner {
        id: "edge-1".into(),
        decision,
        by: "user:a".into(),
    };
    assert_eq!(
        st.apply(&req(8, adopt(RunnerDecision::Adopt))),
        Response::Ok
    );
    assert_eq!(enroll(&mut st, 9, "edge-1", "k1", None), value("adopted"));
    let rec = st.runner_admitted("edge-1", "k1").expect("admitted");
    assert_eq!(rec.decided_by.as_deref(), Some("user:a"));
    assert!(st.runner_admitted("edge-1", "k2").is_err(), "only its key");
    // Rejected: refused, and asking again says so.
    assert_eq!(
        st.apply(&req(10, adopt(RunnerDecision::Reject))),
        Response::Ok
    );
    assert!(matches!(st.runner_admitted("edge-1", "k1"), Err(e) if e.contains("rejected")));
    let Response::Error(e) = enroll(&mut st, 11, "edge-1", "k1", None) else {
        panic!("a rejected runner enrolled")
    };
    assert!(e.contains("rejected by user:a"), "{e}");
    // Forgotten: gone, and the id is free for a new key (pending again).
    assert_eq!(
        st.apply(&req(12, adopt(RunnerDecision::Forget))),
        Response::Ok
    );
    assert!(matches!(st.runner_admitted("edge-1", "k1"), Err(e) if e.contains("not enrolled")));
    assert!(matches!(
        st.apply(&req(13, adopt(RunnerDecision::Forget))),
        Response::Error(_)
    ));
    assert_eq!(enroll(&mut st, 14, "edge-1", "k2", None), value("pending"));
}

#[test]
fn a_runner_token_adopts_at_once_with_its_labels_until_it_expires() {
    let mut st = State::default();
    runner_token(&mut st, "h1", Some(100));
    let value = |s: &str| Response::Value(Some(s.to_string()));
    assert_eq!(
        enroll(&mut st, 5, "edge-1", "k1", Some("h1")),
        value("adopted")
    );
    let rec = st.runner_admitted("edge-1", "k1").expect("admitted");
    // The token's labels win over the runner's own.
    assert_eq!(rec.labels["zone"], "shop");
    assert_eq!(rec.labels["gpu"], "yes");
    assert_eq!(rec.decided_by.as_deref(), Some("token:edge"));
    // A pending runner that comes back with a token is adopted.
    assert_eq!(enroll(&mut st, 6, "edge-2", "k2", None), value("pending"));
    assert_eq!(
        enroll(&mut st, 7, "edge-2", "k2", Some("h1")),
        value("adopted")
    );
    // An expired or unknown token adopts nothing.
    for (hash, now) in [("h1", 100), ("nope", 7)] {
        let Response::Error(e) = enroll(&mut st, now, "edge-3", "k3", Some(hash)) else {
            panic!("an invalid token enrolled")
        };
        assert!(e.contains("not valid"), "{e}");
    }
    assert!(!st.runner_records.contains_key("edge-3"));
    // Bad ids and labels are refused with the reason.
    let Response::Error(e) = enroll(&mut st, 8, "a b", "k4", None) else {
        panic!("a bad id enrolled")
    };
    assert!(e.contains("not a runner id"), "{e}");
}
