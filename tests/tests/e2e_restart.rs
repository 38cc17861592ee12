//! A node restart keeps everything: after `kill -9` and a restart on the same
//! data dir, status, lists, jobs and tokens are what they were.

use cairn_tests::{hello_app, http_get, json, Cli, NodeProc};
use serde_json::Value;

const VIEWS: [&[&str]; 6] = [
    &["status"],
    &["artifact", "list"],
    &["artifact", "pushed"],
    &["deployment", "list"],
    &["release", "list"],
    &["job", "list"],
];

fn snapshot(cli: &Cli) -> Vec<Value> {
    VIEWS.iter().map(|v| cli.json(v)).collect()
}

#[test]
fn node_restart_after_kill9_keeps_status_and_history() {
    let mut node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = hello_app();
    let up = cli.run_in(app.path(), &["up"]).ok();
    let url = up.field("Deployment URL").expect("Deployment URL");

    let before = snapshot(&cli);
    assert_eq!(
        before[0][0]["released_deployment"].as_u64(),
        Some(1),
        "{}",
        before[0]
    );
    assert_eq!(json::items(&before[5]).len(), 1, "one job: {}", before[5]);

    let token = json::s(&cli.context_file("dev"), "token").to_string();
    let old_addr = node.addr();
    let old_ca = node.ca_fingerprint();
    node.kill9();
    node.restart();
    assert_eq!(node.ca_fingerprint(), old_ca, "same CA after restart");

    // The node picked a new port; a new context with the same user token
    // works, so the token survived too.
    if node.addr() != old_addr {
        cli.run(&[
            "context",
            "create",
            "dev2",
            "--address",
            &node.addr(),
            "--ca-fingerprint",
            &old_ca,
            "--token",
            &token,
            "--use",
        ])
        .ok();
    }

    let after = snapshot(&cli);
    for ((view, b), a) in VIEWS.iter().zip(&before).zip(&after) {
        assert_eq!(
            b,
            a,
            "`cairn {}` changed across the restart",
            view.join(" ")
        );
    }
    // The app itself never noticed.
    let r = http_get(&url).expect("GET after restart");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Hello from Cairn"), "{r:?}");

    // And the restarted node keeps numbering where it was.
    let again = cli.run_in(app.path(), &["up"]).ok();
    assert!(again.stdout.contains("Deploying v2"), "{again}");
}
