//! App configuration end to end: `cairn config set|get|delete|list` against a
//! real node, and `config { env }` in cairn.hcl reaching the deployed
//! processes, synced again by every `up`.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_tests::{http_get, json, write_app, Cli, NodeProc, Output};
use serde_json::Value;

/// The single stderr line of a failed command.
#[track_caller]
fn one_line_error(out: &Output) -> String {
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "one-line error expected: {out}");
    lines[0].to_string()
}

/// `cairn -C dir config list --json`, as (scope label, name) → item.
#[track_caller]
fn listed(cli: &Cli, dir: &Path) -> BTreeMap<(String, String), Value> {
    by_scope(&cli.run_in(dir, &["config", "list", "--json"]).ok().json())
}

/// A `config list --json` answer as (scope label, name) → item.
#[track_caller]
fn by_scope(out: &Value) -> BTreeMap<(String, String), Value> {
    json::items(out)
        .iter()
        .map(|v| {
            let scope = match (v["app"].as_str(), v["workspace"].as_str()) {
                (None, None) => "project".to_string(),
                (Some(a), None) => format!("app {a}"),
                (None, Some(w)) => format!("workspace {w}"),
                (Some(a), Some(w)) => format!("app {a} in {w}"),
            };
            ((scope, json::s(v, "name").to_string()), v.clone())
        })
        .collect()
}

const SHOP: &str = r#"project = "shop"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#;

#[test]
fn config_set_get_list_delete_mask_secrets_and_refuse_bad_input() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = write_app(SHOP, &[]);
    let dir = app.path();

    cli.run_in(
        dir,
        &["config", "set", "GREETING=hello", "URL=http://x/?a=b"],
    )
    .ok();
    let out = cli
        .run_in(dir, &["config", "set", "--secret", "API_KEY=s3cr3t-value"])
        .ok();
    assert!(!out.stdout.contains("s3cr3t"), "{out}");
    cli.run_in(dir, &["config", "set", "--app", "web", "GREETING=from-app"])
        .ok();

    // Listings mask the secret, as a table and as JSON.
    let table = cli.run_in(dir, &["config", "list"]).ok();
    assert!(!table.stdout.contains("s3cr3t"), "{table}");
    assert!(
        table.stdout.contains("API_KEY") && table.stdout.contains("********"),
        "{table}"
    );
    let raw = cli.run_in(dir, &["config", "list", "--json"]).ok();
    assert!(!raw.stdout.contains("s3cr3t"), "{raw}");
    let vars = listed(&cli, dir);
    assert_eq!(vars.len(), 4, "{vars:?}");
    let key = &vars[&("project".into(), "API_KEY".into())];
    assert_eq!(json::s(key, "value"), "********");
    assert_eq!(key["secret"], Value::Bool(true));
    assert_eq!(json::s(key, "source"), "cli");
    let url = &vars[&("project".into(), "URL".into())];
    assert_eq!(
        json::s(url, "value"),
        "http://x/?a=b",
        "split at the first '='"
    );

    // `get` shows the value, secrets included, resolved by precedence.
    let got = cli.run_in(dir, &["config", "get", "API_KEY"]).ok();
    assert_eq!(got.stdout, "s3cr3t-value\n");
    // The config's only app is the default: its own value wins.
    let got = cli.run_in(dir, &["config", "get", "GREETING"]).ok();
    assert_eq!(got.stdout, "from-app\n");
    // Explicit project, no app: the project's value (no cairn.hcl needed).
    let got = cli
        .run(&["config", "get", "--project", "shop", "GREETING"])
        .ok();
    assert_eq!(got.stdout, "hello\n");
    let missing = cli.run_in(dir, &["config", "get", "NOPE"]).fails();
    assert!(one_line_error(&missing).contains("NOPE"), "{missing}");

    // Bad arguments: one line naming the argument, exit non-zero, nothing written.
    for (args, needle) in [
        (&["config", "set", "GOOD=1", "1BAD=2"][..], "1BAD"),
        (&["config", "set", "GOOD=1", "NOEQUALS"], "NOEQUALS"),
        (&["config", "set", "GOOD=1", "=empty"], "=empty"),
        (&["config", "set", "GOOD=1", "MY-VAR=x"], "MY-VAR"),
        (
            &["config", "set", "GOOD=1", "cairn.from_file=x"],
            "cairn.from_file",
        ),
        (
            &["config", "delete", "GREETING", "NOT-A-NAME"],
            "NOT-A-NAME",
        ),
        (&["config", "delete", "GREETING", "MISSING"], "MISSING"),
    ] {
        let out = cli.run_in(dir, args).fails();
        let line = one_line_error(&out);
        assert!(
            line.starts_with("error: ") && line.contains(needle),
            "{out}"
        );
    }
    let secret_typo = cli
        .run_in(dir, &["config", "set", "--secret", "OK=1", "hunter2"])
        .fails();
    assert!(!secret_typo.stderr.contains("hunter2"), "{secret_typo}");
    assert_eq!(listed(&cli, dir), vars, "nothing was written or deleted");

    // No cairn.hcl and no --project: a clear error.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = cli.run_in(empty.path(), &["config", "list"]).fails();
    assert!(one_line_error(&out).contains("--project"), "{out}");

    // Delete several at once, in the scope the flags name.
    cli.run_in(dir, &["config", "delete", "URL", "API_KEY"])
        .ok();
    cli.run_in(dir, &["config", "delete", "--app", "web", "GREETING"])
        .ok();
    let vars = listed(&cli, dir);
    assert_eq!(
        vars.keys().cloned().collect::<Vec<_>>(),
        vec![("project".to_string(), "GREETING".to_string())]
    );

    // Every subcommand's help explains scopes and precedence.
    for sub in ["set", "get", "delete", "list"] {
        let help = cli.run(&["config", sub, "--help"]).ok();
        assert!(
            help.stdout
                .contains("workspace-app > app > workspace > project"),
            "{help}"
        );
    }
}

/// An app that answers every GET with its environment as JSON.
const ENV_APP: &str = r#"import http.server, json, os

PORT = int(os.environ["PORT"])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(dict(os.environ)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"#;

fn env_hcl(project_env: &str, app_env: &str) -> String {
    format!(
        r#"project = "envs"

config {{
  env = {{ {project_env} }}
}}

app "web" {{
  config {{
    env = {{ {app_env} }}
  }}
  build {{
    use "files" {{
      exclude = ["cairn.hcl"]
    }}
  }}
  deploy {{
    use "process" {{
      command = ["python3", "app.py"]
    }}
  }}
  release {{
    use "process" {{}}
  }}
}}
"#
    )
}

/// The environment the deployment at the `Deployment URL` of `up` runs with.
#[track_caller]
fn deployed_env(up: &Output) -> serde_json::Map<String, Value> {
    let url = up.field("Deployment URL").expect("a Deployment URL line");
    let r = http_get(&url).expect("GET the deployment");
    assert_eq!(r.status, 200, "{r:?}");
    match serde_json::from_str(&r.body) {
        Ok(Value::Object(m)) => m,
        other => panic!("not a JSON object: {other:?} from {r:?}"),
    }
}

#[track_caller]
fn has(env: &serde_json::Map<String, Value>, name: &str, value: &str) {
    assert_eq!(
        env.get(name).and_then(Value::as_str),
        Some(value),
        "{name} in {env:?}"
    );
}

#[test]
fn config_block_env_reaches_the_app_and_up_follows_the_file() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let app = write_app(
        &env_hcl(
            r#"SHARED = "project-1", GONE = "bye", TAKEN = "file""#,
            r#"SHARED = "app-1", ONLY_APP = "a1""#,
        ),
        &[("app.py", ENV_APP)],
    );
    let dir = app.path();

    // Set by hand, before any up: never touched by the file's sync.
    cli.run_in(dir, &["config", "set", "--app", "web", "MANUAL=kept"])
        .ok();
    cli.run_in(
        dir,
        &["config", "set", "--secret", "--app", "web", "SECRET=sh"],
    )
    .ok();
    // Workspace precedence: the deployment runs in workspace "default".
    cli.run_in(dir, &["config", "set", "WS=project"]).ok();
    cli.run_in(
        dir,
        &["config", "set", "--workspace", "default", "WS=workspace"],
    )
    .ok();
    cli.run_in(
        dir,
        &[
            "config",
            "set",
            "--app",
            "web",
            "--workspace",
            "prod",
            "WS=prod",
        ],
    )
    .ok();

    let up = cli.run_in(dir, &["up"]).ok();
    assert!(up.stdout.contains("Config of project \"envs\""), "{up}");
    let env = deployed_env(&up);
    has(&env, "SHARED", "app-1"); // app > project
    has(&env, "GONE", "bye");
    has(&env, "TAKEN", "file");
    has(&env, "ONLY_APP", "a1");
    has(&env, "MANUAL", "kept");
    has(&env, "SECRET", "sh");
    has(&env, "WS", "workspace"); // workspace > project; prod is another workspace
    assert!(
        !env.keys().any(|k| k.starts_with("cairn.")),
        "reserved names never reach the app: {env:?}"
    );

    let vars = listed(&cli, dir);
    assert_eq!(
        json::s(&vars[&("project".into(), "GONE".into())], "source"),
        "file"
    );
    assert_eq!(
        json::s(&vars[&("app web".into(), "MANUAL".into())], "source"),
        "cli"
    );
    assert_eq!(
        json::s(&vars[&("app web".into(), "SECRET".into())], "value"),
        "********"
    );

    // Nothing changed in the file: the next up writes no config.
    let again = cli.run_in(dir, &["up"]).ok();
    assert!(!again.stdout.contains("Config of"), "{again}");
    assert_eq!(listed(&cli, dir), vars);

    // A variable the file set, overwritten by hand, becomes the user's.
    cli.run_in(dir, &["config", "set", "TAKEN=mine"]).ok();

    // The file changes: new values, new names, removed names.
    std::fs::write(
        dir.join("cairn.hcl"),
        env_hcl(r#"SHARED = "project-2""#, r#"ONLY_APP = "a2", NEW = "n""#),
    )
    .expect("rewrite cairn.hcl");
    let up = cli.run_in(dir, &["up"]).ok();
    assert!(up.stdout.contains("deleted GONE"), "{up}");
    assert!(up.stdout.contains("deleted SHARED"), "{up}");
    let env = deployed_env(&up);
    has(&env, "SHARED", "project-2"); // the app's own SHARED was removed from the file
    has(&env, "ONLY_APP", "a2");
    has(&env, "NEW", "n");
    has(&env, "TAKEN", "mine");
    has(&env, "MANUAL", "kept");
    has(&env, "SECRET", "sh");
    assert!(!env.contains_key("GONE"), "{env:?}");

    let vars = listed(&cli, dir);
    assert!(
        !vars.contains_key(&("project".into(), "GONE".into())),
        "{vars:?}"
    );
    assert!(
        !vars.contains_key(&("app web".into(), "SHARED".into())),
        "{vars:?}"
    );
    let taken = &vars[&("project".into(), "TAKEN".into())];
    assert_eq!(
        (json::s(taken, "value"), json::s(taken, "source")),
        ("mine", "cli")
    );
    assert!(vars.contains_key(&("app web".into(), "MANUAL".into())));
    assert!(vars.contains_key(&("app web in prod".into(), "WS".into())));

    // A bad name in the file fails `up` before anything is queued or synced.
    std::fs::write(
        dir.join("cairn.hcl"),
        env_hcl(r#"SHARED = "project-3""#, r#""BAD-NAME" = "x""#),
    )
    .expect("rewrite cairn.hcl");
    let bad = cli.run_in(dir, &["up"]).fails();
    let line = one_line_error(&bad);
    assert!(
        line.contains("cairn.hcl:9:") && line.contains("BAD-NAME"),
        "{bad}"
    );
    // (The config commands read the project from cairn.hcl too, so name it now.)
    let out = cli
        .run(&["config", "list", "--json", "--project", "envs"])
        .ok();
    assert_eq!(by_scope(&out.json()), vars, "nothing synced");
}
