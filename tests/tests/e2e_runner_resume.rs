//! Runners outlive their nodes, and take several jobs at once (issue 19,
//! points 3 and 4): a runner whose node dies in the middle of a job moves
//! to another member, says it carries the job, the leader resumes the job's
//! stream there (a new leader too, when the node that died was the leader),
//! and the job completes and reports; `--concurrency N` lets a runner run N
//! jobs of different apps at once.

use std::path::Path;
use std::time::Duration;

use cairn_tests::{assert_eventually, hello_app, http_get, json, Cli, TestCluster};
use serde_json::Value;

use super::e2e_runner_identity::{
    enrolled_runner, job_number, runner_token, slow_app, wait_for, Runner,
};

/// The hello app, whose build first says so and leaves `started` in
/// `gate`, then waits for `gate/go` (a hook before the build: it runs on
/// the runner, in the job's copy of the source).
fn gated_hello(gate: &Path) -> tempfile::TempDir {
    let app = hello_app();
    let hcl_path = app.path().join("cairn.hcl");
    let hcl = std::fs::read_to_string(&hcl_path).expect("cairn.hcl");
    let g = gate.display();
    let hook = format!(
        r#"    hook {{
      when    = "before"
      command = ["sh", "-c", "echo gate reached; touch {g}/started; while [ ! -e {g}/go ]; do sleep 0.2; done; echo gate opened"]
    }}

    registry {{"#
    );
    assert!(hcl.contains("    registry {"), "{hcl}");
    std::fs::write(&hcl_path, hcl.replacen("    registry {", &hook, 1)).expect("write");
    app
}

/// Which member leads, and one that does not (indexes into `nodes`).
pub(crate) fn leader_and_follower(cluster: &TestCluster) -> (usize, usize) {
    let ms = cluster.members();
    let leader = ms
        .iter()
        .find(|m| m["leader"] == true)
        .map(|m| json::s(m, "address").to_string())
        .expect("a leader");
    let l = cluster
        .nodes
        .iter()
        .position(|n| n.addr() == leader)
        .expect("the leader's node");
    let f = (0..cluster.nodes.len())
        .find(|i| *i != l)
        .expect("a follower");
    (l, f)
}

/// Queue `up` of a gated hello app for runner `name`, wait until its build
/// reached the gate, kill node `victim` (the runner's), open the gate, and
/// check that the job completes: it succeeds, the app answers, and its
/// output was neither lost nor doubled across the move.
fn job_survives_its_runners_node(cluster: &mut TestCluster, name: &str, victim: usize) {
    let gate = tempfile::tempdir().expect("gate dir");
    let token = runner_token(&cluster.admin, &[]);
    let addr = cluster.nodes[victim].addr();
    let Runner { proc, .. } = enrolled_runner(&addr, &cluster.ca, &token, name);
    let app = gated_hello(gate.path());
    let admin: &Cli = &cluster.admin;
    let id = job_number(
        &admin
            .run_in(app.path(), &["up", "--runner", name, "--detach"])
            .ok(),
    );
    assert_eventually!(
        gate.path().join("started").exists(),
        Duration::from_secs(60),
        "job {id}'s build never reached the gate: {}",
        proc.stdout_so_far()
    );
    // The runner's node dies without a word.
    cluster.nodes[victim].kill9();
    wait_for(
        &proc,
        &format!("registered again carrying the job in hand ({id})"),
        "the runner moved to another member with its job",
    );
    wait_for(
        &proc,
        &format!("resuming job {id}'s stream"),
        "the leader resumed the job's stream",
    );
    let job = |admin: &Cli| admin.json(&["job", "inspect", &id]);
    assert_eq!(job(admin)["state"], "Running", "{}", job(admin));
    std::fs::write(gate.path().join("go"), b"").expect("open the gate");
    assert_eventually!(
        job(admin)["state"] != "Running",
        Duration::from_secs(90),
        "job {id} did not end: {}",
        proc.stdout_so_far()
    );
    let done = job(admin);
    assert_eq!(
        done["state"],
        "Success",
        "{done}\nthe runner said:\n{}",
        proc.stdout_so_far()
    );
    // Its operations were recorded through the new node.
    let deps = admin.json(&["deployment", "list"]);
    let dep = json::items(&deps).first().cloned().unwrap_or(Value::Null);
    assert_eq!(dep["status"], "Success", "{deps}");
    // The job's events, as the leader has them (a node keeps the events of
    // the jobs it drove or relayed; another answers from the record): each
    // once, from before the move and after it.
    let (leader, _) = leader_and_follower(cluster);
    let attached = cluster.cli_on(leader).run(&["job", "attach", &id]).ok();
    for line in ["gate reached", "gate opened"] {
        let printed = attached
            .stdout
            .lines()
            .filter(|l| l.trim_start_matches([' ', '│']).trim_end() == line)
            .count();
        assert_eq!(printed, 1, "{line:?} once in:\n{attached}");
    }
    let url = attached
        .field("Deployment URL")
        .expect("the URLs at the end");
    let r = http_get(&url).expect("GET the deployment");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Hello from Cairn"), "{r:?}");
    let line = proc.stdout_so_far();
    assert!(
        line.contains(&format!("job {id} up hello/web: success")),
        "{line}"
    );
}

#[test]
fn a_job_survives_the_death_of_the_follower_its_runner_was_on() {
    let mut cluster = TestCluster::start(3);
    let (_, follower) = leader_and_follower(&cluster);
    job_survives_its_runners_node(&mut cluster, "edge-moving-f", follower);
}

#[test]
fn a_job_survives_the_death_of_the_leader_its_runner_was_on() {
    let mut cluster = TestCluster::start(3);
    let (leader, _) = leader_and_follower(&cluster);
    job_survives_its_runners_node(&mut cluster, "edge-moving-l", leader);
}

#[test]
fn a_runner_with_concurrency_two_runs_two_apps_jobs_at_once_and_no_third() {
    let node = cairn_tests::NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = runner_token(&admin, &["--label", "pool=wide"]);
    let mut cli = Cli::new();
    cli.set_env("CAIRN_RUNNER_TOKEN", &token);
    let dir = tempfile::tempdir().expect("tempdir");
    let proc = super::e2e_runner_identity::agent(
        &cli,
        &node.addr(),
        &node.ca_fingerprint(),
        dir.path(),
        &["--id", "edge-wide", "--concurrency", "2"],
    );
    wait_for(
        &proc,
        "runner edge-wide registered with node",
        "the runner is there",
    );
    assert!(
        proc.stdout_so_far().contains("up to 2 jobs at once"),
        "{}",
        proc.stdout_so_far()
    );
    let apps: Vec<tempfile::TempDir> = ["one", "two", "three"]
        .iter()
        .map(|a| cairn_tests::write_app(&slow_app("conc", a), &[]))
        .collect();
    let ids: Vec<String> = apps
        .iter()
        .map(|a| {
            job_number(
                &admin
                    .run_in(
                        a.path(),
                        &["build", "--runner-label", "pool=wide", "--detach"],
                    )
                    .ok(),
            )
        })
        .collect();
    let job = |id: &str| admin.json(&["job", "inspect", id]);
    for id in &ids {
        assert_eventually!(
            job(id)["state"] == "Success",
            Duration::from_secs(60),
            "job {id} did not succeed: {}",
            job(id)
        );
    }
    let jobs: Vec<Value> = ids.iter().map(|id| job(id)).collect();
    let t = |j: &Value, k: &str| json::u(j, k);
    for j in &jobs {
        assert_eq!(j["runner"], "edge-wide", "{j}");
    }
    // The first two ran at once on the one runner…
    assert!(
        t(&jobs[1], "assigned_ms") < t(&jobs[0], "completed_ms")
            && t(&jobs[0], "assigned_ms") < t(&jobs[1], "completed_ms"),
        "the first two did not run at once: {}\n{}",
        jobs[0],
        jobs[1]
    );
    // …and the third only once one of them had ended (two at most).
    let first_end = t(&jobs[0], "completed_ms").min(t(&jobs[1], "completed_ms"));
    assert!(
        t(&jobs[2], "assigned_ms") >= first_end,
        "a third job ran beside two: {}\n{}\n{}",
        jobs[0],
        jobs[1],
        jobs[2]
    );
    // Nothing was declined for being busy.
    assert!(
        !proc.stdout_so_far().contains("declined"),
        "{}",
        proc.stdout_so_far()
    );
}
