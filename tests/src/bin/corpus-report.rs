//! `corpus-report`: where Cairn stands on the real `waypoint.hcl` files of
//! `../shared/waypoint-corpus` (issue 16). Each file is copied alone into an
//! empty directory as `waypoint.hcl` and `cairn validate` runs there; the
//! table says, per file, whether it produced a plan, and otherwise the first
//! error, sorted into a kind (a language feature Cairn lacks, a plugin it
//! lacks, a field, …). A progress report, not a test: issue 16's test asserts
//! the end state.
//!
//!   cargo build -p cairn-cli -p cairn-tests --bin cairn --bin corpus-report
//!   ./target/debug/corpus-report [--bin-dir DIR] [--corpus DIR]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::procs::bin_dir;
use cairn_tests::bench::stats::table;

const USAGE: &str = "usage: corpus-report [--bin-dir DIR] [--corpus DIR]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corpus-report: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hcl_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            hcl_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "hcl") {
            out.push(p);
        }
    }
    Ok(())
}

/// The kind of the first error `validate` printed.
fn kind(err: &str) -> &'static str {
    let e = err.to_lowercase();
    if e.contains("plugin") && (e.contains("unknown") || e.contains("not available")) {
        "plugin missing"
    } else if e.contains("variable") || e.contains("var.") {
        "variables"
    } else if e.contains("function") {
        "function"
    } else if e.contains("field") {
        "plugin field"
    } else if e.contains("not allowed") || e.contains("unknown block") || e.contains("block") {
        "block"
    } else {
        "other"
    }
}

fn run() -> anyhow::Result<()> {
    let mut a = Argv::from_env(USAGE);
    let mut bins: Option<PathBuf> = None;
    let mut corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/waypoint-corpus");
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--bin-dir" => bins = Some(PathBuf::from(a.value("--bin-dir")?)),
            "--corpus" => corpus = PathBuf::from(a.value("--corpus")?),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let cairn = bin_dir(bins.as_ref())?.join("cairn");
    let mut files = Vec::new();
    hcl_files(&corpus, &mut files)?;
    files.sort();
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let dir = tmp.path().join(format!("f{i}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(file, dir.join("waypoint.hcl"))?;
        let out = Command::new(&cairn)
            .arg("-C")
            .arg(&dir)
            .arg("validate")
            .env("CAIRN_HOME", tmp.path().join("home"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", cairn.display()))?;
        let name = file
            .strip_prefix(&corpus)
            .unwrap_or(file)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let (outcome, first) = if out.status.success() {
            ("plan", String::new())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let first = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim_start_matches("error: ")
                .replace(&dir.display().to_string(), "")
                .chars()
                .take(110)
                .collect::<String>();
            (kind(&first), first)
        };
        *kinds.entry(outcome).or_default() += 1;
        rows.push(vec![name.chars().take(60).collect(), outcome.into(), first]);
    }
    println!(
        "corpus-report: `cairn validate` on {} files of {}",
        files.len(),
        corpus.display()
    );
    println!("{}", table(&["file", "outcome", "first error"], &rows));
    let summary: Vec<Vec<String>> = kinds
        .iter()
        .map(|(k, n)| vec![k.to_string(), n.to_string()])
        .collect();
    println!("{}", table(&["outcome", "files"], &summary));
    Ok(())
}
