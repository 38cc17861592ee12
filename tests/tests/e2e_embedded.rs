//! The embedded default: with no context, `cairn up` starts a local node in
//! the background, deploys examples/hello, and the next `up` reuses that node.

use cairn_tests::{assert_eventually, hello_app, http_get, json, pid_alive, Cli};
use std::time::Duration;

#[test]
fn embedded_default_up_serves_hello_and_reuses_the_local_node() {
    let cli = Cli::new();
    let app = hello_app();
    assert!(cli.local_ready().is_none(), "fresh CAIRN_HOME has no node");

    // First up: starts the local node, builds, deploys, releases.
    let up1 = cli.run_in(app.path(), &["up"]).ok();
    let release_url = up1
        .field("Release URL")
        .unwrap_or_else(|| panic!("no `Release URL:` line: {up1}"));
    let deploy_url = up1
        .field("Deployment URL")
        .unwrap_or_else(|| panic!("no `Deployment URL:` line: {up1}"));
    assert!(deploy_url.starts_with("http://"), "{up1}");

    let r = http_get(&deploy_url).expect("GET deployment URL");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Hello from Cairn"), "{r:?}");
    assert!(r.body.contains("deployment v1"), "{r:?}");
    let r = http_get(&release_url).expect("GET release URL");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("Hello from Cairn"), "{r:?}");

    let ready1 = cli.local_ready().expect("the local node wrote ready.json");
    assert!(
        pid_alive(ready1.pid),
        "local node {} is running",
        ready1.pid
    );
    // The embedded default created and uses the `local` context.
    assert!(cli.context_file("local")["local"]
        .as_bool()
        .unwrap_or(false));

    // Second up: same node (same pid), deployment v2.
    let up2 = cli.run_in(app.path(), &["up"]).ok();
    assert!(
        !up2.stderr.contains("Starting a local Cairn node"),
        "second up must not start another node: {up2}"
    );
    let ready2 = cli.local_ready().expect("ready.json still there");
    assert_eq!(ready1.pid, ready2.pid, "second up reused the local node");
    assert_eq!(ready1.addr, ready2.addr);
    assert!(up2.stdout.contains("Deploying v2"), "{up2}");
    let deploy_url2 = up2.field("Deployment URL").expect("Deployment URL");
    let r = http_get(&deploy_url2).expect("GET v2");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("deployment v2"), "{r:?}");

    let deps = cli.json(&["deployment", "list"]);
    let seqs: Vec<u64> = json::items(&deps)
        .iter()
        .map(|d| json::u(d, "sequence"))
        .collect();
    assert_eq!(seqs, vec![1, 2], "{deps}");
    for d in json::items(&deps) {
        assert_eq!(json::s(d, "status"), "Success", "{d}");
    }
    let releases = cli.json(&["release", "list"]);
    let newest = json::items(&releases).last().expect("a release").clone();
    assert_eq!(json::u(&newest, "input_seq"), 2, "{releases}");

    // Clean up explicitly (the drop guard would too) and check it worked.
    let pids = cli.supervisor_pids();
    assert_eq!(pids.len(), 4, "2 deployments × 2 instances");
    cli.run_in(app.path(), &["destroy"]).ok();
    assert_eventually!(
        pids.iter().all(|p| !pid_alive(*p)),
        Duration::from_secs(15),
        "supervisors {pids:?} still alive after destroy"
    );
    cli.run(&["server", "stop-local"]).ok();
    assert_eventually!(!pid_alive(ready1.pid), Duration::from_secs(15));
}
