//! `cairn init`: write a starting `cairn.hcl` for the app in a directory, chosen from what
//! the directory holds, and say what was chosen and why.
//!
//! - a `Dockerfile`: built with the `docker` builder and run as a container by the `docker`
//!   platform, on the port of the Dockerfile's first `EXPOSE` (else 8080, said so);
//! - otherwise the directory is packed by the `files` builder and run by the `process`
//!   platform with the first command found: a `Procfile`'s `web:` line, `npm start` for a
//!   `package.json` with a start script, `python3 app.py` / `main.py`, `go run .` for
//!   `main.go`, `cargo run --release` for a `Cargo.toml` with a package or a `[[bin]]`, an
//!   executable named after the directory; else a placeholder the user must edit.
//!
//! `project` and the app are named after the directory, reduced to what Cairn accepts. A
//! `waypoint.hcl` is read as it is, so nothing is written next to one; an existing
//! `cairn.hcl` is replaced only with `--force` (the old one kept as `cairn.hcl.bak`). The text
//! is checked with Cairn's own loader and plugins before it is written (atomically).

use std::path::Path;

use super::Global;

/// `cairn init [--force]`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = "\
What it writes, from what the directory holds (the first that applies):
  Dockerfile          build { use \"docker\" }, deploy { use \"docker\" { service_port } }: the
                      port of the Dockerfile's first EXPOSE, else 8080
  Procfile (web:)     build { use \"files\" }, deploy { use \"process\" } with that command (run
                      through `sh -c` when it needs a shell: $VARS, pipes, &&…)
  package.json        … command = [\"npm\", \"start\"] (when it has scripts.start)
  app.py, main.py     … command = [\"python3\", \"app.py\"]
  main.go             … command = [\"go\", \"run\", \".\"]
  Cargo.toml          … command = [\"cargo\", \"run\", \"--release\"]
  ./DIRNAME           … an executable named after the directory
  anything else       a placeholder command to edit (init says so)
A process app must listen on the port in $PORT. The project and the app are named after the
directory (letters, digits, '-' and '_'; an app name at most 48 of them).

Nothing is written when the directory has a waypoint.hcl (Cairn reads it as it is: try
`cairn validate`), nor over an existing cairn.hcl unless --force is given.

Then: `cairn validate` shows the plan; `cairn up` builds, deploys and releases the app.")]
pub struct InitArgs {
    /// Replace an existing cairn.hcl; the old one is kept as cairn.hcl.bak.
    #[arg(long)]
    pub force: bool,
}

/// The port a Dockerfile app gets when its Dockerfile says none.
pub const DEFAULT_PORT: u16 = 8080;
/// Longest app name Cairn accepts.
const MAX_APP_NAME: usize = 48;
/// Longest project name Cairn accepts.
const MAX_PROJECT_NAME: usize = 128;

/// How the app will be built and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `docker` builder and platform.
    Docker {
        port: u16,
        /// Why this port (e.g. "EXPOSE 3000 in the Dockerfile").
        port_reason: String,
        /// The port is a guess.
        port_guessed: bool,
    },
    /// `files` builder, `process` platform.
    Process {
        command: Vec<String>,
        /// What the command was found from (e.g. "app.py").
        found: String,
        /// The command is a placeholder the user must replace.
        placeholder: bool,
        /// Extra files and folders `files` leaves out.
        exclude: Vec<String>,
        /// `ready_timeout` (seconds) when the command compiles the app first.
        ready_timeout: Option<u64>,
    },
}

/// What `cairn init` writes for a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub project: String,
    pub app: String,
    pub kind: Kind,
    /// The `cairn.hcl` text.
    pub text: String,
}

pub fn run(g: &Global, args: &InitArgs) -> anyhow::Result<i32> {
    let dir = g.dir();
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    for name in ["waypoint.hcl", "waypoint.hcl.json"] {
        if dir.join(name).is_file() {
            println!(
                "{} is here: Cairn reads it as it is, so there is nothing to write.",
                dir.join(name).display()
            );
            println!("Next: `cairn validate` shows what Cairn makes of it; `cairn up` runs it.");
            if args.force {
                eprintln!(
                    "note: --force does not change that: a cairn.hcl would be read instead of {name}"
                );
            }
            return Ok(0);
        }
    }
    let target = dir.join("cairn.hcl");
    let json = dir.join("cairn.hcl.json");
    if !args.force {
        for existing in [&target, &json] {
            if existing.exists() {
                anyhow::bail!(
                    "{} already exists: `cairn init --force` replaces it (keeping it as cairn.hcl.bak)",
                    existing.display()
                );
            }
        }
    }

    let plan = detect(&dir)?;
    // The file must be one Cairn's loader and plugins accept.
    check(&plan.text, &target, &g.catalog)
        .map_err(|e| anyhow::anyhow!("cairn init made a config Cairn refuses (a bug): {e}"))?;

    let mut backup = None;
    if target.exists() {
        let old = std::fs::read(&target)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", target.display()))?;
        let bak = dir.join("cairn.hcl.bak");
        super::fmt::write_atomic(&bak, &old)?;
        backup = Some(bak);
    }
    super::fmt::write_atomic(&target, plan.text.as_bytes())?;

    println!(
        "Wrote {} for project {:?}, app {:?} (named after the directory).",
        target.display(),
        plan.project,
        plan.app
    );
    if let Some(bak) = &backup {
        println!("The cairn.hcl that was there is kept as {}.", bak.display());
    }
    if args.force && json.exists() {
        println!(
            "{} stays, but cairn.hcl is read first from now on.",
            json.display()
        );
    }
    for line in summary(&plan) {
        println!("  {line}");
    }
    if let Kind::Process {
        placeholder: true, ..
    } = &plan.kind
    {
        eprintln!(
            "warning: no way to start the app was found: edit deploy's `command` in {} before `cairn up`",
            target.display()
        );
    }
    println!(
        "Next: `cairn validate` shows the plan; then `cairn up` builds, deploys and releases it."
    );
    Ok(0)
}

/// What was chosen and why, one line each.
fn summary(plan: &Plan) -> Vec<String> {
    match &plan.kind {
        Kind::Docker {
            port,
            port_reason,
            port_guessed,
        } => {
            let mut v = vec![
                "build:  docker: `docker build` of ./Dockerfile (a Dockerfile is here)".to_string(),
                format!("deploy: docker: one container, serving on port {port} ({port_reason})"),
            ];
            if *port_guessed {
                v.push(format!(
                    "        {port} is a guess: set service_port to the port the app listens on"
                ));
            }
            v
        }
        Kind::Process {
            command,
            found,
            placeholder,
            exclude,
            ..
        } => {
            let left_out = base_exclude()
                .iter()
                .map(|s| s.to_string())
                .chain(exclude.iter().cloned())
                .collect::<Vec<_>>()
                .join(", ");
            let mut v = vec![format!(
                "build:  files: packs this directory, without {left_out}"
            )];
            if *placeholder {
                v.push(format!("deploy: process: a placeholder command ({found})"));
            } else {
                v.push(format!(
                    "deploy: process: `{}` (from {found})",
                    command.join(" ")
                ));
            }
            v.push("        the app must listen on the port Cairn gives it in $PORT".into());
            v
        }
    }
}

/// What `files` always leaves out.
fn base_exclude() -> &'static [&'static str] {
    &[".git", "cairn.hcl", "cairn.hcl.bak"]
}

/// Parse and plan `text` as Cairn would (`cairn validate`): an error names what is wrong.
pub fn check(
    text: &str,
    file: &Path,
    catalog: &crate::plugins::Catalog,
) -> Result<crate::config::Config, String> {
    let cfg = crate::config::parse_str(text, file).map_err(|e| e.to_string())?;
    if let Some(g) = cfg.gaps.iter().chain(&cfg.blockers).next() {
        return Err(g.to_string());
    }
    for app in &cfg.apps {
        let plan = super::validate::plan_app(app, catalog);
        if let Some(e) = plan.errors.first() {
            return Err(e.clone());
        }
    }
    Ok(cfg)
}

/// Look at `dir` and make the config for it.
pub fn detect(dir: &Path) -> anyhow::Result<Plan> {
    let abs = std::fs::canonicalize(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    let dir_name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let project = sanitize(&dir_name, MAX_PROJECT_NAME);
    let app = sanitize(&dir_name, MAX_APP_NAME);
    let kind = if abs.join("Dockerfile").is_file() {
        let text = std::fs::read_to_string(abs.join("Dockerfile")).unwrap_or_default();
        let (port, port_reason, port_guessed) = match expose(&text) {
            Expose::Port(p) => (p, format!("EXPOSE {p} in the Dockerfile"), false),
            Expose::Unreadable(raw) => (
                DEFAULT_PORT,
                format!("the Dockerfile's EXPOSE {raw} is not a port number; {DEFAULT_PORT} is the default"),
                true,
            ),
            Expose::None => (
                DEFAULT_PORT,
                format!("the Dockerfile has no EXPOSE; {DEFAULT_PORT} is the default"),
                true,
            ),
        };
        Kind::Docker {
            port,
            port_reason,
            port_guessed,
        }
    } else {
        process_kind(&abs, &dir_name)
    };
    let text = render(&project, &app, &kind);
    Ok(Plan {
        project,
        app,
        kind,
        text,
    })
}

fn process_kind(dir: &Path, dir_name: &str) -> Kind {
    let found = |command: Vec<String>, found: String| Kind::Process {
        command,
        found,
        placeholder: false,
        exclude: Vec::new(),
        ready_timeout: None,
    };
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    if let Ok(text) = std::fs::read_to_string(dir.join("Procfile")) {
        if let Some(cmd) = procfile_web(&text) {
            return match shell_words(&cmd) {
                Some(words) if !words.is_empty() => found(words, "the Procfile's web: line".into()),
                _ => found(
                    vec!["sh".into(), "-c".into(), cmd],
                    "the Procfile's web: line, run by sh -c as it needs a shell".into(),
                ),
            };
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("package.json")) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if v["scripts"]["start"]
                .as_str()
                .is_some_and(|s| !s.trim().is_empty())
            {
                return found(
                    strs(&["npm", "start"]),
                    "package.json's scripts.start; node_modules is packed with the app".into(),
                );
            }
        }
    }
    for py in ["app.py", "main.py"] {
        if dir.join(py).is_file() {
            return Kind::Process {
                command: strs(&["python3", py]),
                found: py.into(),
                placeholder: false,
                exclude: strs(&["__pycache__"]),
                ready_timeout: None,
            };
        }
    }
    if dir.join("main.go").is_file() {
        return Kind::Process {
            command: strs(&["go", "run", "."]),
            found: "main.go".into(),
            placeholder: false,
            exclude: Vec::new(),
            ready_timeout: Some(120),
        };
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) {
        if cargo_has_binary(&text) {
            return Kind::Process {
                command: strs(&["cargo", "run", "--release"]),
                found: "Cargo.toml".into(),
                placeholder: false,
                exclude: strs(&["target"]),
                ready_timeout: Some(900),
            };
        }
    }
    if !dir_name.is_empty() && is_executable(&dir.join(dir_name)) {
        return found(
            vec![format!("./{dir_name}")],
            format!("the executable {dir_name}, named after the directory"),
        );
    }
    Kind::Process {
        command: strs(&[
            "sh",
            "-c",
            "echo 'cairn.hcl: set the command that starts the app' >&2; exit 1",
        ]),
        found: format!(
            "no Dockerfile, Procfile, package.json start script, app.py, main.py, main.go, \
             Cargo.toml or executable ./{dir_name} here: edit cairn.hcl"
        ),
        placeholder: true,
        exclude: Vec::new(),
        ready_timeout: None,
    }
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// The config text for `kind` (in the layout `cairn fmt` gives).
fn render(project: &str, app: &str, kind: &Kind) -> String {
    let mut s = String::new();
    s.push_str("# Written by `cairn init`. `cairn validate` shows the plan; `cairn up` builds,\n");
    s.push_str("# deploys and releases the app.\n");
    s.push_str(&format!("project = {}\n\n", hcl_str(project)));
    s.push_str(&format!("app {} {{\n", hcl_str(app)));
    match kind {
        Kind::Docker {
            port, port_guessed, ..
        } => {
            s.push_str("  build {\n");
            s.push_str(
                "    # `docker build` of ./Dockerfile, with this directory as the context.\n",
            );
            s.push_str("    use \"docker\" {}\n");
            s.push_str("  }\n\n");
            s.push_str("  deploy {\n");
            s.push_str(
                "    # One container of the image. Cairn sets PORT to service_port and sends\n",
            );
            s.push_str("    # the app's traffic there: the app must listen on it.\n");
            if *port_guessed {
                s.push_str(&format!(
                    "    # The Dockerfile has no usable EXPOSE: {port} is a guess, change it to the\n    # app's port.\n"
                ));
            } else {
                s.push_str(&format!("    # {port}: the Dockerfile's EXPOSE.\n"));
            }
            s.push_str("    use \"docker\" {\n");
            s.push_str(&format!("      service_port = {port}\n"));
            s.push_str("    }\n");
            s.push_str("  }\n");
        }
        Kind::Process {
            command,
            found,
            placeholder,
            exclude,
            ready_timeout,
        } => {
            let all: Vec<String> = base_exclude()
                .iter()
                .map(|e| e.to_string())
                .chain(exclude.iter().cloned())
                .collect();
            s.push_str("  build {\n");
            s.push_str(
                "    # Packs this directory into an archive, without what `exclude` lists.\n",
            );
            s.push_str("    use \"files\" {\n");
            s.push_str("      path = \".\"\n");
            s.push_str(&format!("      exclude = {}\n", hcl_list(&all)));
            s.push_str("    }\n");
            s.push_str("  }\n\n");
            s.push_str("  deploy {\n");
            s.push_str(
                "    # Runs the command in the unpacked archive. Cairn gives each instance a port in\n",
            );
            s.push_str("    # $PORT: the app must listen on it.\n");
            if *placeholder {
                s.push_str("    # EDIT THIS: cairn init found no way to start the app. Put the command that\n");
                s.push_str("    # starts it (program and arguments, no shell) in `command`.\n");
            } else {
                s.push_str(&format!(
                    "    # Chosen from {}.\n",
                    found.replace('\n', " ")
                ));
            }
            if ready_timeout.is_some() {
                s.push_str(
                    "    # The command compiles the app first: instances get ready_timeout seconds\n",
                );
                s.push_str("    # to start listening.\n");
            }
            s.push_str("    use \"process\" {\n");
            s.push_str(&format!("      command = {}\n", hcl_list(command)));
            if let Some(t) = ready_timeout {
                s.push_str(&format!("      ready_timeout = {t}\n"));
            }
            s.push_str("    }\n");
            s.push_str("  }\n");
        }
    }
    s.push_str("}\n");
    // Align the `=` and the rest as `cairn fmt` would.
    super::fmt::format_hcl(&s).unwrap_or(s)
}

/// `s` as an HCL quoted string: escapes, and `${`/`%{` doubled so they stay literal.
pub fn hcl_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                o.push(c);
                o.push(c);
            }
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn hcl_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| hcl_str(s)).collect();
    format!("[{}]", parts.join(", "))
}

/// `raw` reduced to what Cairn accepts in a project or app name: ASCII letters and digits,
/// '-' and '_' (anything else becomes '-'), lowercase, starting and ending with a letter or
/// digit, at most `max` characters; "app" when nothing is left.
pub fn sanitize(raw: &str, max: usize) -> String {
    let mut s = String::new();
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_start_matches(['-', '_']);
    let mut s: String = s.chars().take(max).collect();
    while s.ends_with(['-', '_']) {
        s.pop();
    }
    if s.is_empty() {
        "app".into()
    } else {
        s
    }
}

/// What a Dockerfile's first `EXPOSE` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expose {
    Port(u16),
    /// An `EXPOSE` whose first port is not a number (`$PORT`, a range…).
    Unreadable(String),
    None,
}

/// The first `EXPOSE` of a Dockerfile (instructions are case-insensitive; `\` continues a
/// line; `8080/tcp` is 8080).
pub fn expose(dockerfile: &str) -> Expose {
    let mut logical = String::new();
    for raw in dockerfile.lines() {
        let line = raw.trim();
        if logical.is_empty() && line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let full = std::mem::take(&mut logical);
        let mut words = full.split_whitespace();
        if !words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("EXPOSE"))
        {
            continue;
        }
        let Some(first) = words.next() else {
            continue;
        };
        let number = first.split('/').next().unwrap_or(first);
        return match number.parse::<u16>() {
            Ok(p) if p > 0 => Expose::Port(p),
            _ => Expose::Unreadable(first.to_string()),
        };
    }
    Expose::None
}

/// The command of a Procfile's `web:` process.
fn procfile_web(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (name, cmd) = l.trim().split_once(':')?;
        (name.trim() == "web" && !cmd.trim().is_empty()).then(|| cmd.trim().to_string())
    })
}

/// `s` split into words as a POSIX shell would for a simple command: whitespace separates,
/// '…' is literal, "…" keeps `\"`, `\\`, `\$` and `` \` `` escapes, a backslash outside
/// quotes escapes the next character. `None` when the command needs a shell (variables,
/// pipes, redirections, `;`, `&`, globs, `~`, comments, a subshell) or a quote is left open.
pub fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => word.push(c),
                            '\n' => {}
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        '$' | '`' => return None,
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next()? {
                    '\n' => {}
                    c => word.push(c),
                }
            }
            '$' | '`' | '|' | '&' | ';' | '<' | '>' | '(' | ')' | '*' | '?' | '[' => return None,
            '~' | '#' if !in_word => return None,
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// Whether a Cargo.toml describes a binary to run: a `[[bin]]` table, or a `[package]` with
/// a name (its `src/main.rs`). A workspace root without a package is not one.
fn cargo_has_binary(text: &str) -> bool {
    let mut section = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            section = line.replace(' ', "");
            if section == "[[bin]]" {
                return true;
            }
            continue;
        }
        if section == "[package]" {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "name" && !v.trim().trim_matches('"').is_empty() {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> crate::plugins::Catalog {
        crate::plugins::Catalog::builtin()
    }

    /// A directory named `name` (inside a temp dir) holding `files` (name, content,
    /// executable).
    fn dir_with(
        name: &str,
        files: &[(&str, &str, bool)],
    ) -> (tempfile::TempDir, std::path::PathBuf) {
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

    /// `detect` in a fresh dir: the plan, after checking that Cairn's loader and plugins
    /// accept it and that it is already formatted.
    fn detected(name: &str, files: &[(&str, &str, bool)]) -> Plan {
        let (_t, d) = dir_with(name, files);
        let plan = detect(&d).expect("detect");
        let cfg = match check(&plan.text, &d.join("cairn.hcl"), &catalog()) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{}", plan.text),
        };
        assert_eq!(cfg.project, plan.project);
        assert_eq!(cfg.apps.len(), 1);
        assert_eq!(cfg.apps[0].name, plan.app);
        assert_eq!(
            crate::commands::fmt::format_hcl(&plan.text).as_deref(),
            Ok(plan.text.as_str()),
            "not formatted"
        );
        plan
    }

    fn command_of(plan: &Plan) -> Vec<String> {
        match &plan.kind {
            Kind::Process { command, .. } => command.clone(),
            other => panic!("not a process app: {other:?}"),
        }
    }

    #[test]
    fn dockerfile_gives_docker_with_the_exposed_port() {
        let plan = detected(
            "web",
            &[(
                "Dockerfile",
                "FROM x\n# EXPOSE 1\nexpose 3000/tcp 4000\n",
                false,
            )],
        );
        assert!(matches!(
            plan.kind,
            Kind::Docker {
                port: 3000,
                port_guessed: false,
                ..
            }
        ));
        assert!(plan.text.contains("service_port = 3000"), "{}", plan.text);
        assert!(plan.text.contains("use \"docker\" {}"), "{}", plan.text);

        let plan = detected("web", &[("Dockerfile", "FROM x\n", false)]);
        assert!(matches!(
            plan.kind,
            Kind::Docker {
                port: 8080,
                port_guessed: true,
                ..
            }
        ));
        assert!(plan.text.contains("service_port = 8080"));
        let plan = detected("web", &[("Dockerfile", "FROM x\nEXPOSE $PORT\n", false)]);
        assert!(matches!(
            plan.kind,
            Kind::Docker {
                port: 8080,
                port_guessed: true,
                ..
            }
        ));
    }

    #[test]
    fn process_commands_in_order() {
        // A Procfile wins over everything else but a Dockerfile.
        let plan = detected(
            "shop",
            &[
                (
                    "Procfile",
                    "worker: x\nweb: gunicorn 'app:create()' -w \"2\"\n",
                    false,
                ),
                ("app.py", "", false),
            ],
        );
        assert_eq!(command_of(&plan), ["gunicorn", "app:create()", "-w", "2"]);
        // One that needs a shell is run by sh -c.
        let plan = detected(
            "shop",
            &[("Procfile", "web: bin/server --port $PORT\n", false)],
        );
        assert_eq!(command_of(&plan), ["sh", "-c", "bin/server --port $PORT"]);
        assert!(plan.text.contains("$PORT"), "{}", plan.text);

        let plan = detected(
            "n",
            &[
                ("package.json", r#"{"scripts": {"start": "node ."}}"#, false),
                ("main.py", "", false),
            ],
        );
        assert_eq!(command_of(&plan), ["npm", "start"]);
        // Without a start script, package.json does not count.
        let plan = detected(
            "n",
            &[("package.json", "{}", false), ("main.py", "", false)],
        );
        assert_eq!(command_of(&plan), ["python3", "main.py"]);
        let plan = detected("p", &[("app.py", "", false), ("main.py", "", false)]);
        assert_eq!(command_of(&plan), ["python3", "app.py"]);
        let plan = detected(
            "g",
            &[
                ("main.go", "package main", false),
                ("Cargo.toml", "[package]\nname = \"x\"\n", false),
            ],
        );
        assert_eq!(command_of(&plan), ["go", "run", "."]);
        let plan = detected("r", &[("Cargo.toml", "[package]\nname = \"x\"\n", false)]);
        assert_eq!(command_of(&plan), ["cargo", "run", "--release"]);
        assert!(plan.text.contains("\"target\""), "{}", plan.text);
        // A workspace root has nothing to run.
        let plan = detected(
            "r",
            &[("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n", false)],
        );
        assert!(matches!(
            plan.kind,
            Kind::Process {
                placeholder: true,
                ..
            }
        ));
        let plan = detected("tool", &[("tool", "#!/bin/sh\n", true)]);
        assert_eq!(command_of(&plan), ["./tool"]);
        // Not executable: not a command.
        let plan = detected("tool", &[("tool", "#!/bin/sh\n", false)]);
        assert!(matches!(
            plan.kind,
            Kind::Process {
                placeholder: true,
                ..
            }
        ));
        assert!(plan.text.contains("EDIT THIS"), "{}", plan.text);
        assert!(plan.text.contains("$PORT"), "{}", plan.text);
    }

    #[test]
    fn names_follow_cairns_rules() {
        assert_eq!(sanitize("My App (v2)", 48), "my-app-v2");
        assert_eq!(sanitize("__x__", 48), "x");
        assert_eq!(sanitize("日本", 48), "app");
        assert_eq!(sanitize("café.bar", 48), "caf-bar");
        let long = "a".repeat(60);
        assert_eq!(sanitize(&long, 48).len(), 48);
        assert_eq!(
            sanitize(&format!("{}-b", "a".repeat(47)), 48),
            "a".repeat(47)
        );
        let plan = detected("Weird Name.d", &[("app.py", "", false)]);
        assert_eq!(
            (plan.project.as_str(), plan.app.as_str()),
            ("weird-name-d", "weird-name-d")
        );
    }

    #[test]
    fn shell_words_split_like_sh() {
        assert_eq!(
            shell_words(r#"a 'b c' "d \"e\" \\" f\ g"#),
            Some(vec![
                "a".into(),
                "b c".into(),
                "d \"e\" \\".into(),
                "f g".into()
            ])
        );
        assert_eq!(shell_words("a 'b"), None);
        assert_eq!(shell_words("a && b"), None);
        assert_eq!(shell_words("a \"$X\""), None);
        assert_eq!(
            shell_words("a 'costs $5'"),
            Some(vec!["a".into(), "costs $5".into()])
        );
    }

    #[test]
    fn hcl_strings_escape_templates() {
        assert_eq!(
            hcl_str(r#"a"b\c ${x} %{y} $5"#),
            r#""a\"b\\c $${x} %%{y} $5""#
        );
        let text = format!("project = {}\n", hcl_str("${x}\"\\%{"));
        let v: serde_json::Value =
            hcl::eval::from_str(&text, &hcl::eval::Context::new()).expect("evaluates");
        assert_eq!(v["project"], "${x}\"\\%{");
    }
}
