//! External plugins (issue 16): `cairn-plugin-NAME` programs found in the project's
//! `.cairn/plugins/`, spoken to over stdio with the plugin protocol. The example plugin
//! (`examples/plugin-stamp`) builds with `cairn up`, and its mapper turns its bundle into
//! the `files.Artifact` that the built-in `process` platform runs. Plugins that crash, hang
//! or speak garbage fail the job with an error saying which, never leave it stuck, and
//! leave no process behind.

use std::path::Path;
use std::time::Duration;

use cairn_tests::{assert_eventually, bins, http_get, json, pid_alive, write_app, Cli};

/// Installs `program` as `cairn-plugin-NAME` in the app's `.cairn/plugins/`.
fn install(app: &Path, name: &str, program: &Path) {
    let dir = app.join(".cairn/plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    std::os::unix::fs::symlink(program, dir.join(format!("cairn-plugin-{name}"))).expect("symlink");
}

#[test]
fn the_example_plugin_builds_and_its_mapper_feeds_the_process_platform() {
    let cli = Cli::new();
    let app = write_app(
        r#"project = "plugins"
app "stamped" {
  build {
    use "stamp" {
      message = "from the test"
    }
  }
  deploy {
    use "process" {
      command = ["sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 $PORT"]
    }
  }
}
"#,
        &[("index.html", "<p>stamped</p>\n")],
    );
    install(app.path(), "stamp", &bins().plugin_stamp);

    // validate: the plugin's types and its mapper are in the plan.
    let plan = cli.run_in(app.path(), &["validate"]).ok();
    for want in [
        "build    stamp",
        "→ stamp.Bundle",
        "stamp.Bundle -> files.Artifact (plugin stamp)",
    ] {
        assert!(plan.stdout.contains(want), "no {want:?}: {plan}");
    }
    // A field the plugin refuses is located like a built-in's.
    let bad = write_app(
        "project = \"plugins\"\napp \"x\" {\n  build {\n    use \"stamp\" {\n      message = 3\n    }\n  }\n  deploy {\n    use \"process\" {\n      command = [\"true\"]\n    }\n  }\n}\n",
        &[],
    );
    install(bad.path(), "stamp", &bins().plugin_stamp);
    let out = cli.run_in(bad.path(), &["validate"]).fails();
    assert!(
        out.stderr
            .contains("cairn.hcl:5:7: plugin \"stamp\": field \"message\": must be a string"),
        "{out}"
    );

    // `plugin "stamp" { checksum }` pins the program: another digest is refused.
    let config = std::fs::read_to_string(app.path().join("cairn.hcl")).expect("config");
    let pinned = |digest: &str| {
        std::fs::write(
            app.path().join("cairn.hcl"),
            format!("plugin \"stamp\" {{\n  checksum = \"sha256:{digest}\"\n}}\n{config}"),
        )
        .expect("write config");
    };
    pinned(&"0".repeat(64));
    let out = cli.run_in(app.path(), &["validate"]).fails();
    assert!(
        out.stderr.contains("and the config pins sha256:0000")
            && out.stderr.contains("not running it"),
        "{out}"
    );
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(&bins().plugin_stamp).expect("the plugin program"),
        ))
    };
    pinned(&digest);

    let up = cli.run_in(app.path(), &["up"]).ok();
    for want in [
        "Building v1 with stamp",
        "✓ Copying the app's files",
        "✓ Writing STAMP",
        "index.html",
        "mapping stamp.Bundle to files.Artifact",
        "✓ Packing the bundle",
    ] {
        assert!(up.stdout.contains(want), "no {want:?} in the output: {up}");
    }
    let url = up.field("Deployment URL").expect("Deployment URL");
    let r = http_get(&format!("{url}/STAMP")).expect("GET STAMP");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body
            .contains("stamped v1 stamped by cairn-plugin-stamp: from the test"),
        "{r:?}"
    );
    let r = http_get(&format!("{url}/index.html")).expect("GET index.html");
    assert!(r.body.contains("stamped"), "{r:?}");
}

/// `up` with a builder `use "NAME" { … }` of the misbehaving plugin.
fn misbehaving_app(name: &str, fields: &str, plugin_block: &str) -> tempfile::TempDir {
    let app = write_app(
        &format!(
            "project = \"plugins\"\n{plugin_block}\napp \"{name}\" {{\n  build {{\n    use \"{name}\" {{\n{fields}\n    }}\n  }}\n  deploy {{\n    use \"process\" {{\n      command = [\"true\"]\n    }}\n  }}\n}}\n"
        ),
        &[],
    );
    install(app.path(), name, &bins().plugin_misbehave);
    app
}

/// No job of `app` is left queued or running.
fn no_job_left(cli: &Cli, app: &str) {
    let jobs = cli.json(&["job", "list"]);
    for j in json::items(&jobs) {
        if j["spec"]["app"] == app {
            assert!(
                j["state"] == "Error",
                "the job of {app} should have failed: {j}"
            );
        }
    }
}

#[test]
fn crashing_hanging_and_garbage_speaking_plugins_fail_the_job_cleanly() {
    let cli = Cli::new();

    // Crashes mid-operation: its exit code and last stderr lines.
    let app = misbehaving_app("crashy", "      mode = \"crash\"", "");
    let out = cli.run_in(app.path(), &["up"]).fails();
    assert!(
        out.stdout
            .contains("plugin \"crashy\" exited with code 3 before it answered")
            || out
                .stderr
                .contains("plugin \"crashy\" exited with code 3 before it answered"),
        "{out}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("about to crash on purpose"),
        "{out}"
    );
    no_job_left(&cli, "crashy");

    // Hangs past its time: stopped, and what it started is killed with it.
    let pidfile = app.path().join("sleep.pid");
    let hang = misbehaving_app(
        "hangs",
        &format!(
            "      mode = \"hang\"\n      pidfile = \"{}\"",
            pidfile.display()
        ),
        "plugin \"hangs\" {\n  timeout = \"3s\"\n}\n",
    );
    let started = std::time::Instant::now();
    let out = cli.run_in(hang.path(), &["up"]).fails();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("plugin \"hangs\" did not finish within 3 s and was stopped"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{out}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the plugin wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    assert_eventually!(
        !pid_alive(pid),
        Duration::from_secs(10),
        "the plugin's child {pid} outlived it"
    );
    no_job_left(&cli, "hangs");

    // Speaks garbage in the middle of an operation.
    let junk = misbehaving_app("talks", "      mode = \"garbage\"", "");
    let out = cli.run_in(junk.path(), &["up"]).fails();
    assert!(
        format!("{}{}", out.stdout, out.stderr)
            .contains("plugin \"talks\" spoke garbage on stdout"),
        "{out}"
    );
    no_job_left(&cli, "talks");

    // Not a plugin at all (a script that prints text): refused before anything is queued.
    let script = write_app("", &[]);
    let program = script.path().join("not-a-plugin");
    std::fs::write(&program, "#!/bin/sh\necho 'usage: not-a-plugin FILE'\n").expect("script");
    std::process::Command::new("chmod")
        .args(["+x"])
        .arg(&program)
        .status()
        .expect("chmod");
    let app = write_app(
        "project = \"plugins\"\napp \"scripted\" {\n  build {\n    use \"scripted\" {}\n  }\n  deploy {\n    use \"process\" {\n      command = [\"true\"]\n    }\n  }\n}\n",
        &[],
    );
    install(app.path(), "scripted", &program);
    let out = cli.run_in(app.path(), &["up"]).fails();
    assert!(
        out.stderr
            .contains("plugin \"scripted\" spoke garbage on stdout"),
        "{out}"
    );
    let jobs = cli.json(&["job", "list"]);
    assert!(
        !json::items(&jobs)
            .iter()
            .any(|j| j["spec"]["app"] == "scripted"),
        "nothing is queued for a plugin that cannot describe itself: {jobs}"
    );
}
