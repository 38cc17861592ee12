//! `corpus-report`: where Cairn stands on the real `waypoint.hcl` files of
//! `../shared/waypoint-corpus` (issue 16). Each file is made ready as
//! [`cairn_tests::corpus::prepare`] does (alone in a git repository, with
//! stubs of the files it reads and values for its variables without default)
//! and `cairn validate` runs there; the table gives, per file, the plan or the
//! kinds of its errors, how many, the time taken and the first error. The test
//! `e2e_corpus` asserts the same outcomes.
//!
//!   cargo build -p cairn-cli -p cairn-tests --bin cairn --bin corpus-report
//!   ./target/debug/corpus-report [--bin-dir DIR] [--corpus DIR]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _};
use cairn_tests::bench::args::Argv;
use cairn_tests::bench::procs::bin_dir;
use cairn_tests::bench::stats::table;
use cairn_tests::corpus;

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

fn run() -> anyhow::Result<()> {
    let mut a = Argv::from_env(USAGE);
    let mut bins: Option<PathBuf> = None;
    let mut corpus_dir = corpus::dir();
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--bin-dir" => bins = Some(PathBuf::from(a.value("--bin-dir")?)),
            "--corpus" => corpus_dir = Some(PathBuf::from(a.value("--corpus")?)),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let Some(corpus_dir) = corpus_dir else {
        bail!("no corpus: ../shared/waypoint-corpus is absent (give --corpus DIR)");
    };
    let cairn = bin_dir(bins.as_ref())?.join("cairn");
    let home = tempfile::tempdir()?;
    let files = corpus::files(&corpus_dir);
    let mut rows = Vec::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let p = corpus::prepare(file)?;
        let started = std::time::Instant::now();
        let out = Command::new(&cairn)
            .args(corpus::validate_args(&p))
            .env("CAIRN_HOME", home.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", cairn.display()))?;
        let ms = started.elapsed().as_millis();
        let o = corpus::Outcome::from_output(&p, &out);
        let summary = o.summary();
        *kinds.entry(summary.clone()).or_default() += 1;
        let first: String = o
            .errors
            .first()
            .map(|e| e.chars().take(100).collect())
            .unwrap_or_default();
        rows.push(vec![
            o.name.chars().take(58).collect(),
            summary,
            o.errors.len().to_string(),
            format!("{ms}"),
            first,
        ]);
    }
    println!(
        "corpus-report: `cairn validate` on {} files of {}",
        files.len(),
        corpus_dir.display()
    );
    println!(
        "{}",
        table(&["file", "outcome", "errors", "ms", "first error"], &rows)
    );
    let summary: Vec<Vec<String>> = kinds
        .iter()
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    println!("{}", table(&["outcome", "files"], &summary));
    Ok(())
}
