//! The real `waypoint.hcl` files of `../shared/waypoint-corpus`, made ready for `cairn
//! validate`: each copied alone into a git repository of its own (the git functions need
//! one), with stubs of the files it reads while it is evaluated (its repository holds them;
//! the corpus does not) and values for its variables that have no default. The outcome of
//! a run is sorted into kinds: a plan, a plugin Cairn lacks, a config source Cairn cannot
//! reach, or anything else (a language error: what issue 16 rules
//! out).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The corpus folder, or `None` when this checkout has none next to it.
pub fn dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/waypoint-corpus");
    d.is_dir().then_some(d)
}

/// The corpus's files (`NAME/waypoint.hcl`), sorted.
pub fn files(corpus: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(corpus)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("waypoint.hcl"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The folder name of a corpus file (`owner_repo__path`).
pub fn name(file: &Path) -> String {
    file.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Files a config reads while it is evaluated, which its repository holds and the corpus
/// does not: (path relative to the config, content); a path ending in `/` is a directory
/// holding one file.
fn stubs(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "WikiEducationFoundation_WikiEduDashboard__waypoint.hcl" => {
            &[("config/application.yml", "secret_key_base: stub-key\n")]
        }
        "ansforge_psc-extract__waypoint.hcl" => &[(
            "pscextract.nomad.tpl",
            "job \"pscextract\" { datacenters = [\"${datacenter}\"] }\n",
        )],
        "hashicorp_waypoint-examples__docker_reactjs-packer_waypoint.hcl" => {
            &[("Dockerfile", "FROM ${base_image}\n")]
        }
        "hashicorp_waypoint-examples__kubernetes_nodejs-apply_waypoint.hcl" => {
            &[("k8s/deployment.yaml", "kind: Deployment\n")]
        }
        "hashicorp_waypoint-examples__kubernetes_nodejs-helm_waypoint.hcl" => {
            &[("values.yaml.tpl", "replicaCount: 1\n")]
        }
        "hashicorp_waypoint-examples__kubernetes_nodejs-metrics-sidecar_waypoint.hcl" => {
            &[("telegraf.conf", "[agent]\n")]
        }
        "hashicorp_waypoint-examples__nomad_nodejs-jobspec_waypoint.hcl" => {
            &[("app.nomad.tpl", "job \"app\" {}\n")]
        }
        "hashicorp_waypoint__internal_config_testdata_compare_config_file.hcl" => {
            &[("blah.yml", "greeting: ${greeting}\n")]
        }
        "luke-thorne_wasp__waypoint.hcl" => &[("wasp.nomad.tpl", "job \"wasp\" {}\n")],
        _ => &[],
    }
}

/// `--var` values for the variables that have no default.
pub fn values(name: &str) -> &'static [&'static str] {
    match name {
        "hashicorp_waypoint-examples__learn_dynamic-application-configuration_waypoint.hcl" => &[
            "postgres_ip=10.0.0.5",
            "postgres_port=5432",
            "image_name=example/app",
            "image_tag=1",
            "registry_username=someone",
            "registry_password=s3cret-registry-pw",
        ],
        "hashicorp_waypoint-examples__nomad_nodejs-pipeline_waypoint.hcl" => {
            &["username=someone", "password=s3cret-registry-pw"]
        }
        "luke-thorne_wasp__waypoint.hcl" => &[
            "adminWhitelist=[\"0xabc\"]",
            "ghcr={ username = \"u\", password = \"s3cret-registry-pw\", server_address = \"ghcr.io\" }",
        ],
        _ => &[],
    }
}

/// A corpus file made ready in a directory of its own.
pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// Copies `file` into a fresh git repository as `waypoint.hcl`, with its stubs.
pub fn prepare(file: &Path) -> anyhow::Result<Prepared> {
    use anyhow::Context as _;
    let name = name(file);
    let dir = tempfile::tempdir()?;
    std::fs::copy(file, dir.path().join("waypoint.hcl"))
        .with_context(|| format!("copying {}", file.display()))?;
    for (path, content) in stubs(&name) {
        let p = dir.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content)?;
    }
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=corpus",
            "-c",
            "user.email=corpus@example.com",
            "commit",
            "-qm",
            "corpus file",
        ],
    ] {
        let st = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("running git")?;
        anyhow::ensure!(
            st.success(),
            "git {args:?} failed in {}",
            dir.path().display()
        );
    }
    Ok(Prepared { dir, name })
}

/// The `cairn validate` arguments for a prepared file.
pub fn validate_args(p: &Prepared) -> Vec<String> {
    let mut args = vec![
        "-C".to_string(),
        p.dir.path().display().to_string(),
        "validate".into(),
    ];
    for v in values(&p.name) {
        args.push("--var".into());
        args.push(v.to_string());
    }
    args
}

/// What an error line of `cairn validate` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// "plugin X is not available", naming what is nearest.
    PluginMissing,
    /// A `dynamic()` source Cairn cannot reach from here.
    Unreachable,
    /// Anything else: a language error.
    Other,
}

impl Kind {
    pub fn of(line: &str) -> Kind {
        if line.contains("plugin \"") && line.contains("\" is not available") {
            Kind::PluginMissing
        } else if line.contains("which cannot be reached") {
            Kind::Unreachable
        } else {
            Kind::Other
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::PluginMissing => "plugin missing",
            Kind::Unreachable => "source unreachable",
            Kind::Other => "LANGUAGE ERROR",
        }
    }
}

/// The outcome of `cairn validate` on one prepared file.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub exit: Option<i32>,
    /// The `error: …` lines, without the prefix and the temp dir.
    pub errors: Vec<String>,
    /// The `warning: …` lines.
    pub warnings: Vec<String>,
    /// The `note: …` lines (what Cairn took differently, e.g. a name with '/').
    pub notes: Vec<String>,
    pub stdout: String,
}

impl Outcome {
    pub fn from_output(p: &Prepared, out: &Output) -> Outcome {
        Outcome::new(
            p,
            out.status.code(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub fn new(p: &Prepared, exit: Option<i32>, stdout: &str, stderr: &str) -> Outcome {
        let dir = p.dir.path().display().to_string();
        let stderr = stderr.replace(&dir, "");
        let lines = |prefix: &str| -> Vec<String> {
            stderr
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(String::from)
                .collect()
        };
        Outcome {
            name: p.name.clone(),
            exit,
            errors: lines("error: "),
            warnings: lines("warning: "),
            notes: lines("note: "),
            stdout: stdout.to_string(),
        }
    }

    /// The kinds of its errors, sorted and without repeats.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut k: Vec<Kind> = self.errors.iter().map(|e| Kind::of(e)).collect();
        k.sort();
        k.dedup();
        k
    }

    /// "plan" or the kinds of its errors.
    pub fn summary(&self) -> String {
        if self.exit == Some(0) {
            "plan".into()
        } else if self.errors.is_empty() {
            format!("exit {:?}, no error line", self.exit)
        } else {
            self.kinds()
                .iter()
                .map(|k| k.label())
                .collect::<Vec<_>>()
                .join(" + ")
        }
    }
}
