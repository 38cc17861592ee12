//! App configuration on the cluster, as the CLI and the runner use it: reading
//! scopes, syncing a config file's `config { env = … }`, and resolving the
//! environment an app's deployment gets.
//!
//! **Syncing** (`cairn up`, `cairn deploy`, before the job is queued): the
//! top-level `config` block is the project scope, an app's own block is that
//! app's scope. In each scope, what the file declares is set (only when the
//! value differs: a second `up` with no change writes nothing), and what the
//! file set earlier but no longer declares is deleted. "What the file set" is
//! recorded in the scope's reserved [`FROM_FILE`] variable (name → fingerprint
//! of the value written); a variable is deleted only while it is listed there
//! *and* still holds that value, so a variable set with `cairn config set`
//! (which takes it off the list) is never deleted by a sync.
//!
//! Writes go one by one, variables first and the marker last: a sync cut short
//! can leave a variable unlisted (then it is kept, as if set by hand), never
//! list one it did not write.

use std::collections::BTreeMap;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::config::{self as cfgvars, fingerprint, FromFile, FROM_FILE};
use cairn_protocol::rpc::RpcError;
use cairn_protocol::types::{ConfigScope, ConfigVar};

use crate::client::Call;
use crate::config::{AppConfig, Config};

/// One write of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(ConfigVar),
    Delete { scope: ConfigScope, name: String },
}

/// What a sync changed in one scope (reserved names left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub set: Vec<String>,
    pub deleted: Vec<String>,
}

impl Synced {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.deleted.is_empty()
    }
}

/// The writes that make `scope` hold what the file declares, given the
/// scope's `current` variables (other scopes in `current` are ignored).
/// Empty when nothing changed. Variables first, the [`FROM_FILE`] marker last.
/// Whether a variable is one the file's sync manages: a user's name or a config file
/// entry (not Cairn's other bookkeeping, such as the marker).
fn managed(name: &str) -> bool {
    !cfgvars::is_reserved(name)
        || cfgvars::file_path(name).is_some()
        || name == cfgvars::AUTO_HOSTNAME
}

/// A variable's name as `up` reports it: `file PATH` for a config file entry.
fn shown_name(name: &str) -> String {
    match cfgvars::file_path(name) {
        Some(path) => format!("file {path}"),
        None if name == cfgvars::AUTO_HOSTNAME => "url { auto_hostname }".into(),
        None => name.to_string(),
    }
}

pub fn plan(
    scope: &ConfigScope,
    current: &[ConfigVar],
    declared: &BTreeMap<String, String>,
    secret: &std::collections::BTreeSet<String>,
) -> Vec<Change> {
    let cur: BTreeMap<&str, &ConfigVar> = current
        .iter()
        .filter(|v| &v.scope == scope && managed(&v.name))
        .map(|v| (v.name.as_str(), v))
        .collect();
    let marker = FromFile::find(current, scope);
    let mut next = FromFile::default();
    let mut changes = Vec::new();
    for (name, value) in declared {
        match cur.get(name.as_str()) {
            // Unchanged: leave it, and its origin, alone (a variable set by
            // hand with the same value stays the user's).
            Some(v) if v.value == *value => {
                if marker.0.contains_key(name) {
                    next.0.insert(name.clone(), fingerprint(value));
                }
            }
            _ => {
                changes.push(Change::Set(ConfigVar {
                    scope: scope.clone(),
                    name: name.clone(),
                    value: value.clone(),
                    secret: secret.contains(name),
                }));
                next.0.insert(name.clone(), fingerprint(value));
            }
        }
    }
    for name in marker.0.keys() {
        if declared.contains_key(name) {
            continue;
        }
        if let Some(v) = cur.get(name.as_str()) {
            if marker.owns(v) {
                changes.push(Change::Delete {
                    scope: scope.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    if next != marker {
        let had_marker = current
            .iter()
            .any(|v| &v.scope == scope && v.name == FROM_FILE);
        if !next.0.is_empty() {
            changes.push(Change::Set(next.to_var(scope)));
        } else if had_marker {
            changes.push(Change::Delete {
                scope: scope.clone(),
                name: FROM_FILE.into(),
            });
        }
    }
    changes
}

/// The variables of one scope.
pub async fn list(conn: &mut impl Call, scope: &ConfigScope) -> Result<Vec<ConfigVar>, RpcError> {
    match conn
        .call(&ClientRequest::ListConfig {
            scope: Some(scope.clone()),
        })
        .await?
    {
        ClientResponse::Config(vars) => Ok(vars),
        other => Err(unexpected(&other)),
    }
}

/// What the cluster holds for `project` in `workspace` before a config naming these `apps`
/// is evaluated: the config variables of the project's, the workspace's and each app's
/// scopes (stored input variable values among them).
pub async fn server_values(
    conn: &mut impl Call,
    project: &str,
    apps: &[String],
    workspace: &str,
) -> Result<crate::config::ServerValues, RpcError> {
    let mut vars = Vec::new();
    let mut scopes = vec![
        ConfigScope::Project(project.into()),
        ConfigScope::Workspace {
            project: project.into(),
            workspace: workspace.into(),
        },
    ];
    for app in apps {
        scopes.push(ConfigScope::App {
            project: project.into(),
            app: app.clone(),
        });
        scopes.push(ConfigScope::WorkspaceApp {
            project: project.into(),
            app: app.clone(),
            workspace: workspace.into(),
        });
    }
    for scope in &scopes {
        vars.extend(list(conn, scope).await?);
    }
    Ok(crate::config::ServerValues {
        project: project.into(),
        vars,
    })
}

/// The variables of every scope of the cluster.
pub async fn list_all(conn: &mut impl Call) -> Result<Vec<ConfigVar>, RpcError> {
    match conn
        .call(&ClientRequest::ListConfig { scope: None })
        .await?
    {
        ClientResponse::Config(vars) => Ok(vars),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(r: &ClientResponse) -> RpcError {
    RpcError::Remote(format!("unexpected answer from the node: {r:?}"))
}

/// Apply `changes` in order.
pub async fn apply(conn: &mut impl Call, changes: &[Change]) -> Result<(), RpcError> {
    for c in changes {
        let req = match c {
            Change::Set(var) => ClientRequest::SetConfig { var: var.clone() },
            Change::Delete { scope, name } => ClientRequest::DeleteConfig {
                scope: scope.clone(),
                name: name.clone(),
            },
        };
        conn.call(&req).await?;
    }
    Ok(())
}

/// Sync the project's and `app`'s `config { env }` of `cfg` to the cluster.
/// Returns what changed, per scope (scopes with no change left out).
pub async fn sync(
    conn: &mut impl Call,
    cfg: &Config,
    app: &AppConfig,
) -> Result<Vec<(ConfigScope, Synced)>, RpcError> {
    // Config files go with the env, as `cairn.file.PATH` variables (always secret: they may
    // hold anything).
    let with_files = |env: &BTreeMap<String, String>,
                      files: &BTreeMap<String, String>,
                      secret: &std::collections::BTreeSet<String>| {
        let mut all = env.clone();
        let mut secret = secret.clone();
        for (path, content) in files {
            let name = cfgvars::file_var(path);
            secret.insert(name.clone());
            all.insert(name, content.clone());
        }
        (all, secret)
    };
    // `url { auto_hostname }` goes with the scope of its block (the ingress reads it).
    let with_url = |(mut all, secret): (BTreeMap<String, String>, _),
                    url: &Option<crate::config::UrlConfig>| {
        if let Some(auto) = url.as_ref().and_then(|u| u.auto_hostname) {
            all.insert(cfgvars::AUTO_HOSTNAME.to_string(), auto.to_string());
        }
        (all, secret)
    };
    let scopes = [
        (
            ConfigScope::Project(cfg.project.clone()),
            with_url(with_files(&cfg.env, &cfg.files, &cfg.secret_env), &cfg.url),
        ),
        (
            ConfigScope::Workspace {
                project: cfg.project.clone(),
                workspace: cfg.workspace.clone(),
            },
            with_files(&cfg.workspace_env, &cfg.workspace_files, &cfg.secret_env),
        ),
        (
            ConfigScope::App {
                project: cfg.project.clone(),
                app: app.name.clone(),
            },
            with_url(
                with_files(&app.app_env, &app.app_files, &app.secret_env),
                &app.url,
            ),
        ),
        (
            ConfigScope::WorkspaceApp {
                project: cfg.project.clone(),
                workspace: cfg.workspace.clone(),
                app: app.name.clone(),
            },
            with_files(
                &app.workspace_app_env,
                &app.workspace_app_files,
                &app.secret_env,
            ),
        ),
    ];
    let mut out = Vec::new();
    for (scope, (declared, secret)) in scopes {
        let current = list(conn, &scope).await?;
        let changes = plan(&scope, &current, &declared, &secret);
        apply(conn, &changes).await?;
        let synced = summarize(&changes);
        if !synced.is_empty() {
            out.push((scope, synced));
        }
    }
    Ok(out)
}

/// The user-visible names a plan sets and deletes.
pub fn summarize(changes: &[Change]) -> Synced {
    let mut s = Synced::default();
    for c in changes {
        match c {
            Change::Set(v) if managed(&v.name) => s.set.push(shown_name(&v.name)),
            Change::Delete { name, .. } if managed(name) => s.deleted.push(shown_name(name)),
            _ => {}
        }
    }
    s
}

/// After `cairn config set` or `delete` wrote `names` in `scope` by hand:
/// the marker write that takes them off the file's list, if they were on it.
pub fn disown(scope: &ConfigScope, current: &[ConfigVar], names: &[&str]) -> Option<Change> {
    let marker = FromFile::find(current, scope);
    let mut next = marker.clone();
    for n in names {
        next.0.remove(*n);
    }
    if next == marker {
        None
    } else if next.0.is_empty() {
        Some(Change::Delete {
            scope: scope.clone(),
            name: FROM_FILE.into(),
        })
    } else {
        Some(Change::Set(next.to_var(scope)))
    }
}

/// Whether `var` was set by a config file (and not changed since).
pub fn from_file(var: &ConfigVar, all: &[ConfigVar]) -> bool {
    FromFile::find(all, &var.scope).owns(var)
}

/// The environment the app `app` of `project` gets in `workspace`, read
/// from the cluster and resolved by precedence
/// ([`cairn_protocol::config::resolve_env`]).
pub async fn resolved_env(
    conn: &mut impl Call,
    project: &str,
    app: &str,
    workspace: &str,
) -> Result<BTreeMap<String, String>, RpcError> {
    let mut vars = Vec::new();
    for scope in cfgvars::scopes_for(project, app, workspace) {
        vars.extend(list(conn, &scope).await?);
    }
    Ok(cfgvars::resolve_env(&vars, project, app, workspace))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_reading_a_sensitive_variable_are_set_as_secrets() {
        let d: BTreeMap<String, String> = [("PW", "x"), ("A", "y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secret = ["PW".to_string()].into_iter().collect();
        let changes = super::plan(&scope(), &[], &d, &secret);
        let set: Vec<(String, bool)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Set(v) if !cfgvars::is_reserved(&v.name) => {
                    Some((v.name.clone(), v.secret))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            set,
            vec![("A".to_string(), false), ("PW".to_string(), true)]
        );
    }

    /// `plan` with no secret names.
    fn plan0(
        scope: &ConfigScope,
        current: &[ConfigVar],
        declared: &BTreeMap<String, String>,
    ) -> Vec<Change> {
        super::plan(scope, current, declared, &Default::default())
    }

    use super::*;

    fn scope() -> ConfigScope {
        ConfigScope::App {
            project: "p".into(),
            app: "web".into(),
        }
    }

    fn var(name: &str, value: &str) -> ConfigVar {
        ConfigVar {
            scope: scope(),
            name: name.into(),
            value: value.into(),
            secret: false,
        }
    }

    fn decl(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What the scope holds after `changes` (a tiny model of the node).
    fn applied(mut state: Vec<ConfigVar>, changes: &[Change]) -> Vec<ConfigVar> {
        for c in changes {
            match c {
                Change::Set(v) => {
                    state.retain(|x| !(x.scope == v.scope && x.name == v.name));
                    state.push(v.clone());
                }
                Change::Delete { scope, name } => {
                    let before = state.len();
                    state.retain(|x| !(x.scope == *scope && x.name == *name));
                    assert_eq!(before, state.len() + 1, "deleting a missing {name}");
                }
            }
        }
        state
    }

    fn names(state: &[ConfigVar]) -> Vec<String> {
        let mut n: Vec<String> = state
            .iter()
            .filter(|v| !cfgvars::is_reserved(&v.name))
            .map(|v| format!("{}={}", v.name, v.value))
            .collect();
        n.sort();
        n
    }

    #[test]
    fn first_sync_sets_everything_and_a_second_writes_nothing() {
        let d = decl(&[("A", "1"), ("B", "2")]);
        let changes = plan0(&scope(), &[], &d);
        assert_eq!(summarize(&changes).set, vec!["A", "B"]);
        assert!(matches!(changes.last(), Some(Change::Set(v)) if v.name == FROM_FILE));
        let state = applied(Vec::new(), &changes);
        assert_eq!(names(&state), vec!["A=1", "B=2"]);
        assert_eq!(plan0(&scope(), &state, &d), Vec::new(), "idempotent");
    }

    #[test]
    fn a_changed_value_is_set_and_a_removed_one_deleted() {
        let state = applied(
            Vec::new(),
            &plan0(&scope(), &[], &decl(&[("A", "1"), ("B", "2")])),
        );
        let d = decl(&[("A", "10")]);
        let changes = plan0(&scope(), &state, &d);
        let s = summarize(&changes);
        assert_eq!((s.set, s.deleted), (vec!["A".into()], vec!["B".into()]));
        let state = applied(state, &changes);
        assert_eq!(names(&state), vec!["A=10"]);
        assert_eq!(plan0(&scope(), &state, &d), Vec::new());
        // Everything removed from the file: the variables and the marker go.
        let changes = plan0(&scope(), &state, &decl(&[]));
        let state = applied(state, &changes);
        assert!(state.is_empty(), "{state:?}");
        assert_eq!(plan0(&scope(), &state, &decl(&[])), Vec::new());
    }

    #[test]
    fn variables_set_by_hand_are_never_deleted() {
        // Set by hand before the file ever declared it.
        let state = vec![var("MANUAL", "m"), var("SAME", "s")];
        let d = decl(&[("SAME", "s"), ("F", "f")]);
        let changes = plan0(&scope(), &state, &d);
        assert_eq!(
            summarize(&changes).set,
            vec!["F"],
            "SAME already holds the value"
        );
        let state = applied(state, &changes);
        // The file stops declaring SAME: it was the user's, so it stays.
        let changes = plan0(&scope(), &state, &decl(&[("F", "f")]));
        assert!(summarize(&changes).is_empty(), "{changes:?}");
        let state = applied(state, &changes);
        assert_eq!(names(&state), vec!["F=f", "MANUAL=m", "SAME=s"]);

        // F overwritten by hand (`config set` disowns it), then dropped from the file.
        let mut state = applied(state, &[Change::Set(var("F", "mine"))]);
        if let Some(c) = disown(&scope(), &state, &["F"]) {
            state = applied(state, &[c]);
        }
        let changes = plan0(&scope(), &state, &decl(&[]));
        assert!(summarize(&changes).deleted.is_empty(), "{changes:?}");
        let state = applied(state, &changes);
        assert_eq!(names(&state), vec!["F=mine", "MANUAL=m", "SAME=s"]);
    }

    #[test]
    fn a_value_changed_behind_the_markers_back_is_kept() {
        // The file set A; then A changed without the marker being updated
        // (e.g. a `config set` cut short): its value no longer matches.
        let state = applied(Vec::new(), &plan0(&scope(), &[], &decl(&[("A", "1")])));
        let state = applied(state, &[Change::Set(var("A", "2"))]);
        let changes = plan0(&scope(), &state, &decl(&[]));
        assert!(summarize(&changes).deleted.is_empty());
        assert_eq!(names(&applied(state, &changes)), vec!["A=2"]);
    }

    #[test]
    fn other_scopes_are_ignored() {
        let other = ConfigVar {
            scope: ConfigScope::Project("p".into()),
            name: "A".into(),
            value: "1".into(),
            secret: false,
        };
        let changes = plan0(&scope(), &[other], &decl(&[("A", "1")]));
        assert_eq!(summarize(&changes).set, vec!["A"]);
    }

    #[test]
    fn disown_only_writes_when_the_name_was_the_files() {
        let state = applied(
            Vec::new(),
            &plan0(&scope(), &[], &decl(&[("A", "1"), ("B", "2")])),
        );
        assert_eq!(disown(&scope(), &state, &["C"]), None);
        let Some(Change::Set(m)) = disown(&scope(), &state, &["A"]) else {
            panic!("marker rewritten");
        };
        assert_eq!(
            FromFile::parse(&m.value).0.keys().collect::<Vec<_>>(),
            vec!["B"]
        );
        assert!(matches!(
            disown(&scope(), &state, &["A", "B"]),
            Some(Change::Delete { name, .. }) if name == FROM_FILE
        ));
    }
}
