//! `k8s-bench`: the kubernetes platform (issue 18) on the local cluster of
//! `tests/k8s/local-cluster.sh`, side by side in one run.
//!
//! 1. `cairn up` on a copy of examples/kubernetes-hello (build with the entrypoint
//!    injected, push to Debian's docker-registry on loopback, a 2-pod Deployment rolled
//!    out, the Service switched to it and its endpoints checked) against the same steps by
//!    hand: `docker build`, `docker push`, `kubectl apply` of the same shape of objects (a
//!    Deployment per round with the same probes, the Service's selector moved to it), then
//!    `kubectl rollout status` and a wait for the Service's endpoints to be the new pods.
//!    Every round changes a file of the app, so both build and push a new layer. Rounds
//!    alternate which goes first; round 0 warms the caches and is not counted. The previous
//!    round's Deployment is deleted after each round, outside the timings.
//! 2. Release → the Service selecting the new pods: Cairn's own figure (its release waits
//!    for the endpoints and prints how long after the switch they were the new pods), for
//!    each `cairn up` and for a rollback (`cairn release N-1`), against the same measured by
//!    hand (`kubectl apply` of the Service, then polling its endpoints through kubectl).
//!
//! The machine is shared and noisy: read the medians and the ratio, not single rounds.
//!
//!   tests/k8s/local-cluster.sh build && entrypoint/build-static.sh
//!   cargo build --release -p cairn-tests -p cairn-cli -p cairn-node --bin k8s-bench --bin cairn --bin cairn-node
//!   ./target/release/k8s-bench [--rounds N]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::procs::{bin_dir, static_entrypoint, temp_dir};
use cairn_tests::bench::report::{command_line, machine};
use cairn_tests::bench::stats::{median, min_max, table};
use cairn_tests::docker::{copy_tree, Registry};
use cairn_tests::k8s::Cluster;
use cairn_tests::workspace_root;

const USAGE: &str = "\
usage: k8s-bench [--rounds N] [--bin-dir DIR]

  --rounds N        timed rounds of `cairn up` and of the same by hand (default 3),
                    after one warm-up round of each
  --bin-dir DIR     where `cairn` and `cairn-node` are (default: next to this binary)

Needs a Docker engine, the local cluster's binaries (tests/k8s/local-cluster.sh build),
Debian's docker-registry and busybox-static, and the static entrypoint.";

struct Args {
    rounds: usize,
    bin_dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Argv::from_env(USAGE);
    let mut out = Args {
        rounds: 3,
        bin_dir: None,
    };
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--rounds" => out.rounds = a.num("--rounds")?,
            "--bin-dir" => out.bin_dir = Some(PathBuf::from(a.value("--bin-dir")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    if out.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    Ok(out)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("k8s-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("k8s-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cairn` with its own home, on the embedded local node, reaching the cluster.
struct Cairn {
    program: PathBuf,
    home: PathBuf,
    entrypoint: PathBuf,
    kubeconfig: PathBuf,
}

impl Cairn {
    fn run(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.program)
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("CAIRN_HOME", &self.home)
            .env("CAIRN_ENTRYPOINT_STATIC", &self.entrypoint)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .env_remove("CAIRN_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.program.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "`cairn {}` failed:\n{stdout}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        let _ = Command::new(&self.program)
            .args(["server", "stop-local"])
            .env("CAIRN_HOME", &self.home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `PROGRAM ARGS…`, its stdout; an error with its stderr when it fails.
fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let kc = cluster.kubeconfig();
    let mut all = vec!["--kubeconfig", kc.to_str().unwrap_or_default()];
    all.extend_from_slice(args);
    sh(
        cairn_tests::k8s::kubectl_program()
            .to_str()
            .unwrap_or("kubectl"),
        &all,
    )
}

/// The manifests of round `round` by hand: a Deployment like Cairn's (2 replicas, the same
/// probes) and the Service selecting it.
fn manifests(image: &str, round: usize) -> (String, String) {
    let all = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: hand-r{round}, labels: {{bench: hand}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{bench: hand, round: "{round}"}}}}
  template:
    metadata: {{labels: {{bench: hand, round: "{round}"}}}}
    spec:
      containers:
      - name: web
        image: {image}
        env: [{{name: PORT, value: "3000"}}]
        ports: [{{containerPort: 3000}}]
        livenessProbe: {{httpGet: {{path: /, port: 3000}}, initialDelaySeconds: 2, timeoutSeconds: 5, failureThreshold: 30}}
        readinessProbe: {{httpGet: {{path: /, port: 3000}}, initialDelaySeconds: 2, timeoutSeconds: 5, periodSeconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: hand, labels: {{bench: hand}}}}
spec:
  selector: {{bench: hand, round: "{round}"}}
  ports: [{{port: 80, targetPort: 3000, protocol: TCP}}]
"#
    );
    let (d, svc) = all.split_once("---\n").expect("two documents");
    (d.to_string(), svc.to_string())
}

/// Polls until the Service's endpoints are `want` pods whose names start with `prefix`.
fn wait_endpoints(
    cluster: &Cluster,
    service: &str,
    prefix: &str,
    want: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = kubectl(
            cluster,
            &[
                "get",
                "endpoints",
                service,
                "-o",
                "jsonpath={.subsets[*].addresses[*].targetRef.name}",
            ],
        )
        .unwrap_or_default();
        let n: Vec<&str> = names.split_whitespace().collect();
        if n.len() == want && n.iter().all(|p| p.starts_with(prefix)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Service {service}'s endpoints never became {want} pods of {prefix}: {names}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct ByHand {
    total: Duration,
    build: Duration,
    push: Duration,
    apply_rollout: Duration,
    switch: Duration,
}

fn by_hand(cluster: &Cluster, dir: &Path, image: &str, round: usize) -> anyhow::Result<ByHand> {
    let t0 = Instant::now();
    let reference = format!("{image}:r{round}");
    let d = dir.to_string_lossy();
    sh("docker", &["build", "-q", "-t", &reference, &d])?;
    let build = t0.elapsed();
    let t = Instant::now();
    sh("docker", &["push", "-q", &reference])?;
    let push = t.elapsed();
    let t = Instant::now();
    // As Cairn does: the Deployment, its rollout, then the Service switched to it.
    let (deployment, service) = manifests(&reference, round);
    let file = dir.join(format!("r{round}.yaml"));
    std::fs::write(&file, deployment)?;
    kubectl(cluster, &["apply", "-f", &file.to_string_lossy()])?;
    kubectl(
        cluster,
        &[
            "rollout",
            "status",
            &format!("deployment/hand-r{round}"),
            "--timeout=120s",
        ],
    )?;
    let apply_rollout = t.elapsed();
    let svc = dir.join(format!("r{round}-svc.yaml"));
    std::fs::write(&svc, service)?;
    let applied = Instant::now();
    kubectl(cluster, &["apply", "-f", &svc.to_string_lossy()])?;
    wait_endpoints(cluster, "hand", &format!("hand-r{round}-"), 2)?;
    let switch = applied.elapsed();
    Ok(ByHand {
        total: t0.elapsed(),
        build,
        push,
        apply_rollout,
        switch,
    })
}

/// The figure Cairn's release prints: "… (0.12 s after the switch)".
fn cairn_switch(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("s after the switch)"))?;
    let start = line.rfind('(')? + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn run(a: Args) -> anyhow::Result<()> {
    sh("docker", &["info", "--format", "{{.ServerVersion}}"])
        .context("no Docker engine answers `docker info`")?;
    let bins = bin_dir(a.bin_dir.as_ref())?;
    let entrypoint = static_entrypoint(&bins, None);
    if !entrypoint.is_file() {
        bail!(
            "no static entrypoint at {}: run entrypoint/build-static.sh",
            entrypoint.display()
        );
    }
    println!("k8s-bench: the kubernetes platform on the local cluster (issue 18)");
    println!("command: {}", command_line());
    println!("{}", machine().summary());
    let tmp = temp_dir("k8sb-", None)?;
    let registry = Registry::start();
    let started = Instant::now();
    let cluster = Cluster::start();
    println!(
        "local cluster (Kubernetes 1.20.2, dockershim) ready in {:.1} s; registry 127.0.0.1:{}",
        started.elapsed().as_secs_f64(),
        registry.port
    );
    let cairn = Cairn {
        program: bins.join("cairn"),
        home: tmp.path().join("home"),
        entrypoint,
        kubeconfig: cluster.kubeconfig(),
    };
    let example = workspace_root().join("examples/kubernetes-hello");
    let app = tmp.path().join("app");
    copy_tree(&example, &app);
    let project = format!("k8sb{}", std::process::id());
    let cfg = app.join("cairn.hcl");
    let text = std::fs::read_to_string(&cfg)?.replace(
        "project = \"kubernetes-hello\"",
        &format!("project = \"{project}\""),
    );
    std::fs::write(&cfg, text)?;
    let reg = format!("registry=127.0.0.1:{}", registry.port);
    let hand_dir = tmp.path().join("hand");
    copy_tree(&example, &hand_dir);
    std::fs::copy("/bin/busybox", hand_dir.join("busybox"))?;
    let hand_image = format!("127.0.0.1:{}/{project}-hand/web", registry.port);
    // The local node, up before anything is timed.
    cairn.run(&app, &["status"]).ok();

    let mut rows = Vec::new();
    let (mut cairn_s, mut hand_s) = (Vec::new(), Vec::new());
    let (mut cairn_switch_s, mut hand_switch_s) = (Vec::new(), Vec::new());
    let mut parts: Vec<ByHand> = Vec::new();
    for round in 0..=a.rounds {
        // A new layer for both.
        for d in [&app, &hand_dir] {
            std::fs::write(d.join("www/round.txt"), format!("round {round}\n"))?;
        }
        let mut c = Duration::ZERO;
        let mut sw = None;
        let mut h = None;
        for first_cairn in [round % 2 == 0, round % 2 == 1] {
            if first_cairn {
                let t = Instant::now();
                let out = cairn.run(&app, &["up", "--var", &reg])?;
                c = t.elapsed();
                sw = cairn_switch(&out);
                if sw.is_none() {
                    bail!("`cairn up` printed no switch time:\n{out}");
                }
            } else {
                h = Some(by_hand(&cluster, &hand_dir, &hand_image, round)?);
            }
        }
        let h = h.expect("ran by hand");
        let sw = sw.unwrap_or_default();
        rows.push(vec![
            if round == 0 {
                "0 (warm-up)".to_string()
            } else {
                round.to_string()
            },
            secs(c),
            secs(h.total),
            format!("{:.2}", c.as_secs_f64() / h.total.as_secs_f64()),
            format!("{sw:.2}"),
            secs(h.switch),
        ]);
        if round > 0 {
            cairn_s.push(c.as_secs_f64());
            hand_s.push(h.total.as_secs_f64());
            cairn_switch_s.push(sw);
            hand_switch_s.push(h.switch.as_secs_f64());
            parts.push(h);
        }
        // The previous round's deployments go, untimed (the last round's stays, for the
        // rollbacks of section 2).
        if round > 0 && round < a.rounds {
            cairn.run(&app, &["destroy", &round.to_string()])?;
            kubectl(
                &cluster,
                &[
                    "delete",
                    "deployment",
                    &format!("hand-r{}", round - 1),
                    "--wait=false",
                ],
            )?;
        }
    }
    println!("\n1. `cairn up` on examples/kubernetes-hello (build + inject, push, 2-pod Deployment rolled out, Service switched) vs by hand (docker build, push, kubectl apply of the Deployment, rollout status, kubectl apply of the Service, endpoints)");
    println!(
        "{}",
        table(
            &[
                "round",
                "cairn up s",
                "by hand s",
                "ratio",
                "cairn switch s",
                "hand switch s"
            ],
            &rows
        )
    );
    let (cm, hm) = (median(&cairn_s), median(&hand_s));
    let (clo, chi) = min_max(&cairn_s);
    let (hlo, hhi) = min_max(&hand_s);
    let part = |f: &dyn Fn(&ByHand) -> Duration| {
        median(&parts.iter().map(|h| f(h).as_secs_f64()).collect::<Vec<_>>())
    };
    println!(
        "median over {} rounds: cairn up {cm:.2} s (min {clo:.2}, max {chi:.2}); by hand {hm:.2} s (min {hlo:.2}, max {hhi:.2}; build {:.2}, push {:.2}, apply + rollout {:.2})",
        a.rounds,
        part(&|h| h.build),
        part(&|h| h.push),
        part(&|h| h.apply_rollout),
    );
    println!("cairn overhead: {:.2}x the same steps by hand", cm / hm);

    // 2. Rollbacks: release the previous deployment, then the latest again.
    let latest = a.rounds + 1;
    let mut rollback = Vec::new();
    for target in [latest - 1, latest, latest - 1, latest] {
        let out = cairn.run(&app, &["release", &target.to_string()])?;
        rollback.push(cairn_switch(&out).context("`cairn release` printed no switch time")?);
    }
    println!("\n2. Release -> the Service's endpoints are the new pods");
    println!(
        "cairn up (release step): median {:.2} s over {} rounds; by hand (kubectl apply of the Service -> endpoints, polled through kubectl, ~0.1 s a poll): median {:.2} s",
        median(&cairn_switch_s),
        cairn_switch_s.len(),
        median(&hand_switch_s)
    );
    println!(
        "cairn release (rollback and forward again): median {:.2} s over {} releases",
        median(&rollback),
        rollback.len()
    );
    cairn.run(&app, &["destroy"])?;
    let _ = kubectl(
        &cluster,
        &["delete", "deployment,service", "-l", "bench=hand"],
    );
    Ok(())
}
