//! Across releases (issue 14): the previous release's binaries (built once
//! by `tests/upgrade/build-release.sh`, see `cairn_tests::previous_release`)
//! and this build's, on one data dir and one app.

use std::path::PathBuf;
use std::time::Duration;

use cairn_tests::{assert_eventually, http_get, previous_release, webapp, Cli, NodeProc};

/// The release the upgrade starts from (`tests/fixtures/RELEASES`).
const PREVIOUS: &str = "v0.1.0";
const WITHIN: Duration = Duration::from_secs(30);

fn old(program: &str) -> PathBuf {
    previous_release(PREVIOUS).join(program)
}

fn status(url: &str) -> u16 {
    http_get(url).map(|r| r.status).unwrap_or(0)
}

fn config_text(cli: &Cli) -> String {
    cli.run(&["config", "list", "--project", "shop", "--json"])
        .ok()
        .stdout
}

/// One node goes from the previous release to this one and back, then
/// forward again and finishes the upgrade. All along, an app deployed by
/// the previous release (its CLI, its entrypoints) keeps serving, the CLIs
/// of both releases work against the node of either (or refuse a request
/// the node cannot know, naming both versions), and every record written
/// by either release stays.
#[test]
fn a_node_upgrades_rolls_back_and_finishes_under_an_app_of_the_previous_release() {
    let mut node = NodeProc::builder().program(&old("cairn-node")).spawn();
    let mut cli = Cli::new();
    cli.set_program(Some(&old("cairn")));
    cli.connect_to(&node, "dev");
    // Deployed by the previous release: its CLI runs its entrypoint (the
    // `cairn-entrypoint` beside it) in front of both instances.
    let shop = webapp(2);
    cli.run_in(shop.path(), &["up"]).ok();
    assert_eq!(
        running(&old("cairn-entrypoint")),
        2,
        "the previous release's entrypoints"
    );
    assert_eventually!(status(&node.url("web.localhost")) == 200, WITHIN);
    cli.run(&["config", "set", "--project", "shop", "A=1"]).ok();

    // Up to this build.
    node.replace_binary(None);
    assert_eventually!(status(&node.url("web.localhost")) == 200, WITHIN);
    assert_eventually!(connected(&cli) == 2, WITHIN);
    assert!(config_text(&cli).contains("\"A\""));
    cli.set_program(None);
    let members = cli.run(&["server", "members"]).ok();
    assert!(
        members.stdout.contains(cairn_protocol::VERSION)
            && members.stdout.contains("Cluster version: protocol 4"),
        "{members}"
    );
    let plan = cli.run(&["server", "upgrade"]).ok();
    assert!(
        plan.stdout
            .contains("Every voter speaks protocol version 5")
            && plan
                .stdout
                .contains("until then any node can be rolled back"),
        "{plan}"
    );
    cli.run(&["config", "set", "--project", "shop", "B=2"]).ok();

    // Back to the previous release, on the same data dir: nothing this
    // build wrote is beyond it while the cluster version is 4.
    node.replace_binary(Some(&old("cairn-node")));
    assert_eventually!(status(&node.url("web.localhost")) == 200, WITHIN);
    cli.set_program(Some(&old("cairn")));
    let text = config_text(&cli);
    assert!(text.contains("\"A\"") && text.contains("\"B\""), "{text}");
    // This build's CLI against the previous release's node: what that node
    // knows works; what it does not is refused before it is sent.
    cli.set_program(None);
    assert!(config_text(&cli).contains("\"B\""));
    let refused = cli.run(&["server", "upgrade"]).fails();
    assert!(
        refused
            .stderr
            .contains("runs cairn-node 0.1.0 (protocol version 4)")
            && refused.stderr.contains("needs protocol version 5"),
        "{refused}"
    );
    let members = cli.run(&["server", "members"]).ok();
    assert!(
        members.stdout.contains("does not report releases"),
        "{members}"
    );

    // Forward again, and finish: from now on the node writes the new format.
    node.replace_binary(None);
    let done = cli.run(&["server", "upgrade", "--finish"]).ok();
    assert!(
        done.stdout
            .contains("The upgrade is finished: the cluster uses protocol version 5"),
        "{done}"
    );
    cli.run(&["config", "set", "--project", "shop", "C=3"]).ok();
    node.replace_binary(None);
    let text = config_text(&cli);
    for k in ["\"A\"", "\"B\"", "\"C\""] {
        assert!(text.contains(k), "{k} in {text}");
    }
    assert!(cli
        .run(&["server", "members"])
        .ok()
        .stdout
        .contains("Cluster version: protocol 5"));
    // The previous release's CLI and entrypoints still work at version 5.
    assert_eventually!(status(&node.url("web.localhost")) == 200, WITHIN);
    assert_eventually!(connected(&cli) == 2, WITHIN);
    cli.set_program(Some(&old("cairn")));
    assert!(config_text(&cli).contains("\"C\""));
    assert_eq!(running(&old("cairn-entrypoint")), 2, "the same entrypoints");
    cli.set_program(None);
}

/// How many processes run `program` or a copy of it (the process platform
/// runs a copy of the entrypoint beside the deployment).
fn running(program: &std::path::Path) -> usize {
    let want = std::fs::read(program).expect("program");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| {
            let exe = e.ok()?.path().join("exe");
            let len = std::fs::metadata(&exe).ok()?.len();
            (len == want.len() as u64).then_some(exe)
        })
        .filter(|exe| std::fs::read(exe).is_ok_and(|b| b == want))
        .count()
}

/// Instances of `shop/web` connected now.
fn connected(cli: &Cli) -> usize {
    let out = cli.run(&["instance", "list", "--json"]);
    if !out.success() {
        return 0;
    }
    out.json()
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["state"].as_str() == Some("connected"))
                .count()
        })
        .unwrap_or(0)
}

/// A job kind newer than a CLI's release (a status job, protocol 5) is left
/// out of what that CLI lists and refused by id with what to do, so the
/// previous release's `job list` keeps working on an upgraded cluster.
#[test]
fn a_previous_release_cli_is_not_shown_jobs_it_cannot_read() {
    let node = NodeProc::start_new();
    let mut cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = cairn_tests::hello_app();
    cli.run_in(app.path(), &["up"]).ok();
    cli.run_in(app.path(), &["status"]).ok();
    let jobs = cli.json(&["job", "list"]);
    let all = cairn_tests::json::items(&jobs);
    assert_eq!(all.len(), 2, "{jobs}");
    let status_job = all
        .iter()
        .find(|j| j["spec"]["kind"] == "Status")
        .map(|j| cairn_tests::json::u(j, "id"))
        .expect("a status job");

    cli.set_program(Some(&old("cairn")));
    let old_list = cli.json(&["job", "list"]);
    let seen = cairn_tests::json::items(&old_list);
    assert_eq!(seen.len(), 1, "only the up job: {old_list}");
    assert_ne!(cairn_tests::json::u(&seen[0], "id"), status_job);
    let out = cli
        .run(&["job", "inspect", &status_job.to_string()])
        .fails();
    assert!(
        out.stderr
            .contains("is a status job, which cairn 0.1.0 cannot show: upgrade this CLI"),
        "{out}"
    );
}

/// A runner of the previous release (protocol 4) is never offered a status
/// job (a protocol-5 kind it could not read): the job fails at once, naming
/// the runner and what it needs, and the runner keeps running.
#[test]
fn a_previous_release_runner_is_not_offered_a_status_job() {
    let node = NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = cairn_tests::json::s(&admin.context_file("dev"), "token").to_string();
    let mut agent_cli = Cli::new();
    agent_cli.set_program(Some(&old("cairn")));
    agent_cli
        .run(&[
            "context",
            "create",
            "dev",
            "--address",
            &node.addr(),
            "--ca-fingerprint",
            &node.ca_fingerprint(),
            "--token",
            &token,
            "--use",
        ])
        .ok();
    let agent = agent_cli.spawn(&["runner", "agent", "--id", "old-agent"]);
    assert_eventually!(
        agent.stdout_so_far().contains(" registered with node "),
        Duration::from_secs(30),
        "the 0.1.0 agent never registered; it said:\n{}",
        agent.stdout_so_far()
    );

    // A deployment (made by this release's CLI runner) to ask about.
    let app = cairn_tests::hello_app();
    admin.run_in(app.path(), &["up"]).ok();
    let out = admin.run_in(app.path(), &["status", "--json", "--runner", "old-agent"]);
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        text.contains(
            "runner old-agent speaks protocol 4, and a status job needs 5: upgrade that runner"
        ),
        "{out}"
    );
    let jobs = admin.json(&["job", "list"]);
    let job = cairn_tests::json::items(&jobs)
        .iter()
        .find(|j| j["spec"]["kind"] == "Status")
        .cloned()
        .expect("the status job is listed");
    assert_eq!(job["state"], "Error", "{job}");
    // The old agent is still there and was never handed the job.
    assert!(cairn_tests::pid_alive(agent.pid()));
    assert!(
        !agent.stdout_so_far().contains("status"),
        "{}",
        agent.stdout_so_far()
    );
}
