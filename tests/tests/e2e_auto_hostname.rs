//! `url { auto_hostname = false }` (issue 16): the app's release does not answer at its own
//! name (`APP.DOMAIN`), only at the hostnames registered for it; its deployments keep their
//! `APP--vN` names. Dropping the block gives the name back.

use cairn_tests::{http_get, write_app, Cli};

fn config(url_block: &str) -> String {
    format!(
        r#"project = "auto"
{url_block}
app "web" {{
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

fn get(url: &str) -> (u16, String) {
    let r = http_get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status, r.body)
}

#[test]
fn auto_hostname_false_leaves_the_app_its_registered_names_only() {
    let cli = Cli::new();
    let app = write_app(
        &config("url {\n  auto_hostname = false\n}\n"),
        &[("index.html", "<p>auto</p>\n")],
    );
    let up = cli.run_in(app.path(), &["up"]).ok();
    let dep = up.field("Deployment URL").expect("Deployment URL");
    assert!(up.field("Release URL").is_none(), "{up}");
    assert!(
        up.stdout.contains("does not answer at its own name")
            || up.stderr.contains("does not answer at its own name"),
        "{up}"
    );
    assert_eq!(get(&dep).0, 200);
    // http://web--v1.localhost:PORT/ → http://web.localhost:PORT/
    let port = dep
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let own = format!("http://web.localhost:{port}/");
    let (status, page) = get(&own);
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("auto_hostname = false"), "{page}");

    cli.run_in(
        app.path(),
        &["hostname", "register", "www.shop.auto.localhost"],
    )
    .ok();
    let (status, page) = get(&format!("http://www.shop.auto.localhost:{port}/"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("auto"), "{page}");

    // Without the block the app answers at its name again.
    std::fs::write(app.path().join("cairn.hcl"), config("")).expect("write config");
    let up = cli.run_in(app.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    assert_eq!(release, own);
    assert_eq!(get(&own).0, 200);
}
