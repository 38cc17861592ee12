//! The URL service against real processes: nodes, the CLI, and an app
//! (tests/src/webapp.py) deployed by `cairn up` on the process platform,
//! reached through each node's ingress and the tunnels on its instances'
//! entrypoint connections.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_tests::{assert_eventually, resolve_http_host, webapp, Cli, NodeProc, TestCluster};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The ingress address of a URL (`http://web.localhost:PORT/` → 127.0.0.1:PORT)
/// and its host part (`web.localhost:PORT`).
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let host = rest.split('/').next().expect("host").to_string();
    (resolve_http_host(&host).expect("resolves"), host)
}

/// One request on a new connection: (status, body).
async fn request(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An HTTP/1.1 client connection to `addr` (its connection task spawned).
async fn http1_client<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

fn get(url: &str, path: &str) -> (StatusCode, String) {
    let (addr, host) = split_url(url);
    runtime()
        .block_on(request(addr, &host, "GET", path, Bytes::new()))
        .unwrap_or_else(|e| panic!("GET {url}{path}: {e}"))
}

/// Requests on keep-alive connections (reconnecting after any error), from
/// `workers` tasks, until `stop`: counts answers by body and failures.
#[derive(Default)]
struct Load {
    /// Answers by (the epoch when the request was sent, body).
    answers: Mutex<BTreeMap<(u64, String), u64>>,
    failures: Mutex<Vec<String>>,
    total: AtomicU64,
    /// Moved on by the test after a change (a release): answers to requests sent since
    /// count for the new epoch, whatever was in flight before.
    epoch: AtomicU64,
}

impl Load {
    /// Every answer so far, by body.
    fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((_, body), n) in self.answers.lock().expect("lock").iter() {
            *out.entry(body.clone()).or_default() += n;
        }
        out
    }

    /// The answers to requests sent in `epoch`, by body.
    fn sent_in(&self, epoch: u64) -> BTreeMap<String, u64> {
        self.answers
            .lock()
            .expect("lock")
            .iter()
            .filter(|((e, _), _)| *e == epoch)
            .map(|((_, body), n)| (body.clone(), *n))
            .collect()
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("lock").clone()
    }
}

async fn hammer(
    addr: SocketAddr,
    host: String,
    stop: Arc<AtomicBool>,
    load: Arc<Load>,
    fresh: bool,
) {
    while !stop.load(Ordering::Relaxed) {
        let tcp = match TcpStream::connect(addr).await {
            Ok(t) => t,
            Err(e) => {
                load.failures
                    .lock()
                    .expect("lock")
                    .push(format!("connect: {e}"));
                continue;
            }
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            load.failures.lock().expect("lock").push("handshake".into());
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            let epoch = load.epoch.load(Ordering::SeqCst);
            let req = Request::builder()
                .uri("/")
                .header("host", &host)
                .body(Full::new(Bytes::new()))
                .expect("request");
            let outcome = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.into_body().collect().await {
                        Ok(b) if status == StatusCode::OK => {
                            Ok(String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                        }
                        Ok(b) => Err(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&b.to_bytes())
                        )),
                        Err(e) => Err(format!("body: {e}")),
                    }
                }
                Err(e) => Err(format!("send: {e}")),
            };
            load.total.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(body) => {
                    *load
                        .answers
                        .lock()
                        .expect("lock")
                        .entry((epoch, body))
                        .or_default() += 1;
                }
                Err(e) => {
                    load.failures.lock().expect("lock").push(e);
                    break;
                }
            }
            if fresh {
                break;
            }
        }
    }
}

/// How many answers named deployment `v` (any instance) in `counts`.
fn of_deployment(counts: &BTreeMap<String, u64>, v: u64) -> u64 {
    counts
        .iter()
        .filter(|(body, _)| body.ends_with(&format!(" v{v}")))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn up_prints_urls_that_answer_and_instances_share_the_load() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(2);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let deployment = up.field("Deployment URL").expect("Deployment URL");
    assert_eq!(release, node.url("web.localhost"), "{up}");
    assert_eq!(deployment, node.url("web--v1.localhost"), "{up}");

    // Both answer; curl (which takes *.localhost as loopback) too.
    assert_eventually!(get(&release, "/").0 == StatusCode::OK, WITHIN);
    let (status, body) = get(&deployment, "/");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.ends_with(" v1\n"), "{body}");
    let curl = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", &release])
        .output()
        .expect("curl");
    assert!(
        String::from_utf8_lossy(&curl.stdout).starts_with("instance "),
        "{curl:?}"
    );

    // Two instances share the load.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        *seen.entry(get(&release, "/").1).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both instances answer: {seen:?}");
    assert!(seen.values().all(|n| *n >= 10), "{seen:?}");

    // Tunnels are kept and reused: one request at a time, each instance
    // sees one connection.
    let conns: BTreeSet<String> = (0..20).map(|_| get(&release, "/conn").1).collect();
    assert_eq!(
        conns.len(),
        2,
        "one kept connection per instance: {conns:?}"
    );

    // What the app sees of the request.
    let (_, headers) = get(&release, "/headers");
    let h: serde_json::Value = serde_json::from_str(&headers).expect("JSON");
    let (_, host) = split_url(&release);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], host.as_str(), "{h}");
    assert_eq!(h["host"], host.as_str(), "{h}");

    // HTTP/2 from the client (prior knowledge, plain text).
    let h2 = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            &release,
        ])
        .output()
        .expect("curl --http2-prior-knowledge");
    let out = String::from_utf8_lossy(&h2.stdout);
    assert!(
        out.starts_with("instance ") && out.ends_with("\n2"),
        "{out:?}"
    );

    // Unknown names: a readable 404.
    let port = node
        .url("x")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let (status, page) = get(&format!("http://nope.localhost:{port}/"), "/");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        page.contains("nope.localhost") && page.contains("no app named"),
        "{page}"
    );
    let (status, page) = get(&format!("http://web--v9.localhost:{port}/"), "/");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("has no deployment v9"), "{page}");

    // A custom hostname: registered, listed, served, deleted.
    cli.run_in(app.path(), &["hostname", "register", "shop.example.test"])
        .ok();
    let listed = cli.run(&["hostname", "list", "--json"]).ok().json();
    assert_eq!(listed[0]["hostname"], "shop.example.test", "{listed}");
    assert_eq!(listed[0]["app"], "web");
    let shop = format!("http://shop.example.test:{port}/");
    let (addr, _) = split_url(&release);
    let rt = runtime();
    let (status, body) = rt
        .block_on(request(addr, "shop.example.test", "GET", "/", Bytes::new()))
        .expect("GET shop");
    assert_eq!(status, StatusCode::OK, "{shop}: {body}");
    let err = cli
        .run_in(app.path(), &["hostname", "register", "Bad_Name"])
        .fails();
    assert!(err.stderr.contains("not a valid host name"), "{err}");
    cli.run(&["hostname", "delete", "shop.example.test"]).ok();
    let (status, _) = rt
        .block_on(request(addr, "shop.example.test", "GET", "/", Bytes::new()))
        .expect("GET shop");
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A minimal websocket client: handshake, then masked frames.
async fn websocket_echo(addr: SocketAddr, host: &str, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("101 head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mut back = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let mask = [1u8, 2, 3, (i % 250) as u8];
        let mut frame = vec![0x82u8];
        match m.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(m.iter().enumerate().map(|(j, b)| b ^ mask[j % 4]));
        s.write_all(&frame).await.expect("send frame");
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.expect("frame head");
        let n = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.expect("len");
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.expect("len");
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut data = vec![0u8; n];
        s.read_exact(&mut data).await.expect("frame data");
        back.push(data);
    }
    back
}

#[test]
fn websockets_large_uploads_and_streamed_responses_pass_through() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(get(&release, "/").0 == StatusCode::OK, WITHIN);
    let (addr, host) = split_url(&release);
    let rt = runtime();

    // Websocket echo, small and large messages.
    let messages = vec![b"hello".to_vec(), vec![7u8; 300], vec![42u8; 200_000]];
    let back = rt.block_on(websocket_echo(addr, &host, &messages));
    assert_eq!(back, messages);

    // A 100 MB upload, streamed from a generator (never all in memory).
    const MB: usize = 1 << 20;
    const TOTAL: usize = 100 * MB;
    let mut expected = Sha256::new();
    for i in 0..100u8 {
        expected.update(vec![i; MB]);
    }
    let expected = hex::encode(expected.finalize());
    let answer = rt.block_on(async {
        let mut sender = http1_client(addr).await;
        let chunks = futures::stream::iter(
            (0..100u8).map(|i| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![i; MB])))),
        );
        let req = Request::post("/upload")
            .header("host", &host)
            .header("content-length", TOTAL.to_string())
            .body(StreamBody::new(chunks))
            .expect("request");
        let resp = sender.send_request(req).await.expect("upload");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("answer").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    });
    assert_eq!(answer.trim(), format!("{TOTAL} {expected}"));

    // A streamed response arrives as it is written: the first chunk long
    // before the last.
    let (first, last, text) = rt.block_on(async {
        let mut sender = http1_client(addr).await;
        let req = Request::get("/stream?n=10&ms=200")
            .header("host", &host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let t0 = Instant::now();
        let resp = sender.send_request(req).await.expect("stream");
        let mut body = resp.into_body();
        let mut first = None;
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                first.get_or_insert(t0.elapsed());
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        (first.expect("data"), t0.elapsed(), text)
    });
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(
        last - first > Duration::from_millis(1200),
        "first chunk after {first:?}, the end after {last:?}: streamed, not buffered"
    );

    // Every way a response can end, one after another on one client
    // connection: HEAD (a length but no body), 204, a body delimited by the
    // app closing (that tunnel is not reused), then a plain GET; and a
    // chunked upload (no length).
    let answers = rt.block_on(async {
        let mut sender = http1_client(addr).await;
        let mut answers = Vec::new();
        for (method, path) in [
            ("HEAD", "/"),
            ("GET", "/empty"),
            ("GET", "/close"),
            ("GET", "/"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", &host)
                .body(
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .expect("request");
            sender.ready().await.expect(path);
            let resp = sender.send_request(req).await.expect(path);
            let status = resp.status();
            let length = resp.headers().get("content-length").cloned();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            answers.push((status, length, String::from_utf8_lossy(&body).into_owned()));
        }
        let chunks = futures::stream::iter(
            (0..3u8).map(|i| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![i; 1000])))),
        );
        let req = Request::post("/upload")
            .header("host", &host)
            .body(StreamBody::new(chunks).boxed())
            .expect("request");
        sender.ready().await.expect("ready for the upload");
        let resp = sender.send_request(req).await.expect("chunked upload");
        let body = resp.into_body().collect().await.expect("answer").to_bytes();
        answers.push((
            StatusCode::OK,
            None,
            String::from_utf8_lossy(&body).into_owned(),
        ));
        answers
    });
    let (status, length, body) = &answers[0];
    assert_eq!(*status, StatusCode::OK, "HEAD");
    assert!(
        length.is_some() && body.is_empty(),
        "HEAD: {length:?} {body:?}"
    );
    assert_eq!(answers[1].0, StatusCode::NO_CONTENT);
    assert_eq!(answers[1].2, "");
    assert_eq!(
        (answers[2].0, answers[2].2.as_str()),
        (StatusCode::OK, "closing\n")
    );
    assert!(answers[3].2.starts_with("instance 0 "), "{:?}", answers[3]);
    let mut sum = Sha256::new();
    for i in 0..3u8 {
        sum.update(vec![i; 1000]);
    }
    assert_eq!(
        answers[4].2.trim(),
        format!("3000 {}", hex::encode(sum.finalize()))
    );
}

#[test]
fn release_switches_and_canaries_under_load_fail_no_request() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(2);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    cli.run_in(app.path(), &["deploy"]).ok();
    assert_eventually!(get(&release, "/").0 == StatusCode::OK, WITHIN);
    assert_eventually!(
        get(&node.url("web--v2.localhost"), "/").0 == StatusCode::OK,
        WITHIN
    );
    let (addr, host) = split_url(&release);

    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    for i in 0..6 {
        // Half keep-alive connections, half a new connection per request.
        rt.spawn(hammer(
            addr,
            host.clone(),
            stop.clone(),
            load.clone(),
            i % 2 == 0,
        ));
    }
    let wait_for = |n: u64| {
        let start = load.total.load(Ordering::Relaxed);
        assert_eventually!(load.total.load(Ordering::Relaxed) >= start + n, WITHIN);
    };
    // The answers to the next `n` requests sent after the route changed (a
    // request in flight then may still be answered by the old route).
    let window = |n: u64| {
        let epoch = load.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eventually!(load.sent_in(epoch).values().sum::<u64>() >= n, WITHIN);
        load.sent_in(epoch)
    };
    wait_for(100);
    let before = load.snapshot();
    assert!(
        of_deployment(&before, 1) > 0 && of_deployment(&before, 2) == 0,
        "{before:?}"
    );

    // `cairn release SEQ`, then only SEQ answers (not OTHER).
    let release_only = |seq: u64, other: u64, what: &str| {
        cli.run_in(app.path(), &["release", &seq.to_string()]).ok();
        let d = window(200);
        assert!(
            of_deployment(&d, seq) > 0 && of_deployment(&d, other) == 0,
            "{what}: {d:?}"
        );
    };
    // Full release of v2, then a rollback to v1: every request answered.
    release_only(2, 1, "after release 2");
    release_only(1, 2, "after rollback");

    // A canary: v2 at 30 %, v1 the rest.
    let out = cli
        .run_in(app.path(), &["release", "2", "--weight", "30"])
        .ok();
    let d = window(1000);
    let (one, two) = (of_deployment(&d, 1), of_deployment(&d, 2));
    let share = two as f64 / (one + two) as f64;
    assert!(
        (0.2..0.4).contains(&share),
        "canary share {share:.2} ({d:?}); {out}"
    );
    // A full release moves the rest.
    release_only(2, 1, "after full release");

    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let failures = load.failures();
    let total = load.total.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 1500, "{total}");

    // --weight refuses --prune (it would destroy what still takes traffic).
    let err = cli
        .run_in(app.path(), &["release", "1", "--weight", "10", "--prune"])
        .fails();
    assert!(err.stderr.contains("--prune"), "{err}");
}

#[test]
fn an_app_that_does_not_answer_gets_a_readable_502() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = cairn_tests::write_app(
        r#"project = "shop"
app "quiet" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["sleep", "600"]
      wait_for_port = false
    }
  }
  release {
    use "process" {}
  }
}
"#,
        &[],
    );
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let (status, page) = get(&release, "/");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{page}");
    assert!(page.contains("quiet.localhost"), "{page}");
    assert!(page.contains("cannot connect to the app on port"), "{page}");
}

#[test]
fn the_entrypoints_node_dies_and_the_url_works_again() {
    let mut cluster = TestCluster::start(3);
    let app = webapp(1);
    let up = cluster.admin.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(get(&release, "/").0 == StatusCode::OK, WITHIN);
    // Where the instance's entrypoint is connected.
    let node_of = |cli: &Cli| -> Option<String> {
        let out = cli.run(&["instance", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|i| i["state"] == "connected")
            .and_then(|i| i["node"].as_str().map(String::from))
    };
    let node = node_of(&cluster.admin).expect("a connected instance");
    let at = cluster.index_of(&node).expect("one of ours");
    // Every node's ingress serves it (the others through the peer mesh).
    for (i, n) in cluster.nodes.iter().enumerate() {
        let (status, body) = get(&n.url("web.localhost"), "/");
        assert_eq!(status, StatusCode::OK, "node {i}: {body}");
    }
    cluster.nodes[at].kill9();
    let survivor = cluster.cli_on((at + 1) % 3);
    assert_eventually!(
        node_of(&survivor).is_some_and(|n| n != node),
        Duration::from_secs(60),
        "the entrypoint moves"
    );
    for i in (0..3).filter(|i| *i != at) {
        let url = cluster.nodes[i].url("web.localhost");
        assert_eventually!(
            get(&url, "/").0 == StatusCode::OK,
            WITHIN,
            "node {i} serves the URL again"
        );
    }
}

#[test]
fn the_ingress_serves_tls_with_a_self_signed_certificate_and_http2() {
    let node = NodeProc::builder().arg("--ingress-tls-self-signed").spawn();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert!(release.starts_with("https://web.localhost:"), "{up}");
    let cert = node.data_dir().join("ingress-ca.pem");
    assert!(cert.exists(), "the certificate is written for clients");
    let curl = |extra: &[&str]| {
        let mut args = vec!["-s", "--max-time", "10", "-w", "\n%{http_version}"];
        args.extend_from_slice(extra);
        args.push(&release);
        let out = std::process::Command::new("curl")
            .args(&args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cert_arg = cert.to_string_lossy().to_string();
    assert_eventually!(
        curl(&["--cacert", &cert_arg]).starts_with("instance 0 v1"),
        WITHIN,
        "{}",
        curl(&["--cacert", &cert_arg])
    );
    // HTTP/2 by ALPN, and HTTP/1.1 when asked.
    assert!(curl(&["--cacert", &cert_arg]).ends_with("\n2"));
    assert!(curl(&["--cacert", &cert_arg, "--http1.1"]).ends_with("\n1.1"));
    // Without trusting the certificate, curl refuses it.
    assert!(!curl(&[]).starts_with("instance"));

    // After a restart the same CA file is still the one to trust.
    let before = std::fs::read_to_string(&cert).expect("CA");
    let mut node = node;
    node.restart_same_addr();
    assert_eq!(std::fs::read_to_string(&cert).expect("CA"), before);
    let url = node.url("web.localhost").replace("http://", "https://");
    let again = || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert", &cert_arg, &url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eventually!(again().starts_with("instance 0 v1"), WITHIN, "{}", again());
}

#[test]
fn an_instance_that_goes_away_leaves_the_rotation_without_failing_the_others() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(2);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let connected = || -> Vec<u64> {
        let v = cli.run(&["instance", "list", "--json"]).ok().json();
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] == "connected")
            .filter_map(|i| i["pid"].as_u64())
            .collect()
    };
    assert_eventually!(connected().len() == 2, WITHIN);
    let (addr, host) = split_url(&release);
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    const WORKERS: usize = 4;
    for _ in 0..WORKERS {
        rt.spawn(hammer(
            addr,
            host.clone(),
            stop.clone(),
            load.clone(),
            false,
        ));
    }
    let wait_for = |n: u64| {
        let start = load.total.load(Ordering::Relaxed);
        assert_eventually!(load.total.load(Ordering::Relaxed) >= start + n, WITHIN);
    };
    wait_for(200);
    assert!(load.failures().is_empty(), "{:?}", load.failures());

    // One instance's entrypoint (and with it its app) is killed outright.
    let victim = connected()[0];
    cairn_tests::signal(victim as u32, "KILL");
    // The node notices (the connection times out); the requests the victim
    // was serving (one per worker at most) fail, none of the others.
    assert_eventually!(!connected().contains(&victim), WITHIN);
    wait_for(300);
    let failed = load.failures();
    assert!(
        failed.len() <= WORKERS,
        "{} failed: {failed:?}",
        failed.len()
    );
    wait_for(300);
    assert_eq!(
        load.failures(),
        failed,
        "no failure once it left the rotation"
    );
    stop.store(true, Ordering::Relaxed);
}

/// Issue 17: a node stopped gracefully (SIGTERM) lets the ingress's requests in flight
/// finish: a response streamed over two seconds arrives whole although the stop began
/// after its first chunk.
#[test]
fn a_stopping_node_lets_requests_in_flight_finish() {
    let mut node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eventually!(get(&release, "/").0 == StatusCode::OK, WITHIN);
    let url = format!("{release}stream?n=10&ms=200");
    let slow = std::thread::spawn(move || cairn_tests::http_get(&url));
    std::thread::sleep(Duration::from_millis(500));
    let stopping = std::time::Instant::now();
    node.stop();
    let r = slow
        .join()
        .expect("the request thread")
        .expect("the response");
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("chunk 0") && r.body.contains("chunk 9"),
        "the streamed response was cut: {:?}",
        r.body
    );
    assert!(
        stopping.elapsed() >= Duration::from_millis(800),
        "the stop did not wait for the request: {:?}",
        stopping.elapsed()
    );
}
