//! Which deployment a request's host name reaches. Pure: reads the state,
//! does no I/O; the caller passes the random roll that splits canaries.
//!
//! - a registered custom hostname: its app's release, or its deployment;
//! - `APP.DOMAIN`: the app's release (a canary takes its weight of rolls);
//! - `APP--vN.DOMAIN`: deployment N.
//!
//! App names match case-insensitively; only the default workspace answers
//! at `APP.DOMAIN` (other workspaces need a custom hostname).

use cairn_protocol::types::{
    Hostname, InstanceState, OpId, OpKind, OpStatus, ResourceState, DEFAULT_WORKSPACE,
};

use crate::raft::NodeId;
use crate::state::State;

/// Where a request goes: a deployment and its connected instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub sequence: u64,
    pub deployment: OpId,
    /// (instance id, the node its entrypoint is connected to), by id.
    pub instances: Vec<(String, NodeId)>,
}

/// Why a request has no target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// Nothing answers at this host name (404).
    Unknown(String),
    /// The app or deployment exists but cannot serve (502).
    Unavailable(String),
}

/// The host name as routed: lowercase, without port or trailing dot.
pub fn normalize(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: never an app's name.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Resolves `host` (normalized) under `domain`. `roll` (0–99) decides
/// which side of a canary split this request takes.
pub fn resolve(st: &State, domain: &str, host: &str, roll: u8) -> Result<Target, Miss> {
    if let Some(h) = st.hostnames.get(host) {
        return custom(st, h, roll);
    }
    let Some(label) = host
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Err(Miss::Unknown(format!(
            "{host} is not an app of this cluster (apps answer at APP.{domain} and APP--vN.{domain}, or at a hostname registered with `cairn hostname register`)"
        )));
    };
    // APP[--vN].DOMAIN in the default workspace, APP[--vN].WORKSPACE.DOMAIN in another.
    let (label, workspace) = match label.split_once('.') {
        Some((l, w)) if !w.contains('.') && !w.is_empty() => (l, w),
        Some(_) => ("", ""),
        None => (label, DEFAULT_WORKSPACE),
    };
    if label.is_empty() {
        return Err(Miss::Unknown(format!(
            "{host} is not an app of this cluster (apps answer at APP.{domain} and APP--vN.{domain}, or APP.WORKSPACE.{domain} in another workspace)"
        )));
    }
    let (app_label, seq) = split_version(label);
    let seq = match seq {
        Some(Version::Number(n)) => Some(n),
        Some(Version::TooLarge) => {
            return Err(Miss::Unknown(format!(
                "{host}: there is no deployment with that number"
            )))
        }
        None => None,
    };
    let (project, app) = app_named(st, app_label)?;
    // Host names are lowercase; a workspace's name may not be.
    let workspace = &workspace_named(st, &project, &app, workspace);
    match seq {
        Some(seq) => deployment(st, &project, &app, workspace, seq),
        None if !auto_hostname(st, &project, &app, workspace) => Err(Miss::Unknown(format!(
            "{host}: app {app} does not answer at its own name (url {{ auto_hostname = false }} in its config): use a hostname registered for it, or {app}--vN for a deployment"
        ))),
        None => released(st, &project, &app, workspace, roll),
    }
}

/// Why `name` (normalized) cannot be a custom hostname under `domain`: it
/// is the domain itself, or one or two labels under it, which is (or could
/// become) an app's own name (`APP.DOMAIN`, `APP--vN.DOMAIN`, and
/// `APP.WORKSPACE.DOMAIN` in another workspace). Registering it would take
/// that name from the app.
pub fn reserved(domain: &str, name: &str) -> Option<String> {
    if name == domain {
        return Some(format!(
            "{name} is the cluster's domain: apps answer under it, it cannot be registered"
        ));
    }
    let label = name.strip_suffix(domain)?.strip_suffix('.')?;
    match label.split('.').count() {
        1 => {}
        2 => {
            return Some(format!(
                "{name} is reserved: names of the form NAME.WORKSPACE.{domain} are apps' own in a workspace (APP.WORKSPACE.{domain}); register a name outside {domain}, or one more level down (e.g. www.{name})"
            ))
        }
        _ => return None,
    }
    Some(format!(
        "{name} is reserved: names of the form NAME.{domain} are apps' own (APP.{domain}, APP--vN.{domain}); register a name outside {domain}, or one more level down (e.g. www.{name})"
    ))
}

/// The `N` of `APP--vN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Number(u64),
    /// Digits past u64: no deployment has that number (not the release).
    TooLarge,
}

/// `web--v3` → ("web", Some(3)); anything else is all app name.
fn split_version(label: &str) -> (&str, Option<Version>) {
    match label.rsplit_once("--v") {
        Some((app, n))
            if !app.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let v = n.parse().map_or(Version::TooLarge, Version::Number);
            (app, Some(v))
        }
        _ => (label, None),
    }
}

/// The workspace of the app whose name is `label` (lowercase, from a host name), ignoring
/// case; `label` itself when the app has none by that name.
fn workspace_named(st: &State, project: &str, app: &str, label: &str) -> String {
    let named = |w: &String| w.eq_ignore_ascii_case(label);
    // The app's routes only (keys are sorted by project, app, workspace).
    st.routes
        .range((project.to_string(), app.to_string(), String::new())..)
        .map(|(k, _)| k)
        .take_while(|(p, a, _)| p == project && a == app)
        .map(|(_, _, w)| w)
        .find(|w| named(w))
        .or_else(|| {
            st.operations
                .values()
                .filter(|o| o.kind == OpKind::Deployment && o.project == project && o.app == app)
                .map(|o| &o.workspace)
                .find(|w| named(w))
        })
        .cloned()
        .unwrap_or_else(|| label.to_string())
}

/// Whether the app's release answers at `APP.DOMAIN` (`url { auto_hostname }`).
fn auto_hostname(st: &State, project: &str, app: &str, workspace: &str) -> bool {
    use cairn_protocol::config::AUTO_HOSTNAME;
    cairn_protocol::config::auto_hostname(
        |scope| {
            st.config
                .get(&(scope.clone(), AUTO_HOSTNAME.to_string()))
                .map(|v| v.value.as_str())
        },
        project,
        app,
        workspace,
    )
}

/// The (project, app) whose name is `label`, ignoring case.
fn app_named(st: &State, label: &str) -> Result<(String, String), Miss> {
    let found: Vec<&(String, String)> = st
        .apps
        .keys()
        .filter(|(_, app)| app.eq_ignore_ascii_case(label))
        .collect();
    match found.as_slice() {
        [] => Err(Miss::Unknown(format!("no app named {label:?}"))),
        [(project, app)] => Ok((project.clone(), app.clone())),
        many => Err(Miss::Unknown(format!(
            "apps named {label:?} exist in {} projects ({}); register a hostname for the one you mean (`cairn hostname register`)",
            many.len(),
            many.iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn custom(st: &State, h: &Hostname, roll: u8) -> Result<Target, Miss> {
    match h.deployment {
        Some(seq) => deployment(st, &h.project, &h.app, &h.workspace, seq),
        None => released(st, &h.project, &h.app, &h.workspace, roll),
    }
}

/// The app's release: the canary for rolls below its weight, else the
/// deployment released in full.
fn released(
    st: &State,
    project: &str,
    app: &str,
    workspace: &str,
    roll: u8,
) -> Result<Target, Miss> {
    let key = (project.to_string(), app.to_string(), workspace.to_string());
    let Some(route) = st.routes.get(&key) else {
        return Err(Miss::Unavailable(format!(
            "{app} has not been released yet (its deployments answer at {app}--vN)"
        )));
    };
    let seq = match route.canary {
        Some((canary, weight)) if roll < weight => canary,
        _ => route.primary,
    };
    deployment(st, project, app, workspace, seq)
}

fn deployment(
    st: &State,
    project: &str,
    app: &str,
    workspace: &str,
    seq: u64,
) -> Result<Target, Miss> {
    let op = st
        .operations
        .values()
        .find(|o| {
            o.kind == OpKind::Deployment
                && o.project == project
                && o.app == app
                && o.workspace == workspace
                && o.sequence == seq
        })
        .ok_or_else(|| Miss::Unknown(format!("{app} has no deployment v{seq}")))?;
    if op.status != OpStatus::Success {
        return Err(Miss::Unavailable(format!(
            "deployment v{seq} of {app} did not succeed"
        )));
    }
    if op.state != ResourceState::Active {
        return Err(Miss::Unavailable(format!(
            "deployment v{seq} of {app} was destroyed"
        )));
    }
    let instances = st
        .instances
        .range((op.id, String::new())..)
        .take_while(|((d, _), _)| *d == op.id)
        .filter(|(_, i)| i.state == InstanceState::Connected)
        .map(|((_, id), i)| (id.clone(), i.node))
        .collect();
    Ok(Target {
        project: project.to_string(),
        app: app.to_string(),
        workspace: workspace.to_string(),
        sequence: seq,
        deployment: op.id,
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Request, Response};
    use cairn_protocol::types::{Instance, JobKind, JobSpec, OpCompletion, Route};

    fn apply(st: &mut State, command: Command) -> Response {
        st.apply(&Request { now_ms: 1, command })
    }

    /// A state with app `web` of project `shop`: deployments v1 (connected
    /// instance i1 on node 7), v2 (i2 on node 8, and a disconnected one)
    /// released in full, v3 a failed one.
    fn state() -> State {
        let mut st = State::default();
        let mut spec = JobSpec::example();
        spec.project = "shop".into();
        spec.app = "web".into();
        spec.kind = JobKind::Deploy { build: None };
        let Response::JobCreated(job) = apply(
            &mut st,
            Command::CreateJob {
                spec,
                requested_by: "u".into(),
            },
        ) else {
            panic!("no job")
        };
        apply(
            &mut st,
            Command::AssignJob {
                id: job,
                runner: "r".into(),
            },
        );
        apply(&mut st, Command::StartJob { id: job });
        for (seq, ok) in [(1, true), (2, true), (3, false)] {
            let Response::OperationStarted { id, sequence } = apply(
                &mut st,
                Command::BeginOperation {
                    job_id: job,
                    kind: OpKind::Deployment,
                    plugin: "process".into(),
                    input_seq: None,
                },
            ) else {
                panic!("no op")
            };
            assert_eq!(sequence, seq);
            apply(
                &mut st,
                Command::CompleteOperation(OpCompletion {
                    op_id: id,
                    status: if ok {
                        OpStatus::Success
                    } else {
                        OpStatus::Error
                    },
                    result: None,
                    error: None,
                    output: vec![],
                    output_dropped: 0,
                    url: None,
                }),
            );
            let node = 6 + seq;
            let mut i = Instance {
                id: format!("i{seq}"),
                deployment: id,
                project: "shop".into(),
                app: "web".into(),
                workspace: DEFAULT_WORKSPACE.into(),
                sequence: seq,
                node,
                pid: 1,
                started_ms: 0,
                since_ms: 0,
                last_seen_ms: 0,
                state: InstanceState::Connected,
            };
            apply(
                &mut st,
                Command::InstanceConnected {
                    instance: i.clone(),
                },
            );
            if seq == 2 {
                i.id = "i2-gone".into();
                apply(&mut st, Command::InstanceConnected { instance: i });
                apply(
                    &mut st,
                    Command::InstanceDisconnected {
                        deployment: id,
                        id: "i2-gone".into(),
                        node,
                    },
                );
            }
        }
        st.routes.insert(
            ("shop".into(), "web".into(), DEFAULT_WORKSPACE.into()),
            Route {
                primary: 2,
                canary: None,
            },
        );
        st
    }

    fn seq_of(r: Result<Target, Miss>) -> u64 {
        r.unwrap_or_else(|m| panic!("{m:?}")).sequence
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize("Web.LocalHost:9703"), "web.localhost");
        assert_eq!(normalize("web.example.com."), "web.example.com");
        assert_eq!(normalize("[::1]:80"), "::1");
        assert_eq!(normalize("web--v2.localhost"), "web--v2.localhost");
    }

    #[test]
    fn app_and_deployment_names_route() {
        let st = state();
        let t = resolve(&st, "localhost", "web.localhost", 0).expect("release");
        assert_eq!((t.sequence, t.app.as_str()), (2, "web"));
        assert_eq!(
            t.instances,
            vec![("i2".to_string(), 8)],
            "connected ones only"
        );
        assert_eq!(seq_of(resolve(&st, "localhost", "web--v1.localhost", 0)), 1);
        assert_eq!(seq_of(resolve(&st, "localhost", "WEB--v1.localhost", 0)), 1);
        assert!(matches!(
            resolve(&st, "localhost", "web--v3.localhost", 0),
            Err(Miss::Unavailable(_))
        ));
        for unknown in [
            "web--v9.localhost",
            "api.localhost",
            "localhost",
            "a.web.localhost",
            "web.example.com",
        ] {
            assert!(
                matches!(resolve(&st, "localhost", unknown, 0), Err(Miss::Unknown(_))),
                "{unknown}"
            );
        }
        // Another domain.
        assert_eq!(
            seq_of(resolve(&st, "apps.example.com", "web.apps.example.com", 0)),
            2
        );
    }

    #[test]
    fn a_canary_takes_its_share_of_rolls() {
        let mut st = state();
        st.routes.insert(
            ("shop".into(), "web".into(), DEFAULT_WORKSPACE.into()),
            Route {
                primary: 2,
                canary: Some((1, 30)),
            },
        );
        let canary = (0..100u8)
            .filter(|roll| seq_of(resolve(&st, "localhost", "web.localhost", *roll)) == 1)
            .count();
        assert_eq!(canary, 30);
    }

    #[test]
    fn custom_hostnames_win_and_follow_their_target() {
        let mut st = state();
        let mut h = Hostname {
            name: "shop.example.com".into(),
            project: "shop".into(),
            app: "web".into(),
            workspace: DEFAULT_WORKSPACE.into(),
            deployment: None,
            created_ms: 0,
        };
        st.hostnames.insert(h.name.clone(), h.clone());
        assert_eq!(seq_of(resolve(&st, "localhost", "shop.example.com", 0)), 2);
        h.deployment = Some(1);
        st.hostnames.insert(h.name.clone(), h);
        assert_eq!(seq_of(resolve(&st, "localhost", "shop.example.com", 0)), 1);
    }

    #[test]
    fn auto_hostname_off_leaves_registered_names_and_deployments() {
        use cairn_protocol::config::AUTO_HOSTNAME;
        use cairn_protocol::types::{ConfigScope, ConfigVar};
        let mut st = state();
        st.hostnames.insert(
            "shop.example.com".into(),
            Hostname {
                name: "shop.example.com".into(),
                project: "shop".into(),
                app: "web".into(),
                workspace: DEFAULT_WORKSPACE.into(),
                deployment: None,
                created_ms: 0,
            },
        );
        let mut set = |scope: ConfigScope, value: &str| {
            apply(
                &mut st,
                Command::SetConfig {
                    var: ConfigVar {
                        scope,
                        name: AUTO_HOSTNAME.into(),
                        value: value.into(),
                        secret: false,
                    },
                },
            );
        };
        set(ConfigScope::Project("shop".into()), "false");
        match resolve(&st, "localhost", "web.localhost", 0) {
            Err(Miss::Unknown(m)) => assert!(m.contains("auto_hostname = false"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(seq_of(resolve(&st, "localhost", "web--v1.localhost", 0)), 1);
        assert_eq!(seq_of(resolve(&st, "localhost", "shop.example.com", 0)), 2);
        // The app's own setting is more specific than the project's.
        let app = ConfigScope::App {
            project: "shop".into(),
            app: "web".into(),
        };
        let mut st2 = st.clone();
        apply(
            &mut st2,
            Command::SetConfig {
                var: ConfigVar {
                    scope: app,
                    name: AUTO_HOSTNAME.into(),
                    value: "true".into(),
                    secret: false,
                },
            },
        );
        assert_eq!(seq_of(resolve(&st2, "localhost", "web.localhost", 0)), 2);
    }

    #[test]
    fn a_workspace_named_with_capitals_answers_at_its_lowercase_host() {
        let mut st = state();
        for o in st.operations.values_mut() {
            if o.sequence == 1 {
                o.workspace = "Staging".into();
            }
        }
        assert_eq!(
            seq_of(resolve(&st, "localhost", "web--v1.staging.localhost", 0)),
            1
        );
        st.routes.insert(
            ("shop".into(), "web".into(), "Staging".into()),
            Route {
                primary: 1,
                canary: None,
            },
        );
        assert_eq!(
            seq_of(resolve(&st, "localhost", "web.staging.localhost", 0)),
            1
        );
    }

    #[test]
    fn an_unreleased_app_and_a_name_in_two_projects_are_explained() {
        let mut st = state();
        st.routes.clear();
        match resolve(&st, "localhost", "web.localhost", 0) {
            Err(Miss::Unavailable(m)) => assert!(m.contains("not been released"), "{m}"),
            other => panic!("{other:?}"),
        }
        let app = st.apps[&("shop".to_string(), "web".to_string())].clone();
        st.apps.insert(("other".into(), "web".into()), app);
        match resolve(&st, "localhost", "web.localhost", 0) {
            Err(Miss::Unknown(m)) => assert!(m.contains("2 projects"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_apps_names_and_the_domain_are_reserved() {
        for name in [
            "localhost",
            "web.localhost",
            "web--v1.localhost",
            "future.localhost",
            "www.web.localhost",
            "web.staging.localhost",
        ] {
            assert!(reserved("localhost", name).is_some(), "{name}");
        }
        for name in [
            "shop.example.com",
            "a.www.web.localhost",
            "localhost.example.com",
            "xlocalhost",
        ] {
            assert_eq!(reserved("localhost", name), None, "{name}");
        }
        assert!(reserved("apps.example.com", "web.apps.example.com").is_some());
        assert_eq!(reserved("apps.example.com", "example.com"), None);
    }

    #[test]
    fn versions_split_from_the_right() {
        assert_eq!(
            split_version("web--v12"),
            ("web", Some(Version::Number(12)))
        );
        assert_eq!(
            split_version("my--app--v3"),
            ("my--app", Some(Version::Number(3)))
        );
        assert_eq!(
            split_version("web--v99999999999999999999999"),
            ("web", Some(Version::TooLarge))
        );
        assert_eq!(split_version("web--vx"), ("web--vx", None));
        assert_eq!(split_version("--v3"), ("--v3", None));
        assert_eq!(split_version("web"), ("web", None));
    }
}
