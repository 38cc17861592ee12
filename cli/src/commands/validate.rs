//! `cairn validate`: load the config here, check every app's plugins and how
//! values flow between its stages, and print the plan; nothing is queued and
//! no node is needed.
//!
//! Every error is reported at once, each with its `file:line:column`: those
//! of the file itself (evaluation, types, variables; only a syntax error stops
//! the parser), then every plugin and every stage-to-stage type flow of every
//! app. Field values that look secret (passwords, tokens, credentials), fields
//! that read a sensitive variable, sensitive variables and config env values
//! are masked. What `cairn up` needs but the file leaves out (a project name,
//! a stage) is shown as a warning, and is not an error here.

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
    /// Paths of `config { file }` entries (contents are not shown).
    pub files: Vec<String>,
    pub errors: Vec<String>,
}

/// A variable as the plan shows it.
#[derive(Debug, Serialize)]
pub struct VariablePlan {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// JSON, `(sensitive)`, or `None` when it has none.
    pub value: Option<String>,
    /// Where the value came from: default, -var, env NAME, file F…
    pub from: Option<String>,
    pub sensitive: bool,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub file: String,
    pub project: String,
    pub workspace: String,
    pub variables: Vec<VariablePlan>,
    pub apps: Vec<AppPlan>,
    /// `pipeline` blocks: name → step names.
    pub pipelines: BTreeMap<String, Vec<String>>,
    /// What `cairn up` needs that the file leaves out.
    pub warnings: Vec<String>,
    /// What Cairn took differently from the file, harmlessly (a name with '/').
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What stops every operation (a `dynamic()` source that cannot be reached from here, a
    /// name Cairn cannot hold): errors, reported after the whole file was evaluated.
    pub blockers: Vec<String>,
    pub ok: bool,
}

/// Field names whose values are never shown (the names a runner masks the values of).
fn is_secret(field: &str) -> bool {
    crate::runner::mask::credential_name(field)
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
    let mut config = masked(&p.config);
    if let serde_json::Value::Object(m) = &mut config {
        for f in &p.sensitive_fields {
            if m.contains_key(f) {
                m.insert(f.clone(), serde_json::Value::String("(sensitive)".into()));
            }
        }
        for f in &p.deferred {
            m.insert(
                f.clone(),
                serde_json::Value::String(
                    "(known when the operation runs: reads artifact.* or deploy.*)".into(),
                ),
            );
        }
        for f in &p.pending {
            m.insert(
                f.clone(),
                serde_json::Value::String("(unknown: a variable it reads has no value)".into()),
            );
        }
    }
    StagePlan {
        stage: s,
        plugin: p.name.clone(),
        location: p.location.to_string(),
        config,
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

    if let Some(build) = &app.build {
        let b = &build.builder;
        let mut s = stage("build", b);
        s.labels = build.labels.clone();
        match catalog.builder(&b.name, &b.config) {
            Ok(builder) => {
                s.makes = Some(builder.output_type().to_string());
                have.push(builder.output_type().to_string());
            }
            Err(e) => errors.push(locate(b, e)),
        }
        stages.push(s);
    }

    if let Some(r) = app.build.as_ref().and_then(|b| b.registry.as_ref()) {
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

    let Some(deploy) = &app.deploy else {
        return AppPlan {
            name: app.name.clone(),
            path: app.path.display().to_string(),
            labels: app.labels.clone(),
            stages,
            config_env: app.config_env.keys().cloned().collect(),
            files: app.files.keys().cloned().collect(),
            errors,
        };
    };
    let d = &deploy.plugin;
    let mut s = stage("deploy", d);
    s.labels = deploy.labels.clone();
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
        // Checked when the deploy evaluates it with the artifact.
        Err(e) if crate::lifecycle::about_deferred(d, &e) => {}
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
        files: app.files.keys().cloned().collect(),
        errors,
    }
}

pub async fn run(
    g: &Global,
    json: bool,
    offline: bool,
    inputs: &super::ConfigInputs,
) -> anyhow::Result<i32> {
    let path = config::find(&g.dir())?;
    let mut inputs = inputs.inputs();
    if !offline {
        inputs.server = cluster_values(g, &path, &inputs).await;
    }
    let cfg = match config::load_with(&path, &inputs) {
        Ok(cfg) => cfg,
        Err(e) => {
            let errors: Vec<String> = e.each().iter().map(|e| e.to_string()).collect();
            if json {
                let out = serde_json::json!({
                    "file": path.display().to_string(),
                    "errors": errors,
                    "ok": false,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            report_errors(&errors, &path.display().to_string());
            return Ok(1);
        }
    };
    // External plugins the config uses join the catalog (an unusable one is an error of
    // the plan, like a missing plugin).
    let (catalog, plugin_error) = match crate::lifecycle::catalog_for(&cfg, &g.catalog).await {
        Ok(c) => (c, None),
        Err(e) => (g.catalog.clone(), Some(e)),
    };
    let mut apps: Vec<AppPlan> = cfg.apps.iter().map(|a| plan_app(a, &catalog)).collect();
    if let (Some(e), Some(first)) = (plugin_error, apps.first_mut()) {
        first.errors.insert(0, e);
    }
    let blockers: Vec<String> = cfg.blockers.iter().map(|u| u.to_string()).collect();
    let ok = apps.iter().all(|a| a.errors.is_empty()) && blockers.is_empty();
    let plan = Plan {
        file: cfg.file.display().to_string(),
        project: cfg.project.clone(),
        workspace: cfg.workspace.clone(),
        variables: cfg
            .variables
            .iter()
            .map(|v| VariablePlan {
                name: v.name.clone(),
                ty: v.ty.clone(),
                value: v.value.as_ref().map(|x| {
                    if x.sensitive {
                        x.shown()
                    } else {
                        masked(&serde_json::json!({ "v": x.value }))["v"].to_string()
                    }
                }),
                from: v.value.as_ref().map(|x| x.origin.to_string()),
                sensitive: v.sensitive,
            })
            .collect(),
        apps,
        pipelines: cfg
            .pipelines
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.steps.iter().map(|s| s.name.clone()).collect(),
                )
            })
            .collect(),
        warnings: cfg.gaps.iter().map(|g| g.to_string()).collect(),
        notes: cfg.notes.iter().map(|g| g.to_string()).collect(),
        blockers,
        ok,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan);
    }
    for n in &plan.notes {
        eprintln!("note: {n}");
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if !ok {
        let errors: Vec<String> = plan
            .blockers
            .iter()
            .cloned()
            .chain(plan.apps.iter().flat_map(|a| a.errors.clone()))
            .collect();
        report_errors(&errors, &plan.file);
        return Ok(1);
    }
    Ok(0)
}

/// What the cluster stores for the config's project, when the context's cluster is at hand
/// (`None`, with a note saying why, otherwise: validate works offline).
async fn cluster_values(
    g: &Global,
    path: &std::path::Path,
    inputs: &config::Inputs,
) -> Option<config::ServerValues> {
    let (_, names) = config::attempt(path, inputs).ok()?;
    let project = names.project.clone()?;
    let ctx = match crate::client::resolve_running(g.context.as_deref()).await {
        Ok(Some(ctx)) => ctx,
        Ok(None) => return None,
        Err(e) => {
            eprintln!("note: values the cluster stores are not read: {e:#}");
            return None;
        }
    };
    let read = async {
        let mut c = crate::client::connect(&ctx).await?;
        let v = crate::appconfig::server_values(&mut c, &project, &names.apps, &inputs.workspace())
            .await;
        c.close();
        v
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), read).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            eprintln!("note: values the cluster stores are not read: {e}");
            None
        }
        Err(_) => {
            eprintln!("note: values the cluster stores are not read: the cluster did not answer within 10 s");
            None
        }
    }
}

fn report_errors(errors: &[String], file: &str) {
    for e in errors {
        eprintln!("error: {e}");
    }
    let n = errors.len();
    eprintln!("{n} error{} in {file}", if n == 1 { "" } else { "s" });
}

fn print_plan(plan: &Plan) {
    println!(
        "{} (project {:?}, workspace {:?})",
        plan.file, plan.project, plan.workspace
    );
    if !plan.variables.is_empty() {
        println!();
        println!("variables:");
        for v in &plan.variables {
            let value = v.value.as_deref().unwrap_or("(no value)");
            let from = v
                .from
                .as_deref()
                .map(|f| format!("  from {f}"))
                .unwrap_or_default();
            println!("  {:<24} {:<14} = {value}{from}", v.name, v.ty);
        }
    }
    for (name, steps) in &plan.pipelines {
        println!();
        println!("pipeline {name:?}: {}", steps.join(" → "));
    }
    for app in &plan.apps {
        println!();
        let env = if app.config_env.is_empty() {
            String::new()
        } else {
            format!("; config env: {}", app.config_env.join(", "))
        };
        println!("app {:?} (path {}{env})", app.name, app.path);
        if !app.files.is_empty() {
            println!("  config files: {}", app.files.join(", "));
        }
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
