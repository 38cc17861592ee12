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
    containers_of, docker_hello, docker_ready, labelled, log_instances, static_entrypoint,
    Registry, Sweep,
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
    let _sweep_project = Sweep(project.clone());
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
    // The same image with the same entrypoint is injected once.
    assert!(
        up2.stdout
            .contains("the same image was injected before: reused"),
        "{up2}"
    );
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

/// `build { use "files" }` (and `use "command"`) then `deploy { use "docker" }`:
/// the mapper chain turns the files into an image (files under /app, the
/// entrypoint injected) and the containers serve through the tunnel.
#[test]
fn files_and_command_builds_deploy_as_containers_through_the_mapper() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    // files: a static busybox and a page, served by busybox httpd.
    let project = format!("fm-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let files_app = cairn_tests::write_app(
        &format!(
            r#"project = "{project}"

app "web" {{
  build {{
    use "files" {{
      path    = "."
      exclude = ["cairn.hcl"]
    }}
    hook {{
      when    = "before"
      command = ["cp", "/bin/busybox", "busybox"]
    }}
  }}

  deploy {{
    use "docker" {{
      command      = ["/app/busybox", "httpd", "-f", "-p", "3000", "-h", "/app/www"]
      service_port = 3000
      probe_path   = "/"
    }}
  }}
}}
"#
        ),
        &[],
    );
    std::fs::create_dir(files_app.path().join("www")).expect("mkdir www");
    std::fs::write(
        files_app.path().join("www/index.html"),
        "files in a container\n",
    )
    .expect("index.html");
    let up = cli.run_in(files_app.path(), &["up"]).ok();
    for want in [
        "Building v1 with files",
        "Deploying v1 with docker",
        &format!("Building image cairn.local/{project}/web:files-"),
        "Injecting the Cairn entrypoint",
    ] {
        assert!(up.stdout.contains(want), "no {want:?}: {up}");
    }
    let url = up.field("Deployment URL").expect("Deployment URL");
    assert_eventually!(
        http_get(&url).is_ok_and(|r| r.status == 200 && r.body.contains("files in a container")),
        Duration::from_secs(20),
        "{url} does not serve the files"
    );
    assert_eq!(containers_of(&project).len(), 1);

    // `--prune` without a releaser: the URL service releases, then the older
    // deployments go through the platform.
    let up2 = cli
        .run_in(files_app.path(), &["up", "--prune", "--prune-retain", "0"])
        .ok();
    assert!(up2.stdout.contains("Pruning deployment v1"), "{up2}");
    assert_eq!(
        containers_of(&project),
        vec![format!("cairn-{project}-web-v2-0")],
        "only v2 runs after the prune"
    );

    // command: one static binary as the whole artifact.
    let project2 = format!("cm-{}", std::process::id());
    let _sweep_project2 = Sweep(project2.clone());
    let command_app = cairn_tests::write_app(
        &format!(
            r#"project = "{project2}"

app "tool" {{
  build {{
    use "command" {{
      command = ["cp", "/bin/busybox", "busybox"]
      output  = "busybox"
    }}
  }}

  deploy {{
    use "docker" {{
      command      = ["/app/busybox", "httpd", "-f", "-p", "8080", "-h", "/app"]
      service_port = 8080
    }}
  }}
}}
"#
        ),
        &[],
    );
    let up = cli.run_in(command_app.path(), &["up"]).ok();
    assert!(up.stdout.contains("Deploying v1 with docker"), "{up}");
    let url = up.field("Deployment URL").expect("Deployment URL");
    // Served through the tunnel by the binary the command built (no index: 404).
    assert_eventually!(
        http_get(&url).is_ok_and(|r| r.status == 404),
        Duration::from_secs(20),
        "{url} does not answer"
    );
    let ls = cli
        .run_in(
            command_app.path(),
            &["exec", "--", "/app/busybox", "ls", "/app"],
        )
        .ok();
    assert_eq!(ls.stdout.trim(), "busybox", "{ls}");

    cli.run_in(files_app.path(), &["destroy"]).ok();
    cli.run_in(command_app.path(), &["destroy"]).ok();
    assert!(containers_of(&project).is_empty() && containers_of(&project2).is_empty());
}

/// The platform's options reach the engine: a network of the test's own
/// (the containers' main network, not the default bridge, from which the
/// entrypoints still reach the node), a memory limit, CPU shares, extra
/// labels and static environment; the app answers through the tunnel.
#[test]
fn docker_platform_options_reach_the_engine() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let project = format!("dpo-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let net = format!("cairn-test-{project}");
    let made = std::process::Command::new("docker")
        .args(["network", "create", &net])
        .output()
        .expect("docker network create");
    assert!(made.status.success(), "{made:?}");
    struct RmNet(String);
    impl Drop for RmNet {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    let _net = RmNet(net.clone());
    let app = docker_hello(&project, |t| {
        t.replace(
            "      count        = 2\n",
            &format!(
                "      count        = 1\n      networks     = [\"{net}\"]\n      resources    = {{ memory = \"64MB\", cpu = 256 }}\n      labels       = {{ team = \"blue\" }}\n      static_environment = {{ COLOUR = \"teal\" }}\n"
            ),
        )
    });
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let up = cli.run_in(app.path(), &["up"]).ok();
    let url = up.field("Deployment URL").expect("Deployment URL");
    assert_eventually!(
        http_get(&url).is_ok_and(|r| r.status == 200),
        Duration::from_secs(20),
        "{url} does not answer from a container on {net}"
    );
    let name = format!("cairn-{project}-web-v1-0");
    let inspect = |format: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", format, &name])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(inspect("{{.HostConfig.Memory}}"), "64000000");
    assert_eq!(inspect("{{.HostConfig.CpuShares}}"), "256");
    assert_eq!(inspect("{{index .Config.Labels \"team\"}}"), "blue");
    assert_eq!(
        inspect("{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"),
        net
    );
    assert!(inspect("{{.Config.Env}}").contains("COLOUR=teal"));
    cli.run_in(app.path(), &["destroy"]).ok();
    assert!(containers_of(&project).is_empty());
}

/// The engine's containers (running) whose command holds `marker`.
fn build_containers(marker: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "--no-trunc", "--format", "{{.ID}} {{.Command}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn cancelling_a_job_stops_its_docker_build_in_the_engine() {
    if !docker_ready() {
        return;
    }
    let project = format!("dc-{}", std::process::id());
    let _sweep = Sweep(project.clone());
    let marker = format!("cairn-cancel-{}", std::process::id());
    let app = docker_hello(&project, |t| t);
    // A build step that would run for 5 minutes.
    let dockerfile = app.path().join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let install = "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
    assert!(text.contains(install), "{text}");
    let slow =
        format!("{install}RUN [\"/bin/sh\", \"-c\", \"echo slow step; sleep 300 # {marker}\"]\n");
    std::fs::write(&dockerfile, text.replacen(install, &slow, 1)).expect("write");
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let d = app.path().to_string_lossy().to_string();
    let build = cli.spawn(&["-C", &d, "build"]);
    assert_eventually!(
        !build_containers(&marker).is_empty(),
        Duration::from_secs(90),
        "the build's slow step never ran: {}",
        build.stdout_so_far()
    );
    let jobs = cairn_tests::json::items(&cli.json(&["job", "list"])).clone();
    let id = jobs[0]["id"].to_string();
    cli.run(&["job", "cancel", &id]).ok();
    // The engine stops the build: its step's container is gone at once, not
    // after its 300 s.
    assert_eventually!(
        build_containers(&marker).is_empty(),
        Duration::from_secs(20),
        "the build step still runs: {:?}",
        build_containers(&marker)
    );
    let out = build.wait(Duration::from_secs(30));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("cancelled"), "{out}");
    assert!(
        out.stdout.contains("slow step"),
        "what it did is shown: {out}"
    );
    let job = cli.json(&["job", "inspect", &id]);
    assert_eq!(job["state"], "Cancelled", "{job}");
}
