//! App configuration as every binary sees it: which names are environment
//! variable names, how scopes override each other when an app's environment
//! is resolved, how secrets are shown, and the reserved marker that records
//! which variables a config file (`config { env = … }` in `cairn.hcl`) set.
//!
//! Precedence, most specific first: **workspace-app > app > workspace >
//! project** ([`rank`]). [`resolve_env`] is the one place that applies it;
//! the runner uses it for the `process` platform, and the entrypoint can use
//! it as is.
//!
//! Names starting with [`RESERVED_PREFIX`] are Cairn's own bookkeeping (never
//! valid environment names, so they cannot collide with a user's variable):
//! they are skipped by [`resolve_env`] and hidden from listings.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::types::{ConfigScope, ConfigVar};

/// What listings show instead of a secret's value.
pub const SECRET_MASK: &str = "********";

/// Names with this prefix are reserved for Cairn.
pub const RESERVED_PREFIX: &str = "cairn.";

/// The reserved variable, one per scope, whose value records the variables
/// of that scope set from a config file: see [`FromFile`].
pub const FROM_FILE: &str = "cairn.from_file";

/// `config { file = { PATH = CONTENT } }` entries are stored as variables named this prefix
/// and the path: reserved (never an environment variable, skipped by [`resolve_env`]),
/// resolved by the same precedence ([`resolve_files`]), and handed to entrypoints of protocol
/// version 5 or later, which write them into the instance.
pub const FILE_PREFIX: &str = "cairn.file.";

/// The variable name a config file entry for `path` is stored under.
pub fn file_var(path: &str) -> String {
    format!("{FILE_PREFIX}{path}")
}

/// The file path a variable named `name` holds, when it is a config file entry.
pub fn file_path(name: &str) -> Option<&str> {
    name.strip_prefix(FILE_PREFIX).filter(|p| !p.is_empty())
}

/// Values of a config's input variables stored on the cluster (`cairn var set`) are
/// variables named this prefix and the input variable's name, in the project's or a
/// workspace's scope: reserved (never an environment variable, never sent to an instance),
/// read by the CLI and runners that evaluate the config ([`resolve_inputs`]).
pub const INPUT_PREFIX: &str = "cairn.var.";

/// The config variable an input variable's stored value is kept in.
pub fn input_var(name: &str) -> String {
    format!("{INPUT_PREFIX}{name}")
}

/// The input variable a config variable named `name` stores a value of.
pub fn input_name(name: &str) -> Option<&str> {
    name.strip_prefix(INPUT_PREFIX).filter(|p| !p.is_empty())
}

/// The stored input variable values for `project` in `workspace` (a workspace's value
/// wins over the project's): name → (value, the scope it came from).
pub fn resolve_inputs<'a>(
    vars: &'a [ConfigVar],
    project: &str,
    workspace: &str,
) -> BTreeMap<String, (&'a str, &'a ConfigScope)> {
    let mut best: BTreeMap<String, (u8, &ConfigVar)> = BTreeMap::new();
    for v in vars {
        let Some(name) = input_name(&v.name) else {
            continue;
        };
        let r = match &v.scope {
            ConfigScope::Project(p) if p == project => 0,
            ConfigScope::Workspace {
                project: p,
                workspace: w,
            } if p == project && w == workspace => 1,
            _ => continue,
        };
        if best.get(name).is_none_or(|(have, _)| *have < r) {
            best.insert(name.to_string(), (r, v));
        }
    }
    best.into_iter()
        .map(|(k, (_, v))| (k, (v.value.as_str(), &v.scope)))
        .collect()
}

/// `url { auto_hostname = false }` in the config, as `cairn up` stores it (at the project's
/// scope for the top-level block, the app's for an app's): the ingress then does not answer
/// for the app's release at `APP.DOMAIN` (`APP.WORKSPACE.DOMAIN`); its registered hostnames
/// and its deployments' `APP--vN` names still work. Reserved, so never an env var.
pub const AUTO_HOSTNAME: &str = "cairn.url.auto_hostname";

/// Whether the app's release answers at its own name: the most specific scope that sets
/// [`AUTO_HOSTNAME`] decides (as for env), `get` reading one scope's value.
pub fn auto_hostname<'a>(
    get: impl Fn(&ConfigScope) -> Option<&'a str>,
    project: &str,
    app: &str,
    workspace: &str,
) -> bool {
    scopes_for(project, app, workspace)
        .iter()
        .rev()
        .find_map(&get)
        .is_none_or(|v| v != "false")
}

/// Longest variable name (the node enforces the same limit).
pub const MAX_NAME: usize = 256;
/// Longest variable value in bytes (the node enforces the same limit).
pub const MAX_VALUE: usize = 64 * 1024;

/// Largest environment an app's configuration may resolve to, in bytes
/// ([`env_size`]: each `NAME=value` and its terminating NUL). The kernel
/// refuses to start a process whose arguments and environment together pass
/// `ARG_MAX` (2 MiB with the usual 8 MiB stack) with E2BIG; a quarter of that
/// leaves room for the platform's own variables, the inherited environment
/// and the command line. The node refuses a config change past it.
pub const MAX_ENV_BYTES: usize = 512 * 1024;

/// The bytes `env` takes in a process's environment block: each
/// `NAME=value` plus its terminating NUL (plus the pointer to it, as the
/// kernel counts them against `ARG_MAX`).
pub fn env_size<'a>(env: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    env.into_iter()
        .map(|(k, v)| k.len() + 1 + v.len() + 1 + std::mem::size_of::<usize>())
        .sum()
}

/// Whether `name` is one of Cairn's reserved names.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// Why `name` cannot be an environment variable name, or `Ok`: a letter or
/// `_`, then letters, digits and `_` (ASCII), at most [`MAX_NAME`] bytes.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("the name is empty".into());
    };
    if name.len() > MAX_NAME {
        return Err(format!("the name is longer than {MAX_NAME} bytes"));
    }
    if first.is_ascii_digit() {
        return Err("a name cannot start with a digit".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "{bad:?} is not allowed in an environment variable name (use letters, digits and '_')"
        ));
    }
    Ok(())
}

/// How specific `scope` is for the app `app` of `project` in `workspace`
/// (higher wins), or `None` when it does not apply to that app.
pub fn rank(scope: &ConfigScope, project: &str, app: &str, workspace: &str) -> Option<u8> {
    match scope {
        ConfigScope::Project(p) if p == project => Some(0),
        ConfigScope::Workspace {
            project: p,
            workspace: w,
        } if p == project && w == workspace => Some(1),
        ConfigScope::App { project: p, app: a } if p == project && a == app => Some(2),
        ConfigScope::WorkspaceApp {
            project: p,
            app: a,
            workspace: w,
        } if p == project && a == app && w == workspace => Some(3),
        _ => None,
    }
}

/// The scopes that apply to an app, least specific first: the scopes to
/// read to resolve its environment.
pub fn scopes_for(project: &str, app: &str, workspace: &str) -> [ConfigScope; 4] {
    [
        ConfigScope::Project(project.into()),
        ConfigScope::Workspace {
            project: project.into(),
            workspace: workspace.into(),
        },
        ConfigScope::App {
            project: project.into(),
            app: app.into(),
        },
        ConfigScope::WorkspaceApp {
            project: project.into(),
            app: app.into(),
            workspace: workspace.into(),
        },
    ]
}

/// The environment the app `app` of `project` gets in `workspace`: for each
/// name, the value of the most specific scope that sets it ([`rank`]).
/// Variables of other projects, apps or workspaces and reserved names are
/// ignored, so `vars` may hold more than the app's scopes.
pub fn resolve_env(
    vars: &[ConfigVar],
    project: &str,
    app: &str,
    workspace: &str,
) -> BTreeMap<String, String> {
    resolve_by(vars, project, app, workspace, |name| {
        (!is_reserved(name)).then_some(name)
    })
}

/// For each key `key_of` gives a variable (`None`: not this kind of variable), the value of
/// the most specific scope that applies to the app ([`rank`]).
fn resolve_by(
    vars: &[ConfigVar],
    project: &str,
    app: &str,
    workspace: &str,
    key_of: impl Fn(&str) -> Option<&str>,
) -> BTreeMap<String, String> {
    let mut best: BTreeMap<&str, (u8, &str)> = BTreeMap::new();
    for v in vars {
        let Some(key) = key_of(&v.name) else {
            continue;
        };
        let Some(r) = rank(&v.scope, project, app, workspace) else {
            continue;
        };
        match best.get(key) {
            Some((have, _)) if *have >= r => {}
            _ => {
                best.insert(key, (r, &v.value));
            }
        }
    }
    best.into_iter()
        .map(|(k, (_, v))| (k.to_string(), v.to_string()))
        .collect()
}

/// The config files the app `app` of `project` gets in `workspace` ([`FILE_PREFIX`]
/// variables), path → content, by the precedence of [`resolve_env`].
pub fn resolve_files(
    vars: &[ConfigVar],
    project: &str,
    app: &str,
    workspace: &str,
) -> BTreeMap<String, String> {
    resolve_by(vars, project, app, workspace, file_path)
}

/// A variable's value as listings show it: [`SECRET_MASK`] for a secret.
pub fn shown_value(var: &ConfigVar) -> &str {
    if var.secret {
        SECRET_MASK
    } else {
        &var.value
    }
}

/// The variables of one scope that a config file set: name → the
/// [`fingerprint`] of the value it set. Stored as JSON in the scope's
/// [`FROM_FILE`] variable. A variable is the file's to delete only while its
/// value still has that fingerprint and it is still listed here (`cairn
/// config set` takes a variable off the list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromFile(pub BTreeMap<String, String>);

impl FromFile {
    /// The marker in `vars` for `scope` (empty when absent or unreadable:
    /// then nothing counts as set from the file, so nothing is deleted).
    pub fn find(vars: &[ConfigVar], scope: &ConfigScope) -> FromFile {
        vars.iter()
            .find(|v| &v.scope == scope && v.name == FROM_FILE)
            .map(|v| FromFile::parse(&v.value))
            .unwrap_or_default()
    }

    pub fn parse(value: &str) -> FromFile {
        FromFile(serde_json::from_str(value).unwrap_or_default())
    }

    /// The marker variable holding this list in `scope`.
    pub fn to_var(&self, scope: &ConfigScope) -> ConfigVar {
        ConfigVar {
            scope: scope.clone(),
            name: FROM_FILE.into(),
            value: serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into()),
            secret: false,
        }
    }

    /// Whether `var` is (still) the value the file set.
    pub fn owns(&self, var: &ConfigVar) -> bool {
        self.0
            .get(&var.name)
            .is_some_and(|f| *f == fingerprint(&var.value))
    }
}

/// A short fingerprint of a value (the first 16 hex digits of its SHA-256):
/// enough to tell whether it changed, without storing it twice.
pub fn fingerprint(value: &str) -> String {
    hex::encode(&Sha256::digest(value.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(scope: ConfigScope, name: &str, value: &str) -> ConfigVar {
        ConfigVar {
            scope,
            name: name.into(),
            value: value.into(),
            secret: false,
        }
    }

    fn project() -> ConfigScope {
        ConfigScope::Project("p".into())
    }
    fn app(a: &str) -> ConfigScope {
        ConfigScope::App {
            project: "p".into(),
            app: a.into(),
        }
    }
    fn ws(w: &str) -> ConfigScope {
        ConfigScope::Workspace {
            project: "p".into(),
            workspace: w.into(),
        }
    }
    fn ws_app(a: &str, w: &str) -> ConfigScope {
        ConfigScope::WorkspaceApp {
            project: "p".into(),
            app: a.into(),
            workspace: w.into(),
        }
    }

    #[test]
    fn the_most_specific_scope_wins_whatever_the_order() {
        let mut vars = vec![
            var(project(), "A", "project"),
            var(project(), "B", "project"),
            var(project(), "C", "project"),
            var(project(), "D", "project"),
            var(ws("default"), "B", "workspace"),
            var(ws("default"), "C", "workspace"),
            var(ws("default"), "D", "workspace"),
            var(app("web"), "C", "app"),
            var(app("web"), "D", "app"),
            var(ws_app("web", "default"), "D", "workspace-app"),
        ];
        let want: BTreeMap<String, String> = [
            ("A", "project"),
            ("B", "workspace"),
            ("C", "app"),
            ("D", "workspace-app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(resolve_env(&vars, "p", "web", "default"), want);
        vars.reverse();
        assert_eq!(resolve_env(&vars, "p", "web", "default"), want);
    }

    #[test]
    fn stored_inputs_resolve_by_workspace_then_project_and_stay_out_of_env() {
        let mut vars = vec![
            var(project(), &input_var("region"), "eu"),
            var(project(), &input_var("size"), "s"),
            var(ws("prod"), &input_var("size"), "xl"),
            var(ws("staging"), &input_var("region"), "us"),
            var(
                app("web"),
                &input_var("region"),
                "app scope is not an input's",
            ),
            var(ConfigScope::Project("other".into()), &input_var("x"), "1"),
            var(project(), "PLAIN", "env"),
        ];
        for _ in 0..2 {
            let got = resolve_inputs(&vars, "p", "prod");
            let got: Vec<(&str, &str, &ConfigScope)> =
                got.iter().map(|(k, (v, s))| (k.as_str(), *v, *s)).collect();
            assert_eq!(
                got,
                vec![("region", "eu", &project()), ("size", "xl", &ws("prod"))]
            );
            vars.reverse();
        }
        assert_eq!(input_name(&input_var("a_b")), Some("a_b"));
        assert_eq!(input_name("cairn.var."), None);
        // Never an app's environment, nor a file.
        let env = resolve_env(&vars, "p", "web", "prod");
        assert_eq!(env.keys().collect::<Vec<_>>(), vec!["PLAIN"]);
        assert!(resolve_files(&vars, "p", "web", "prod").is_empty());
    }

    #[test]
    fn other_projects_apps_workspaces_and_reserved_names_do_not_apply() {
        let vars = vec![
            var(ConfigScope::Project("other".into()), "A", "x"),
            var(app("api"), "A", "x"),
            var(ws("prod"), "A", "x"),
            var(ws_app("web", "prod"), "A", "x"),
            var(ws_app("api", "default"), "A", "x"),
            var(
                ConfigScope::App {
                    project: "other".into(),
                    app: "web".into(),
                },
                "A",
                "x",
            ),
            var(project(), FROM_FILE, "{}"),
            var(project(), "KEPT", "yes"),
        ];
        let env = resolve_env(&vars, "p", "web", "default");
        assert_eq!(env.len(), 1, "{env:?}");
        assert_eq!(env["KEPT"], "yes");
        // The same variables in another workspace: only that workspace's apply.
        let env = resolve_env(&vars, "p", "web", "prod");
        assert_eq!(env["A"], "x");
    }

    #[test]
    fn config_files_resolve_by_precedence_and_are_no_env() {
        let vars = vec![
            var(project(), &file_var("conf/a.yml"), "project"),
            var(app("web"), &file_var("conf/a.yml"), "app"),
            var(ws_app("web", "prod"), &file_var("conf/a.yml"), "prod"),
            var(project(), &file_var("b.txt"), "b"),
            var(app("api"), &file_var("c.txt"), "not web's"),
            var(project(), "ENV", "e"),
        ];
        let files = resolve_files(&vars, "p", "web", "default");
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files["conf/a.yml"], "app");
        assert_eq!(files["b.txt"], "b");
        assert_eq!(
            resolve_files(&vars, "p", "web", "prod")["conf/a.yml"],
            "prod"
        );
        let env = resolve_env(&vars, "p", "web", "default");
        assert_eq!(env.keys().collect::<Vec<_>>(), vec!["ENV"]);
    }

    #[test]
    fn scopes_for_lists_every_scope_that_ranks_in_order() {
        let ranks: Vec<Option<u8>> = scopes_for("p", "web", "default")
            .iter()
            .map(|s| rank(s, "p", "web", "default"))
            .collect();
        assert_eq!(ranks, vec![Some(0), Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "PORT", "database_url", "X1_2"] {
            assert!(check_env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A.B", "A=B", "É", "A B", FROM_FILE] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_env_name(&"A".repeat(MAX_NAME)).is_ok());
        assert!(check_env_name(&"A".repeat(MAX_NAME + 1)).is_err());
        // Reserved names are never valid env names.
        assert!(is_reserved(FROM_FILE) && check_env_name(RESERVED_PREFIX).is_err());
        assert!(is_reserved(&file_var("a.yml")) && file_path(&file_var("a.yml")) == Some("a.yml"));
        assert_eq!(file_path(FROM_FILE), None);
    }

    #[test]
    fn secrets_are_masked() {
        let mut v = var(project(), "TOKEN", "s3cret");
        assert_eq!(shown_value(&v), "s3cret");
        v.secret = true;
        assert_eq!(shown_value(&v), SECRET_MASK);
    }

    #[test]
    fn from_file_marker_round_trips_and_owns_only_unchanged_values() {
        let mut m = FromFile::default();
        m.0.insert("A".into(), fingerprint("1"));
        let stored = m.to_var(&project());
        assert_eq!(stored.name, FROM_FILE);
        let vars = vec![stored, var(project(), "A", "1")];
        let back = FromFile::find(&vars, &project());
        assert_eq!(back, m);
        assert!(back.owns(&var(project(), "A", "1")));
        assert!(!back.owns(&var(project(), "A", "2")), "changed since");
        assert!(!back.owns(&var(project(), "B", "1")), "never the file's");
        assert_eq!(FromFile::find(&vars, &app("web")), FromFile::default());
        assert_eq!(FromFile::parse("not json"), FromFile::default());
    }
}
