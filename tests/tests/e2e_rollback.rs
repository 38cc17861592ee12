//! Rollback: two deployments side by side, releasing the older one, then
//! destroying everything.

use std::time::Duration;

use cairn_tests::{
    assert_eventually, hello_app, http_get, json, pid_alive, port_open, Cli, NodeProc,
};
use serde_json::Value;

/// (sequence, url, ports, supervisor pids, child pids) of a deployment record.
fn instances(dep: &Value) -> (u64, String, Vec<u16>, Vec<u32>) {
    let res = json::result(dep);
    let mut ports = Vec::new();
    let mut sups = Vec::new();
    for i in json::items(&res["instances"]) {
        ports.push(json::u(i, "port") as u16);
        sups.push(json::u(i, "supervisor_pid") as u32);
    }
    (
        json::u(dep, "sequence"),
        json::s(dep, "url").to_string(),
        ports,
        sups,
    )
}

/// SIGKILL to `pid`.
fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// The command pids recorded by the supervisors of a deployment record.
fn child_pids(dep: &Value) -> Vec<u32> {
    let res = json::result(dep);
    json::items(&res["instances"])
        .iter()
        .filter_map(|i| {
            let text = std::fs::read_to_string(json::s(i, "state")).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            v["child_pid"].as_u64().map(|p| p as u32)
        })
        .collect()
}

#[test]
fn release_of_an_older_deployment_rolls_back_and_destroy_stops_everything() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = hello_app();

    cli.run_in(app.path(), &["build"]).ok();
    cli.run_in(app.path(), &["deploy"]).ok();
    cli.run_in(app.path(), &["deploy"]).ok();
    // Release the latest (v2), then roll back to v1.
    let rel = cli.run_in(app.path(), &["release"]).ok();
    assert!(rel.stdout.contains("deployment v2"), "{rel}");
    let rb = cli.run_in(app.path(), &["release", "1"]).ok();
    let release_url = rb.field("Release URL").expect("Release URL line");

    let releases = cli.json(&["release", "list"]);
    let rels = json::items(&releases);
    assert_eq!(rels.len(), 2, "{releases}");
    let newest = rels
        .iter()
        .max_by_key(|r| json::u(r, "sequence"))
        .expect("a release");
    assert_eq!(json::u(newest, "sequence"), 2, "{newest}");
    assert_eq!(
        json::u(newest, "input_seq"),
        1,
        "newest release points at v1: {newest}"
    );
    assert_eq!(json::s(newest, "status"), "Success");

    let deps = cli.json(&["deployment", "list"]);
    let list = json::items(&deps);
    assert_eq!(list.len(), 2, "{deps}");
    let mut all_ports = Vec::new();
    let mut all_sups = Vec::new();
    let mut all_children = Vec::new();
    for d in list {
        assert_eq!(json::s(d, "status"), "Success", "{d}");
        assert!(json::u(d, "started_ms") > 0, "{d}");
        assert!(d["completed_ms"].as_u64().is_some(), "{d}");
        assert_eq!(json::s(d, "state"), "Active", "{d}");
        let (seq, url, ports, sups) = instances(d);
        // Both deployments keep running and answer as themselves.
        let r = http_get(&url).expect("GET deployment URL");
        assert_eq!(r.status, 200, "{url}: {r:?}");
        assert!(r.body.contains(&format!("deployment v{seq}")), "{r:?}");
        assert_eq!(ports.len(), 2);
        for p in &ports {
            let r = http_get(&format!("http://127.0.0.1:{p}/")).expect("GET instance");
            assert!(r.body.contains(&format!("deployment v{seq}")), "{r:?}");
        }
        all_ports.extend(ports);
        all_sups.extend(sups);
        all_children.extend(child_pids(d));
    }
    assert_eq!(
        all_children.len(),
        4,
        "every instance has a running command"
    );
    // The release URL now serves v1.
    let r = http_get(&release_url).expect("GET release URL");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("deployment v1"), "{r:?}");

    let st = cli.json(&["status"]);
    assert_eq!(st[0]["released_deployment"].as_u64(), Some(1), "{st}");
    // Outside the app's directory, the platform is not asked; in it, the
    // process plugin reports through a status job that this CLI runs.
    assert!(st[0]["deployments"][0]["platform"].is_null(), "{st}");
    let jobs_before = json::items(&cli.json(&["job", "list"])).len();
    let st = cli.run_in(app.path(), &["status", "--json"]).ok().json();
    let rows = json::items(&st[0]["deployments"]);
    assert_eq!(rows.len(), 2, "{st}");
    for d in rows {
        assert_eq!(d["platform"]["instances"].as_u64(), Some(2), "{d}");
        assert_eq!(d["platform"]["alive"].as_u64(), Some(2), "{d}");
        assert_eq!(d["platform"]["state"], "ready", "{d}");
    }
    let jobs = cli.json(&["job", "list"]);
    assert_eq!(json::items(&jobs).len(), jobs_before + 1, "{jobs}");
    assert!(
        json::items(&jobs)
            .iter()
            .any(|j| j["spec"]["kind"] == "Status" && j["state"] == "Success"),
        "a status job ran: {jobs}"
    );
    // A dead instance shows in the platform's report.
    let (_, _, _, sups) = instances(&list[0]);
    let victim = sups[0];
    // Stop the supervisor (SIGKILL: nothing restarts it) and its command.
    let child = child_pids(&list[0])[0];
    kill9(victim);
    kill9(child);
    assert_eventually!(
        !pid_alive(victim) && !pid_alive(child),
        Duration::from_secs(5),
        "instance 0 of v{} lives",
        json::u(&list[0], "sequence")
    );
    let st = cli.run_in(app.path(), &["status", "--json"]).ok().json();
    let seq0 = json::u(&list[0], "sequence");
    let row = json::items(&st[0]["deployments"])
        .iter()
        .find(|d| d["sequence"].as_u64() == Some(seq0))
        .expect("row");
    assert_eq!(row["platform"]["alive"].as_u64(), Some(1), "{row}");
    assert_eq!(row["platform"]["state"], "partial", "{row}");
    let text = cli.run_in(app.path(), &["status"]).ok();
    assert!(text.stdout.contains("1/2 instances up (partial)"), "{text}");

    // Destroy: every process gone, every port closed, records say destroyed.
    cli.run_in(app.path(), &["destroy"]).ok();
    for p in all_sups.iter().chain(all_children.iter()) {
        assert_eventually!(
            !pid_alive(*p),
            Duration::from_secs(10),
            "pid {p} still alive after destroy"
        );
    }
    for port in &all_ports {
        assert!(
            !port_open(*port),
            "port {port} still listening after destroy"
        );
    }
    let deps = cli.json(&["deployment", "list"]);
    for d in json::items(&deps) {
        assert_eq!(json::s(d, "state"), "Destroyed", "{d}");
        assert_eq!(json::s(d, "status"), "Success", "{d}");
    }
    let st = cli.json(&["status"]);
    assert!(json::items(&st[0]["deployments"]).is_empty(), "{st}");
}
