//! Runners with their own identity (issue 19): `cairn runner agent
//! --address … --ca-fingerprint …` enrolls with a CSR and then connects with
//! the certificate the cluster CA signed. Without a token it waits as
//! pending until adopted; a runner token adopts at once with its labels and
//! can do nothing else; a rejected runner is refused; a forgotten runner's
//! certificate is refused at once on every node.

use std::path::Path;
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::handshake::Role;
use cairn_protocol::pki::CertifiedKey;
use cairn_protocol::rpc::{self, Dial, RpcError};
use cairn_tests::{assert_eventually, hello_app, http_get, json, Background, Cli, TestCluster};
use serde_json::Value;

/// `cairn runner agent --address ADDR --ca-fingerprint CA --data-dir DIR ARGS…`
/// with `env` (the runner token goes there, never on the command line).
pub(crate) fn agent(cli: &Cli, addr: &str, ca: &str, dir: &Path, args: &[&str]) -> Background {
    let dir = dir.to_string_lossy().into_owned();
    let mut all = vec![
        "runner",
        "agent",
        "--address",
        addr,
        "--ca-fingerprint",
        ca,
        "--data-dir",
        &dir,
    ];
    all.extend_from_slice(args);
    cli.spawn(&all)
}

pub(crate) fn wait_for(agent: &Background, needle: &str, what: &str) {
    assert_eventually!(
        agent.stdout_so_far().contains(needle),
        Duration::from_secs(30),
        "{what}: the agent said:\n{}\n{}",
        agent.stdout_so_far(),
        agent.stderr_so_far()
    );
}

/// `cairn runner token ARGS…` by `admin`: the token.
pub(crate) fn runner_token(admin: &Cli, args: &[&str]) -> String {
    let mut all = vec!["runner", "token"];
    all.extend_from_slice(args);
    admin.run(&all).ok().stdout.trim().to_string()
}

/// An enrolled runner: its CLI (the runner token in its environment), its data dir and
/// its `cairn runner agent` process.
pub(crate) struct Runner {
    pub(crate) cli: Cli,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) proc: Background,
}

/// Start runner `id` at `addr` with `token`, and wait until it registered.
pub(crate) fn enrolled_runner(addr: &str, ca: &str, token: &str, id: &str) -> Runner {
    let mut cli = Cli::new();
    cli.set_env("CAIRN_RUNNER_TOKEN", token);
    let dir = tempfile::tempdir().expect("tempdir");
    let proc = agent(&cli, addr, ca, dir.path(), &["--id", id]);
    wait_for(
        &proc,
        &format!("runner {id} registered with node"),
        "the runner is there",
    );
    Runner { cli, dir, proc }
}

/// The number of the job a `--detach` run queued.
pub(crate) fn job_number(out: &cairn_tests::Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("Job ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no job number in {out}"))
        .to_string()
}

fn listed(admin: &Cli, id: &str) -> Option<Value> {
    json::items(&admin.json(&["runner", "list"]))
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
}

/// The certificate and key an enrolled agent keeps in its data dir.
fn identity_of(dir: &Path) -> CertifiedKey {
    let text = std::fs::read_to_string(dir.join("identity.json")).expect("identity.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    CertifiedKey {
        cert_pem: json::s(&v, "cert_pem").to_string(),
        key_pem: json::s(&v, "key_pem").to_string(),
    }
}

fn runner_dial(addr: &str, ca: &str, identity: Option<CertifiedKey>, token: &str) -> Dial {
    Dial {
        addr: addr.to_string(),
        ca_fingerprint: ca.to_string(),
        identity,
        role: Role::Runner,
        token: token.to_string(),
        agent: "cairn-tests".into(),
        limits: cairn_protocol::pki::TransportLimits::DEFAULT,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn runners_enroll_wait_for_adoption_run_jobs_and_are_refused_once_rejected_or_forgotten() {
    let cluster = TestCluster::start(3);
    let TestCluster {
        nodes, admin, ca, ..
    } = cluster;
    let addr0 = nodes[0].addr();

    // -- Pending, then adopted: it gets its certificate and runs a job. --
    let pending_cli = Cli::new();
    let pending_dir = tempfile::tempdir().expect("tempdir");
    let pending = agent(
        &pending_cli,
        &addr0,
        &ca,
        pending_dir.path(),
        &["--id", "edge-pending", "--label", "zone=back"],
    );
    wait_for(
        &pending,
        "pending: runner edge-pending waits to be adopted",
        "a runner without a token waits",
    );
    let row = listed(&admin, "edge-pending").expect("listed while pending");
    assert_eq!(row["state"], "pending", "{row}");
    // Its key is kept before adoption: the identity file has no certificate yet.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(pending_dir.path().join("identity.json")).expect("identity"),
    )
    .expect("json");
    assert!(kept["cert_pem"].is_null(), "{kept}");
    admin.run(&["runner", "adopt", "edge-pending"]).ok();
    wait_for(
        &pending,
        "runner edge-pending enrolled",
        "adoption certifies it",
    );
    wait_for(
        &pending,
        "runner edge-pending registered with node",
        "then it registers",
    );
    let app = hello_app();
    let up = admin
        .run_in(app.path(), &["up", "--runner", "edge-pending"])
        .ok();
    let url = up.field("Deployment URL").expect("Deployment URL");
    let r = http_get(&url).expect("GET the deployment");
    assert_eq!(r.status, 200, "{r:?}");
    let inspect = admin.json(&["runner", "inspect", "edge-pending"]);
    assert_eq!(inspect["record"]["state"], "Adopted", "{inspect}");
    assert_eq!(inspect["record"]["decided_by"], "user:admin", "{inspect}");
    assert_eq!(inspect["record"]["labels"]["zone"], "back", "{inspect}");
    assert!(json::u(&inspect, "jobs_run") >= 1, "{inspect}");
    assert!(inspect["node"].is_u64(), "connected: {inspect}");
    let text = admin.run(&["runner", "inspect", "edge-pending"]).ok();
    assert!(text.stdout.contains("Jobs run"), "{text}");
    admin.run_in(app.path(), &["destroy"]).ok();

    // -- Rejected: the waiting runner is told, and stops. --
    let rejected_cli = Cli::new();
    let rejected_dir = tempfile::tempdir().expect("tempdir");
    let rejected = agent(
        &rejected_cli,
        &nodes[1].addr(),
        &ca,
        rejected_dir.path(),
        &["--id", "edge-rejected"],
    );
    wait_for(&rejected, "pending: runner edge-rejected", "it waits");
    admin.run(&["runner", "reject", "edge-rejected"]).ok();
    let out = rejected.wait(Duration::from_secs(30));
    assert!(
        !out.success(),
        "a rejected runner stops with an error: {out}"
    );
    assert!(
        out.stderr
            .contains("edge-rejected was rejected by user:admin"),
        "{out}"
    );

    // -- A runner token: adopted at once with the token's labels. --
    let minted = admin
        .run(&["runner", "token", "--label", "zone=shop", "--name", "shop"])
        .ok();
    let token = minted.stdout.trim().to_string();
    assert!(
        minted
            .stderr
            .contains("CAIRN_RUNNER_TOKEN=… cairn runner agent --address"),
        "{minted}"
    );
    assert!(
        !minted.stderr.contains(&token),
        "the hint does not repeat the token"
    );
    let mut shop_cli = Cli::new();
    shop_cli.set_env("CAIRN_RUNNER_TOKEN", &token);
    let shop_dir = tempfile::tempdir().expect("tempdir");
    let shop = agent(
        &shop_cli,
        &nodes[2].addr(),
        &ca,
        shop_dir.path(),
        &["--id", "edge-shop", "--label", "zone=mine"],
    );
    wait_for(&shop, "runner edge-shop enrolled", "a token adopts at once");
    wait_for(
        &shop,
        "runner edge-shop registered with node",
        "and it registers",
    );
    let row = listed(&admin, "edge-shop").expect("listed");
    assert_eq!(row["state"], "adopted", "{row}");
    assert_eq!(
        row["labels"]["zone"], "shop",
        "the token's label wins: {row}"
    );
    let app = hello_app();
    let built = admin
        .run_in(app.path(), &["build", "--runner-label", "zone=shop"])
        .ok();
    assert!(built.stdout.contains("✓ Building v2"), "{built}");
    let jobs = json::items(&admin.json(&["job", "list"])).clone();
    assert_eq!(json::s(&jobs[0], "runner"), "edge-shop", "{jobs:?}");

    // The token is not in the agent's argv, nor in its identity file.
    let identity_text =
        std::fs::read_to_string(shop_dir.path().join("identity.json")).expect("identity");
    assert!(!identity_text.contains(&token));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", shop.pid())).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));

    // A runner token can do nothing but enroll: not a client connection, no
    // reads on a runner connection, nothing over HTTP.
    rt().block_on(async {
        let mut as_client = runner_dial(&addr0, &ca, None, &token);
        as_client.role = Role::Client;
        match rpc::connect(&as_client).await {
            Err(RpcError::Refused(reason)) => {
                assert!(
                    reason.contains("runner token cannot be used for a client connection"),
                    "{reason}"
                )
            }
            other => panic!("a runner token made a client connection: {other:?}"),
        }
        let s = rpc::connect(&runner_dial(&addr0, &ca, None, &token))
            .await
            .expect("a runner connection with the token");
        match rpc::call(&s.conn, &ClientRequest::ListJobs { limit: 10 }).await {
            Ok(ClientResponse::Error { message }) | Err(RpcError::Remote(message)) => {
                assert!(message.contains("not enrolled yet"), "{message}")
            }
            other => panic!("a runner token read jobs: {other:?}"),
        }
    });
    let http = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/api/v1/apps", nodes[0].http_api()))
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&http.stdout).to_string();
    assert!(
        code == "403" || code == "401",
        "HTTP with a runner token: {code}"
    );

    // -- A restart keeps the identity: no token, no address needed. --
    drop(shop);
    let shop_again = shop_cli.spawn(&[
        "runner",
        "agent",
        "--data-dir",
        &shop_dir.path().to_string_lossy(),
    ]);
    wait_for(
        &shop_again,
        "runner edge-shop registered with node",
        "the same runner again",
    );
    assert!(
        !shop_again.stdout_so_far().contains("enrolling"),
        "{}",
        shop_again.stdout_so_far()
    );

    // -- Forgotten: its connection is closed and its certificate refused on every node. --
    let cert = identity_of(shop_dir.path());
    admin.run(&["runner", "forget", "edge-shop"]).ok();
    let out = shop_again.wait(Duration::from_secs(30));
    assert!(!out.success(), "a forgotten runner stops: {out}");
    assert!(out.stderr.contains("edge-shop is not enrolled"), "{out}");
    assert!(listed(&admin, "edge-shop").is_none(), "forgotten");
    rt().block_on(async {
        for n in &nodes {
            match rpc::connect(&runner_dial(&n.addr(), &ca, Some(cert.clone()), "")).await {
                Err(RpcError::Refused(reason)) => {
                    assert!(reason.contains("edge-shop is not enrolled"), "{reason}")
                }
                other => panic!("node {} admitted a forgotten runner: {other:?}", n.addr()),
            }
        }
    });
}

#[test]
fn a_detached_job_carries_its_source_to_a_runner_on_another_node() {
    let cluster = TestCluster::start(3);
    let TestCluster {
        nodes, admin, ca, ..
    } = cluster;
    let token = runner_token(&admin, &[]);
    // The admin's context is on node 0: the upload lands there; the runner
    // is on node 2 and fetches it through that node.
    let Runner {
        cli: _agent_cli,
        dir,
        proc: _agent,
    } = enrolled_runner(&nodes[2].addr(), &ca, &token, "edge-src");

    let app = hello_app();
    let queued = admin
        .run_in(app.path(), &["up", "--runner", "edge-src", "--detach"])
        .ok();
    assert!(queued.stdout.contains("✓ Source sha256:"), "{queued}");
    assert!(queued.stdout.contains("uploaded in"), "{queued}");
    let id = job_number(&queued);
    assert!(
        queued.stdout.contains(&format!("cairn job attach {id}")),
        "{queued}"
    );
    // The CLI's copy is gone before the runner has the job done: the runner
    // works from what was uploaded.
    let app_dir = app.path().to_path_buf();
    drop(app);
    assert!(!app_dir.exists());
    let attached = admin.run(&["job", "attach", &id]).ok();
    let url = attached
        .field("Deployment URL")
        .expect("the URLs at the end");
    let r = http_get(&url).expect("GET the deployment");
    assert_eq!(r.status, 200, "{r:?}");
    let sources: Vec<_> = std::fs::read_dir(dir.path().join("work/sources"))
        .expect("the runner's sources")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sha256-"))
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    // Both nodes on the way hold it now.
    for n in [&nodes[0], &nodes[2]] {
        assert!(
            n.data_dir().join("sources").join(&sources[0]).is_file(),
            "node {} holds the source",
            n.addr()
        );
    }

    // The same source again is stored once: nothing is sent.
    let again = hello_app();
    let queued = admin
        .run_in(again.path(), &["build", "--runner", "edge-src"])
        .ok();
    assert!(queued.stdout.contains("already in the cluster"), "{queued}");
    // --detach without another runner says what it is for.
    let out = admin.run_in(again.path(), &["up", "--detach"]);
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("--detach is for a job another runner runs"),
        "{out}"
    );
    admin
        .run_in(again.path(), &["destroy", "--runner", "edge-src"])
        .ok();
}

/// A build whose command starts a child of its own and waits: both pids
/// are written in the (runner's copy of the) source directory.
const LONG_BUILD: &str = r#"
project = "cancel"

app "long" {
  build {
    use "command" {
      command = ["sh", "-c", "sleep 300 & echo $! > child.pid; echo $$ > build.pid; echo build started; wait"]
      output  = "out"
    }
  }

  deploy {
    use "process" {
      command = ["python3", "-c", "import time; time.sleep(60)"]
    }
  }
}
"#;

#[test]
fn cancelling_a_job_kills_the_plugins_processes_on_the_runner() {
    let node = cairn_tests::NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = runner_token(&admin, &[]);
    let Runner {
        cli: _agent_cli,
        dir,
        proc: agent,
    } = enrolled_runner(&node.addr(), &node.ca_fingerprint(), &token, "edge-cancel");

    let app = cairn_tests::write_app(LONG_BUILD, &[]);
    let queued = admin
        .run_in(
            app.path(),
            &["build", "--runner", "edge-cancel", "--detach"],
        )
        .ok();
    let id = job_number(&queued);
    let pid_in = |name: &str| -> Option<u32> {
        let p = cairn_tests::find_file(dir.path(), name)?;
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    assert_eventually!(
        pid_in("child.pid").is_some() && pid_in("build.pid").is_some(),
        Duration::from_secs(30),
        "the build never started"
    );
    let (build, child) = (
        pid_in("build.pid").expect("pid"),
        pid_in("child.pid").expect("pid"),
    );
    assert!(cairn_tests::pid_alive(build) && cairn_tests::pid_alive(child));
    let follower = admin.spawn(&["job", "attach", &id]);
    admin.run(&["job", "cancel", &id]).ok();
    let followed = follower.wait(Duration::from_secs(30));
    assert_eq!(followed.code, Some(1), "{followed}");
    assert!(followed.stderr.contains("cancelled"), "{followed}");
    assert!(
        followed.stdout.contains("build started"),
        "what it had done is shown: {followed}"
    );
    // The command and the child it started are gone, at once (not after the 300 s).
    assert_eventually!(
        !cairn_tests::pid_alive(build) && !cairn_tests::pid_alive(child),
        Duration::from_secs(5),
        "the build's processes outlived the cancel"
    );
    let job = admin.json(&["job", "inspect", &id]);
    assert_eq!(job["state"], "Cancelled", "{job}");
    let builds = admin.json(&["artifact", "list"]);
    let rec = json::items(&builds)
        .iter()
        .find(|b| b["app"] == "long")
        .cloned()
        .expect("the build is recorded");
    assert_eq!(rec["status"], "Error", "{rec}");
    assert!(
        rec.to_string().contains("build started"),
        "its output is kept: {rec}"
    );
    // The runner is free again.
    assert!(cairn_tests::pid_alive(agent.pid()));
}

#[test]
fn config_labels_aim_jobs_and_a_git_data_source_is_cloned_by_the_runner() {
    let node = cairn_tests::NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = runner_token(&admin, &["--label", "zone=git"]);
    let Runner {
        cli: _agent_cli,
        dir: _dir,
        proc: _agent,
    } = enrolled_runner(&node.addr(), &node.ca_fingerprint(), &token, "edge-git");

    // A repository holding the app, its greeting changed, under `site/`.
    let repo = tempfile::tempdir().expect("tempdir");
    let site = repo.path().join("site");
    std::fs::create_dir_all(&site).expect("mkdir");
    let src = cairn_tests::workspace_root().join("examples/hello");
    for f in ["app.py", "cairn.hcl"] {
        std::fs::copy(src.join(f), site.join(f)).expect("copy");
    }
    let py = std::fs::read_to_string(site.join("app.py")).expect("app.py");
    std::fs::write(
        site.join("app.py"),
        py.replace("{GREETING}!", "{GREETING} from git!"),
    )
    .expect("write");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t", "-C"])
            .arg(repo.path())
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "hello"]);

    // The CLI's copy of the config says where jobs go and where the source is.
    let app = hello_app();
    let hcl = std::fs::read_to_string(app.path().join("cairn.hcl")).expect("cairn.hcl");
    let url = format!("file://{}", repo.path().display());
    std::fs::write(
        app.path().join("cairn.hcl"),
        format!(
            "{hcl}\nrunner {{\n  labels = {{ zone = \"git\" }}\n  data_source \"git\" {{\n    url  = \"{url}\"\n    ref  = \"main\"\n    path = \"site\"\n  }}\n}}\n"
        ),
    )
    .expect("write");
    let up = admin.run_in(app.path(), &["up"]).ok();
    assert!(up.stdout.contains("a runner with labels zone=git"), "{up}");
    assert!(
        up.stdout.contains(&format!("Source: {url} at main, site")),
        "{up}"
    );
    assert!(
        up.stdout.contains("cloned "),
        "the runner says what it cloned: {up}"
    );
    let deployed = up.field("Deployment URL").expect("Deployment URL");
    let r = http_get(&deployed).expect("GET the deployment");
    assert!(
        r.body.contains("from git"),
        "the repository's code runs: {r:?}"
    );
    let jobs = json::items(&admin.json(&["job", "list"])).clone();
    assert_eq!(json::s(&jobs[0], "runner"), "edge-git", "{jobs:?}");

    // --local runs it here, in this CLI, from this directory.
    admin.run_in(app.path(), &["build", "--local"]).ok();
    let jobs = json::items(&admin.json(&["job", "list"])).clone();
    assert!(json::s(&jobs[0], "runner").starts_with("cli-"), "{jobs:?}");

    // A data source without a url is refused where it is written.
    std::fs::write(
        app.path().join("cairn.hcl"),
        format!("{hcl}\nrunner {{\n  labels = {{ zone = \"git\" }}\n  data_source \"git\" {{\n    ref = \"main\"\n  }}\n}}\n"),
    )
    .expect("write");
    let out = admin.run_in(app.path(), &["build"]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("cairn.hcl:") && out.stderr.contains("needs `url`"),
        "{out}"
    );
    std::fs::write(app.path().join("cairn.hcl"), &hcl).expect("write");
    admin.run_in(app.path(), &["destroy"]).ok();
}

/// The planted credential: in the runner's environment only.
const PLANTED: &str = "planted-7b1e9c-credential";

const SECRET_APP: &str = r#"
project = "secret"

variable "registry_password" {
  type      = string
  sensitive = true
  default   = ""
}

app "vault" {
  build {
    use "command" {
      command = ["sh", "-c", "echo login with ${var.registry_password}; echo env says $SHOP_API_TOKEN >&2; echo ${var.registry_password} > used.txt; echo built > out"]
      output  = "out"
    }
  }

  deploy {
    use "process" {
      command = ["python3", "-c", "import time; time.sleep(60)"]
    }
  }
}
"#;

/// Whether any file under `root` holds `needle` (every byte read).
fn any_file_holds(root: &Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        let t = e.file_type().ok()?;
        if t.is_dir() {
            if let Some(found) = any_file_holds(&p, needle) {
                return Some(found);
            }
        } else if t.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn a_credential_planted_on_the_runner_never_reaches_the_cluster() {
    let mut node = cairn_tests::NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = runner_token(&admin, &[]);
    let mut agent_cli = Cli::new();
    agent_cli.set_env("CAIRN_RUNNER_TOKEN", &token);
    agent_cli.set_env("CAIRN_VAR_registry_password", PLANTED);
    agent_cli.set_env("SHOP_API_TOKEN", &format!("{PLANTED}-2"));
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = agent(
        &agent_cli,
        &node.addr(),
        &node.ca_fingerprint(),
        dir.path(),
        &["--id", "edge-secret"],
    );
    wait_for(
        &agent,
        "runner edge-secret registered with node",
        "the runner is there",
    );

    let app = cairn_tests::write_app(SECRET_APP, &[]);
    let built = admin
        .run_in(app.path(), &["build", "--runner", "edge-secret"])
        .ok();
    // The command had the credential (it wrote it on the runner's disk)…
    let used = cairn_tests::find_file(dir.path(), "used.txt").expect("used.txt");
    assert_eq!(std::fs::read_to_string(used).expect("read").trim(), PLANTED);
    // …and what it printed reached the CLI masked.
    assert!(built.stdout.contains("login with ********"), "{built}");
    assert!(built.stdout.contains("env says ********"), "{built}");
    let mut seen = format!("{}\n{}", built.stdout, built.stderr);
    for args in [
        &["job", "list", "--json"][..],
        &["artifact", "list", "--json"][..],
        &["runner", "list", "--json"][..],
    ] {
        let out = admin.run_in(app.path(), args).ok();
        seen.push_str(&out.stdout);
    }
    let attach = admin.run(&["job", "attach", "1"]);
    seen.push_str(&attach.stdout);
    seen.push_str(&attach.stderr);
    for (i, line) in seen.lines().enumerate() {
        assert!(
            !line.contains(PLANTED),
            "line {i} of the job output holds the credential: {line}"
        );
    }
    // Every byte the node stores: the Raft log, snapshots, sources, its log.
    node.stop();
    assert_eq!(any_file_holds(&node.data_dir(), PLANTED.as_bytes()), None);
    let log = node.log();
    assert!(
        !log.contains(PLANTED),
        "the node's log holds the credential"
    );
}

/// The runners' lease on their jobs (node::jobs::RUNNER_LEASE, 6 s).
const RUNNER_LEASE: Duration = Duration::from_secs(6);

#[test]
fn runners_killed_mid_job_fail_their_jobs_within_the_lease() {
    let cluster = TestCluster::start(3);
    let (on_leader, on_follower) = super::e2e_runner_resume::leader_and_follower(&cluster);
    let TestCluster {
        nodes, admin, ca, ..
    } = cluster;
    let token = runner_token(&admin, &[]);
    // One runner on the leader (its own stream), one on a follower (relayed:
    // the follower holds the lease).
    let runners: Vec<(&str, Runner)> = [("edge-l", on_leader), ("edge-f", on_follower)]
        .into_iter()
        .map(|(name, i)| (name, enrolled_runner(&nodes[i].addr(), &ca, &token, name)))
        .collect();
    let mut jobs = Vec::new();
    let mut apps = Vec::new();
    for (name, Runner { dir, .. }) in &runners {
        let hcl = LONG_BUILD
            .replace("project = \"cancel\"", &format!("project = \"{name}\""))
            .replace("app \"long\"", &format!("app \"{name}-app\""));
        let app = cairn_tests::write_app(&hcl, &[]);
        let queued = admin
            .run_in(app.path(), &["build", "--runner", name, "--detach"])
            .ok();
        let id = job_number(&queued);
        let d = dir.path().to_path_buf();
        assert_eventually!(
            cairn_tests::find_file(&d, "child.pid").is_some(),
            Duration::from_secs(30),
            "the build on {name} never started"
        );
        jobs.push(id);
        apps.push(app);
    }
    // Both runners die at once (their builds' processes are left behind, as
    // on a machine that lost its runner).
    let killed = std::time::Instant::now();
    for (_, r) in &runners {
        cairn_tests::signal(r.proc.pid(), "KILL");
    }
    for ((name, Runner { dir, .. }), id) in runners.iter().zip(&jobs) {
        assert_eventually!(
            admin.json(&["job", "inspect", id])["state"] == "Error",
            Duration::from_secs(30),
            "job {id} on {name} was not failed"
        );
        let took = killed.elapsed();
        let job = admin.json(&["job", "inspect", id]);
        let error = json::s(&job, "error").to_string();
        assert!(error.contains(&format!("runner {name} lost")), "{error}");
        assert!(error.contains("its lease"), "{error}");
        assert!(
            took < RUNNER_LEASE + Duration::from_secs(3),
            "{name}: failed after {took:?}"
        );
        for f in ["child.pid", "build.pid"] {
            if let Some(p) = cairn_tests::find_file(dir.path(), f) {
                if let Ok(pid) = std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .trim()
                    .parse::<u32>()
                {
                    cairn_tests::signal(pid, "KILL");
                }
            }
        }
    }
}

/// A build that takes 3 s.
pub(crate) fn slow_app(project: &str, app: &str) -> String {
    format!(
        r#"
project = "{project}"

app "{app}" {{
  build {{
    use "command" {{
      command = ["sh", "-c", "sleep 3; echo built > out"]
      output  = "out"
    }}
  }}

  deploy {{
    use "process" {{
      command = ["python3", "-c", "import time; time.sleep(60)"]
    }}
  }}
}}
"#
    )
}

#[test]
fn jobs_of_one_app_run_one_at_a_time_and_other_apps_run_beside_them() {
    let node = cairn_tests::NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "dev");
    let token = runner_token(&admin, &["--label", "pool=par"]);
    let _runners: Vec<Runner> = ["edge-p1", "edge-p2"]
        .into_iter()
        .map(|name| enrolled_runner(&node.addr(), &node.ca_fingerprint(), &token, name))
        .collect();
    let alpha = cairn_tests::write_app(&slow_app("par", "alpha"), &[]);
    let beta = cairn_tests::write_app(&slow_app("par", "beta"), &[]);
    let queue = |dir: &Path| -> String {
        job_number(
            &admin
                .run_in(dir, &["build", "--runner-label", "pool=par", "--detach"])
                .ok(),
        )
    };
    // Two jobs of alpha and one of beta, queued back to back.
    let a1 = queue(alpha.path());
    let a2 = queue(alpha.path());
    let b1 = queue(beta.path());
    let job = |id: &str| admin.json(&["job", "inspect", id]);
    for id in [&a1, &a2, &b1] {
        assert_eventually!(
            job(id)["state"] == "Success",
            Duration::from_secs(60),
            "job {id} did not succeed: {}",
            job(id)
        );
    }
    let (ja1, ja2, jb1) = (job(&a1), job(&a2), job(&b1));
    let t = |j: &Value, k: &str| json::u(j, k);
    // alpha's second job was given to a runner only once its first had ended…
    assert!(
        t(&ja2, "assigned_ms") >= t(&ja1, "completed_ms"),
        "alpha's jobs overlapped: {ja1}\n{ja2}"
    );
    // …while beta's ran beside alpha's first, on the other runner.
    assert!(
        t(&jb1, "assigned_ms") < t(&ja1, "completed_ms")
            && t(&ja1, "assigned_ms") < t(&jb1, "completed_ms"),
        "beta did not run beside alpha: {ja1}\n{jb1}"
    );
    assert_ne!(ja1["runner"], jb1["runner"], "{ja1}\n{jb1}");
}
