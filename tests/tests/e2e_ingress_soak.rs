//! The ingress under a resource-exhaustion attack (issue 13, item 4), on
//! loopback and bounded: 25,000 connections that never send a byte (two
//! `conn-flood` processes, since each process may hold only so many
//! descriptors) and a client that trickles a request header, against a node
//! whose ingress holds at most 10,000 connections (its default). Meanwhile a
//! normal client sends a request on a new connection every 20 ms. Before
//! the fix, ~20,000 idle connections took the node to its descriptor limit:
//! every app stopped answering and the accept loop spun at 108 % CPU.
//!
//! Checked: every request of the normal client is answered (its latencies
//! are printed, p50, p99 and max, beside the same client's before the
//! attack); the slow-header connection is closed by the header timeout
//! (15 s) or to make room; every flood connection the node accepted is
//! closed (made room for, or timed out) and it never holds more than its
//! limit; once the attack stops the node's CPU falls back to idle.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::{assert_eventually, bins, resolve_http_host, webapp, Cli, NodeProc};

const FLOOD: u64 = 12_500;
const FLOODS: usize = 2;

/// A `conn-flood` process and the last counts it printed.
struct Flood {
    child: Child,
    opened: Arc<Mutex<Option<u64>>>,
    closed: Arc<Mutex<u64>>,
}

impl Flood {
    fn start(addr: SocketAddr, n: u64) -> Flood {
        let mut child = Command::new(&bins().conn_flood)
            .arg(addr.to_string())
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn conn-flood");
        let out = child.stdout.take().expect("stdout");
        let opened = Arc::new(Mutex::new(None));
        let closed = Arc::new(Mutex::new(0));
        let (o, c) = (opened.clone(), closed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("opened ") {
                    *o.lock().expect("lock") = n.parse().ok();
                } else if let Some(n) = line.strip_prefix("closed ") {
                    *c.lock().expect("lock") = n.parse().unwrap_or(0);
                }
            }
        });
        Flood {
            child,
            opened,
            closed,
        }
    }

    fn opened(&self) -> Option<u64> {
        *self.opened.lock().expect("lock")
    }

    fn closed(&self) -> u64 {
        *self.closed.lock().expect("lock")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `GET /` on a new connection: the time to the whole answer.
fn get(addr: SocketAddr, host: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {:?}", text.lines().next()));
    }
    Ok(started.elapsed())
}

/// The node's CPU time (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which is in parentheses): 14 and 15 are
    // utime and stime, i.e. the 12th and 13th after the ')'.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// How many descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Established TCP connections whose local port is `port` (the node's side
/// of its ingress connections, including those waiting to be accepted).
fn server_connections(port: u16) -> usize {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
        })
        .count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn the_ingress_holds_up_against_idle_and_slow_header_floods() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let host = release
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr = resolve_http_host(&host).expect("ingress address");
    assert_eventually!(get(addr, &host).is_ok(), Duration::from_secs(30));

    // The same client before the attack, for comparison.
    let mut calm: Vec<Duration> = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            get(addr, &host).expect("a request before the attack")
        })
        .collect();
    calm.sort();

    // The normal client: a request on a new connection every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (stop, host) = (stop.clone(), host.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get(addr, &host) {
                    Ok(d) => lat.push(d),
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (lat, failures)
        })
    };

    // The slow-header client: one byte a second, never the end of the head.
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if s.write_all(b"a").is_err() || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            // A closed connection shows on the read side first.
            s.set_nonblocking(true).expect("nonblocking");
            let mut b = [0u8; 512];
            let closed =
                matches!(s.read(&mut b), Ok(0)) || matches!(s.read(&mut b), Ok(n) if n > 0);
            s.set_nonblocking(false).expect("blocking");
            if closed {
                break;
            }
        }
        started.elapsed()
    });

    // The flood.
    let baseline_fds = open_fds(node.pid());
    let attack_started = Instant::now();
    let floods: Vec<Flood> = (0..FLOODS).map(|_| Flood::start(addr, FLOOD)).collect();
    let mut most_held_opening = 0;
    assert_eventually!(
        {
            most_held_opening = most_held_opening.max(open_fds(node.pid()));
            std::thread::sleep(Duration::from_millis(100));
            floods.iter().all(|f| f.opened().is_some())
        },
        Duration::from_secs(120)
    );
    let opened: u64 = floods.iter().map(|f| f.opened().unwrap_or(0)).sum();
    let connect_time = attack_started.elapsed();
    // Every flood connection the node accepted gets closed: room made for
    // newer ones, or the header timeout (15 s) without a request. (Some
    // never reach it: when the listen backlog overflows, the kernel drops
    // the handshake's last ACK and the silent client never learns.)
    let mut most_held = 0;
    assert_eventually!(
        {
            let held = server_connections(addr.port());
            most_held = most_held.max(open_fds(node.pid()));
            std::thread::sleep(Duration::from_millis(250));
            held <= 3
        },
        Duration::from_secs(60)
    );
    let all_closed = attack_started.elapsed();
    let closed_seen: u64 = floods.iter().map(Flood::closed).sum();
    let slow_closed_after = slow.join().expect("slow client");
    drop(floods);
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failures) = normal.join().expect("normal client");

    // The node's CPU falls back to idle once the attack is over.
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(node.pid());
    std::thread::sleep(Duration::from_secs(3));
    let idle_cpu = (cpu_ticks(node.pid()) - before) as f64 / 3.0; // ticks per second = percent

    lat.sort();
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        *lat.last().expect("some requests"),
    );
    let most_held = most_held.max(most_held_opening);
    eprintln!(
        "ingress soak: {opened} flood connections opened in {connect_time:?} (the node had at most {most_held} descriptors open, {baseline_fds} before, \
         and closed {closed_seen} that their client saw), none left after {all_closed:?}; \
         slow-header connection closed after {slow_closed_after:?}; normal client: {} requests, {} failed, \
         p50 {p50:?} p99 {p99:?} max {max:?} (before the attack: p50 {:?} p99 {:?}); node CPU after the attack {idle_cpu:.1} %",
        lat.len() + failures.len(),
        failures.len(),
        percentile(&calm, 0.5),
        percentile(&calm, 0.99),
    );
    assert!(
        opened >= FLOOD * FLOODS as u64 * 9 / 10,
        "only {opened} connections opened"
    );
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    assert!(lat.len() > 100, "only {} requests", lat.len());
    // At the header timeout (15 s, seen within the client's 1 s steps), or
    // earlier when the node made room at its limit (it is idle: no request).
    assert!(
        slow_closed_after <= Duration::from_secs(17),
        "the slow-header connection was closed after {slow_closed_after:?}"
    );
    assert!(idle_cpu < 10.0, "the node still uses {idle_cpu:.1} % CPU");
    // At most its connection limit, plus its own descriptors (the reserve
    // the limit leaves them is 1,024); what waits in the listen backlog is
    // the kernel's, not the node's.
    assert!(
        most_held <= 10_000 + 1_024,
        "the node had {most_held} descriptors open"
    );
    // Still serving after it all.
    assert!(get(addr, &host).is_ok());
}
