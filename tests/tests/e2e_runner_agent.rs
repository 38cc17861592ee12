//! `cairn runner agent`: a standalone runner that jobs aim at with
//! `--runner ID` / `--runner-label K=V`. It may connect to any member (the
//! leader relays offers through followers), moves to another member when
//! its node dies, and stops cleanly on SIGTERM.

use std::path::Path;
use std::time::Duration;

use cairn_tests::{
    assert_eventually, hello_app, http_get, json, pid_alive, signal, write_app, Background, Cli,
    NodeProc, TestCluster,
};
use serde_json::Value;

/// A context named `name` on `addr` with a user token (the bootstrap token
/// is one-time: only the first CLI can use it).
fn context_with_token(cli: &Cli, name: &str, addr: &str, ca: &str, token: &str) {
    cli.run(&[
        "context",
        "create",
        name,
        "--address",
        addr,
        "--ca-fingerprint",
        ca,
        "--token",
        token,
        "--use",
    ])
    .ok();
}

/// Start `cairn runner agent ARGS…` with `cli`'s home and wait until it
/// says it registered.
fn start_agent(cli: &Cli, args: &[&str]) -> Background {
    let mut all = vec!["runner", "agent"];
    all.extend_from_slice(args);
    let agent = cli.spawn(&all);
    assert_eventually!(
        agent.stdout_so_far().contains(" registered with node "),
        Duration::from_secs(30),
        "the agent never registered; it said:\n{}",
        agent.stdout_so_far()
    );
    agent
}

fn job_list(cli: &Cli) -> Vec<Value> {
    json::items(&cli.json(&["job", "list"])).clone()
}

#[test]
fn an_agent_on_a_follower_runs_targeted_jobs_and_moves_when_its_node_dies() {
    // Three nodes: the first bootstraps, two join through it.
    let cluster = TestCluster::start(3);
    let ms = cluster.members();
    let TestCluster {
        mut nodes,
        admin,
        token,
        ca,
    } = cluster;
    let leader = ms
        .iter()
        .find(|m| m["leader"] == true)
        .map(|m| json::s(m, "address").to_string())
        .expect("a leader");
    let follower = nodes
        .iter()
        .position(|n| n.addr() != leader)
        .expect("a follower");

    // The agent's context names a follower: offers reach it through a relay.
    let agent_cli = Cli::new();
    context_with_token(&agent_cli, "f", &nodes[follower].addr(), &ca, &token);
    let agent = start_agent(&agent_cli, &["--id", "e2e-agent", "--label", "zone=a"]);
    assert!(
        agent.stdout_so_far().contains(&nodes[follower].addr()),
        "registered on the follower: {}",
        agent.stdout_so_far()
    );

    let app = hello_app();
    let up = admin
        .run_in(app.path(), &["up", "--runner", "e2e-agent"])
        .ok();
    assert!(
        up.stdout.contains("for runner e2e-agent"),
        "the CLI says where the job goes: {up}"
    );
    let url = up.field("Deployment URL").expect("Deployment URL");
    let r = http_get(&url).expect("GET the deployment");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Hello from Cairn"), "{r:?}");
    let jobs = job_list(&admin);
    assert_eq!(json::s(&jobs[0], "runner"), "e2e-agent", "{jobs:?}");
    assert_eventually!(
        agent.stdout_so_far().contains(" up hello/web: success"),
        Duration::from_secs(10),
        "one line per job: {}",
        agent.stdout_so_far()
    );
    // The deployment runs on the agent's machine, from its data dir.
    assert!(
        !agent_cli.supervisor_pids().is_empty(),
        "the agent's runner dir holds the deployment"
    );

    // The agent's node dies; the agent moves to a live member.
    let dead = nodes[follower].addr();
    nodes[follower].kill9();
    assert_eventually!(
        agent.stdout_so_far().contains("moved from node "),
        Duration::from_secs(60),
        "the agent never moved; it said:\n{}",
        agent.stdout_so_far()
    );
    let log = agent.stdout_so_far();
    let moved = log
        .lines()
        .find(|l| l.contains("moved from node "))
        .expect("a move line");
    assert!(moved.contains(&dead), "{moved}");
    assert_eq!(
        log.matches("moved from node ").count(),
        1,
        "one line per move: {log}"
    );

    // The CLI's context may have named the dead node: it moves by itself.
    let again = admin
        .run_in(app.path(), &["up", "--runner", "e2e-agent"])
        .ok();
    assert!(again.stdout.contains("Deploying v2"), "{again}");
    let url2 = again.field("Deployment URL").expect("Deployment URL");
    let r = http_get(&url2).expect("GET the second deployment");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eventually!(
        agent
            .stdout_so_far()
            .matches(" up hello/web: success")
            .count()
            == 2,
        Duration::from_secs(10),
        "{}",
        agent.stdout_so_far()
    );

    // Destroy goes to the runner that holds the deployments.
    admin
        .run_in(app.path(), &["destroy", "--runner", "e2e-agent"])
        .ok();
    assert_eventually!(
        http_get(&url2).map(|r| r.status != 200).unwrap_or(true),
        Duration::from_secs(20),
        "v2 still answers after destroy"
    );

    signal(agent.pid(), "TERM");
    let out = agent.wait(Duration::from_secs(30));
    eprintln!("the agent's log:\n{}", out.stdout);
    assert_eq!(out.code, Some(0), "SIGTERM stops the agent cleanly: {out}");
    assert!(
        out.stdout.contains("runner agent e2e-agent stopped"),
        "{out}"
    );
}

/// A build that takes a few seconds and says when it started.
const SLOW_APP: &str = r#"
project = "slow"

app "slow" {
  build {
    use "command" {
      command = ["sh", "-c", "touch started; sleep 5; echo built > out"]
      output  = "out"
    }
  }

  deploy {
    use "process" {
      command = ["python3", "-c", "import time; time.sleep(60)"]
    }
  }
}
"#;

#[test]
fn agents_take_jobs_by_label_unknown_runners_are_waited_for_and_sigterm_cancels_the_job_in_hand() {
    let node = NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = json::s(&admin.context_file("dev"), "token").to_string();
    let agent_cli = Cli::new();
    context_with_token(
        &agent_cli,
        "dev",
        &node.addr(),
        &node.ca_fingerprint(),
        &token,
    );

    // No --id: a stable id, kept in the CLI's data dir.
    let agent = start_agent(&agent_cli, &["--label", "zone=b"]);
    let id_file = agent_cli.data_dir().join("runner-agent.id");
    let id = std::fs::read_to_string(&id_file)
        .expect("the agent stored its id")
        .trim()
        .to_string();
    assert!(id.starts_with("agent-"), "{id}");
    assert!(
        agent
            .stdout_so_far()
            .contains(&format!("runner {id} registered")),
        "{}",
        agent.stdout_so_far()
    );
    let listed = admin.json(&["runner", "list"]);
    assert!(
        json::items(&listed)
            .iter()
            .any(|r| r["id"] == id.as_str() && r["kind"] == "Agent"),
        "{listed}"
    );

    // By label.
    let app = hello_app();
    let built = admin
        .run_in(app.path(), &["build", "--runner-label", "zone=b"])
        .ok();
    assert!(built.stdout.contains("Building v1"), "{built}");
    assert_eq!(json::s(&job_list(&admin)[0], "runner"), id);

    // A runner nobody runs: the job waits in the queue, the CLI says so,
    // and Ctrl-C cancels the job.
    let d = app.path().to_string_lossy().to_string();
    let waiting = admin.spawn(&["-C", &d, "deploy", "--runner", "nobody"]);
    assert_eventually!(
        waiting
            .stdout_so_far()
            .contains("no runner nobody has registered with this cluster yet"),
        Duration::from_secs(30),
        "{}",
        waiting.stdout_so_far()
    );
    signal(waiting.pid(), "INT");
    let out = waiting.wait(Duration::from_secs(30));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("cancelled"), "{out}");
    assert_eq!(
        job_list(&admin)[0]["state"],
        "Cancelled",
        "{:?}",
        job_list(&admin)
    );

    // SIGTERM while a job runs: the agent cancels it and exits 0.
    let slow = write_app(SLOW_APP, &[]);
    admin.track(slow.path());
    let s = slow.path().to_string_lossy().to_string();
    let follower = admin.spawn(&["-C", &s, "up", "--runner", &id]);
    // The job carries its source: the build runs in the agent's copy.
    assert_eventually!(
        cairn_tests::find_file(&agent_cli.data_dir(), "started").is_some(),
        Duration::from_secs(30),
        "the slow build never started: {}",
        follower.stdout_so_far()
    );
    let agent_pid = agent.pid();
    signal(agent_pid, "TERM");
    let out = agent.wait(Duration::from_secs(40));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("cancelling the job in hand"), "{out}");
    assert!(
        out.stdout.contains(" up slow/slow: cancelled"),
        "one line for the cancelled job: {out}"
    );
    let followed = follower.wait(Duration::from_secs(30));
    assert_eq!(followed.code, Some(1), "{followed}");
    assert!(followed.stderr.contains("cancelled"), "{followed}");
    assert!(!pid_alive(agent_pid));
    assert!(
        agent_cli.supervisor_pids().is_empty(),
        "nothing was deployed: {:?}",
        agent_cli.supervisor_pids()
    );
    assert!(Path::new(&id_file).exists());
}
