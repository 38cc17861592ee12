//! `cairn validate`: load the config here, check every app's plugins and how
//! values flow between its stages, and print the plan; nothing is queued and
//! no node is needed.
//!
//! Every plugin and every stage-to-stage type flow is checked (all errors of
//! all apps are reported together, each with its `file:line:column`); an
//! error in the file itself (syntax, evaluation) stops the load, as it does
//! for every command. Field values that look secret (passwords, tokens,
//! credentials) and config env values are masked.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Global;
use crate::config::{self, AppConfig, PluginUse};
use crate::lifecycle::locate;
use crate::plugins::{Catalog, Value};

/// One stage of an app's plan.
#[derive(Debug, Serialize)]
pub struct StagePlan {
    /// build, registry, deploy or release.
    pub stage: &'static str,
    pub plugin: String,
    /// `file:line:column` of its `use` block (or of the deploy stanza for a
    /// releaser the platform brings).
    pub location: String,
    /// Its fields as evaluated, secrets masked.
    pub config: serde_json::Value,
    /// The type it takes (after any mappers) and the type it makes.
    pub takes: Option<String>,
    pub makes: Option<String>,
    /// The mappers that turn the previous stage's value into `takes`.
    pub via: Vec<String>,
    /// The stage's own labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct AppPlan {
    pub name: String,
    pub path: String,
    /// The project's labels with the app's over them.
    pub labels: BTreeMap<String, String>,
    pub stages: Vec<StagePlan>,
    /// Config env variable names (values are not shown).
    pub config_env: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub file: String,
    pub project: String,
    pub apps: Vec<AppPlan>,
    pub ok: bool,
}

/// Field names whose values are never shown.
fn is_secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    [
        "password",
        "token",
        "secret",
        "auth",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|s| f.contains(s))
}

/// `v` with every secret-looking field's value replaced by "****".
fn masked(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret(k) && !v.is_null() {
                        serde_json::Value::String("****".into())
                    } else {
                        masked(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(masked).collect()),
        other => other.clone(),
    }
}

/// A value of type `t` for the type-level search (the search reads only
/// type names).
fn of_type(t: &str) -> Value {
    Value {
        type_name: t.to_string(),
        data: serde_json::json!({}),
    }
}

fn stage(s: &'static str, p: &PluginUse) -> StagePlan {
    StagePlan {
        stage: s,
        plugin: p.name.clone(),
        location: p.location.to_string(),
        config: masked(&p.config),
        takes: None,
        makes: None,
        via: Vec::new(),
        labels: BTreeMap::new(),
    }
}

/// The types `have` reach `wanted` through the catalog's mappers: the type
/// taken and the mappers, or an error naming both sides.
fn flow(
    catalog: &Catalog,
    have: &[String],
    wanted: &[&'static str],
    p: &PluginUse,
    what: &str,
) -> Result<(String, Vec<String>), String> {
    let values: Vec<Value> = have.iter().map(|t| of_type(t)).collect();
    match catalog.plan(&values, wanted) {
        Ok(c) => Ok((c.output_type().to_string(), c.steps())),
        Err(e) => Err(format!(
            "{}: {what} {:?} takes {} but gets {} ({e})",
            p.location,
            p.name,
            wanted.join(" or "),
            have.join(" and ")
        )),
    }
}

/// The plan of one app: every stage checked, every error kept.
pub fn plan_app(app: &AppConfig, catalog: &Catalog) -> AppPlan {
    let mut errors = Vec::new();
    let mut stages = Vec::new();
    let mut have: Vec<String> = Vec::new();

    let b = &app.build.builder;
    let mut s = stage("build", b);
    s.labels = app.build.labels.clone();
    match catalog.builder(&b.name, &b.config) {
        Ok(builder) => {
            s.makes = Some(builder.output_type().to_string());
            have.push(builder.output_type().to_string());
        }
        Err(e) => errors.push(locate(b, e)),
    }
    stages.push(s);

    if let Some(r) = &app.build.registry {
        let p = &r.plugin;
        let mut s = stage("registry", p);
        s.labels = r.labels.clone();
        match catalog.registry(&p.name, &p.config) {
            Ok(registry) => {
                if !have.is_empty() {
                    match flow(catalog, &have, registry.input_types(), p, "registry") {
                        Ok((takes, via)) => {
                            s.takes = Some(takes);
                            s.via = via;
                        }
                        Err(e) => errors.push(e),
                    }
                }
                s.makes = Some(registry.output_type().to_string());
                have.push(registry.output_type().to_string());
            }
            Err(e) => errors.push(locate(p, e)),
        }
        stages.push(s);
    }

    let d = &app.deploy.plugin;
    let mut s = stage("deploy", d);
    s.labels = app.deploy.labels.clone();
    let mut deployment: Option<String> = None;
    match catalog.platform(&d.name, &d.config) {
        Ok(platform) => {
            if !have.is_empty() {
                match flow(catalog, &have, platform.input_types(), d, "platform") {
                    Ok((takes, via)) => {
                        s.takes = Some(takes);
                        s.via = via;
                    }
                    Err(e) => errors.push(e),
                }
            }
            s.makes = Some(platform.output_type().to_string());
            deployment = Some(platform.output_type().to_string());
        }
        Err(e) => errors.push(locate(d, e)),
    }
    stages.push(s);

    let release = match &app.release {
        Some(r) => Some((
            r.plugin.clone(),
            catalog.releaser(&r.plugin.name, &r.plugin.config),
        )),
        None => match catalog.releaser(&d.name, &serde_json::json!({})) {
            Ok(r) => Some((d.clone(), Ok(r))),
            Err(_) => None,
        },
    };
    match release {
        Some((p, made)) => {
            let mut s = stage("release", &p);
            match &app.release {
                Some(r) => s.labels = r.labels.clone(),
                None => s.config = serde_json::json!({}),
            }
            match made {
                Ok(releaser) => {
                    if let Some(dep) = &deployment {
                        match flow(
                            catalog,
                            std::slice::from_ref(dep),
                            releaser.input_types(),
                            &p,
                            "releaser",
                        ) {
                            Ok((takes, via)) => {
                                s.takes = Some(takes);
                                s.via = via;
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                    s.makes = Some(releaser.output_type().to_string());
                }
                Err(e) => errors.push(locate(&p, e)),
            }
            stages.push(s);
        }
        None => stages.push(StagePlan {
            stage: "release",
            plugin: "url-service".into(),
            location: d.location.to_string(),
            config: serde_json::json!({}),
            takes: deployment.clone(),
            makes: Some("url.Release".into()),
            via: Vec::new(),
            labels: BTreeMap::new(),
        }),
    }

    AppPlan {
        name: app.name.clone(),
        path: app.path.display().to_string(),
        labels: app.labels.clone(),
        stages,
        config_env: app.config_env.keys().cloned().collect(),
        errors,
    }
}

pub fn run(g: &Global, json: bool) -> anyhow::Result<i32> {
    let path = config::find(&g.dir())?;
    let cfg = config::load(&path)?;
    let apps: Vec<AppPlan> = cfg.apps.iter().map(|a| plan_app(a, &g.catalog)).collect();
    let ok = apps.iter().all(|a| a.errors.is_empty());
    let plan = Plan {
        file: cfg.file.display().to_string(),
        project: cfg.project.clone(),
        apps,
        ok,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan);
    }
    if !ok {
        let n: usize = plan.apps.iter().map(|a| a.errors.len()).sum();
        for e in plan.apps.iter().flat_map(|a| &a.errors) {
            eprintln!("error: {e}");
        }
        eprintln!(
            "{n} error{} in {}",
            if n == 1 { "" } else { "s" },
            plan.file
        );
        return Ok(1);
    }
    Ok(0)
}

fn print_plan(plan: &Plan) {
    println!("{} (project {:?})", plan.file, plan.project);
    for app in &plan.apps {
        println!();
        let env = if app.config_env.is_empty() {
            String::new()
        } else {
            format!("; config env: {}", app.config_env.join(", "))
        };
        println!("app {:?} (path {}{env})", app.name, app.path);
        if !app.labels.is_empty() {
            println!("  labels: {}", labels_text(&app.labels));
        }
        for s in &app.stages {
            let flow = match (&s.takes, &s.makes) {
                (Some(t), Some(m)) => format!("{t} → {m}"),
                (None, Some(m)) => format!("→ {m}"),
                (Some(t), None) => format!("{t} →"),
                (None, None) => String::new(),
            };
            println!("  {:<8} {:<12} {flow}", s.stage, s.plugin);
            if !s.labels.is_empty() {
                println!("  {:<8} {:<12} labels: {}", "", "", labels_text(&s.labels));
            }
            if !s.via.is_empty() {
                println!("  {:<8} {:<12} via {}", "", "", s.via.join(", "));
            }
            if let serde_json::Value::Object(m) = &s.config {
                let fields: BTreeMap<_, _> = m.iter().collect();
                for (k, v) in fields {
                    println!("  {:<8} {:<12}   {k} = {v}", "", "");
                }
            }
        }
    }
    if plan.ok {
        println!(
            "\n✓ {} app{}: the plan holds",
            plan.apps.len(),
            if plan.apps.len() == 1 { "" } else { "s" }
        );
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let v = serde_json::json!({
            "image": "x", "password": "hunter2",
            "auth": {"username": "u", "password": "p"},
            "list": [{"token": "t"}], "encoded_auth": null
        });
        assert_eq!(
            masked(&v),
            serde_json::json!({
                "image": "x", "password": "****", "auth": "****",
                "list": [{"token": "****"}], "encoded_auth": null
            })
        );
    }
}
