//! A runner behind NAT (issue 19): the cluster in one network namespace, a
//! runner in another that can only dial out (masqueraded; nothing can
//! connect in, which the test proves), and the CLI in a third (the root
//! namespace). The CLI queues `cairn up` with its source and goes away; the
//! runner, which has no copy of the source, runs it; the app it deploys
//! answers through the cluster's URL service (over the entrypoint's own
//! outbound connection).

use std::time::Duration;

use cairn_tests::nat::Nat;
use cairn_tests::{assert_eventually, hello_app, Cli, NodeProc};

fn curl_ok(ns: Option<&str>, args: &[&str]) -> Option<String> {
    let mut all = vec!["curl", "-s", "-f", "--max-time", "3"];
    all.extend_from_slice(args);
    match ns {
        Some(ns) => Nat::run_in(ns, &all),
        None => {
            let out = std::process::Command::new(all[0])
                .args(&all[1..])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }
}

#[test]
fn a_runner_behind_nat_runs_jobs_queued_elsewhere_and_its_app_answers_through_the_url_service() {
    let nat = Nat::setup();
    let node = NodeProc::builder()
        .wrapper(&Nat::exec_in(&nat.cloud_ns))
        .listen(&format!("{}:9701", nat.cloud_ip))
        .arg("--ingress")
        .arg(&format!("{}:9703", nat.cloud_ip))
        .arg("--http")
        .arg(&format!("{}:9702", nat.cloud_ip))
        .spawn();
    let admin = Cli::new();
    admin.connect_to(&node, "cloud");
    let token = admin
        .run(&["runner", "token", "--label", "site=shop"])
        .ok()
        .stdout
        .trim()
        .to_string();

    // The runner, in the edge namespace.
    let mut edge = Cli::new();
    edge.set_env("CAIRN_RUNNER_TOKEN", &token);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_string_lossy().into_owned();
    let addr = node.addr();
    let fp = node.ca_fingerprint();
    let agent = edge.spawn_under(
        &Nat::exec_in(&nat.edge_ns),
        &[
            "runner",
            "agent",
            "--address",
            &addr,
            "--ca-fingerprint",
            &fp,
            "--data-dir",
            &d,
            "--id",
            "edge-nat",
        ],
    );
    assert_eventually!(
        agent
            .stdout_so_far()
            .contains("runner edge-nat registered with node"),
        Duration::from_secs(30),
        "the runner never registered: {}\n{}",
        agent.stdout_so_far(),
        agent.stderr_so_far()
    );
    // Its connections reach the cloud masqueraded.
    assert!(
        node.log().contains(&nat.masquerade_ip),
        "the node saw the runner come from {}: {}",
        nat.masquerade_ip,
        node.log()
    );

    // Nothing connects in: a listener in the edge answers there, and from
    // neither the cloud nor the root namespace.
    let mut listener = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &nat.edge_ns,
            "python3",
            "-m",
            "http.server",
            "18080",
            "--bind",
            "0.0.0.0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("listener");
    assert_eventually!(
        curl_ok(Some(&nat.edge_ns), &["http://127.0.0.1:18080/"]).is_some(),
        Duration::from_secs(10),
        "the listener in the edge never answered there"
    );
    let inward = format!("http://{}:18080/", nat.edge_ip);
    assert_eq!(
        curl_ok(Some(&nat.cloud_ns), &[&inward]),
        None,
        "the cloud connected in"
    );
    assert_eq!(
        curl_ok(None, &[&inward]),
        None,
        "the root namespace connected in"
    );
    let _ = listener.kill();
    let _ = listener.wait();

    // The CLI queues `up` with its source and leaves; its copy goes away.
    let app = hello_app();
    let queued = admin
        .run_in(
            app.path(),
            &["up", "--runner-label", "site=shop", "--detach"],
        )
        .ok();
    assert!(queued.stdout.contains("✓ Source sha256:"), "{queued}");
    let id: String = queued
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("Job ")
                .and_then(|r| r.split_whitespace().next())
        })
        .expect("the job's number")
        .to_string();
    drop(app);
    let done = admin.run(&["job", "attach", &id]).ok();
    let url = done.field("Deployment URL").expect("Deployment URL");
    let release = done.field("Release URL").expect("Release URL");

    // The app runs in the edge and answers through the URL service.
    for u in [&url, &release] {
        let rest = u.trim_start_matches("http://");
        let hostport = rest.split('/').next().expect("host:port");
        let resolve = format!("{hostport}:{}", nat.cloud_ip);
        let body = curl_ok(None, &["--resolve", &resolve, u]).unwrap_or_default();
        assert!(body.contains("Hello from Cairn"), "{u} answered: {body:?}");
    }
    let jobs = cairn_tests::json::items(&admin.json(&["job", "list"])).clone();
    assert_eq!(
        cairn_tests::json::s(&jobs[0], "runner"),
        "edge-nat",
        "{jobs:?}"
    );

    // Destroyed by the same runner, the source sent again from a new copy.
    let again = hello_app();
    admin
        .run_in(again.path(), &["destroy", "--runner", "edge-nat"])
        .ok();
    drop(agent);
}
