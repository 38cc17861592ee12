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

/// Issue 18: the corpus's kubernetes configs validate: every `kubernetes` and
/// `kubernetes-apply` stage is accepted as Waypoint's users wrote it (what fails in those
/// files is only a plugin Cairn lacks elsewhere, such as `pack`, or an unreachable source),
/// and `helm` is refused naming `kubernetes-apply`.
#[test]
fn the_corpus_kubernetes_stages_validate() {
    let Some(dir) = corpus::dir() else {
        eprintln!("skipped: ../shared/waypoint-corpus is absent");
        return;
    };
    let cli = Cli::new();
    let mut kubernetes = Vec::new();
    for file in corpus::files(&dir) {
        let text = std::fs::read_to_string(&file).expect("read");
        let uses = |p: &str| text.contains(&format!("use \"{p}\""));
        if !(uses("kubernetes") || uses("kubernetes-apply") || uses("helm")) {
            continue;
        }
        let p = corpus::prepare(&file).expect("prepare");
        let args = corpus::validate_args(&p);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli.run(&args);
        let o = corpus::Outcome::new(&p, out.code, &out.stdout, &out.stderr);
        for e in &o.errors {
            assert!(
                !e.contains("plugin \"kubernetes")
                    && !e.contains("\"kubernetes\" is not available")
                    && !e.contains("\"kubernetes-apply\" is not available"),
                "{}: a kubernetes stage was refused: {e}",
                o.name
            );
            if e.contains("plugin \"helm\" is not available") {
                assert!(e.contains("nearest in Cairn: kubernetes-apply"), "{e}");
            }
        }
        kubernetes.push((o.name.clone(), o.summary()));
    }
    println!("{kubernetes:#?}");
    assert_eq!(
        kubernetes.len(),
        10,
        "the corpus's kubernetes configs: {kubernetes:#?}"
    );
    // The one whose plugins are all Cairn's plans outright (it deploys in e2e_kubernetes).
    assert!(
        kubernetes
            .iter()
            .any(|(n, s)| n.contains("go-workspace-pull") && s == "plan"),
        "{kubernetes:#?}"
    );
}
