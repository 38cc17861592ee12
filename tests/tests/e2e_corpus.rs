//! Issue 16's corpus test: `cairn validate` on every real `waypoint.hcl` of
//! `../shared/waypoint-corpus`, each made ready by `cairn_tests::corpus` (a git
//! repository of its own, stubs of the files it reads, values for variables
//! without default). Every file evaluates with no language error: it gives a
//! plan (exit 0), or fails only because a plugin is not available (naming the
//! nearest Cairn equivalent) or a `dynamic()` source cannot be reached, each
//! reported after the whole file was evaluated. Two files name their project
//! (and one its app) with '/', which Cairn's names cannot hold: Cairn takes '-'
//! for it and says so in a note.

use cairn_tests::corpus::{self, Kind};
use cairn_tests::Cli;

/// The files whose project or app name holds '/' (Waypoint allowed it; Cairn's
/// names, which become paths, container names and DNS labels, do not).
const SLASHED_NAMES: &[&str] = &[
    "ansforge_psc-extract__waypoint.hcl",
    "hashicorp_waypoint-examples__learn_input-variables_waypoint.hcl",
];

#[test]
fn every_corpus_file_evaluates_with_no_language_error() {
    let Some(dir) = corpus::dir() else {
        eprintln!("skipped: ../shared/waypoint-corpus is absent (issue 16's corpus test needs it)");
        return;
    };
    let files = corpus::files(&dir);
    assert_eq!(files.len(), 35, "the corpus holds 35 files");
    let cli = Cli::new();
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for file in &files {
        let p = corpus::prepare(file).expect("prepare");
        let args = corpus::validate_args(&p);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli.run(&args);
        let o = corpus::Outcome::new(&p, out.code, &out.stdout, &out.stderr);
        rows.push(format!("{:<80} {}", o.name, o.summary()));
        let allowed = |k: &Kind| matches!(k, Kind::PluginMissing | Kind::Unreachable);
        // A name with '/' is taken with '-' instead, and a note says so (and only then).
        let renamed = o
            .notes
            .iter()
            .any(|n| n.contains("in Cairn (its names hold no '/'"));
        assert_eq!(
            renamed,
            SLASHED_NAMES.contains(&o.name.as_str()),
            "{}: notes {:?}",
            o.name,
            o.notes
        );
        if o.exit != Some(0) && (o.errors.is_empty() || !o.kinds().iter().all(allowed)) {
            bad.push(format!("{}: exit {:?}: {:#?}", o.name, o.exit, o.errors));
        }
        // A file that fails names what is missing: the plugin and the nearest
        // equivalent, or the source and why.
        for e in &o.errors {
            if Kind::of(e) == Kind::PluginMissing {
                assert!(
                    e.contains("; nearest in Cairn: ")
                        || e.contains("or install an external plugin"),
                    "{e}"
                );
            }
            assert!(
                e.contains("waypoint.hcl:"),
                "an error without its file:line:column: {e}"
            );
        }
        // Sensitive values never show, whatever happened.
        assert!(
            !out.stdout.contains("s3cret-registry-pw")
                && !out.stderr.contains("s3cret-registry-pw"),
            "{}: a sensitive value was printed: {out}",
            o.name
        );
    }
    println!("{}", rows.join("\n"));
    assert!(
        bad.is_empty(),
        "files with other errors:\n{}",
        bad.join("\n")
    );
    let plans = rows.iter().filter(|r| r.ends_with(" plan")).count();
    assert!(
        plans >= 5,
        "at least the files whose plugins Cairn has plan: {plans}"
    );
}
