//! The web UI (issue 17), driven in real headless Chromium through chromedriver (Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them): a wrong token is refused, a
//! user signs in, opens the app, sees the deployment the CLI just made with its output,
//! watches a new log line arrive live, rolls back and sets a canary weight, and the CLI then
//! sees both. Set `CAIRN_UI_SCREENSHOTS=DIR` to keep the screenshots it takes (the ones in
//! `docs/` were made that way).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{assert_eventually, hello_app, http_get, json, Background, Cli, NodeProc};
use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    assert_eventually!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        Duration::from_secs(30),
        "chromedriver never listened on port {port}"
    );
    d
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1600", "--hide-scrollbars"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Poll `f` until it gives `Some`, for at most `within`.
async fn until<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(dir) = std::env::var("CAIRN_UI_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

/// Sign in through the form.
async fn sign_in(c: &Client, token: &str) {
    let field = c
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .expect("the token field");
    field.send_keys(token).await.expect("type the token");
    c.find(Locator::Css("form[action='/signin'] button"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("click");
}

/// Follow the job page the UI sent us to until the job ends; its final state.
async fn job_outcome(c: &Client) -> String {
    // The click posts the form; the answer redirects to the job's page.
    until(Duration::from_secs(20), "the action's job page", || async {
        c.current_url()
            .await
            .ok()
            .filter(|u| u.path().starts_with("/jobs/"))
    })
    .await;
    until(Duration::from_secs(90), "the job to end", || async {
        let s = text_of(c, "#job-state").await;
        (["success", "error", "cancelled"].contains(&s.trim())).then(|| s.trim().to_string())
    })
    .await
}

fn agent(cli: &Cli) -> Background {
    let a = cli.spawn(&["runner", "agent", "--id", "ui-agent"]);
    assert_eventually!(
        a.stdout_so_far().contains(" registered with node "),
        Duration::from_secs(30),
        "the agent never registered: {}",
        a.stdout_so_far()
    );
    a
}

#[test]
fn a_person_signs_in_watches_logs_and_rolls_back_in_chromium() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let token = cli.context_file("dev")["token"]
        .as_str()
        .expect("token")
        .to_string();
    // A standing runner: the UI's actions are jobs for the runner the app's jobs went to.
    let _agent = agent(&cli);
    let app = hello_app();
    for _ in 0..2 {
        cli.run_in(app.path(), &["up", "--runner", "ui-agent"]).ok();
    }
    let deps = cli
        .run_in(app.path(), &["deployment", "list", "--json"])
        .ok()
        .json();
    let v2 = json::items(&deps)
        .iter()
        .find(|d| d["sequence"] == 2)
        .expect("deployment v2")
        .clone();
    let v2_output: Vec<String> = v2["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!v2_output.is_empty(), "the deployment has output: {v2}");
    let base = node.http_api();
    let driver = chromedriver();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = browser(&driver).await;

        // Not signed in: the sign-in page, and a wrong token is refused.
        c.goto(&format!("{base}/apps/hello/web")).await.expect("goto");
        assert_eq!(c.current_url().await.expect("url").path(), "/signin");
        shot(&c, "ui-signin").await;
        sign_in(&c, "cairn_user_not-a-real-token").await;
        let problem = until(Duration::from_secs(10), "the refusal", || async {
            let t = text_of(&c, ".problem").await;
            (!t.is_empty()).then_some(t)
        })
        .await;
        assert!(problem.contains("not valid"), "{problem}");
        c.goto(&format!("{base}/")).await.expect("goto");
        assert_eq!(
            c.current_url().await.expect("url").path(),
            "/signin",
            "a refused token gives no session"
        );

        // Signed in, back where we were going.
        c.goto(&format!("{base}/apps/hello/web")).await.expect("goto");
        sign_in(&c, &token).await;
        until(Duration::from_secs(10), "the app page", || async {
            (c.current_url().await.ok()?.path() == "/apps/hello/web").then_some(())
        })
        .await;
        let released = text_of(&c, "#released").await;
        assert!(released.contains("Deployment v2"), "{released}");
        let row = text_of(&c, "tr[data-deployment='2']").await;
        assert!(row.contains("released"), "v2's row: {row}");
        assert!(row.contains("user:"), "who asked: {row}");

        // The deployment's own page holds its full output, as the CLI has it.
        c.find(Locator::Css("tr[data-deployment='2'] a"))
            .await
            .expect("v2's link")
            .click()
            .await
            .expect("click");
        let output = until(Duration::from_secs(10), "the output", || async {
            let t = text_of(&c, "#output").await;
            (!t.is_empty()).then_some(t)
        })
        .await;
        let shown: Vec<&str> = output.lines().collect();
        assert_eq!(shown, v2_output, "the UI shows the operation's output as recorded");
        shot(&c, "ui-deployment").await;

        // Live logs: a request made now shows up on the open page.
        c.goto(&format!("{base}/apps/hello/web")).await.expect("goto");
        until(Duration::from_secs(20), "the log history", || async {
            let t = text_of(&c, "#logs").await;
            t.contains("hello listening").then_some(())
        })
        .await;
        let marker = format!("ui-live-{}", std::process::id());
        let url = node.url("web--v2.localhost");
        let r = http_get(&format!("{}/{marker}", url.trim_end_matches('/'))).expect("GET v2");
        assert_eq!(r.status, 200, "{r:?}");
        until(Duration::from_secs(20), "the new line in the open page", || async {
            text_of(&c, "#logs").await.contains(&marker).then_some(())
        })
        .await;
        shot(&c, "ui-logs").await;

        // Roll back to v1 from the UI; the job runs on the agent.
        let rollback = c
            .find(Locator::Css("button[data-action='release-v1']"))
            .await
            .expect("v1's release button");
        assert_eq!(rollback.text().await.expect("label"), "Roll back to this");
        rollback.click().await.expect("click");
        let state = job_outcome(&c).await;
        shot(&c, "ui-job").await;
        assert_eq!(state, "success", "{}", text_of(&c, "main").await);

        // A canary: 30 % of the requests to v2.
        c.goto(&format!("{base}/apps/hello/web")).await.expect("goto");
        let weight = c
            .find(Locator::Css("tr[data-deployment='2'] input[name='weight']"))
            .await
            .expect("v2's weight field");
        weight.clear().await.expect("clear");
        weight.send_keys("30").await.expect("type");
        c.find(Locator::Css("button[data-action='canary-v2']"))
            .await
            .expect("the canary button")
            .click()
            .await
            .expect("click");
        assert_eq!(job_outcome(&c).await, "success");
        c.goto(&format!("{base}/apps/hello/web")).await.expect("goto");
        let released = text_of(&c, "#released").await;
        assert!(
            released.contains("Deployment v1") && released.contains("Canary v2 takes 30%"),
            "{released}"
        );
        // Requests through the app's URL for a while: the chart draws both deployments.
        let release_url = node.url("web.localhost");
        let load = std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(8) {
                let _ = http_get(&release_url);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        tokio::task::spawn_blocking(move || load.join().expect("load"))
            .await
            .expect("join");
        let lines = until(Duration::from_secs(10), "the chart's lines", || async {
            let n = c
                .find_all(Locator::Css("#traffic-svg polyline"))
                .await
                .ok()?
                .len();
            (n == 2).then_some(n)
        })
        .await;
        assert_eq!(lines, 2, "one line per deployment serving requests");
        let legend = text_of(&c, "#traffic-legend").await;
        assert!(legend.contains("v1:") && legend.contains("v2:"), "{legend}");
        shot(&c, "ui-app").await;

        // Phone-sized: nothing wider than the screen but the tables, which scroll.
        c.set_window_size(390, 844).await.expect("resize");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let overflow = c
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await
            .expect("measure");
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "the page scrolls sideways on a phone by {overflow}px"
        );
        shot(&c, "ui-app-phone").await;
        c.set_window_size(1280, 1000).await.expect("resize");
        for (path, name) in [("/", "ui-apps"), ("/jobs", "ui-jobs"), ("/cluster", "ui-cluster")] {
            c.goto(&format!("{base}{path}")).await.expect("goto");
            shot(&c, name).await;
        }
        c.close().await.expect("close the browser");
    });
    let base = node.http_api();

    // The CLI sees what the UI did: v1 released in full, v2 as a 30 % canary.
    let releases = cli.run_in(app.path(), &["releases", "--json"]).ok().json();
    let newest: Vec<u64> = json::items(&releases)
        .iter()
        .rev()
        .take(2)
        .map(|r| r["input_seq"].as_u64().expect("input_seq"))
        .collect();
    assert_eq!(newest, vec![2, 1], "{releases}");
    // The route, as the HTTP API reads it.
    let view = http_get_json(&format!("{base}/api/v1/projects/hello/apps/web"), &token);
    assert_eq!(
        view["route"],
        serde_json::json!({ "primary": 1, "canary": [2, 30] }),
        "{view}"
    );
    let r = http_get(&node.url("web.localhost")).expect("GET the release");
    assert_eq!(r.status, 200, "{r:?}");
}

/// GET `url` with a bearer token; its JSON.
fn http_get_json(url: &str, token: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http://");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(
        s,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{body}"
    );
    serde_json::from_str(body).expect("JSON")
}
