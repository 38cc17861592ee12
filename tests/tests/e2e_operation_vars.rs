//! `artifact.*` in the registry stage (issue 16): a field that reads it is evaluated when
//! the push runs, with the value the build made (Waypoint's meaning), so the push lands
//! where the build's own hash says.

use cairn_tests::{write_app, Cli};

const CONFIG: &str = r#"project = "opvars"

app "web" {
  build {
    use "files" {}
    registry {
      use "files" {
        directory = "pushed/${substr(artifact.sha256, 0, 12)}"
      }
    }
  }
  deploy {
    use "process" {
      command = ["sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 $PORT"]
    }
  }
}
"#;

#[test]
fn a_registry_field_reading_artifact_gets_the_builds_value() {
    let cli = Cli::new();
    let app = write_app(CONFIG, &[("index.html", "<p>opvars</p>\n")]);
    // validate shows the field as known only when the operation runs.
    let v = cli.run_in(app.path(), &["validate"]).ok();
    assert!(v.stdout.contains("known when the operation runs"), "{v}");
    cli.run_in(app.path(), &["up"]).ok();
    let pushed = app.path().join("pushed");
    let dirs: Vec<String> = std::fs::read_dir(&pushed)
        .unwrap_or_else(|e| panic!("{}: {e}", pushed.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let files: Vec<String> = std::fs::read_dir(pushed.join(&dirs[0]))
        .expect("pushed dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let want = format!("sha256-{}", dirs[0]);
    assert!(
        files[0].starts_with(&want) && files[0].ends_with(".tar.gz"),
        "{files:?} in {dirs:?}"
    );
}
