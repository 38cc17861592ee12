//! Cairn's own config corpus (`tests/configs/`, see its README): valid configs and the
//! plan `cairn validate --json` must print for each, invalid ones and the exact errors
//! `cairn validate` must print. `CAIRN_UPDATE_EXPECT=1` rewrites the expected files.

use std::path::{Path, PathBuf};

use cairn_tests::{workspace_root, Cli};

struct Case {
    name: String,
    hcl: PathBuf,
}

fn cases(kind: &str) -> Vec<Case> {
    let dir = workspace_root().join("tests/configs").join(kind);
    let mut out: Vec<Case> = std::fs::read_dir(&dir)
        .expect("tests/configs")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hcl"))
        .map(|p| Case {
            name: p.file_stem().expect("stem").to_string_lossy().into_owned(),
            hcl: p,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn sibling(case: &Case, ext: &str) -> PathBuf {
    case.hcl.with_extension(ext)
}

/// Runs `cairn validate` (plus `extra` args) on the case in a fresh directory; returns
/// (exit code, stdout, stderr) with the directory written as `$DIR`.
fn run(cli: &Cli, case: &Case, extra: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = if case.name.starts_with("waypoint-") {
        "waypoint.hcl"
    } else {
        "cairn.hcl"
    };
    std::fs::copy(&case.hcl, dir.path().join(file)).expect("copy config");
    let files = case.hcl.with_extension("files");
    if files.is_dir() {
        cairn_tests::docker::copy_tree(&files, dir.path());
    }
    let mut args: Vec<String> = vec![
        "-C".into(),
        dir.path().display().to_string(),
        "validate".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Ok(text) = std::fs::read_to_string(sibling(case, "args")) {
        let d = dir.path().display().to_string();
        args.extend(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.replace("$DIR", &d)),
        );
    }
    let mut env: Vec<(String, String)> = vec![(
        "XDG_CACHE_HOME".into(),
        dir.path().join(".cache").display().to_string(),
    )];
    if let Ok(text) = std::fs::read_to_string(sibling(case, "env")) {
        env.extend(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = cli.run_env(&env, &args);
    let d = dir.path().display().to_string();
    (
        out.code,
        out.stdout.replace(&d, "$DIR"),
        out.stderr.replace(&d, "$DIR"),
    )
}

/// `got` equals the expected file (or rewrites it with CAIRN_UPDATE_EXPECT=1).
fn expect(path: &Path, got: &str, case: &str) {
    if std::env::var_os("CAIRN_UPDATE_EXPECT").is_some() {
        std::fs::write(path, got).expect("write expected");
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "{case}: no {} (CAIRN_UPDATE_EXPECT=1 writes it)",
            path.display()
        )
    });
    assert_eq!(got, want, "{case}: differs from {}", path.display());
}

#[test]
fn valid_configs_produce_their_plans() {
    let cli = Cli::new();
    let cases = cases("valid");
    assert!(cases.len() >= 3, "valid cases: {}", cases.len());
    for case in &cases {
        let (code, stdout, stderr) = run(&cli, case, &["--json"]);
        assert_eq!(code, Some(0), "{}: {stdout}\n{stderr}", case.name);
        expect(&sibling(case, "plan.json"), &stdout, &case.name);
        // Sensitive values never show, in the plan or anywhere else.
        for secret in ["s3cret-token-value", "hunter2-file-secret"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{}: {secret} was printed",
                case.name
            );
        }
    }
}

#[test]
fn invalid_configs_print_their_errors() {
    let cli = Cli::new();
    let cases = cases("invalid");
    assert!(cases.len() >= 5, "invalid cases: {}", cases.len());
    for case in &cases {
        let (code, stdout, stderr) = run(&cli, case, &[]);
        assert_eq!(code, Some(1), "{}: {stdout}\n{stderr}", case.name);
        expect(&sibling(case, "err"), &stderr, &case.name);
    }
}
