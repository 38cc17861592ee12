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
    assert_eq!(url, node.url("web--v1.localhost"), "the URL service's");
    assert_eq!(http_get(&url).expect("GET before").status, 200);

    let before = snapshot(&cli);
    assert_eq!(
        before[0][0]["released_deployment"].as_u64(),
        Some(1),
        "{}",
        before[0]
    );
    assert_eq!(json::items(&before[5]).len(), 1, "one job: {}", before[5]);

    let old_addr = node.addr();
    let old_ca = node.ca_fingerprint();
    // Back on the same address (as a real node is): the context, the
    // user token and the app's entrypoints find it there.
    node.kill9();
    node.restart_same_addr();
    assert_eq!(node.ca_fingerprint(), old_ca, "same CA after restart");
    assert_eq!(node.addr(), old_addr);

    let after = snapshot(&cli);
    for ((view, b), a) in VIEWS.iter().zip(&before).zip(&after) {
        assert_eq!(
            b,
            a,
            "`cairn {}` changed across the restart",
            view.join(" ")
        );
    }
    // The app itself never noticed; its URL answers again on the restarted
    // node's ingress.
    let url = node.url("web--v1.localhost");
    let r = http_get(&url).expect("GET after restart");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Hello from Cairn"), "{r:?}");

    // And the restarted node keeps numbering where it was.
    let again = cli.run_in(app.path(), &["up"]).ok();
    assert!(again.stdout.contains("Deploying v2"), "{again}");
}
