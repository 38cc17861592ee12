//! `cairn pipeline run NAME` (issue 16): the config's `pipeline` blocks run step by step —
//! exec commands here, build and deploy steps as jobs, nested pipelines with their
//! workspace — stopping at the first step that fails.

use cairn_tests::{json, write_app, Cli};

const CONFIG: &str = r#"project = "pipes"

pipeline "ship" {
  step "test" {
    image_url = "example.com/test"
    use "exec" {
      command = "sh"
      args    = ["-c", "echo tested > tested.txt"]
    }
  }
  step "build" {
    use "build" {}
  }
  step "stage" {
    workspace = "staging"
    pipeline "inner" {
      step "build" {
        use "build" {}
      }
      step "deploy" {
        use "deploy" {}
      }
    }
  }
}

pipeline "broken" {
  step "fails" {
    use "exec" {
      command = ["sh", "-c", "echo failing on purpose >&2; exit 4"]
    }
  }
  step "never" {
    use "exec" {
      command = ["touch", "never.txt"]
    }
  }
}

app "web" {
  build {
    use "null" {}
  }
  deploy {
    use "null" {}
  }
}
"#;

#[test]
fn pipelines_run_their_steps_in_order_and_stop_at_a_failure() {
    let cli = Cli::new();
    let app = write_app(CONFIG, &[]);

    let list = cli.run_in(app.path(), &["pipeline", "list"]).ok();
    for want in [
        "pipeline \"ship\"",
        "step \"test\": use \"exec\"",
        "step \"stage\": pipeline \"inner\" (workspace staging)",
        "step \"deploy\": use \"deploy\"",
    ] {
        assert!(list.stdout.contains(want), "no {want:?}: {list}");
    }

    let out = cli.run_in(app.path(), &["pipeline", "run", "ship"]).ok();
    for want in [
        "» step test: exec",
        "image_url \"example.com/test\" is not used",
        "✓ test",
        "✓ build",
        "✓ stage/build",
        "✓ stage/deploy",
        "pipeline \"ship\": 4 step(s) done",
    ] {
        assert!(out.stdout.contains(want), "no {want:?}: {out}");
    }
    assert_eq!(
        std::fs::read_to_string(app.path().join("tested.txt")).expect("the exec step ran here"),
        "tested\n"
    );
    // The nested pipeline's deploy ran in its workspace.
    let deps = cli.json(&["deployment", "list"]);
    let staging: Vec<_> = json::items(&deps)
        .iter()
        .filter(|d| d["workspace"] == "staging")
        .collect();
    assert_eq!(staging.len(), 1, "one deployment in staging: {deps}");

    let out = cli
        .run_in(app.path(), &["pipeline", "run", "broken"])
        .fails();
    assert!(out.stdout.contains("✗ fails"), "{out}");
    assert!(out.stdout.contains("pipeline \"broken\" failed"), "{out}");
    assert!(
        !app.path().join("never.txt").exists(),
        "a step after the failure ran"
    );

    let out = cli.run_in(app.path(), &["pipeline", "run", "nope"]).fails();
    assert!(
        out.stderr
            .contains("no pipeline named \"nope\" (defined: ship, broken)"),
        "{out}"
    );
}
