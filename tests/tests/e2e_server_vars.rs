//! Input variable values stored on the cluster (issue 16): `cairn var set` stores them for
//! the project or one workspace, `cairn up` and its runner read them before evaluating the
//! config (above a default, below what is given where the config is evaluated), a
//! sensitive one is never printed, and `dynamic("cairn", { name })` reads the app's config
//! as the cluster resolves it.

use cairn_tests::{http_get, write_app, Cli};

const CONFIG: &str = r#"project = "stored"

variable "region" {
  type = string
}

variable "size" {
  type    = number
  default = 1
}

variable "token" {
  type      = string
  sensitive = true
}

app "web" {
  config {
    env = { TOKEN = var.token }
    file = {
      "v.txt" = "${var.region} ${var.size} ${dynamic("cairn", { name = "GREETING" })}\n"
    }
  }
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 $PORT"]
    }
  }
}
"#;

const SECRET: &str = "s3cret-stored-token";

fn served(url: &str) -> String {
    let r = http_get(&format!("{url}v.txt")).expect("GET v.txt");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[test]
fn stored_values_feed_the_config_by_scope_and_precedence() {
    let cli = Cli::new();
    let app = write_app(CONFIG, &[("index.html", "<p>stored</p>\n")]);
    let dir = app.path().to_str().expect("utf-8 path");

    // Nothing stored yet: refused before anything is queued, saying how to store it.
    let up = cli.run_in(app.path(), &["up"]).fails();
    assert!(
        up.stderr
            .contains("variable \"region\" has no value: set it with -var region=VALUE")
            && up.stderr.contains("`cairn var set region VALUE`"),
        "{up}"
    );
    assert!(!up.stdout.contains("Deployment URL"), "{up}");

    // Values that the file does not declare, or that do not fit, are refused.
    let bad = cli
        .run_in(app.path(), &["var", "set", "regoin", "eu"])
        .fails();
    assert!(
        bad.stderr.contains("no variable \"regoin\" is declared in")
            && bad.stderr.contains("(declared: region, size, token)"),
        "{bad}"
    );
    let bad = cli
        .run_in(app.path(), &["var", "set", "size", "big"])
        .fails();
    assert!(
        bad.stderr.contains("variable \"size\" is of type number, and the value from cluster (project) does not fit"),
        "{bad}"
    );

    cli.run_in(app.path(), &["var", "set", "region", "eu"]).ok();
    cli.run_in(
        app.path(),
        &["var", "set", "--workspace", "prod", "size", "3"],
    )
    .ok();
    // From stdin, so it is in no argv; declared sensitive, so stored as such.
    let set = cli.run_with_stdin(
        &["-C", dir, "var", "set", "token"],
        format!("{SECRET}\n").as_bytes(),
    );
    assert!(set.success(), "{set}");
    assert!(set.stdout.contains("Stored token (sensitive)"), "{set}");
    cli.run_in(app.path(), &["config", "set", "GREETING=hello"])
        .ok();

    // validate reads them (the cluster is at hand), saying where each came from.
    let v = cli.run_in(app.path(), &["validate", "--json"]).ok();
    let plan = v.json();
    let var = |n: &str| {
        plan["variables"]
            .as_array()
            .expect("variables")
            .iter()
            .find(|x| x["name"] == n)
            .cloned()
            .expect(n)
    };
    assert_eq!(var("region")["value"], "\"eu\"");
    assert_eq!(var("region")["from"], "cluster (project)");
    assert_eq!(var("size")["from"], "default");
    assert_eq!(var("token")["from"], "cluster (project)");
    // ... and offline, it says what is missing.
    let off = cli.run_in(app.path(), &["validate", "--offline"]).fails();
    assert!(
        off.stderr.contains("variable \"region\" has no value"),
        "{off}"
    );

    // The default workspace: the project's values; prod: its own size.
    let up = cli.run_in(app.path(), &["up"]).ok();
    let url = up.field("Deployment URL").expect("Deployment URL");
    assert_eq!(served(&url), "eu 1 hello\n");
    let up = cli.run_in(app.path(), &["up", "--workspace", "prod"]).ok();
    let url = up.field("Deployment URL").expect("Deployment URL");
    assert_eq!(served(&url), "eu 3 hello\n");
    // What is given here wins over what is stored.
    let up = cli
        .run_in(
            app.path(),
            &["up", "--workspace", "prod", "--var", "size=5"],
        )
        .ok();
    let url = up.field("Deployment URL").expect("Deployment URL");
    assert_eq!(served(&url), "eu 5 hello\n");

    let list = cli.run_in(app.path(), &["var", "list"]).ok();
    for want in ["region", "eu", "prod", "token", "********"] {
        assert!(list.stdout.contains(want), "{want}: {list}");
    }
    let json = cli.run_in(app.path(), &["var", "list", "--json"]).ok();
    assert_eq!(json.json().as_array().map(|a| a.len()), Some(3), "{json}");
    // The sensitive value shows nowhere: not in listings, plans or up's output, and the
    // app config it feeds is a secret.
    let config = cli.run_in(app.path(), &["config", "list"]).ok();
    for out in [&list, &json, &v, &config, &up] {
        assert!(
            !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
            "{out}"
        );
    }
    assert!(config.stdout.contains("TOKEN"), "{config}");

    // Deleted: missing again.
    cli.run_in(app.path(), &["var", "delete", "region"]).ok();
    let gone = cli.run_in(app.path(), &["var", "delete", "region"]).fails();
    assert!(
        gone.stderr
            .contains("no value of region is stored for project \"stored\""),
        "{gone}"
    );
    let up = cli.run_in(app.path(), &["up"]).fails();
    assert!(
        up.stderr.contains("variable \"region\" has no value"),
        "{up}"
    );
}
