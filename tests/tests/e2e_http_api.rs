//! The HTTP API (issue 17): a node serves JSON over HTTP for what the CLI reads and does,
//! from the same service layer, so both agree. Every route wants a user token:
//! none, a wrong one, a join token and an entrypoint token are refused. The OpenAPI
//! document names every route, and each answers as documented.

use std::io::{Read, Write};
use std::time::Duration;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc;
use cairn_protocol::types::TokenScope;
use cairn_tests::{webapp, Cli, NodeProc};

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.0 request (the answer is read to its end: no chunking).
fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    exchange(
        base,
        method,
        path,
        &headers,
        body.map(|b| ("application/json", b)),
    )
}

/// One HTTP/1.0 request with these headers and (content type, body); the whole answer.
fn exchange(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Answer {
    let host = base.strip_prefix("http://").expect("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let (kind, body) = body.unwrap_or(("", ""));
    if !kind.is_empty() {
        req.push_str(&format!("Content-Type: {kind}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(base: &str, path: &str, token: &str) -> Answer {
    request(base, "GET", path, Some(token), None)
}

/// A token of `scope` minted over QUIC with the user token.
fn mint(node: &NodeProc, user: &str, scope: TokenScope) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = rpc::connect(&node.dial(user)).await.expect("connect");
        let r = rpc::call(
            &s.conn,
            &ClientRequest::CreateToken {
                scope,
                name: "http-test".into(),
                ttl_s: None,
            },
        )
        .await
        .expect("call");
        s.conn.close(0u32.into(), b"bye");
        match r {
            ClientResponse::Token { token } => token,
            other => panic!("{other:?}"),
        }
    })
}

#[test]
fn the_http_api_answers_what_the_cli_sees_and_refuses_other_tokens() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    cli.run_in(app.path(), &["up"]).ok();
    let base = node.http_api();
    let token = cli.context_file("dev")["token"]
        .as_str()
        .expect("token")
        .to_string();

    // Apps and deployments, as the CLI lists them.
    let apps = get(&base, "/api/v1/apps", &token);
    assert_eq!(apps.status, 200, "{}", apps.body);
    assert_eq!(
        apps.json(),
        serde_json::json!([{ "project": "shop", "app": "web" }])
    );
    let deps = get(
        &base,
        "/api/v1/operations/deployments?project=shop&app=web",
        &token,
    )
    .json();
    let cli_deps = cli
        .run_in(app.path(), &["deployment", "list", "--json"])
        .ok()
        .json();
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|d| d["id"].as_u64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&deps), ids(&cli_deps), "{deps}\n{cli_deps}");
    assert_eq!(deps[0]["sequence"], 1);
    assert_eq!(deps[0]["status"], "Success");
    assert!(
        deps[0]["output"].as_array().is_some_and(|o| !o.is_empty()),
        "the deployment's output: {deps}"
    );

    // The up job, and its events as server-sent events, ending with Finished.
    let jobs = get(&base, "/api/v1/jobs", &token).json();
    let job = jobs[0]["id"].as_u64().expect("job id");
    assert_eq!(jobs[0]["state"], "Success", "{jobs}");
    let one = get(&base, &format!("/api/v1/jobs/{job}"), &token).json();
    assert_eq!(one["id"], job);
    let events = get(&base, &format!("/api/v1/jobs/{job}/events"), &token);
    assert_eq!(events.status, 200);
    assert!(
        events
            .head
            .to_ascii_lowercase()
            .contains("text/event-stream"),
        "{}",
        events.head
    );
    let data: Vec<serde_json::Value> = events
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    assert!(data.len() >= 2, "{}", events.body);
    assert!(
        data.last().expect("last")["Finished"]["state"] == "Success",
        "{}",
        events.body
    );
    assert_eq!(get(&base, "/api/v1/jobs/999999", &token).status, 404);

    // Config: set over HTTP as a secret, masked in the listing, seen by the CLI.
    let put = request(
        &base,
        "PUT",
        "/api/v1/projects/shop/config/API_KEY",
        Some(&token),
        Some(r#"{"value":"from-http","secret":true}"#),
    );
    assert_eq!(put.status, 204, "{}", put.body);
    let listed = get(&base, "/api/v1/projects/shop/config", &token).json();
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .any(|v| v["name"] == "API_KEY" && v["value"] == "********"),
        "{listed}"
    );
    assert!(!listed.to_string().contains("from-http"), "{listed}");
    let got = cli.run_in(app.path(), &["config", "get", "API_KEY"]).ok();
    assert_eq!(got.stdout.trim(), "from-http");
    // A body that is not what the route takes: a JSON error, not the extractor's text.
    let bad = request(
        &base,
        "PUT",
        "/api/v1/projects/shop/config/API_KEY",
        Some(&token),
        Some("not json"),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"]["kind"], "invalid");

    // Hostnames: registered over HTTP, listed by the CLI, deleted.
    let h = r#"{"name":"shop.example.test","project":"shop","app":"web"}"#;
    let reg = request(&base, "POST", "/api/v1/hostnames", Some(&token), Some(h));
    assert_eq!(reg.status, 201, "{}", reg.body);
    let cli_h = cli.run(&["hostname", "list", "--json"]).ok().json();
    assert_eq!(cli_h[0]["hostname"], "shop.example.test", "{cli_h}");
    let bad = request(
        &base,
        "POST",
        "/api/v1/hostnames",
        Some(&token),
        Some(r#"{"name":"web.localhost","project":"shop","app":"web"}"#),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.json()["error"]["kind"], "invalid");
    let del = request(
        &base,
        "DELETE",
        "/api/v1/hostnames/shop.example.test",
        Some(&token),
        None,
    );
    assert_eq!(del.status, 204, "{}", del.body);

    // Removing an app with an active deployment: a conflict, said so.
    let rm = request(
        &base,
        "DELETE",
        "/api/v1/projects/shop/apps/web",
        Some(&token),
        None,
    );
    assert_eq!(rm.status, 409, "{}", rm.body);

    // Unknown routes and kinds: 404 with a JSON error.
    let nope = get(&base, "/api/v1/nope", &token);
    assert_eq!(nope.status, 404);
    assert_eq!(nope.json()["error"]["kind"], "not_found");
    assert_eq!(get(&base, "/api/v1/operations/bogus", &token).status, 404);

    // No token, a wrong one: 401 with the challenge. Join and entrypoint tokens: 403.
    let none = request(&base, "GET", "/api/v1/apps", None, None);
    assert_eq!(none.status, 401);
    assert!(
        none.head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        none.head
    );
    assert_eq!(get(&base, "/api/v1/apps", "cairn-wrong-token").status, 401);
    let join = mint(&node, &token, TokenScope::Join);
    let entry = mint(
        &node,
        &token,
        TokenScope::Entrypoint {
            app: "web".into(),
            deployment: deps[0]["id"].as_u64().expect("id"),
        },
    );
    for t in [&join, &entry] {
        let a = get(&base, "/api/v1/apps", t);
        assert_eq!(a.status, 403, "{}", a.body);
        assert_eq!(a.json()["error"]["kind"], "refused");
    }
    // The web UI: a join or entrypoint token does not sign in, and as a cookie opens no page.
    for t in [&join, &entry] {
        let form = format!("token={t}&next=/");
        let form = ("application/x-www-form-urlencoded", form.as_str());
        let a = exchange(&base, "POST", "/signin", &[], Some(form));
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(
            !a.head.to_ascii_lowercase().contains("set-cookie"),
            "{}",
            a.head
        );
        let cookie = format!("cairn_session={t}");
        let a = exchange(&base, "GET", "/apps/shop/web", &[("Cookie", &cookie)], None);
        assert!(a.status == 303 && a.head.contains("/signin"), "{}", a.head);
    }

    // The OpenAPI document: every route it names answers with a token (a GET: 200 and
    // JSON) and refuses without one (401) or with a join or entrypoint token (403),
    // whatever the method.
    let doc = get(&base, "/api/openapi.json", &token).json();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{}", paths.len());
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            let concrete = path
                .replace("{kind}", "deployments")
                .replace("{id}", &job.to_string())
                .replace("{name}", "x.example.test")
                .replace("{project}", "shop")
                .replace("{app}", "web")
                .replace("{sequence}", "1");
            let a = request(&base, &method.to_uppercase(), &concrete, None, None);
            assert_eq!(
                a.status, 401,
                "{method} {concrete} without a token: {}",
                a.body
            );
            for t in [&join, &entry] {
                let a = request(&base, &method.to_uppercase(), &concrete, Some(t), None);
                assert_eq!(
                    a.status, 403,
                    "{method} {concrete} with a {t:.12}… token: {}",
                    a.body
                );
            }
            // (The event streams do not end: the UI test reads them.)
            if method == "get" && !path.ends_with("/events") && !path.ends_with("/logs") {
                let a = get(&base, &concrete, &token);
                assert_eq!(a.status, 200, "GET {concrete}: {}", a.body);
                if path != "/metrics" {
                    a.json();
                }
            }
        }
    }
}

#[test]
fn actions_on_an_app_deployed_by_a_cli_runner_say_what_to_do_and_cookies_need_the_csrf_header() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    cli.run_in(app.path(), &["up"]).ok();
    let base = node.http_api();
    let token = cli.context_file("dev")["token"]
        .as_str()
        .expect("token")
        .to_string();

    // The app view holds what the CLI made.
    let view = get(&base, "/api/v1/projects/shop/apps/web", &token);
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view["route"]["primary"], 1, "{view}");
    assert_eq!(view["workspaces"], serde_json::json!(["default"]));
    assert!(
        view["operations"].as_array().expect("ops").len() >= 3,
        "{view}"
    );
    let missing = get(&base, "/api/v1/projects/shop/apps/nope", &token);
    assert_eq!(missing.status, 404, "{}", missing.body);

    // `cairn up` ran the job on its own runner, gone with the command: a release from the
    // API cannot go there, and the refusal says what to run instead.
    let r = request(
        &base,
        "POST",
        "/api/v1/projects/shop/apps/web/deployments/1/release",
        Some(&token),
        Some(r#"{"weight": 20}"#),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("cairn release 1 --weight 20") && message.contains("cairn runner agent"),
        "{message}"
    );
    let r = request(
        &base,
        "POST",
        "/api/v1/projects/shop/apps/web/deployments/7/destroy",
        Some(&token),
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = request(
        &base,
        "POST",
        "/api/v1/projects/shop/apps/web/deployments/1/release",
        Some(&token),
        Some(r#"{"weight": 0}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // The UI's session cookie works for reads; a change needs the page's CSRF header too.
    let cookie = format!("cairn_session={token}");
    let with_cookie = |method: &str, path: &str, csrf: Option<&str>| {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend(csrf.map(|c| ("X-Cairn-CSRF", c)));
        exchange(&base, method, path, &headers, None).status
    };
    assert_eq!(with_cookie("GET", "/api/v1/apps", None), 200);
    assert_eq!(with_cookie("POST", "/api/v1/jobs/99/cancel", None), 403);
    assert_eq!(
        with_cookie("POST", "/api/v1/jobs/99/cancel", Some("wrong")),
        403
    );
    let csrf = cairn_node::http::ui::csrf_token(&token);
    assert_ne!(
        with_cookie("POST", "/api/v1/jobs/99/cancel", Some(&csrf)),
        403,
        "the page's header lets the cookie act"
    );

    // The UI's forms: a wrong CSRF token, or a right one from another site, is refused
    // before anything is queued (403); the right one from this page reaches the action
    // (here the 409 that says what to run instead).
    let form = |csrf: &str, origin: Option<&str>| {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend(origin.map(|o| ("Origin", o)));
        let body = format!("csrf={csrf}&workspace=");
        let body = ("application/x-www-form-urlencoded", body.as_str());
        let path = "/apps/shop/web/deployments/1/release";
        exchange(&base, "POST", path, &headers, Some(body)).status
    };
    let jobs_before = get(&base, "/api/v1/jobs", &token).json();
    assert_eq!(form("wrong", None), 403);
    assert_eq!(form(&csrf, Some("http://evil.example")), 403);
    assert_eq!(form(&csrf, Some(&base)), 409);
    assert_eq!(
        get(&base, "/api/v1/jobs", &token).json(),
        jobs_before,
        "no job was queued"
    );
}

/// The value of the sample `name{labels…}` whose labels include every one of `want`.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())
            .flatten()
        })
        .next()
}

#[test]
fn metrics_move_with_requests_and_jobs_and_pass_promtool() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = webapp(1);
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let base = node.http_api();
    let token = cli.context_file("dev")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let scrape = || {
        let a = get(&base, "/metrics", &token);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    };
    let web = [("app", "web"), ("deployment", "v1"), ("code", "200")];
    let before = scrape();
    let served = sample(&before, "cairn_ingress_requests_total", &web).unwrap_or(0.0);
    for _ in 0..3 {
        let r = cairn_tests::http_get(&release).expect("GET the release");
        assert_eq!(r.status, 200);
    }
    let after = scrape();
    assert_eq!(
        sample(&after, "cairn_ingress_requests_total", &web),
        Some(served + 3.0),
        "{after}"
    );
    assert!(
        sample(
            &after,
            "cairn_ingress_request_duration_seconds_count",
            &[("app", "web")]
        )
        .is_some_and(|n| n >= 3.0),
        "{after}"
    );
    // A 404 is counted too, with no deployment.
    let _ = cairn_tests::http_get(&node.url("nope.localhost"));
    assert_eq!(
        sample(
            &scrape(),
            "cairn_ingress_requests_total",
            &[("code", "404")]
        ),
        Some(1.0)
    );

    // Jobs: the up job finished; a deploy moves the gauge and the durations.
    let success = [("state", "success")];
    assert_eq!(sample(&after, "cairn_jobs", &success), Some(1.0), "{after}");
    assert_eq!(
        sample(
            &after,
            "cairn_job_duration_seconds_count",
            &[("kind", "up"), ("state", "success")]
        ),
        Some(1.0),
        "{after}"
    );
    cli.run_in(app.path(), &["deploy"]).ok();
    let later = scrape();
    assert_eq!(sample(&later, "cairn_jobs", &success), Some(2.0), "{later}");
    assert_eq!(
        sample(
            &later,
            "cairn_job_duration_seconds_count",
            &[("kind", "deploy"), ("state", "success")]
        ),
        Some(1.0),
        "{later}"
    );
    // Raft and connections.
    assert_eq!(sample(&later, "cairn_raft_is_leader", &[]), Some(1.0));
    assert_eq!(sample(&later, "cairn_raft_members", &[]), Some(1.0));
    let applied = sample(&later, "cairn_raft_applied_index", &[]).expect("applied");
    let commit = sample(&later, "cairn_raft_commit_index", &[]).expect("commit");
    assert!(applied > 0.0 && commit >= applied, "{later}");
    assert!(
        sample(&later, "cairn_entrypoints_connected", &[]).is_some_and(|n| n >= 1.0),
        "{later}"
    );
    assert!(
        sample(&later, "cairn_api_requests_total", &[("transport", "quic")]).is_some(),
        "{later}"
    );

    // promtool (Debian's prometheus package; .ci/run installs it) accepts the text.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(later.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("promtool is needed in CI (apt-get install prometheus): {e}")
        }
        Err(e) => eprintln!("skipped the promtool check: promtool cannot run here ({e})"),
    }
}

/// schemathesis (PyPI; `.ci/run` installs it) generates requests from `docs/openapi.json`
/// against a running node: every documented route answers with its documented shape and
/// status, none answers 500, schema-valid requests are accepted and invalid ones refused,
/// undeclared methods get 405.
#[test]
fn schemathesis_finds_nothing_against_the_openapi_document() {
    let st = std::process::Command::new("schemathesis")
        .arg("--version")
        .output();
    if st.is_err() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "schemathesis is needed in CI (pip install schemathesis)"
        );
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let token = cli.context_file("dev")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let doc = cairn_tests::workspace_root().join("docs/openapi.json");
    // schemathesis keeps a cache in its working directory: a temporary one.
    let work = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("schemathesis")
        .current_dir(work.path())
        .arg("run")
        .arg(&doc)
        .args(["--url", &node.http_api()])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--max-examples", "50"])
        // Hypothesis's own health check that too many generated inputs were thrown away
        // (strings that cannot be a path segment) is about the generator, not the API, and
        // it failed at random once in a full run: every input that is sent is still checked.
        .args(["--suppress-health-check", "filter_too_much"])
        // An event stream does not end while its job runs: checked by the test above.
        .args(["--exclude-path", "/api/v1/jobs/{id}/events"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
}
