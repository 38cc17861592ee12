//! Containers, bad inputs: each is a clear error, the job is marked failed,
//! and nothing of the deployment is left on the engine. On the real Docker
//! engine (skipped loudly without one, except in CI; see `cairn_tests::docker`).

use std::process::Command;
use std::time::Duration;

use cairn_tests::docker::{containers_of, docker_ready, static_entrypoint, Registry, Sweep};
use cairn_tests::{assert_eventually, json, write_app, Cli, NodeProc, Output, TempDir};

/// An app `web` of `project` built from `dockerfile` (with a static busybox
/// copied into the context by a hook), with `extra` HCL inside its `build`
/// stanza and `deploy` as its deploy stanza.
fn app(project: &str, dockerfile: &str, extra: &str, deploy: &str) -> TempDir {
    let hcl = format!(
        r#"project = "{project}"

app "web" {{
  build {{
    use "docker" {{}}
    hook {{
      when    = "before"
      command = ["cp", "/bin/busybox", "busybox"]
    }}
{extra}  }}

  deploy {{
{deploy}
  }}
}}
"#
    );
    write_app(&hcl, &[("Dockerfile", dockerfile)])
}

/// A program the image runs as its app: busybox, its applets installed.
const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// The jobs of `cli`'s node that failed, with their errors.
fn failed_jobs(cli: &Cli) -> Vec<serde_json::Value> {
    json::items(&cli.json(&["job", "list"]))
        .iter()
        .filter(|j| j["state"] == "Error")
        .cloned()
        .collect()
}

/// The whole of what the user saw.
fn seen(out: &Output) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// `up` failed, with a job marked failed and no container of the project left.
#[track_caller]
fn failed_cleanly(cli: &Cli, project: &str, out: &Output) {
    assert!(
        out.code.is_some_and(|c| c != 0),
        "`cairn up` should fail: {out}"
    );
    assert!(
        !failed_jobs(cli).is_empty(),
        "a job should be marked failed: {}",
        cli.json(&["job", "list"])
    );
    assert_eq!(
        containers_of(project),
        Vec::<String>::new(),
        "containers of {project} left behind"
    );
    let deployed = cli.json(&["deployment", "list"]);
    assert!(
        json::items(&deployed)
            .iter()
            .all(|d| d["status"] == "Error"),
        "a deployment that failed is recorded as failed: {deployed}"
    );
}

#[test]
fn docker_build_failure_names_the_step_and_shows_its_output() {
    if !docker_ready() {
        return;
    }
    let project = format!("dbf-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let dockerfile = format!(
        "{BASE}RUN [\"/bin/sh\", \"-c\", \"echo compiling the app; echo 'fatal: libfoo not found' >&2; exit 7\"]\nCMD [\"httpd\", \"-f\"]\n"
    );
    let dir = app(&project, &dockerfile, "", "    use \"docker\" {}");
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    let out = cli.run_in(dir.path(), &["up"]);
    failed_cleanly(&cli, &project, &out);
    let text = seen(&out);
    for want in [
        "docker build failed at Step 4/5 : RUN",
        "fatal: libfoo not found",
        "returned a non-zero code: 7",
    ] {
        assert!(text.contains(want), "no {want:?}: {out}");
    }
    assert!(
        !text.contains("Deploying v1"),
        "nothing is deployed after a failed build: {out}"
    );
}

#[test]
fn docker_container_exiting_at_start_fails_the_deploy_with_its_last_lines() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let project = format!("dex-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let dockerfile = format!(
        "{BASE}CMD [\"/bin/sh\", \"-c\", \"echo starting the app; echo 'error: DATABASE_URL is not set' >&2; exit 3\"]\n"
    );
    let dir = app(
        &project,
        &dockerfile,
        "",
        "    use \"docker\" {\n      count = 2\n    }",
    );
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    let out = cli.run_in(dir.path(), &["up"]);
    failed_cleanly(&cli, &project, &out);
    let text = seen(&out);
    for want in [
        "Injecting the Cairn entrypoint",
        &format!("container cairn-{project}-web-v1-0 exited with code 3 as it started"),
        "error: DATABASE_URL is not set",
        "removing what it started",
    ] {
        assert!(text.contains(want), "no {want:?}: {out}");
    }
}

#[test]
fn docker_missing_image_is_a_clear_error() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let registry = Registry::start();
    let project = format!("dmi-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let image = format!("127.0.0.1:{}/{project}/nothing-here", registry.port);
    let hcl = format!(
        "project = \"{project}\"\n\napp \"web\" {{\n  build {{\n    use \"docker-pull\" {{\n      image = \"{image}\"\n      tag   = \"v9\"\n    }}\n  }}\n\n  deploy {{\n    use \"docker\" {{}}\n  }}\n}}\n"
    );
    let dir = write_app(&hcl, &[]);
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    let out = cli.run_in(dir.path(), &["up"]);
    failed_cleanly(&cli, &project, &out);
    let text = seen(&out);
    assert!(
        text.contains(&format!("{image}:v9")) && text.contains("manifest unknown"),
        "the error names the image and what the registry said: {out}"
    );
}

#[test]
fn docker_engine_not_reachable_names_where_it_looked() {
    let project = format!("dnr-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let dir = app(&project, BASE, "", "    use \"docker\" {}");
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let socket = dir.path().join("no-engine.sock");
    let host = format!("unix://{}", socket.display());

    let out = cli.run_in_env(dir.path(), &[("DOCKER_HOST", &host)], &["up"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out}");
    assert!(!failed_jobs(&cli).is_empty(), "the job is marked failed");
    let text = seen(&out);
    assert!(
        text.contains(&format!(
            "cannot reach the Docker engine at {host} (DOCKER_HOST)"
        )),
        "the error names DOCKER_HOST: {out}"
    );
    // Without DOCKER_HOST: the default socket is named.
    let out = cli.run_in_env(
        dir.path(),
        &[("DOCKER_HOST", "tcp://127.0.0.1:1")],
        &["build"],
    );
    assert!(
        seen(&out).contains("tcp://127.0.0.1:1 (DOCKER_HOST)"),
        "{out}"
    );
}

#[test]
fn docker_duplicate_container_name_is_refused_and_the_other_container_kept() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let project = format!("ddn-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let dockerfile = format!("{BASE}CMD [\"httpd\", \"-f\", \"-p\", \"3000\"]\n");
    let dir = app(
        &project,
        &dockerfile,
        "",
        "    use \"docker\" {\n      count = 2\n    }",
    );
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    cli.run_in(dir.path(), &["build"]).ok();

    // Someone else's container holds the name of instance 1 of v1.
    let taken = format!("cairn-{project}-web-v1-1");
    let made = Command::new("docker")
        .args(["create", "--name", &taken, "--label", "owner=someone-else"])
        .arg(built_image(&cli))
        .output()
        .expect("docker create");
    assert!(made.status.success(), "{made:?}");
    struct RmOnDrop(String);
    impl Drop for RmOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _rm = RmOnDrop(taken.clone());

    let out = cli.run_in(dir.path(), &["deploy"]);
    failed_cleanly(&cli, &project, &out);
    assert!(
        seen(&out).contains(&format!("a container named {taken} already exists")),
        "{out}"
    );
    let still = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"owner\"}}",
            &taken,
        ])
        .output()
        .expect("docker inspect");
    assert_eq!(
        String::from_utf8_lossy(&still.stdout).trim(),
        "someone-else",
        "the other container is left alone"
    );
}

/// The image reference of the newest artifact `cli` built.
fn built_image(cli: &Cli) -> String {
    let list = cli.json(&["artifact", "list"]);
    let items = json::items(&list);
    let last = items.last().expect("an artifact");
    let v: serde_json::Value =
        serde_json::from_str(last["result"]["json"].as_str().expect("result json"))
            .expect("docker.Image json");
    format!(
        "{}:{}",
        v["image"].as_str().expect("image"),
        v["tag"].as_str().expect("tag")
    )
}

#[test]
fn docker_registry_refusing_the_credentials_fails_the_push_without_printing_them() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let registry = Registry::start_with_auth("deployer", "right-horse-battery");
    let project = format!("dra-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let image = format!("127.0.0.1:{}/{project}/web", registry.port);
    let stanza = |password: &str| {
        format!(
            "    registry {{\n      use \"docker\" {{\n        image = \"{image}\"\n        tag   = \"latest\"\n        auth {{\n          username = \"deployer\"\n          password = \"{password}\"\n        }}\n      }}\n    }}\n"
        )
    };
    let dockerfile = format!("{BASE}CMD [\"httpd\", \"-f\", \"-p\", \"3000\"]\n");
    let dir = app(
        &project,
        &dockerfile,
        &stanza("wrong-staple-9"),
        "    use \"docker\" {}",
    );
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    let out = cli.run_in(dir.path(), &["up"]);
    failed_cleanly(&cli, &project, &out);
    let text = seen(&out);
    assert!(
        text.contains(&format!(
            "the registry 127.0.0.1:{} refused the credentials",
            registry.port
        )),
        "{out}"
    );
    assert!(
        !text.contains("wrong-staple-9"),
        "the password is printed: {out}"
    );
    nowhere_in(&node.data_dir(), "wrong-staple-9");

    // With the right password the same app pushes.
    let cfg = dir.path().join("cairn.hcl");
    let fixed = std::fs::read_to_string(&cfg)
        .expect("cairn.hcl")
        .replace("wrong-staple-9", "right-horse-battery");
    std::fs::write(&cfg, fixed).expect("write cairn.hcl");
    let out = cli.run_in(dir.path(), &["up"]).ok();
    assert!(!seen(&out).contains("right-horse-battery"), "{out}");
    nowhere_in(&node.data_dir(), "right-horse-battery");
    assert_eventually!(
        registry
            .get_as(
                "deployer",
                "right-horse-battery",
                &format!("/v2/{project}/web/tags/list")
            )
            .is_some_and(|b| b.contains("latest")),
        Duration::from_secs(10),
        "the image is not in the registry"
    );
}

/// No file under `dir` (the node's data: its log, its Raft store) holds `secret`.
#[track_caller]
fn nowhere_in(dir: &std::path::Path, secret: &str) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = e.path();
        if path.is_dir() {
            nowhere_in(&path, secret);
        } else if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the registry password",
                path.display()
            );
        }
    }
}

#[test]
fn docker_deploy_interrupted_by_a_killed_runner_is_cleaned_up_by_destroy() {
    if !docker_ready() {
        return;
    }
    static_entrypoint();
    let project = format!("dkr-{}", std::process::id());
    let _sweep_project = Sweep(project.clone());
    let dockerfile = format!("{BASE}CMD [\"httpd\", \"-f\", \"-p\", \"3000\"]\n");
    // Its probe never passes: the deploy waits with two containers running.
    let dir = app(
        &project,
        &dockerfile,
        "",
        "    use \"docker\" {\n      count         = 2\n      probe_path    = \"/never-there\"\n      probe_timeout = 300\n    }",
    );
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    cli.track(dir.path());
    let runner = cli.spawn(&["-C", &dir.path().to_string_lossy(), "up"]);
    assert_eventually!(
        containers_of(&project).len() == 2,
        Duration::from_secs(120),
        "the two containers never started; CLI said:\n{}",
        runner.stdout_so_far()
    );
    // kill -9 the CLI, which is the job's runner.
    cairn_tests::signal(runner.pid(), "KILL");
    let _ = runner.wait(Duration::from_secs(10));
    assert_eventually!(
        !failed_jobs(&cli).is_empty(),
        Duration::from_secs(30),
        "the node never marked the job failed: {}",
        cli.json(&["job", "list"])
    );
    assert_eq!(containers_of(&project).len(), 2, "left by the dead runner");

    let out = cli.run_in(dir.path(), &["destroy"]).ok();
    assert!(
        out.stdout.contains("Cleaning up failed deployment v1")
            && out.stdout.contains("removed 2 container(s)"),
        "{out}"
    );
    assert_eq!(containers_of(&project), Vec::<String>::new());
    let deps = cli.json(&["deployment", "list"]);
    assert_eq!(
        json::s(&json::items(&deps)[0], "state"),
        "Destroyed",
        "{deps}"
    );
}
