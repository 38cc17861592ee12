//! Tests with real processes. The supervisor runs in a copy of this test binary: the
//! platform spawns `<test binary> __supervise SPEC`, which libtest reads as two test
//! filters; `__supervise` selects the `__supervise_host` test below, which runs the
//! supervisor and exits the process. In normal test runs that test does nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use super::*;
use crate::testutil::{ctx, write, Lines, Wait};
use crate::{Catalog, HealthState, ReleaseOptions, Value};

#[test]
fn __supervise_host() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__supervise") {
        if let Some(spec) = args.get(2) {
            let code = supervisor::run(Path::new(spec));
            std::process::exit(i32::from(code));
        }
    }
}

const SERVER: &str = r#"
import http.server, os, socketserver
port = int(os.environ["PORT"])
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
with socketserver.TCPServer(("127.0.0.1", port), H) as s:
    print("serving on", port, flush=True)
    s.serve_forever()
"#;

/// Destroys the deployments it holds when dropped, so a failing test leaves nothing
/// running.
#[derive(Default)]
struct Cleanup(Vec<Deployment>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = destroy_deployment(d);
        }
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    source: PathBuf,
    data: PathBuf,
    catalog: Catalog,
}

impl Fixture {
    fn new(body: &str) -> Result<Fixture> {
        let tmp = tempfile::tempdir()?;
        let source = tmp.path().join("src");
        write(&source.join("server.py"), SERVER);
        write(&source.join("index.html"), body);
        let data = tmp.path().join("data");
        Ok(Fixture {
            _tmp: tmp,
            source,
            data,
            catalog: Catalog::builtin(),
        })
    }

    /// A context whose output nobody reads.
    fn cx(&self) -> crate::OpContext {
        ctx(&self.source, &self.data, 1, &Lines::default())
    }

    fn artifact(&self) -> Result<Value> {
        let out = Lines::default();
        let mut c = ctx(&self.source, &self.data, 1, &out);
        Ok(self
            .catalog
            .builder("files", &json!({}))?
            .build(&mut c)
            .wait()?)
    }

    fn deploy(
        &self,
        seq: u64,
        config: serde_json::Value,
        cleanup: &mut Cleanup,
    ) -> Result<Deployment> {
        let artifact = self.artifact()?;
        let out = Lines::default();
        let mut c = ctx(&self.source, &self.data, seq, &out);
        c.env.insert("GREETING".to_string(), "hi".to_string());
        let value = self
            .catalog
            .platform("process", &config)?
            .deploy(&mut c, &artifact)
            .wait()?;
        let d: Deployment = value.get::<Deployment>()?;
        cleanup.0.push(d.clone());
        Ok(d)
    }
}

fn http_get(port: u16) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// Where deployment `v` of app web is extracted: under the instance root
/// when the tests run as root (instances then run as another user).
fn code_dir(data: &Path, v: &str) -> std::path::PathBuf {
    if nix::unistd::geteuid().is_root() {
        super::isolation::instance_root(data).join("web").join(v)
    } else {
        data.join("deployments/web").join(v)
    }
}

fn serve_command() -> serde_json::Value {
    json!(["python3", "server.py"])
}

fn value(d: &Deployment) -> Value {
    Value::of(d).expect("serializable")
}

#[test]
fn deploy_restart_status_destroy() -> Result<()> {
    let f = Fixture::new("hello v1")?;
    let mut cleanup = Cleanup::default();
    let d = f.deploy(
        1,
        json!({"command": serve_command(), "count": 2}),
        &mut cleanup,
    )?;
    assert_eq!(d.instances.len(), 2);
    assert_ne!(d.instances[0].port, d.instances[1].port);
    assert_eq!(d.url, format!("http://127.0.0.1:{}/", d.instances[0].port));
    assert_eq!(d.dir, code_dir(&f.data, "v1"));
    assert!(d.dir.join("server.py").is_file());
    for i in &d.instances {
        let body = http_get(i.port)?;
        assert!(body.contains("hello v1"), "{body}");
    }
    let platform = f
        .catalog
        .platform("process", &json!({"command": serve_command()}))?;
    assert_eq!(platform.url(&value(&d)), Some(d.url.clone()));
    let health = platform.status(&mut f.cx(), &value(&d)).wait()?;
    assert_eq!(
        (health.total, health.alive, health.state()),
        (2, 2, HealthState::Ready)
    );

    // The config env and PORT reach the process.
    let child = health.instances[0].pid.expect("a child pid");
    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("GREETING=hi"), "{environ}");
    assert!(
        environ.contains(&format!("PORT={}", d.instances[0].port)),
        "{environ}"
    );

    // kill -9 the child of instance 1: its supervisor starts it again.
    let victim = health.instances[1].pid.expect("a child pid");
    sys::signal_process(victim, sys::SIGKILL)?;
    let restarted = wait_until(Duration::from_secs(10), || {
        read_state(&d.instances[1].state)
            .is_ok_and(|s| s.restarts >= 1 && s.child_pid.is_some_and(|p| p != victim))
            && http_get(d.instances[1].port).is_ok_and(|b| b.contains("hello v1"))
    });
    assert!(
        restarted,
        "instance 1 was not restarted: {}",
        log_tail(&d.instances[1].log)
    );
    let health = platform.status(&mut f.cx(), &value(&d)).wait()?;
    assert_eq!(health.alive, 2);
    assert_eq!(health.instances[1].restarts, 1);
    assert_eq!(health.instances[0].restarts, 0);

    // Destroy: every supervisor and child is gone, logs are kept.
    let mut pids: Vec<u32> = d.instances.iter().map(|i| i.supervisor_pid).collect();
    pids.extend(health.instances.iter().filter_map(|i| i.pid));
    assert_eq!(pids.len(), 4);
    let out = Lines::default();
    let mut c = ctx(&f.source, &f.data, 1, &out);
    platform.destroy(&mut c, &value(&d)).wait()?;
    for pid in &pids {
        assert!(!sys::process_exists(*pid), "pid {pid} survived destroy");
    }
    assert!(!d.dir.exists());
    assert!(d
        .instances
        .iter()
        .all(|i| i.log.exists() && !i.spec.exists()));
    assert!(std::fs::read_to_string(&d.instances[1].log)?.contains("restarting in 100 ms"));
    let health = platform.status(&mut f.cx(), &value(&d)).wait()?;
    assert_eq!((health.alive, health.state()), (0, HealthState::Down));
    // Destroy is idempotent.
    platform.destroy(&mut c, &value(&d)).wait()?;
    Ok(())
}

#[test]
fn a_failed_deploy_leaves_nothing_running() -> Result<()> {
    let f = Fixture::new("x")?;
    let mut cleanup = Cleanup::default();
    // Writable by whoever the instance runs as (another user under root).
    let shared = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777))?;
    }
    let pidfile = shared.path().join("child.pid");
    std::fs::create_dir_all(&f.data)?;

    // Never listens: times out, and the process it started is stopped.
    let command = json!([
        "sh",
        "-c",
        format!("echo $$ > {}; exec sleep 60", pidfile.display())
    ]);
    let err = f
        .deploy(
            1,
            json!({"command": command, "count": 2, "ready_timeout": 1}),
            &mut cleanup,
        )
        .expect_err("never ready");
    assert!(
        err.to_string()
            .contains("nothing accepts connections on port"),
        "{err}"
    );
    let child: u32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
    assert!(
        !sys::process_exists(child),
        "child {child} survived a failed deploy"
    );
    assert!(!code_dir(&f.data, "v1").exists());
    assert_eq!(
        supervisors_of(&f.data.join("deployments/web/v1.run")),
        Vec::<u32>::new()
    );

    // Exits at once without restart: the error carries the log.
    let command = json!(["sh", "-c", "echo boom >&2; exit 3"]);
    let err = f
        .deploy(
            2,
            json!({"command": command, "restart": false}),
            &mut cleanup,
        )
        .expect_err("exits");
    let text = err.to_string();
    assert!(
        text.contains("supervisor exited") && text.contains("boom"),
        "{text}"
    );
    assert!(!code_dir(&f.data, "v2").exists());

    // An artifact whose hash does not match is refused before anything starts.
    let mut artifact = f.artifact()?;
    artifact.data["sha256"] = json!("0".repeat(64));
    let out = Lines::default();
    let mut c = ctx(&f.source, &f.data, 3, &out);
    let err = f
        .catalog
        .platform("process", &json!({"command": serve_command()}))?
        .deploy(&mut c, &artifact)
        .wait()
        .expect_err("bad hash");
    assert!(err.to_string().contains("expected 0000"), "{err}");
    assert!(!code_dir(&f.data, "v3").exists());
    Ok(())
}

/// Pids of live processes whose command line mentions `dir` (Linux only).
fn supervisors_of(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                && sys::process_exists(*pid)
        })
        .collect()
}

#[test]
fn release_marks_and_prunes() -> Result<()> {
    let f = Fixture::new("hello")?;
    let mut cleanup = Cleanup::default();
    let config = json!({"command": serve_command()});
    let d1 = f.deploy(1, config.clone(), &mut cleanup)?;
    let d2 = f.deploy(2, config.clone(), &mut cleanup)?;
    let d3 = f.deploy(3, config.clone(), &mut cleanup)?;
    let releaser = f.catalog.releaser("process", &json!({}))?;
    assert_eq!(releaser.input_types(), &["process.Deployment"]);
    let out = Lines::default();
    let mut c = ctx(&f.source, &f.data, 3, &out);

    let others = vec![(1, value(&d1)), (2, value(&d2))];
    let outcome = releaser
        .release(
            &mut c,
            &value(&d3),
            &others,
            &ReleaseOptions {
                prune: true,
                retain: 1,
            },
        )
        .wait()?;
    assert_eq!(outcome.pruned, vec![1]);
    assert_eq!(outcome.urls, vec![d3.url.clone()]);
    let release: Release = outcome.value.get::<Release>()?;
    assert_eq!(
        release,
        Release {
            sequence: 3,
            url: d3.url.clone()
        }
    );
    assert_eq!(released_sequence(&f.data, "web"), Some(3));
    assert!(!sys::process_exists(d1.instances[0].supervisor_pid));
    assert!(sys::process_exists(d2.instances[0].supervisor_pid));

    // Rolling back to v2 (no prune) never touches v3.
    let others = vec![(1, value(&d1)), (3, value(&d3))];
    let outcome = releaser
        .release(&mut c, &value(&d2), &others, &ReleaseOptions::default())
        .wait()?;
    assert!(outcome.pruned.is_empty());
    assert_eq!(released_sequence(&f.data, "web"), Some(2));
    assert!(http_get(d3.instances[0].port)?.contains("hello"));
    let outcome = releaser
        .release(
            &mut c,
            &value(&d2),
            &others,
            &ReleaseOptions {
                prune: true,
                retain: 0,
            },
        )
        .wait()?;
    assert_eq!(outcome.pruned, vec![1]);
    assert!(sys::process_exists(d3.instances[0].supervisor_pid));

    // A destroyed deployment cannot be released.
    let err = releaser
        .release(&mut c, &value(&d1), &[], &ReleaseOptions::default())
        .wait()
        .expect_err("v1 is gone");
    assert!(err.to_string().contains("no running instance"), "{err}");
    if !matches!(released_sequence(&f.data, "web"), Some(2)) {
        bail!("a failed release moved the marker");
    }
    Ok(())
}

/// Starts a supervisor (this test binary) for `spec` directly.
fn spawn_supervisor(
    dir: &Path,
    command: serde_json::Value,
    timing: Timing,
) -> Result<(std::process::Child, SupervisorSpec)> {
    let spec = SupervisorSpec {
        command: serde_json::from_value(command)?,
        workdir: dir.to_path_buf(),
        env: Default::default(),
        log: dir.join("log"),
        state: dir.join("state.json"),
        port: None,
        restart: true,
        timing,
        run_as: None,
    };
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let log = std::fs::File::create(&spec.log)?;
    let child = std::process::Command::new(crate::testutil::test_exe())
        .arg("__supervise")
        .arg(&spec_path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok((child, spec))
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

#[test]
fn supervisor_backs_off_and_stops_during_backoff() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let timing = Timing {
        initial_backoff_ms: 50,
        max_backoff_ms: 200,
        reset_after_ms: 10_000,
        stop_timeout_ms: 1_000,
    };
    let (mut sup, spec) = spawn_supervisor(tmp.path(), json!(["sh", "-c", "exit 1"]), timing)?;
    let crashed = wait_until(Duration::from_secs(10), || {
        read_state(&spec.state).is_ok_and(|s| s.restarts >= 4)
    });
    assert!(crashed, "{}", log_tail(&spec.log));
    let log = std::fs::read_to_string(&spec.log)?;
    let delays: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .take(4)
        .collect();
    assert_eq!(delays, vec!["50 ms", "100 ms", "200 ms", "200 ms"]);
    assert_eq!(
        read_state(&spec.state)?.last_exit.as_deref(),
        Some("exit status: 1")
    );
    sys::signal_process(sup.id(), sys::SIGTERM)?;
    let status = wait_exit(&mut sup, Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let state = read_state(&spec.state)?;
    assert_eq!((state.status, state.child_pid), (Status::Stopped, None));
    Ok(())
}

#[test]
fn supervisor_kills_a_child_that_ignores_sigterm() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let timing = Timing {
        stop_timeout_ms: 300,
        ..Timing::default()
    };
    let script = "trap '' TERM; sleep 60 & wait";
    let (mut sup, spec) = spawn_supervisor(tmp.path(), json!(["sh", "-c", script]), timing)?;
    let mut child = None;
    wait_until(Duration::from_secs(10), || {
        child = read_state(&spec.state).ok().and_then(|s| s.child_pid);
        child.is_some()
    });
    let Some(child) = child else {
        bail!("never started: {}", log_tail(&spec.log));
    };
    // Let the shell start its background sleep (same process group).
    wait_until(Duration::from_secs(5), || group_members(child) >= 2);
    assert!(group_members(child) >= 2);
    sys::signal_process(sup.id(), sys::SIGTERM)?;
    let status = wait_exit(&mut sup, Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    // The killed background `sleep` is reaped by init, shortly.
    let gone = wait_until(Duration::from_secs(5), || group_members(child) == 0);
    assert!(gone, "the command's group survived");
    assert!(std::fs::read_to_string(&spec.log)?.contains("did not exit within 300 ms"));
    Ok(())
}

/// Live processes in the process group `pgid` (Linux only).
fn group_members(pgid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rfind(')').is_some_and(|i| {
                    let fields: Vec<&str> = stat[i + 1..].split_whitespace().collect();
                    fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z"
                })
            })
        })
        .count()
}

#[test]
fn destroy_cleans_up_after_a_killed_supervisor() -> Result<()> {
    let f = Fixture::new("stubborn")?;
    let mut cleanup = Cleanup::default();
    // Ignores SIGTERM, so it outlives its supervisor's death signal.
    let command = json!(["sh", "-c", "trap '' TERM; exec python3 server.py"]);
    let d = f.deploy(1, json!({"command": command}), &mut cleanup)?;
    let platform = f.catalog.platform("process", &json!({"command": ["x"]}))?;
    let child = platform.status(&mut f.cx(), &value(&d)).wait()?.instances[0]
        .pid
        .expect("a child pid");
    sys::signal_process(d.instances[0].supervisor_pid, sys::SIGKILL)?;
    assert!(wait_until(Duration::from_secs(5), || !sys::process_exists(
        d.instances[0].supervisor_pid
    )));
    assert!(sys::process_exists(child));
    let health = platform.status(&mut f.cx(), &value(&d)).wait()?;
    assert_eq!(health.alive, 0, "an unsupervised instance does not count");

    let out = Lines::default();
    let mut c = ctx(&f.source, &f.data, 1, &out);
    platform.destroy(&mut c, &value(&d)).wait()?;
    assert!(
        wait_until(Duration::from_secs(5), || !sys::process_exists(child)),
        "child {child} survived"
    );
    Ok(())
}
