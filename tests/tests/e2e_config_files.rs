//! `config { file = { PATH = CONTENT } }` (issue 16): `cairn up` stores the files with the
//! app's config, and the entrypoint writes them into every instance before the app starts
//! (a relative path under its working directory), rewrites them when the config changes
//! (restarting the app, as for env), and removes the ones the config no longer holds.

use std::time::Duration;

use cairn_tests::{assert_eventually, http_get, write_app, Cli};

fn config(greeting: &str, extra: &str) -> String {
    format!(
        r#"project = "files"

variable "who" {{
  type    = string
  default = "world"
}}

app "web" {{
  config {{
    internal = {{
      greeting = "{greeting}"
    }}
    file = {{
      "conf/greeting.txt" = "${{config.internal.greeting}}, ${{var.who}}\n"
      {extra}
    }}
  }}
  build {{
    use "files" {{}}
  }}
  deploy {{
    use "process" {{
      command = ["sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 $PORT"]
    }}
  }}
}}
"#
    )
}

fn body(url: &str) -> Option<(u16, String)> {
    http_get(url).ok().map(|r| (r.status, r.body))
}

#[test]
fn config_files_are_written_into_instances_and_follow_the_config() {
    let cli = Cli::new();
    let app = write_app(
        &config("hello", "\"old.txt\" = \"to be removed\\n\""),
        &[("index.html", "<p>files</p>\n")],
    );
    let up = cli.run_in(app.path(), &["up", "--var", "who=Cairn"]).ok();
    assert!(
        up.stdout.contains("file conf/greeting.txt")
            || up.stderr.contains("file conf/greeting.txt"),
        "up says it synced the file: {up}"
    );
    let url = up.field("Deployment URL").expect("Deployment URL");
    let (status, text) = body(&format!("{url}conf/greeting.txt")).expect("GET the file");
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "hello, Cairn\n");
    assert_eq!(
        body(&format!("{url}old.txt")).map(|(_, b)| b),
        Some("to be removed\n".into())
    );
    // Files are not environment variables, and config list masks them.
    let list = cli.run_in(app.path(), &["config", "list"]).ok();
    assert!(!list.stdout.contains("hello, Cairn"), "{list}");

    // The config changes: the running deployment gets the new file, and loses the old one.
    std::fs::write(app.path().join("cairn.hcl"), config("bonjour", "")).expect("write config");
    cli.run_in(app.path(), &["up", "--var", "who=Cairn"]).ok();
    assert_eventually!(
        body(&format!("{url}conf/greeting.txt"))
            .is_some_and(|(s, b)| s == 200 && b == "bonjour, Cairn\n"),
        Duration::from_secs(30),
        "v1 never got the new file: {:?}",
        body(&format!("{url}conf/greeting.txt"))
    );
    assert_eventually!(
        body(&format!("{url}old.txt")).is_some_and(|(s, _)| s == 404),
        Duration::from_secs(30),
        "the removed file is still served: {:?}",
        body(&format!("{url}old.txt"))
    );
}
