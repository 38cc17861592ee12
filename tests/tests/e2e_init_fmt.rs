//! `cairn init` (a starting cairn.hcl from what a directory holds, which `cairn validate`
//! accepts) and `cairn fmt` (the canonical layout, `--check`, `--diff`, errors located,
//! nothing written on an error, idempotent on the Waypoint corpus). Neither needs a node.

use std::path::{Path, PathBuf};

use cairn_tests::{write_app, Cli, TempDir};

/// A directory named `name` inside a fresh temp dir, holding `files` (name, content,
/// executable).
fn app_dir(name: &str, files: Files) -> (TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let d = t.path().join(name);
    std::fs::create_dir(&d).expect("mkdir");
    for (f, text, exec) in files {
        std::fs::write(d.join(f), text).expect("write");
        if *exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
    }
    (t, d)
}

/// Files of a directory: name, content, executable.
type Files<'a> = &'a [(&'a str, &'a str, bool)];

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn init_fmt_init_writes_a_config_that_validates_for_each_kind() {
    let cli = Cli::new();
    // (what the directory holds, what cairn.hcl must say, what init must print)
    let cases: &[(Files, &[&str], &[&str])] = &[
        (
            &[("Dockerfile", "FROM scratch\nEXPOSE 5000/tcp\n", false)],
            &["use \"docker\" {}", "service_port = 5000"],
            &["EXPOSE 5000"],
        ),
        (
            &[("Dockerfile", "FROM scratch\n", false)],
            &["service_port = 8080"],
            &["no EXPOSE", "8080 is a guess"],
        ),
        (
            &[
                ("Procfile", "web: ./serve --port $PORT\n", false),
                ("app.py", "", false),
            ],
            &[
                "use \"files\"",
                r#"command = ["sh", "-c", "./serve --port $PORT"]"#,
            ],
            &["Procfile"],
        ),
        (
            &[("Procfile", "web: gunicorn 'app:make()' -w 2\n", false)],
            &[r#"command = ["gunicorn", "app:make()", "-w", "2"]"#],
            &["Procfile"],
        ),
        (
            &[(
                "package.json",
                r#"{"scripts": {"start": "node server.js"}}"#,
                false,
            )],
            &[r#"command = ["npm", "start"]"#],
            &["npm start"],
        ),
        (
            &[("app.py", "print()\n", false)],
            &[r#"command = ["python3", "app.py"]"#, "$PORT"],
            &["python3 app.py", "$PORT"],
        ),
        (
            &[("main.py", "print()\n", false)],
            &[r#"command = ["python3", "main.py"]"#],
            &["main.py"],
        ),
        (
            &[("main.go", "package main\n", false)],
            &[r#"command       = ["go", "run", "."]"#, "ready_timeout = "],
            &["go run ."],
        ),
        (
            &[("Cargo.toml", "[package]\nname = \"svc\"\n", false)],
            &[
                r#"command       = ["cargo", "run", "--release"]"#,
                "\"target\"",
            ],
            &["cargo run --release"],
        ),
        (
            &[("my-svc", "#!/bin/sh\nexit 0\n", true)],
            &[r#"command = ["./my-svc"]"#],
            &["./my-svc"],
        ),
        (
            &[("README", "nothing to run\n", false)],
            &["EDIT THIS", "command = [\"sh\", \"-c\""],
            &["placeholder"],
        ),
    ];
    for (files, in_file, said) in cases {
        let (_t, dir) = app_dir("my-svc", files);
        let out = cli.run_in(&dir, &["init"]).ok();
        let text = read(&dir.join("cairn.hcl"));
        let what = format!("{files:?}\n--- cairn.hcl ---\n{text}\n{out}");
        assert!(text.contains("project = \"my-svc\""), "{what}");
        assert!(text.contains("app \"my-svc\" {"), "{what}");
        for want in *in_file {
            assert!(text.contains(want), "cairn.hcl lacks {want:?}: {what}");
        }
        for want in *said {
            assert!(
                out.stdout.contains(want) || out.stderr.contains(want),
                "init did not say {want:?}: {what}"
            );
        }
        assert!(
            out.stdout.contains("`cairn validate`") && out.stdout.contains("`cairn up`"),
            "no next step: {what}"
        );
        // What init writes passes Cairn's loader and checks, and is already formatted.
        let v = cli.run_in(&dir, &["validate"]);
        assert!(v.success(), "validate refused it: {what}\n{v}");
        assert!(v.stdout.contains("the plan holds"), "{what}\n{v}");
        cli.run_in(&dir, &["fmt", "--check"]).ok();
        // Nothing else was left behind (no temp file, no backup).
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = files
            .iter()
            .map(|(f, _, _)| f.to_string())
            .chain(["cairn.hcl".to_string()])
            .collect();
        want.sort();
        assert_eq!(names, want, "{what}");
    }
}

#[test]
fn init_fmt_init_names_the_project_after_the_directory() {
    let cli = Cli::new();
    let long = format!("My Service.v2 {}", "x".repeat(60));
    let (_t, dir) = app_dir(&long, &[("app.py", "", false)]);
    cli.run_in(&dir, &["init"]).ok();
    let text = read(&dir.join("cairn.hcl"));
    let project = format!("my-service-v2-{}", "x".repeat(60));
    let app = &project[..48];
    assert!(text.contains(&format!("project = \"{project}\"")), "{text}");
    assert!(text.contains(&format!("app \"{app}\" {{")), "{text}");
    cli.run_in(&dir, &["validate"]).ok();
}

#[test]
fn init_fmt_init_refuses_to_overwrite_unless_forced_and_keeps_a_backup() {
    let cli = Cli::new();
    let old = "project = \"mine\"\n# my own\n";
    let dir = write_app(old, &[("app.py", "")]);
    let out = cli.run_in(dir.path(), &["init"]).fails();
    assert!(out.stderr.contains("already exists"), "{out}");
    assert!(out.stderr.contains("--force"), "{out}");
    assert_eq!(read(&dir.path().join("cairn.hcl")), old);
    assert!(!dir.path().join("cairn.hcl.bak").exists());

    let out = cli.run_in(dir.path(), &["init", "--force"]).ok();
    assert!(out.stdout.contains("cairn.hcl.bak"), "{out}");
    assert_eq!(read(&dir.path().join("cairn.hcl.bak")), old);
    let new = read(&dir.path().join("cairn.hcl"));
    assert!(new.contains(r#"command = ["python3", "app.py"]"#), "{new}");
    cli.run_in(dir.path(), &["validate"]).ok();
}

#[test]
fn init_fmt_init_leaves_a_waypoint_hcl_alone() {
    let cli = Cli::new();
    let t = tempfile::tempdir().expect("tempdir");
    let wp = "project = \"wp\"\n\napp \"web\" {\n  build {\n    use \"files\" {}\n  }\n  deploy {\n    use \"process\" {\n      command = [\"true\"]\n    }\n  }\n}\n";
    std::fs::write(t.path().join("waypoint.hcl"), wp).expect("write");
    std::fs::write(t.path().join("Dockerfile"), "FROM scratch\n").expect("write");
    for args in [&["init"][..], &["init", "--force"][..]] {
        let out = cli.run_in(t.path(), args).ok();
        assert!(out.stdout.contains("reads it as it is"), "{out}");
        assert!(out.stdout.contains("`cairn validate`"), "{out}");
        assert!(!t.path().join("cairn.hcl").exists(), "{out}");
        assert_eq!(read(&t.path().join("waypoint.hcl")), wp);
    }
}

const MESSY: &str = "project=\"x\"\n\n\n\napp \"web\" {\n\n\tbuild {\n      use \"files\" {\n path = \".\"   \n        exclude=[\"cairn.hcl\"] # not packed\n      }\n  }\n  deploy {\n    use \"process\" {\n      command = [\"python3\", \"app.py\"]\n      count = 2\n    }\n\n  }\n}";

const TIDY: &str = "project = \"x\"\n\napp \"web\" {\n  build {\n    use \"files\" {\n      path    = \".\"\n      exclude = [\"cairn.hcl\"] # not packed\n    }\n  }\n  deploy {\n    use \"process\" {\n      command = [\"python3\", \"app.py\"]\n      count   = 2\n    }\n  }\n}\n";

#[test]
fn init_fmt_fmt_rewrites_checks_and_diffs() {
    let cli = Cli::new();
    let dir = write_app(MESSY, &[]);
    let file = dir.path().join("cairn.hcl");

    // --check: nothing written, exit 1, the file named.
    let out = cli.run_in(dir.path(), &["fmt", "--check"]).fails();
    assert!(out.stdout.contains("would reformat"), "{out}");
    assert!(out.stdout.contains("cairn.hcl"), "{out}");
    assert_eq!(read(&file), MESSY);

    // --check --diff: the changes, still nothing written.
    let out = cli
        .run_in(dir.path(), &["fmt", "--check", "--diff"])
        .fails();
    for want in [
        "+++ ",
        "@@ -",
        "-project=\"x\"\n",
        "+project = \"x\"\n",
        "+      count   = 2\n",
        "\\ No newline at end of file",
    ] {
        assert!(out.stdout.contains(want), "no {want:?}: {out}");
    }
    assert_eq!(read(&file), MESSY);

    // fmt: written, canonical; then it is a fixed point.
    let out = cli.run_in(dir.path(), &["fmt"]).ok();
    assert!(out.stdout.contains("formatted"), "{out}");
    assert_eq!(read(&file), TIDY);
    let out = cli.run_in(dir.path(), &["fmt", "--check"]).ok();
    assert!(out.stdout.contains("already formatted"), "{out}");
    let out = cli.run_in(dir.path(), &["fmt", "--diff"]).ok();
    assert!(!out.stdout.contains("@@"), "{out}");
    assert_eq!(read(&file), TIDY);
    cli.run_in(dir.path(), &["validate"]).ok();

    // Files named on the command line (relative to -C), a directory for its config.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(sub.join("waypoint.hcl"), MESSY).expect("write");
    std::fs::write(dir.path().join("other.hcl"), "a=1\n").expect("write");
    let out = cli
        .run_in(dir.path(), &["fmt", "--check", "other.hcl", "sub"])
        .fails();
    assert!(out.stdout.contains("other.hcl"), "{out}");
    assert!(out.stdout.contains("waypoint.hcl"), "{out}");
    cli.run_in(dir.path(), &["fmt", "other.hcl", "sub"]).ok();
    assert_eq!(read(&dir.path().join("other.hcl")), "a = 1\n");
    assert_eq!(read(&sub.join("waypoint.hcl")), TIDY);
}

#[test]
fn init_fmt_fmt_reports_syntax_errors_and_writes_nothing() {
    let cli = Cli::new();
    let broken = "project = \"x\"\napp \"web\" {\n  build = {\n";
    let dir = write_app(broken, &[]);
    std::fs::write(dir.path().join("ok.hcl"), "a=1\n").expect("write");
    let out = cli
        .run_in(dir.path(), &["fmt", "cairn.hcl", "ok.hcl"])
        .fails();
    assert!(out.stderr.contains("cairn.hcl:"), "{out}");
    let located = out.stderr.lines().any(|l| {
        l.split("cairn.hcl:")
            .nth(1)
            .and_then(|rest| {
                let mut it = rest.split(':');
                Some((
                    it.next()?.parse::<usize>().ok()?,
                    it.next()?.parse::<usize>().ok()?,
                ))
            })
            .is_some()
    });
    assert!(located, "no file:line:col: {out}");
    assert!(out.stderr.contains("nothing was written"), "{out}");
    // Neither the broken file nor the good one was touched.
    assert_eq!(read(&dir.path().join("cairn.hcl")), broken);
    assert_eq!(read(&dir.path().join("ok.hcl")), "a=1\n");

    // A file that is not there.
    let out = cli.run_in(dir.path(), &["fmt", "missing.hcl"]).fails();
    assert!(out.stderr.contains("missing.hcl"), "{out}");
}

#[test]
fn init_fmt_fmt_leaves_json_alone() {
    let cli = Cli::new();
    let t = tempfile::tempdir().expect("tempdir");
    let json = "{\"project\":   \"x\"}";
    std::fs::write(t.path().join("cairn.hcl.json"), json).expect("write");
    let out = cli.run_in(t.path(), &["fmt"]).ok();
    assert!(out.stderr.contains("left as it is"), "{out}");
    assert_eq!(read(&t.path().join("cairn.hcl.json")), json);
    cli.run_in(t.path(), &["fmt", "--check"]).ok();
}

/// Every `waypoint.hcl` of the shared corpus, formatted in a temp dir: the result parses to
/// the same structure, and formatting it again changes nothing.
#[test]
fn init_fmt_fmt_corpus_is_idempotent_and_keeps_structure() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/waypoint-corpus");
    if !corpus.is_dir() {
        eprintln!(
            "skipped: no Waypoint corpus at {} (the shared folder is absent)",
            corpus.display()
        );
        return;
    }
    let files = cairn_tests::corpus::files(&corpus);
    assert!(
        !files.is_empty(),
        "no */waypoint.hcl in {}",
        corpus.display()
    );
    let cli = Cli::new();
    for file in &files {
        let name = cairn_tests::corpus::name(file);
        let original = read(file);
        let t = tempfile::tempdir().expect("tempdir");
        let copy = t.path().join("waypoint.hcl");
        std::fs::write(&copy, &original).expect("write");
        let out = cli.run_in(t.path(), &["fmt"]);
        assert!(out.success(), "{name}: {out}");
        let once = read(&copy);
        assert_eq!(
            cairn_cli::commands::fmt::same_structure(&original, &once),
            Ok(true),
            "{name}: formatting changed the structure\n--- formatted ---\n{once}"
        );
        let again = cli.run_in(t.path(), &["fmt", "--check", "--diff"]);
        assert!(again.success(), "{name}: not idempotent: {again}");
        assert_eq!(read(&copy), once, "{name}");
    }
}
