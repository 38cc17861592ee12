//! Containers on the real Docker engine: `cairn up` on `examples/docker-hello`
//! builds the image, injects the entrypoint, pushes it to a real registry
//! (Debian's `docker-registry` on loopback), runs two containers whose
//! entrypoints connect out to the node, and everything a developer does next
//! (URLs, logs, exec, config, rollback, destroy) works as with processes.
//!
//! Without a Docker engine these tests skip with a loud message, except in CI
//! (`CI=true`), where a missing engine fails them.

use std::time::Duration;

use cairn_tests::docker::{
    containers_of, docker_hello, docker_ready, labelled, log_instances, static_entrypoint, Registry,
};
use cairn_tests::{assert_eventually, http_get, Cli, NodeProc};

#[test]
fn docker_hello_builds_pushes_runs_and_cleans_up() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let registry = Registry::start();
    let project = format!("dh-{}", std::process::id());
    let image = format!("127.0.0.1:{}/{project}/web", registry.port);
    let app = docker_hello(&project, |t| {
        t.replace(
            "    use \"docker\" {}\n",
            &format!(
                "    use \"docker\" {{}}\n\n    registry {{\n      use \"docker\" {{\n        image = \"{image}\"\n        tag   = \"latest\"\n      }}\n    }}\n"
            ),
        )
    });
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    let up = cli.run_in(app.path(), &["up"]).ok();
    for step in [
        "Building v1 with docker",
        "Injecting the Cairn entrypoint",
        "Pushing artifact v1 with docker",
        "Deploying v1 with docker",
    ] {
        assert!(up.stdout.contains(step), "no {step:?}: {up}");
    }
    let tags = http_get(&format!(
        "http://127.0.0.1:{}/v2/{project}/web/tags/list",
        registry.port
    ))
    .expect("registry tags");
    assert!(tags.body.contains("latest"), "pushed: {tags:?}");
    assert_eq!(containers_of(&project).len(), 2, "two containers");

    // Both URLs answer through the tunnel (nothing is published on the host).
    let release_url = up.field("Release URL").expect("Release URL");
    let v1_url = up.field("Deployment URL").expect("Deployment URL");
    for url in [&release_url, &v1_url] {
        assert_eventually!(
            http_get(url).is_ok_and(
                |r| r.status == 200 && r.body.contains("Hello from Cairn in a container")
            ),
            Duration::from_secs(20),
            "{url} does not answer"
        );
    }
    // The entrypoints inside the containers registered with the node.
    assert_eventually!(
        {
            let st = cli.run_in(app.path(), &["status", "--json"]).ok().json();
            st[0]["deployments"][0]["entrypoints_connected"].as_u64() == Some(2)
                && st[0]["deployments"][0]["platform"]["alive"].as_u64() == Some(2)
        },
        Duration::from_secs(20),
        "the two entrypoints did not connect"
    );

    // Logs of both containers; exec inside one.
    for _ in 0..4 {
        let _ = http_get(&v1_url);
    }
    assert_eventually!(
        log_instances(&cli.run_in(app.path(), &["logs"]).ok().stdout).len() == 2,
        Duration::from_secs(20),
        "`cairn logs` does not show both containers"
    );
    let ls = cli.run_in(app.path(), &["exec", "--", "ls", "/"]).ok();
    assert!(
        ls.stdout.contains("cairn-entrypoint") && ls.stdout.contains("www"),
        "{ls}"
    );

    // Config: the app restarts with the new value.
    let hello = format!("{}cgi-bin/hello", v1_url);
    cli.run_in(
        app.path(),
        &["config", "set", "--app", "web", "GREETING=Bonjour"],
    )
    .ok();
    assert_eventually!(
        http_get(&hello).is_ok_and(|r| r.body.starts_with("Bonjour from ")),
        Duration::from_secs(20),
        "the containers did not pick up GREETING=Bonjour"
    );

    // v2, then roll back to v1: both keep answering on their URLs.
    let up2 = cli.run_in(app.path(), &["up"]).ok();
    assert!(up2.stdout.contains("Deploying v2 with docker"), "{up2}");
    let v2_url = up2.field("Deployment URL").expect("Deployment URL v2");
    let rb = cli.run_in(app.path(), &["release", "1"]).ok();
    assert!(rb.stdout.contains("Releasing deployment v1"), "{rb}");
    assert_eq!(
        containers_of(&project).len(),
        4,
        "v1 and v2 run side by side"
    );
    for url in [&release_url, &v1_url, &v2_url] {
        assert_eventually!(
            http_get(url).is_ok_and(|r| r.status == 200),
            Duration::from_secs(20),
            "{url} does not answer after the rollback"
        );
    }

    // Destroy: nothing of Cairn's is left, by label.
    cli.run_in(app.path(), &["destroy"]).ok();
    assert!(
        containers_of(&project).is_empty(),
        "{:?}",
        containers_of(&project)
    );
    assert!(labelled("network", &project).is_empty());
    assert!(labelled("volume", &project).is_empty());
}
