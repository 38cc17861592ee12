//! Crash safety: `kill -9` of the node in the middle of a job, then a restart
//! on the same data dir.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_tests::{
    assert_eventually, hello_app, json, pid_alive, signal, write_app, Cli, NodeProc,
};
use serde_json::Value;

/// A build that takes 30 s (far longer than the test needs); it records its pid so the
/// test can stop it (the CLI that ran it dies with an error and leaves it).
const SLOW_APP: &str = r#"
project = "slow"

app "slow" {
  build {
    use "command" {
      command = ["sh", "-c", "echo $$ > build.pid; exec sleep 30"]
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

/// Kills the slow build's `sleep` when the test ends, however it ends.
struct KillPidFile(PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            if cairn_tests::pid_runs(pid, "sleep") {
                signal(pid, "KILL");
            }
        }
    }
}

const LISTS: [&[&str]; 4] = [
    &["artifact", "list"],
    &["artifact", "pushed"],
    &["deployment", "list"],
    &["release", "list"],
];

fn all_ops(cli: &Cli) -> Vec<Value> {
    LISTS
        .iter()
        .flat_map(|l| json::items(&cli.json(l)).clone())
        .collect()
}

fn job_of_app<'a>(jobs: &'a Value, app: &str) -> Option<&'a Value> {
    json::items(jobs).iter().find(|j| j["spec"]["app"] == app)
}

#[test]
fn kill9_mid_job_fails_it_with_a_reason_and_keeps_history() {
    let mut node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");

    // One successful up.
    let hello = hello_app();
    cli.run_in(hello.path(), &["up"]).ok();
    let before: Vec<Vec<Value>> = LISTS
        .iter()
        .map(|l| json::items(&cli.json(l)).clone())
        .collect();
    for (l, ops) in LISTS.iter().zip(&before) {
        assert_eq!(ops.len(), 1, "one operation in {l:?}: {ops:?}");
        assert_eq!(json::s(&ops[0], "status"), "Success");
    }

    // A second job whose build blocks; follow it in the background.
    let slow = write_app(SLOW_APP, &[]);
    let pid_file = slow.path().join("build.pid");
    let _kill_build = KillPidFile(pid_file.clone());
    cli.track(slow.path());
    let follower = cli.spawn(&["-C", &slow.path().to_string_lossy(), "up"]);
    assert_eventually!(
        pid_file.exists(),
        Duration::from_secs(30),
        "the slow build never started; CLI said:\n{}",
        follower.stdout_so_far()
    );
    assert_eventually!(
        job_of_app(&cli.json(&["job", "list"]), "slow").is_some_and(|j| j["state"] == "Running"),
        Duration::from_secs(10)
    );
    let slow_job = json::u(
        job_of_app(&cli.json(&["job", "list"]), "slow").expect("slow job"),
        "id",
    );
    // The CLI is following it.
    assert_eventually!(
        follower
            .stdout_so_far()
            .contains("Building v1 with command"),
        Duration::from_secs(10),
        "follower output: {}",
        follower.stdout_so_far()
    );
    // Its build operation is recorded as running.
    let builds = cli.json(&["artifact", "list"]);
    assert!(
        json::items(&builds)
            .iter()
            .any(|b| json::u(b, "job_id") == slow_job && b["status"] == "Running"),
        "{builds}"
    );

    // kill -9 the node, start it again on the same data dir and address.
    let old_pid = node.pid();
    node.kill9();
    assert!(!pid_alive(old_pid));
    let killed_at = Instant::now();
    node.restart_same_addr();

    // The CLI that was following notices, and says so.
    let out = follower.wait(Duration::from_secs(60)).fails();
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("lost the connection") || err.contains("closed the job stream"),
        "clear message expected: {out}"
    );
    assert!(
        out.stderr.contains(&format!("job {slow_job}")),
        "names the job: {out}"
    );
    eprintln!(
        "follower exited {:?} after the kill: {out}",
        killed_at.elapsed()
    );

    // Everything the first up recorded is still there, unchanged.
    for (l, ops) in LISTS.iter().zip(&before) {
        let now = json::items(&cli.json(l)).clone();
        for op in ops {
            assert!(now.contains(op), "{l:?} lost or changed {op}: {now:?}");
        }
    }

    // The interrupted job failed with a reason; none of its operations succeeded.
    let jobs = cli.json(&["job", "list"]);
    let j = job_of_app(&jobs, "slow").expect("slow job still listed");
    assert_eq!(json::u(j, "id"), slow_job);
    assert_eq!(json::s(j, "state"), "Error", "{j}");
    let reason = json::s(j, "error").to_lowercase();
    assert!(reason.contains("interrupted"), "{j}");
    let inspect = cli.run(&["job", "inspect", &slow_job.to_string()]).ok();
    assert!(inspect.stdout.contains("error"), "{inspect}");

    let ops = all_ops(&cli);
    for op in &ops {
        assert_ne!(json::s(op, "status"), "Running", "left running: {op}");
        if json::u(op, "job_id") == slow_job {
            assert_ne!(json::s(op, "status"), "Success", "{op}");
        }
    }
    assert!(
        ops.iter()
            .any(|op| json::u(op, "job_id") == slow_job && op["status"] == "Error"),
        "the interrupted build is recorded as failed: {ops:?}"
    );
    for j in json::items(&jobs) {
        assert!(
            ["Success", "Error", "Cancelled"].contains(&json::s(j, "state")),
            "job left unfinished: {j}"
        );
    }

    // The node keeps working: the first app can still be deployed.
    let again = cli.run_in(hello.path(), &["deploy"]).ok();
    assert!(again.stdout.contains("Deploying v2"), "{again}");
}

/// A deploy that never becomes ready (its app never listens): two
/// supervised instances sit in `deploy` until the test interrupts it.
const STUCK_APP: &str = r#"
project = "stuck"

app "stuck" {
  build {
    use "files" {
      path    = "."
      exclude = ["cairn.hcl"]
    }
  }

  deploy {
    use "process" {
      command       = ["python3", "-c", "import time; time.sleep(600)"]
      count         = 2
      ready_timeout = 300
    }
  }
}
"#;

/// The supervisor and app pids of the instances of `v1` of app `stuck` (from
/// their state files under the CLI's data dir).
fn stuck_pids(cli: &Cli) -> Vec<u32> {
    let run = cli.data_dir().join("runner/deployments/stuck/v1.run");
    let mut pids = Vec::new();
    for i in 0..2 {
        let Ok(text) = std::fs::read_to_string(run.join(format!("instance-{i}.state.json"))) else {
            continue;
        };
        let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        for key in ["supervisor_pid", "child_pid"] {
            if let Some(p) = state[key].as_u64() {
                pids.push(p as u32);
            }
        }
    }
    pids
}

#[test]
fn a_deploy_interrupted_by_a_dead_node_is_cleaned_up_by_destroy() {
    let mut node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = write_app(STUCK_APP, &[("README", "nothing to serve")]);
    let follower = cli.spawn(&["-C", &app.path().to_string_lossy(), "up"]);
    // Both instances run (supervisor and app), waiting to become ready.
    assert_eventually!(
        stuck_pids(&cli).len() == 4,
        Duration::from_secs(60),
        "the instances never started; CLI said:\n{}",
        follower.stdout_so_far()
    );
    let pids = stuck_pids(&cli);

    node.kill9();
    node.restart_same_addr();
    follower.wait(Duration::from_secs(60)).fails();

    // What the deploy started is still there, and its record says it failed.
    for pid in &pids {
        assert!(pid_alive(*pid), "pid {pid} should still run before destroy");
    }
    let deps = cli.json(&["deployment", "list"]);
    let d = &json::items(&deps)[0];
    assert_eq!(json::s(d, "status"), "Error", "{deps}");
    assert_eq!(json::s(d, "state"), "Active", "{deps}");

    // `cairn destroy` finds it by where it lives and stops it all.
    let out = cli.run_in(app.path(), &["destroy"]).ok();
    assert!(
        out.stdout.contains("Cleaning up failed deployment v1"),
        "{out}"
    );
    assert_eventually!(
        pids.iter().all(|p| !pid_alive(*p)),
        Duration::from_secs(20),
        "left running after destroy: {:?}",
        pids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );
    assert!(!cli.data_dir().join("runner/deployments/stuck/v1").exists());
    let deps = cli.json(&["deployment", "list"]);
    assert_eq!(
        json::s(&json::items(&deps)[0], "state"),
        "Destroyed",
        "{deps}"
    );
    // A second destroy has nothing left to do.
    let again = cli.run_in(app.path(), &["destroy"]).ok();
    assert!(again.stdout.contains("nothing"), "{again}");
}
