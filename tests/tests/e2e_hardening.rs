//! What an adversarial probe of the node, the ingress and the CLI found
//! (issue 13), each fixed at its cause and guarded here end to end: real
//! nodes, the real CLI, apps on the process platform.

use std::time::Duration;

use cairn_tests::{assert_eventually, http_get, webapp, write_app, Cli, NodeProc, WEBAPP};

const WITHIN: Duration = Duration::from_secs(30);

fn status(url: &str) -> u16 {
    http_get(url).map(|r| r.status).unwrap_or(0)
}

/// App `app` of `project`: [`WEBAPP`] on the process platform, with
/// `extra` lines in its `use "process"` block.
fn python_app(project: &str, app: &str, extra: &str) -> tempfile::TempDir {
    write_app(
        &format!(
            r#"project = "{project}"

app "{app}" {{
  build {{
    use "files" {{}}
  }}
  deploy {{
    use "process" {{
      command = ["python3", "web.py"]
      {extra}
    }}
  }}
  release {{
    use "process" {{}}
  }}
}}
"#
        ),
        &[("web.py", WEBAPP)],
    )
}

/// App `web` of project `other` (same name as [`webapp`]'s `shop/web`).
fn other_web() -> tempfile::TempDir {
    python_app("other", "web", "")
}

/// Item 1: a second project's `web` used to take `shop/web`'s URLs down
/// (404 "apps named web exist in 2 projects") for good. Now it is refused
/// at its first operation, the live app keeps answering, and once `shop/web`
/// is destroyed (`cairn app destroy`) the name is free.
#[test]
fn an_app_name_taken_by_another_project_is_refused_and_apps_and_projects_can_be_destroyed() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let shop = webapp(1);
    let up = cli.run_in(shop.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let deployment = up.field("Deployment URL").expect("Deployment URL");
    assert_eventually!(status(&release) == 200, WITHIN);

    let other = other_web();
    let refused = cli.run_in(other.path(), &["build"]).fails();
    assert!(
        refused
            .stderr
            .contains("an app named \"web\" already exists in project \"shop\""),
        "{refused}"
    );
    assert!(refused.stderr.contains("cairn app destroy"), "{refused}");
    assert_eq!(status(&release), 200, "the release stopped answering");
    assert_eq!(status(&deployment), 200, "the deployment stopped answering");

    // Without a terminal and without --yes nothing happens.
    let unconfirmed = cli.run_in(shop.path(), &["app", "destroy"]).fails();
    assert!(unconfirmed.stderr.contains("--yes"), "{unconfirmed}");
    assert_eq!(status(&release), 200);

    // From somewhere without the config, the active deployment cannot be
    // stopped: refused, nothing removed.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let no_cfg = cli
        .run_in(
            elsewhere.path(),
            &[
                "app",
                "destroy",
                "--project",
                "shop",
                "--app",
                "web",
                "--yes",
            ],
        )
        .fails();
    assert!(
        no_cfg.stderr.contains("active deployments (v1)")
            && no_cfg.stderr.contains("Nothing was removed"),
        "{no_cfg}"
    );
    assert_eq!(status(&release), 200);

    // A hostname for shop/web goes with it.
    cli.run_in(shop.path(), &["hostname", "register", "shop.example.com"])
        .ok();
    let destroyed = cli.run_in(shop.path(), &["app", "destroy", "--yes"]).ok();
    assert!(
        destroyed.stdout.contains("Removed app shop/web")
            && destroyed.stdout.contains("hostnames shop.example.com"),
        "{destroyed}"
    );
    // Its processes are gone and nothing answers at its names any more.
    assert_eventually!(status(&release) == 404, WITHIN);
    assert_eq!(status(&deployment), 404);
    let listed = cli.run(&["hostname", "list"]).ok();
    assert!(listed.stdout.contains("No hostnames"), "{listed}");
    let deps = cli.run(&["deployment", "list", "--json"]).ok();
    assert!(!deps.stdout.contains("\"shop\""), "{deps}");

    // The name is free: project other's web is deployed and answers there.
    let up = cli.run_in(other.path(), &["up"]).ok();
    let release2 = up.field("Release URL").expect("Release URL");
    assert_eq!(release2, release);
    assert_eventually!(status(&release2) == 200, WITHIN);

    // `cairn project destroy` takes the project with its apps.
    let gone = cli
        .run_in(other.path(), &["project", "destroy", "--yes"])
        .ok();
    assert!(gone.stdout.contains("Removed project other"), "{gone}");
    assert_eventually!(status(&release2) == 404, WITHIN);
    let again = cli
        .run_in(other.path(), &["project", "destroy", "--yes"])
        .fails();
    assert!(again.stderr.contains("no project"), "{again}");
}

fn app_env(url: &str) -> Option<(u64, serde_json::Map<String, serde_json::Value>)> {
    let r = http_get(&format!(
        "{}env",
        url.trim_end_matches('/').to_string() + "/"
    ))
    .ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    Some((v["pid"].as_u64()?, v["env"].as_object()?.clone()))
}

/// Item 2: 60 KB values accepted one by one used to make every instance
/// fail to start (E2BIG) and crash-loop. Now the node refuses a change past
/// `MAX_ENV_BYTES` (512 KiB), naming the size and the limit; and an instance
/// that cannot start with a change its node accepted (here: deployed with a
/// 1 MiB stack, so the kernel allows it only 256 KiB of arguments and
/// environment) keeps running with the previous configuration and says why
/// in its logs.
#[test]
fn config_an_instance_cannot_start_with_leaves_it_running_and_too_much_is_refused() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    let dir = app.path();
    let up = cli
        .run_in_under(&["prlimit", "--stack=1048576", "--"], dir, &["up"])
        .ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(app_env(&release).is_some(), WITHIN);

    let big = "x".repeat(60 * 1024);
    let set = |name: &str| cli.run_in(dir, &["config", "set", &format!("{name}={big}")]);
    // Values the node accepts until the instance's kernel limit is passed:
    // up to BIG3 the app restarts with them, BIG4 does not fit in 256 KiB.
    for i in 0..5 {
        set(&format!("BIG{i}")).ok();
        if i < 4 {
            let name = format!("BIG{i}");
            assert_eventually!(
                app_env(&release).is_some_and(|(_, env)| env.contains_key(&name)),
                WITHIN
            );
        }
    }
    let (pid, _) = app_env(&release).expect("answers");
    assert_eventually!(
        cli.run_in(dir, &["logs"])
            .stdout
            .contains("keeps running with the previous configuration"),
        WITHIN
    );
    let logs = cli.run_in(dir, &["logs"]).ok();
    assert!(
        logs.stdout.contains("the app cannot start with it") && logs.stdout.contains("over the"),
        "{logs}"
    );
    // Still the same process, still answering, with the configuration it had.
    let (pid_now, env) = app_env(&release).expect("the app stopped answering");
    assert_eq!(pid_now, pid, "the app was restarted");
    assert!(env.contains_key("BIG3") && !env.contains_key("BIG4"));

    // The node takes values while the app's environment stays within
    // 512 KiB (8 of these), and refuses the next one.
    for i in 5..8 {
        set(&format!("BIG{i}")).ok();
    }
    let refused = set("BIG8").fails();
    assert!(
        refused.stderr.contains("environment of app web")
            && refused.stderr.contains("over the limit of 524288 bytes"),
        "{refused}"
    );
    let listed = cli.run_in(dir, &["config", "list", "--json"]).ok();
    assert!(
        listed.stdout.contains("BIG7") && !listed.stdout.contains("BIG8"),
        "{listed}"
    );
    assert_eq!(app_env(&release).map(|(p, _)| p), Some(pid));
}

/// Item 3: `cairn server join-token` used to print a command passing the
/// token as `--join-token`, readable by every local user in
/// `/proc/PID/cmdline`, and the token joined any number of nodes for 24 h.
/// Now the printed command passes it in the environment (or a 0600 file),
/// `cairn-node` takes it no other way, and it admits one node.
#[test]
fn a_join_token_stays_out_of_argv_and_admits_one_node() {
    let first = NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&first, "n0");
    let out = admin.run(&["server", "join-token"]).ok();
    assert!(
        out.stdout.contains("admits one node, valid for 10 min"),
        "{out}"
    );
    let token = out
        .stdout
        .lines()
        .nth(1)
        .expect("the token line")
        .trim()
        .to_string();
    let command = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.contains("cairn-node"))
        .expect("the command");
    assert!(
        command.starts_with(&format!("CAIRN_JOIN_TOKEN={token} cairn-node ")),
        "{command}"
    );
    assert_eq!(command.matches(&token).count(), 1, "{command}");
    assert!(!command.contains("--join-token "), "{command}");

    // The printed command, as printed (the token in the environment).
    let mut args: Vec<&str> = command.split_whitespace().skip(2).collect::<Vec<_>>();
    // DIR and ADDR are the builder's own.
    for flag in ["--data-dir", "--listen"] {
        let i = args.iter().position(|a| *a == flag).expect("flag");
        args.drain(i..i + 2);
    }
    let mut b = NodeProc::builder().env("CAIRN_JOIN_TOKEN", &token);
    for a in &args {
        b = b.arg(a);
    }
    let second = b.spawn();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", second.pid())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&token),
        "the token is in the node's argv"
    );
    assert_eventually!(
        admin.json(&["server", "members"]).as_array().map(Vec::len) == Some(2),
        WITHIN
    );

    // The same token again: refused, and the node says why and exits.
    let dir = tempfile::tempdir().expect("tempdir");
    let again = std::process::Command::new(&cairn_tests::bins().node)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--no-ingress"])
        .args(&args)
        .env("CAIRN_JOIN_TOKEN", &token)
        .output()
        .expect("run cairn-node");
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("not valid") || err.contains("used already"),
        "{err}"
    );
    assert!(!dir.path().join("data/node.json").exists());

    // `--out FILE` writes a 0600 file for `--join-token-file`; a file
    // others can read is refused.
    let file = dir.path().join("join.token");
    let out = admin
        .run(&[
            "server",
            "join-token",
            "--out",
            file.to_str().expect("utf-8"),
        ])
        .ok();
    assert!(out.stdout.contains("--join-token-file"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = std::process::Command::new(&cairn_tests::bins().node)
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .args(["--listen", "127.0.0.1:0", "--no-ingress"])
        .args(&args)
        .arg("--join-token-file")
        .arg(&file)
        .env_remove("CAIRN_JOIN_TOKEN")
        .output()
        .expect("run cairn-node");
    assert!(!loose.status.success());
    let err = String::from_utf8_lossy(&loose.stderr);
    assert!(err.contains("readable by other users"), "{err}");
    // And the flag that put it in argv is gone.
    let argv = std::process::Command::new(&cairn_tests::bins().node)
        .args(["--join-token", "x"])
        .output()
        .expect("run cairn-node");
    assert!(!argv.status.success());
}

/// How long until the node closes `s` (reads until EOF or an error),
/// writing `trickle` one byte a second meanwhile (if any).
fn closed_after(mut s: std::net::TcpStream, trickle: &[u8]) -> Duration {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut i = 0;
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return started.elapsed(),
        }
        if started.elapsed() > Duration::from_secs(40) {
            panic!("still open after 40 s");
        }
        if i < trickle.len() && s.write_all(&trickle[i..i + 1]).is_err() {
            return started.elapsed();
        }
        i += 1;
    }
}

fn ingress_addr(node: &NodeProc) -> std::net::SocketAddr {
    let url = node.url("x.localhost");
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Item 4 (each phase's timeout): a connection that sends nothing, one that
/// trickles a request head a byte a second, and a TLS connection that sends
/// half a ClientHello were never closed. Now the first two go at the header
/// timeout (15 s) and the third at the handshake timeout (10 s).
#[test]
fn silent_slow_header_and_half_handshake_connections_are_closed() {
    let plain = NodeProc::start_new();
    let tls = NodeProc::builder().arg("--ingress-tls-self-signed").spawn();
    let connect = |n: &NodeProc| std::net::TcpStream::connect(ingress_addr(n)).expect("connect");
    let silent = std::thread::spawn({
        let s = connect(&plain);
        move || closed_after(s, b"")
    });
    let slow = std::thread::spawn({
        let s = connect(&plain);
        move || {
            closed_after(s, b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        }
    });
    // The first bytes of a TLS 1.2/1.3 ClientHello record, then nothing.
    let half_hello = std::thread::spawn({
        let mut s = connect(&tls);
        std::io::Write::write_all(&mut s, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .expect("write");
        move || closed_after(s, b"")
    });
    let silent = silent.join().expect("silent");
    let slow = slow.join().expect("slow");
    let half_hello = half_hello.join().expect("half hello");
    let window =
        |d: Duration, t: u64| d >= Duration::from_secs(t - 1) && d <= Duration::from_secs(t + 3);
    assert!(
        window(silent, 15),
        "silent connection closed after {silent:?}"
    );
    assert!(
        window(slow, 15),
        "slow-header connection closed after {slow:?}"
    );
    assert!(
        window(half_hello, 10),
        "half handshake closed after {half_hello:?}"
    );
    // And the node still answers.
    assert_eq!(status(&plain.url("nothing.localhost")), 404);
}

/// Items 5 and 6: instances used to inherit the environment of the shell
/// that ran `cairn up` (cloud keys, tokens) and to run as the CLI's user
/// with its `HOME`, so an app could read the admin token of the CLI's
/// context, the node's CA key and its own entrypoint token in the
/// supervisor's spec. Now an instance starts from a clean environment (plus
/// what `pass_env` allows) with a `HOME` of its own; and when the runner is
/// root (as here and in CI), it runs as the unprivileged `cairn-app`, which
/// cannot read any of those files.
#[test]
fn instances_start_clean_with_their_own_home_and_as_root_run_unprivileged() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = python_app("iso", "web", r#"pass_env = ["KEEP_ME"]"#);
    let up = cli
        .run_in_under(
            &["env", "LEAKED_SECRET=aws-key", "KEEP_ME=kept"],
            app.path(),
            &["up"],
        )
        .ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(app_env(&release).is_some(), WITHIN);
    let (pid, env) = app_env(&release).expect("env");
    let get = |k: &str| env.get(k).and_then(|v| v.as_str()).map(str::to_string);

    // Item 5: nothing of the shell but what is allowed.
    assert_eq!(get("LEAKED_SECRET"), None, "the shell's environment leaked");
    assert_eq!(get("KEEP_ME").as_deref(), Some("kept"));
    let allowed = [
        "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "PORT",
        "KEEP_ME",
    ];
    for k in env.keys() {
        assert!(
            allowed.contains(&k.as_str()) || k.starts_with("CAIRN_"),
            "the instance got {k}={:?}",
            env[k]
        );
    }
    assert_eq!(get("CAIRN_ENTRYPOINT_TOKEN"), None);

    // Item 6: a home of its own, nowhere near the CLI's.
    let home = get("HOME").expect("HOME");
    assert!(home.ends_with("v1.home/instance-0"), "{home}");
    assert!(
        !home.starts_with(&cli.home().display().to_string()) || !nix::unistd::geteuid().is_root()
    );
    assert_eq!(get("TMPDIR"), Some(format!("{home}/tmp")));
    let read = |path: &str| {
        http_get(&format!("{}read?path={path}", release))
            .map(|r| (r.status, r.body))
            .expect("answers")
    };
    // It can read its own files.
    assert_eq!(read("web.py").0, 200);

    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: instances run as this user (the README says what that means)");
        return;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("Uid");
    let cairn_app = nix::unistd::User::from_name("cairn-app")
        .expect("lookup")
        .expect("the cairn-app user was created");
    assert_eq!(uid, cairn_app.uid.as_raw(), "the app runs as uid {uid}");
    assert_eq!(get("USER").as_deref(), Some("cairn-app"));
    let secrets = [
        cli.home().join("config/contexts/dev.json"),
        node.data_dir().join("ca-key.pem"),
        node.data_dir().join("node-key.pem"),
        cli.data_dir()
            .join("runner/deployments/web/v1.run/instance-0.spec.json"),
    ];
    for f in &secrets {
        assert!(f.exists(), "{} is not there", f.display());
        let (status, body) = read(&f.display().to_string());
        assert_eq!(status, 403, "the app read {}: {body}", f.display());
        assert!(body.contains("Permission denied"), "{body}");
    }
}

/// Every path under `root` whose mode lets group or others in, except
/// those `skip` accepts; with their modes.
fn loose_paths(root: &std::path::Path, skip: &dyn Fn(&std::path::Path) -> bool) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if skip(&p) {
            continue;
        }
        let root_itself = p == root;
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue; // gone meanwhile
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 && !root_itself {
            out.push(format!("{} {mode:03o}", p.display()));
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Item 7: `raft-log.redb` and `raft-sm.redb` (config secrets), node and
/// instance logs, artifacts and the config directory were 0644 in 0755
/// directories. Now everything the CLI and its local node write is 0600 in
/// 0700 directories, and a node whose data dir a user opened up says so at
/// start.
#[test]
fn what_the_cli_and_its_local_node_write_is_private() {
    let cli = Cli::new();
    let app = webapp(1);
    // No context: `up` starts the embedded local node.
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(status(&release) == 200, WITHIN);
    cli.run_in(app.path(), &["config", "set", "--secret", "TOKEN=s3cret"])
        .ok();
    let node_dir = cli.data_dir().join("local-node");
    for f in ["raft-log.redb", "raft-sm.redb", "ca-key.pem"] {
        assert!(
            walk_has(&node_dir, f),
            "{f} not found under {}",
            node_dir.display()
        );
    }
    // The extracted app (its own files, its modes) is not Cairn's to close.
    let extracted = |p: &std::path::Path| {
        let s = p.to_string_lossy();
        s.contains("/runner/deployments/")
            && s.split('/')
                .any(|c| c.starts_with('v') && c[1..].parse::<u64>().is_ok())
    };
    // (CAIRN_HOME itself is the test's temp dir: what is in it is Cairn's.)
    let home = cli.home().to_path_buf();
    let loose = loose_paths(cli.home(), &|p| p != home && extracted(p));
    assert!(loose.is_empty(), "not private:\n{}", loose.join("\n"));

    // A standalone node's data dir too; and a mode a user opened up is
    // reported at the node's next start.
    use std::os::unix::fs::PermissionsExt;
    let mut node = NodeProc::start_new();
    let loose = loose_paths(&node.data_dir(), &|_| false);
    let data_mode = std::fs::metadata(node.data_dir())
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(data_mode, 0o700);
    assert!(loose.is_empty(), "not private:\n{}", loose.join("\n"));
    std::fs::set_permissions(node.data_dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    node.restart();
    assert_eventually!(node.log().contains("is mode 755"), WITHIN);
}

fn walk_has(root: &std::path::Path, name: &str) -> bool {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.file_name().is_some_and(|n| n == name) {
            return true;
        }
        if let Ok(entries) = std::fs::read_dir(&p) {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    false
}

/// Item 8: a custom hostname could take over another app's built-in names
/// (`web--v1.localhost` registered from another project served that
/// project) and the bare domain could be registered. Now names one or two
/// labels under the domain (`APP.WORKSPACE.DOMAIN` is an app's own too), and
/// the domain itself, are refused; the app keeps its names.
#[test]
fn custom_hostnames_cannot_take_an_apps_own_names() {
    let (_node, cli, _shop, up) = deployed_shop();
    let deployment = up.field("Deployment URL").expect("Deployment URL");
    assert_eventually!(status(&deployment) == 200, WITHIN);
    let other = python_app("other", "api", "");
    cli.run_in(other.path(), &["up"]).ok();
    for name in [
        "web--v1.localhost",
        "web.localhost",
        "localhost",
        "not-yet-an-app.localhost",
        "www.api.localhost",
    ] {
        let out = cli
            .run_in(other.path(), &["hostname", "register", name])
            .fails();
        assert!(
            out.stderr.contains("reserved") || out.stderr.contains("cluster's domain"),
            "{out}"
        );
    }
    let body = http_get(&deployment).expect("answers").body;
    assert!(body.ends_with(" v1\n"), "{body}");
    // Names elsewhere, or deeper under the domain, are fine.
    cli.run_in(other.path(), &["hostname", "register", "api.example.test"])
        .ok();
    cli.run_in(
        other.path(),
        &["hostname", "register", "www.api.x.localhost"],
    )
    .ok();
}

/// A node, a CLI connected to it, and [`webapp`]'s `shop/web` up and
/// answering; the directory and `up`'s output.
fn deployed_shop() -> (NodeProc, Cli, tempfile::TempDir, cairn_tests::Output) {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let shop = webapp(1);
    let up = cli.run_in(shop.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(status(&release) == 200, WITHIN);
    (node, cli, shop, up)
}

/// `raw` on a new connection to `addr`; the answer's status and text.
fn raw_request(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(raw.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the node closes, or a whole answer sits in the buffer.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The low findings of the ingress: two `Host` headers were accepted,
/// absolute-form targets routed by `Host`, `CONNECT` forwarded, any
/// `Upgrade` token passed on, a client's `Forwarded` header passed through,
/// `APP--vN` with N past u64 served the release, and a malformed chunked
/// body from the client answered 502 blaming the app.
#[test]
fn the_ingress_refuses_ambiguous_and_foreign_requests() {
    let (node, _cli, _shop, up) = deployed_shop();
    let release = up.field("Release URL").expect("Release URL");
    let addr = ingress_addr(&node);
    let port = addr.port();
    let host = format!("web.localhost:{port}");

    let (code, text) = raw_request(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.localhost\r\n\r\n"),
    );
    assert_eq!(code, 400, "two Host headers: {text}");

    let (code, text) = raw_request(
        addr,
        &format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    );
    assert_eq!(code, 405, "CONNECT: {text}");

    // Absolute form: the target's authority routes, not Host.
    let (code, text) = raw_request(
        addr,
        &format!("GET http://nothing.localhost:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 404, "absolute form routed by Host: {text}");
    let (code, text) = raw_request(
        addr,
        &format!(
            "GET http://{host}/ HTTP/1.1\r\nHost: nothing.localhost\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 200, "absolute form: {text}");

    let huge = format!("http://web--v99999999999999999999999.localhost:{port}/");
    assert_eq!(status(&huge), 404);

    // Only websocket upgrades pass; the app never sees another Upgrade, nor
    // the client's Forwarded.
    let (code, text) = raw_request(
        addr,
        &format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\nForwarded: for=6.6.6.6;host=evil\r\n\r\n"),
    );
    assert_eq!(code, 200, "{text}");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let seen: serde_json::Value = serde_json::from_str(body).expect("headers JSON");
    assert!(seen.get("upgrade").is_none(), "{seen}");
    let forwarded = seen["forwarded"].as_str().expect("a Forwarded header");
    assert!(
        forwarded.starts_with("for=\"127.0.0.1\";proto=http") && !forwarded.contains("6.6.6.6"),
        "{forwarded}"
    );

    // A malformed chunked body is the client's fault.
    let (code, text) = raw_request(
        addr,
        &format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    );
    assert_eq!(code, 400, "malformed chunks: {text}");
    // And the app still answers.
    assert_eq!(status(&release), 200);
}

/// Low finding: `cairn status` ignored an invalid `cairn.hcl` and showed
/// the whole cluster with exit 0. Now the file's error (file:line) is the
/// answer.
#[test]
fn status_reports_an_invalid_config_instead_of_ignoring_it() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let bad = write_app("project = \"p\"\napp \"web\" {\n  build {\n", &[]);
    let out = cli.run_in(bad.path(), &["status"]).fails();
    assert!(out.stderr.contains("cairn.hcl:"), "{out}");
    assert_eq!(out.stderr_lines().len(), 1, "{out}");
    // Without a config: the whole cluster, fine.
    let empty = tempfile::tempdir().expect("tempdir");
    cli.run_in(empty.path(), &["status"]).ok();
}

/// Low finding: refused authentications left no trace in the node's log,
/// and a token of the wrong kind was refused in Rust debug notation
/// (`a Entrypoint { app: …, deployment: 3 } token …`). Now each refusal is
/// logged with the peer's address, and the reason is plain words.
#[test]
fn refused_connections_are_logged_and_explained_in_words() {
    let node = NodeProc::start_new();
    let admin = Cli::new();
    admin.connect_to(&node, "n0");
    let join = cairn_tests::join_token(&admin);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut dial = node.dial(&join);
    dial.role = cairn_protocol::handshake::Role::Runner;
    let err = match rt.block_on(cairn_protocol::rpc::connect(&dial)) {
        Ok(_) => panic!("a join token was admitted as a runner"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("a join token cannot be used for a runner connection"),
        "{err}"
    );
    assert!(!err.contains('{') && !err.contains("Join"), "{err}");
    let wrong = rt.block_on(cairn_protocol::rpc::connect(&node.dial("cairn_user_nope")));
    assert!(wrong.is_err());
    assert_eventually!(
        node.log().matches("refused a connection").count() >= 2,
        WITHIN
    );
    let log = node.log();
    assert!(log.contains("token is not valid"), "{log}");
    assert!(
        !log.contains("cairn_user_nope"),
        "the node logged the secret"
    );
}
