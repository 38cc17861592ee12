//! `cairn validate`: the plan of the config here, checked without a node;
//! every plugin and stage-to-stage error at once, each located; secrets
//! masked.

use cairn_tests::{hello_app, write_app, Cli};

#[test]
fn validate_prints_the_plan_of_the_examples_without_a_node() {
    let cli = Cli::new();
    let app = hello_app();
    let out = cli.run_in(app.path(), &["validate"]).ok();
    for want in [
        "app \"web\"",
        "build    files",
        "→ files.Artifact",
        "registry files",
        "deploy   process",
        "✓ 1 app: the plan holds",
    ] {
        assert!(out.stdout.contains(want), "no {want:?}: {out}");
    }
    // Nothing was started: no local node.
    assert!(cli.local_ready().is_none(), "validate started a node");

    let plan = cli.run_in(app.path(), &["validate", "--json"]).ok().json();
    assert_eq!(plan["ok"], true);
    let stages = &plan["apps"][0]["stages"];
    assert_eq!(stages[0]["makes"], "files.Artifact");
    assert_eq!(stages[2]["takes"], "files.Artifact");
    assert_eq!(stages[3]["stage"], "release");
    assert_eq!(stages[3]["plugin"], "process");

    // A mapper chain is named: files built, run as containers.
    let dir = write_app(
        "project = \"chain\"\n\napp \"web\" {\n  build {\n    use \"command\" {\n      command = [\"true\"]\n      output  = \"out\"\n    }\n  }\n  deploy {\n    use \"docker\" {}\n  }\n}\n",
        &[],
    );
    let out = cli.run_in(dir.path(), &["validate"]).ok();
    assert!(
        out.stdout
            .contains("via command.Output -> files.Artifact, files.Artifact -> docker.Image"),
        "{out}"
    );
}

#[test]
fn validate_reports_every_error_at_once_with_locations() {
    let cli = Cli::new();
    let dir = write_app(
        r#"project = "broken"

app "one" {
  build {
    use "files" {
      paht = "."
    }
  }
  deploy {
    use "process" {
      command = ["true"]
      cuont   = 2
    }
  }
}

app "two" {
  build {
    use "pack" {}
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#,
        &[],
    );
    let out = cli.run_in(dir.path(), &["validate"]).fails();
    for want in [
        "cairn.hcl:6:7: plugin \"files\": field \"paht\"",
        "cairn.hcl:12:7: plugin \"process\": field \"cuont\"",
        "cairn.hcl:19:5",
        "pack",
        "3 errors in",
    ] {
        assert!(out.stderr.contains(want), "no {want:?}: {out}");
    }
}

#[test]
fn validate_names_a_stage_that_cannot_take_the_previous_ones_value() {
    let cli = Cli::new();
    // A docker image cannot run as processes: no mapper goes that way.
    let dir = write_app(
        r#"project = "mismatch"

app "web" {
  build {
    use "docker-pull" {
      image = "busybox"
      tag   = "latest"
    }
  }
  deploy {
    use "process" {
      command = ["true"]
    }
  }
}
"#,
        &[],
    );
    let out = cli.run_in(dir.path(), &["validate"]).fails();
    assert!(
        out.stderr.contains(
            "cairn.hcl:11:5: platform \"process\" takes files.Artifact but gets docker.Image"
        ),
        "{out}"
    );
}

#[test]
fn validate_masks_secrets() {
    let cli = Cli::new();
    let dir = write_app(
        r#"project = "secret"
labels  = { team = "blue" }

app "web" {
  config {
    env = { API_KEY = "k-123-very-private" }
  }
  build {
    use "docker" {}
    registry {
      use "docker" {
        image    = "127.0.0.1:5000/web"
        tag      = "latest"
        username = "deployer"
        password = "correct-horse"
      }
    }
  }
  deploy {
    use "docker" {}
  }
}
"#,
        &[],
    );
    let out = cli.run_in(dir.path(), &["validate"]).ok();
    assert!(out.stdout.contains("password = \"****\""), "{out}");
    assert!(out.stdout.contains("config env: API_KEY"), "{out}");
    assert!(out.stdout.contains("labels: team=blue"), "{out}");
    assert!(out.stdout.contains("url-service"), "{out}");
    for secret in ["correct-horse", "k-123-very-private"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{out}"
        );
    }
}
