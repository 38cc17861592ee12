//! `docker-bench`: containers (issue 15), on the real Docker engine, side by
//! side in one run.
//!
//! 1. `cairn up` on a copy of examples/docker-hello (build with the entrypoint
//!    injected, push to Debian's docker-registry on loopback, 2 containers,
//!    health probe, release) against the same steps by hand with the docker
//!    CLI: `docker build`, `docker push`, `docker run` ×2, then wait until
//!    both containers answer `GET /` (what Cairn's probe waits for). Rounds
//!    alternate which goes first; round 0 warms the build cache and the
//!    registry for both and is not counted. Cairn's overhead is the ratio of
//!    the medians. The node (the embedded local one) is up before round 0.
//! 2. The image size the entrypoint adds: Cairn's image against the same
//!    Dockerfile built by hand.
//! 3. Container start → entrypoint registered: the engine's `StartedAt` of
//!    each container against the time stamp the engine gave the entrypoint's
//!    "connected to the cluster" line, over the containers of the rounds and
//!    of `--start-rounds` deploys of `--containers` containers each (p50/p99).
//!
//! Everything it starts is removed on exit (containers by label and name,
//! the registry, the local node). The machine is shared and noisy: read the
//! medians and the ratio, not single rounds.
//!
//!   entrypoint/build-static.sh
//!   cargo build --release -p cairn-tests -p cairn-cli -p cairn-node --bin docker-bench --bin cairn --bin cairn-node
//!   ./target/release/docker-bench [--rounds N] [--containers N] [--start-rounds N]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::procs::{bin_dir, static_entrypoint, temp_dir};
use cairn_tests::bench::report::{command_line, machine};
use cairn_tests::bench::stats::{median, min_max, percentile, table};
use cairn_tests::docker::{copy_tree, remove_containers, Registry};
use cairn_tests::{http_get, workspace_root};

const USAGE: &str = "\
usage: docker-bench [--rounds N] [--containers N] [--start-rounds N] [--bin-dir DIR]

  --rounds N        timed rounds of `cairn up` and of the same by hand (default 5),
                    after one warm-up round of each
  --containers N    containers per deploy for the start-latency figures (default 10)
  --start-rounds N  such deploys (default 3)
  --bin-dir DIR     where `cairn` and `cairn-node` are (default: next to this binary)

Needs a Docker engine, Debian's docker-registry and busybox-static, and the
static entrypoint (entrypoint/build-static.sh).";

struct Args {
    rounds: usize,
    containers: usize,
    start_rounds: usize,
    bin_dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Argv::from_env(USAGE);
    let mut out = Args {
        rounds: 5,
        containers: 10,
        start_rounds: 3,
        bin_dir: None,
    };
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--rounds" => out.rounds = a.num("--rounds")?,
            "--containers" => out.containers = a.num("--containers")?,
            "--start-rounds" => out.start_rounds = a.num("--start-rounds")?,
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
            eprintln!("docker-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docker-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cairn` with its own home, on the embedded local node.
struct Cairn {
    program: PathBuf,
    home: PathBuf,
    entrypoint: PathBuf,
}

impl Cairn {
    fn run(&self, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.program)
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("CAIRN_HOME", &self.home)
            .env("CAIRN_ENTRYPOINT_STATIC", &self.entrypoint)
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

/// `docker ARGS…`, its stdout; an error with its stderr when it fails.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes the bench's containers on drop, however it ends.
struct Sweep(Vec<String>);

/// Removes the bench's images (every tag naming one of these projects) on drop.
struct SweepImages(Vec<String>);

impl Drop for Sweep {
    fn drop(&mut self) {
        for f in &self.0 {
            remove_containers(f);
        }
    }
}

impl Drop for SweepImages {
    fn drop(&mut self) {
        let Ok(all) = docker(&["images", "--format", "{{.Repository}} {{.ID}}"]) else {
            return;
        };
        let mut mine: Vec<&str> = all
            .lines()
            .filter(|r| self.0.iter().any(|p| r.contains(&format!("/{p}/"))))
            .filter_map(|r| r.split_whitespace().nth(1))
            .collect();
        mine.sort_unstable();
        mine.dedup();
        if !mine.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(mine);
            let _ = docker(&args);
        }
    }
}

/// One timed run of the steps by hand, with its parts.
struct ByHand {
    total: Duration,
    build: Duration,
    push: Duration,
    run: Duration,
    ready: Duration,
}

fn by_hand(dir: &Path, image: &str, round: usize, prefix: &str) -> anyhow::Result<ByHand> {
    let t0 = Instant::now();
    let _ = std::fs::remove_file(dir.join("busybox"));
    std::fs::copy("/bin/busybox", dir.join("busybox")).context("copying /bin/busybox")?;
    let reference = format!("{image}:r{round}");
    let d = dir.to_string_lossy();
    docker(&["build", "-q", "-t", &reference, &d])?;
    let build = t0.elapsed();
    let t = Instant::now();
    docker(&["push", "-q", &reference])?;
    let push = t.elapsed();
    let t = Instant::now();
    let mut ips = Vec::new();
    for i in 0..2 {
        let name = format!("{prefix}-r{round}-{i}");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("{prefix}=1"),
            "-e",
            "PORT=3000",
            "-e",
            "GREETING=Hello by hand",
            &reference,
        ])?;
        ips.push(docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &name,
        ])?);
    }
    let run = t.elapsed();
    let t = Instant::now();
    for ip in &ips {
        let url = format!("http://{ip}:3000/");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_get(&url).is_ok_and(|r| r.status == 200) {
            if Instant::now() > deadline {
                bail!("{url} never answered");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let ready = t.elapsed();
    Ok(ByHand {
        total: t0.elapsed(),
        build,
        push,
        run,
        ready,
    })
}

/// Nanoseconds since the epoch of an RFC 3339 time in UTC as Docker writes
/// it (`2026-12-06T08:10:11.123456789Z`).
fn rfc3339_ns(s: &str) -> Option<i128> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: i64 = frac.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as i128 * 1_000_000_000 + nanos as i128)
}

/// Container start → "connected to the cluster", in ms, for every container
/// of `project` (running or not).
fn start_to_registered(project: &str) -> anyhow::Result<Vec<f64>> {
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=dev.cairn.project={project}"),
    ])?;
    let mut out = Vec::new();
    for id in ids.lines().filter(|l| !l.is_empty()) {
        let started = docker(&["inspect", "--format", "{{.State.StartedAt}}", id])?;
        let logs = Command::new("docker")
            .args(["logs", "-t", id])
            .output()
            .context("docker logs")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
        let connected = text
            .lines()
            .find(|l| l.contains("cairn-entrypoint: connected to the cluster"))
            .and_then(|l| l.split_whitespace().next());
        if let (Some(a), Some(b)) = (rfc3339_ns(&started), connected.and_then(rfc3339_ns)) {
            out.push((b - a) as f64 / 1e6);
        }
    }
    Ok(out)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn run(a: Args) -> anyhow::Result<()> {
    docker(&["info", "--format", "{{.ServerVersion}}"])
        .context("no Docker engine answers `docker info`")?;
    let bins = bin_dir(a.bin_dir.as_ref())?;
    let entrypoint = static_entrypoint(&bins, None);
    if !entrypoint.is_file() {
        bail!(
            "no static entrypoint at {}: run entrypoint/build-static.sh",
            entrypoint.display()
        );
    }
    let engine = docker(&["version", "--format", "{{.Server.Version}}"])?;
    println!("docker-bench: containers on the real engine (issue 15)");
    println!("command: {}", command_line());
    println!("{}", machine().summary());
    println!(
        "docker engine {engine}; static entrypoint {}",
        entrypoint.display()
    );

    let tmp = temp_dir("dkb-", None)?;
    let registry = Registry::start();
    let tag = std::process::id();
    let project = format!("dkb{tag}");
    let hand = format!("dkbhand{tag}");
    let many = format!("dkbmany{tag}");
    let _images = SweepImages(vec![project.clone(), hand.clone(), many.clone()]);
    let _sweep = Sweep(vec![
        format!("label=dev.cairn.project={project}"),
        format!("label=dev.cairn.project={many}"),
        format!("label={hand}=1"),
    ]);
    let cairn = Cairn {
        program: bins.join("cairn"),
        home: tmp.path().join("home"),
        entrypoint: entrypoint.clone(),
    };

    // The app, twice: Cairn's copy and the by-hand copy of the same files.
    let example = workspace_root().join("examples/docker-hello");
    let app = tmp.path().join("app");
    copy_tree(&example, &app);
    let cfg = app.join("cairn.hcl");
    let image = format!("127.0.0.1:{}/{project}/web", registry.port);
    let text = std::fs::read_to_string(&cfg)?
        .replace(
            "project = \"docker-hello\"",
            &format!("project = \"{project}\""),
        )
        .replace(
            "    use \"docker\" {}\n",
            &format!(
                "    use \"docker\" {{}}\n\n    registry {{\n      use \"docker\" {{\n        image = \"{image}\"\n        tag   = \"latest\"\n      }}\n    }}\n"
            ),
        );
    std::fs::write(&cfg, text)?;
    let hand_dir = tmp.path().join("hand");
    copy_tree(&example, &hand_dir);
    let hand_image = format!("127.0.0.1:{}/{hand}/web", registry.port);

    // The local node, up before anything is timed.
    cairn.run(&app, &["status"]).ok();

    // 1. Rounds, alternating who goes first; round 0 warms up.
    let mut rows = Vec::new();
    let (mut cairn_s, mut hand_s) = (Vec::new(), Vec::new());
    let mut hand_parts: Vec<ByHand> = Vec::new();
    for round in 0..=a.rounds {
        let mut c = Duration::ZERO;
        let mut h = None;
        for first_cairn in [round % 2 == 0, round % 2 == 1] {
            if first_cairn {
                let t = Instant::now();
                let out = cairn.run(&app, &["up"])?;
                c = t.elapsed();
                if !out.contains("Release URL") {
                    bail!("`cairn up` printed no Release URL:\n{out}");
                }
            } else {
                h = Some(by_hand(&hand_dir, &hand_image, round, &hand)?);
            }
        }
        let h = h.expect("ran by hand");
        // The containers of this round count for section 3, then go.
        if round == 0 {
            rows.push(vec![
                "0 (warm-up)".into(),
                secs(c),
                secs(h.total),
                format!("{:.2}", c.as_secs_f64() / h.total.as_secs_f64()),
            ]);
        } else {
            rows.push(vec![
                round.to_string(),
                secs(c),
                secs(h.total),
                format!("{:.2}", c.as_secs_f64() / h.total.as_secs_f64()),
            ]);
            cairn_s.push(c.as_secs_f64());
            hand_s.push(h.total.as_secs_f64());
            hand_parts.push(h);
        }
        remove_containers(&format!("label={hand}=1"));
    }
    let mut starts = start_to_registered(&project)?;
    cairn.run(&app, &["destroy"])?;
    println!("\n1. `cairn up` on examples/docker-hello (build + inject, push, 2 containers, probe, release) vs by hand (docker build, push, run x2, wait for GET /)");
    println!(
        "{}",
        table(&["round", "cairn up s", "by hand s", "ratio"], &rows)
    );
    let (cm, hm) = (median(&cairn_s), median(&hand_s));
    let (clo, chi) = min_max(&cairn_s);
    let (hlo, hhi) = min_max(&hand_s);
    let part = |f: &dyn Fn(&ByHand) -> Duration| {
        median(
            &hand_parts
                .iter()
                .map(|h| f(h).as_secs_f64())
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "median over {} rounds: cairn up {cm:.2} s (min {clo:.2}, max {chi:.2}); by hand {hm:.2} s (min {hlo:.2}, max {hhi:.2}; build {:.2}, push {:.2}, run x2 {:.2}, ready {:.2})",
        a.rounds,
        part(&|h| h.build),
        part(&|h| h.push),
        part(&|h| h.run),
        part(&|h| h.ready)
    );
    println!(
        "cairn overhead: {:.2}x the docker CLI by hand (aim <= 1.1x)",
        cm / hm
    );

    // 2. Size the entrypoint adds.
    let size = |r: &str| -> anyhow::Result<u64> {
        docker(&["image", "inspect", "--format", "{{.Size}}", r])?
            .parse::<u64>()
            .with_context(|| format!("size of {r}"))
    };
    let cairn_ref = format!("cairn.local/{project}/web:v1");
    let hand_ref = format!("{hand_image}:r1");
    let (cs, hs) = (size(&cairn_ref)?, size(&hand_ref)?);
    let bin = std::fs::metadata(&entrypoint)?.len();
    println!("\n2. Image size");
    println!(
        "{}",
        table(
            &["image", "bytes"],
            &[
                vec![format!("{hand_ref} (by hand)"), hs.to_string()],
                vec![format!("{cairn_ref} (entrypoint injected)"), cs.to_string()],
                vec![
                    "added by the entrypoint".into(),
                    (cs as i64 - hs as i64).to_string()
                ],
                vec!["static cairn-entrypoint binary".into(), bin.to_string()],
            ]
        )
    );

    // 3. Start → registered, over more containers.
    let many_dir = tmp.path().join("many");
    copy_tree(&example, &many_dir);
    let mcfg = many_dir.join("cairn.hcl");
    let text = std::fs::read_to_string(&mcfg)?
        .replace(
            "project = \"docker-hello\"",
            &format!("project = \"{many}\""),
        )
        .replace(
            "count        = 2",
            &format!("count        = {}", a.containers),
        )
        // App names are unique in a cluster.
        .replace("app \"web\"", "app \"many\"");
    std::fs::write(&mcfg, text)?;
    for _ in 0..a.start_rounds {
        cairn.run(&many_dir, &["up"])?;
    }
    starts.extend(start_to_registered(&many)?);
    cairn.run(&many_dir, &["destroy"])?;
    if starts.is_empty() {
        bail!("no container logged its entrypoint connecting");
    }
    let mut us: Vec<u64> = starts.iter().map(|ms| (ms * 1000.0) as u64).collect();
    us.sort_unstable();
    let p = |q: f64| percentile(&us, q) as f64 / 1000.0;
    println!(
        "\n3. Container start -> entrypoint connected to the cluster ({} containers: 2 per round above, {} x {} more)",
        us.len(),
        a.start_rounds,
        a.containers
    );
    println!(
        "{}",
        table(
            &["p50 ms", "p99 ms", "min ms", "max ms"],
            &[vec![
                format!("{:.1}", p(50.0)),
                format!("{:.1}", p(99.0)),
                format!("{:.1}", us[0] as f64 / 1000.0),
                format!("{:.1}", us[us.len() - 1] as f64 / 1000.0),
            ]]
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ns;

    #[test]
    fn docker_times() {
        let a = rfc3339_ns("2026-12-06T08:10:11.5Z").expect("parses");
        let b = rfc3339_ns("2026-12-06T08:10:12.000000001Z").expect("parses");
        assert_eq!(b - a, 500_000_001);
        assert_eq!(rfc3339_ns("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            rfc3339_ns("2000-03-01T00:00:00Z"),
            Some(951_868_800 * 1_000_000_000)
        );
        assert_eq!(rfc3339_ns("yesterday"), None);
    }
}
