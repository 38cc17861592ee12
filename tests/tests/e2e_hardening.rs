//! What an adversarial probe of the node, the ingress and the CLI found
//! (issue 13), each fixed at its cause and guarded here end to end: real
//! nodes, the real CLI, apps on the process platform.

use std::time::Duration;

use cairn_tests::{assert_eventually, http_get, webapp, write_app, Cli, NodeProc, WEBAPP};

const WITHIN: Duration = Duration::from_secs(30);

fn status(url: &str) -> u16 {
    http_get(url).map(|r| r.status).unwrap_or(0)
}

/// App `web` of project `other` (same name as [`webapp`]'s `shop/web`).
fn other_web() -> tempfile::TempDir {
    write_app(
        r#"project = "other"

app "web" {
  build {
    use "files" {}
  }
  deploy {
    use "process" {
      command = ["python3", "web.py"]
    }
  }
  release {
    use "process" {}
  }
}
"#,
        &[("web.py", WEBAPP)],
    )
}

/// Item 1: a second project's `web` used to take `shop/web`'s URLs down
/// (404 "apps named web exist in 2 projects") for good. Now it is refused
/// at its first operation, the live app keeps answering, and once `shop/web`
/// is destroyed (`cairn app destroy`) the name is free.
#[test]
fn an_app_name_taken_by_another_project_is_refused_and_apps_and_projects_can_be_destroyed() {
    let node = NodeProc::start_new();
    let cli = Cli::new();
    cli.connect_to(&node, "dev");
    let shop = webapp(1);
    let up = cli.run_in(shop.path(), &["up"]).ok();
    let release = up.field("Release URL").expect("Release URL");
    let deployment = up.field("Deployment URL").expect("Deployment URL");
    assert_eventually!(status(&release) == 200, WITHIN);

    let other = other_web();
    let refused = cli.run_in(other.path(), &["build"]).fails();
    assert!(
        refused
            .stderr
            .contains("an app named \"web\" already exists in project \"shop\""),
        "{refused}"
    );
    assert!(refused.stderr.contains("cairn app destroy"), "{refused}");
    assert_eq!(status(&release), 200, "the release stopped answering");
    assert_eq!(status(&deployment), 200, "the deployment stopped answering");

    // Without a terminal and without --yes nothing happens.
    let unconfirmed = cli.run_in(shop.path(), &["app", "destroy"]).fails();
    assert!(unconfirmed.stderr.contains("--yes"), "{unconfirmed}");
    assert_eq!(status(&release), 200);

    // From somewhere without the config, the active deployment cannot be
    // stopped: refused, nothing removed.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let no_cfg = cli
        .run_in(
            elsewhere.path(),
            &[
                "app",
                "destroy",
                "--project",
                "shop",
                "--app",
                "web",
                "--yes",
            ],
        )
        .fails();
    assert!(
        no_cfg.stderr.contains("active deployments (v1)")
            && no_cfg.stderr.contains("Nothing was removed"),
        "{no_cfg}"
    );
    assert_eq!(status(&release), 200);

    // A hostname for shop/web goes with it.
    cli.run_in(shop.path(), &["hostname", "register", "shop.example.com"])
        .ok();
    let destroyed = cli.run_in(shop.path(), &["app", "destroy", "--yes"]).ok();
    assert!(
        destroyed.stdout.contains("Removed app shop/web")
            && destroyed.stdout.contains("hostnames shop.example.com"),
        "{destroyed}"
    );
    // Its processes are gone and nothing answers at its names any more.
    assert_eventually!(status(&release) == 404, WITHIN);
    assert_eq!(status(&deployment), 404);
    let listed = cli.run(&["hostname", "list"]).ok();
    assert!(listed.stdout.contains("No hostnames"), "{listed}");
    let deps = cli.run(&["deployment", "list", "--json"]).ok();
    assert!(!deps.stdout.contains("\"shop\""), "{deps}");

    // The name is free: project other's web is deployed and answers there.
    let up = cli.run_in(other.path(), &["up"]).ok();
    let release2 = up.field("Release URL").expect("Release URL");
    assert_eq!(release2, release);
    assert_eventually!(status(&release2) == 200, WITHIN);

    // `cairn project destroy` takes the project with its apps.
    let gone = cli
        .run_in(other.path(), &["project", "destroy", "--yes"])
        .ok();
    assert!(gone.stdout.contains("Removed project other"), "{gone}");
    assert_eventually!(status(&release2) == 404, WITHIN);
    let again = cli
        .run_in(other.path(), &["project", "destroy", "--yes"])
        .fails();
    assert!(again.stderr.contains("no project"), "{again}");
}
