//! `cairn pipeline list` and `cairn pipeline run NAME`: the `pipeline` blocks of the config
//! (Waypoint's form), run step by step.
//!
//! A step is `use "exec" { command, args }` (the command runs on this machine, in the app's
//! directory, with the app's config env), `use "build" {}`, `use "deploy" {}`,
//! `use "release" {}` or `use "up" {}` (the app's job of that kind, run like `cairn build`
//! etc.), or a nested `pipeline "NAME" { … }`. A step's `workspace` applies to it and to
//! the steps nested in it that do not name their own. Steps run in order; the first that
//! fails stops the pipeline, and the command exits 1 after a summary of every step.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context as _;
use cairn_protocol::types::JobKind;

use super::lifecycle::AppArg;
use super::{ConfigInputs, Global};
use crate::config::{self, Config, Pipeline, StepAction};

#[derive(Debug, clap::Subcommand)]
pub enum PipelineCmd {
    /// The config's pipelines and their steps.
    List {
        #[command(flatten)]
        inputs: ConfigInputs,
    },
    /// Run a pipeline: its steps in order, stopping at the first that fails.
    Run {
        /// The pipeline's name (`pipeline "NAME" { … }`).
        name: String,
        #[command(flatten)]
        app: AppArg,
    },
}

pub async fn run(g: &Global, cmd: &PipelineCmd) -> anyhow::Result<i32> {
    match cmd {
        PipelineCmd::List { inputs } => {
            let cfg = super::load_config_with(&g.dir(), &inputs.inputs())?;
            if cfg.pipelines.is_empty() {
                println!("{} has no pipeline blocks", cfg.file.display());
            }
            for p in &cfg.pipelines {
                println!("pipeline {:?} ({})", p.name, p.location);
                print_steps(p, 1);
            }
            Ok(0)
        }
        PipelineCmd::Run { name, app } => {
            let cfg = super::load_config_connected(g, &app.inputs.inputs()).await?;
            let Some(p) = cfg.pipelines.iter().find(|p| &p.name == name) else {
                let names: Vec<&str> = cfg.pipelines.iter().map(|p| p.name.as_str()).collect();
                anyhow::bail!(
                    "{}: no pipeline named {name:?} (defined: {})",
                    cfg.file.display(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            };
            let mut results: Vec<(String, bool)> = Vec::new();
            let ok = run_pipeline(g, &cfg, app, p, None, "", &mut results).await?;
            println!();
            for (step, passed) in &results {
                println!("{} {step}", if *passed { "✓" } else { "✗" });
            }
            if ok {
                println!("pipeline {name:?}: {} step(s) done", results.len());
                Ok(0)
            } else {
                println!("pipeline {name:?} failed");
                Ok(1)
            }
        }
    }
}

fn print_steps(p: &Pipeline, depth: usize) {
    for s in &p.steps {
        let pad = "  ".repeat(depth);
        let ws = s
            .workspace
            .as_deref()
            .map(|w| format!(" (workspace {w})"))
            .unwrap_or_default();
        match &s.action {
            StepAction::Use(u) => println!("{pad}step {:?}: use {:?}{ws}", s.name, u.name),
            StepAction::Pipeline(inner) => {
                println!("{pad}step {:?}: pipeline {:?}{ws}", s.name, inner.name);
                print_steps(inner, depth + 1);
            }
        }
    }
}

/// Runs the steps of `p`; `workspace` is the one inherited from an enclosing step. Returns
/// whether every step passed (it stops at the first that fails).
fn run_pipeline<'a>(
    g: &'a Global,
    cfg: &'a Config,
    app: &'a AppArg,
    p: &'a Pipeline,
    workspace: Option<&'a str>,
    prefix: &'a str,
    results: &'a mut Vec<(String, bool)>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<bool>> + 'a>> {
    Box::pin(async move {
        for step in &p.steps {
            let label = format!("{prefix}{}", step.name);
            let ws = step.workspace.as_deref().or(workspace);
            let passed = match &step.action {
                StepAction::Pipeline(inner) => {
                    println!("» step {label}: pipeline {:?}", inner.name);
                    let nested = format!("{label}/");
                    run_pipeline(g, cfg, app, inner, ws, &nested, results).await?
                }
                StepAction::Use(u) => {
                    println!("» step {label}: {}", u.name);
                    let ok = run_use(g, cfg, app, u, step.image_url.as_deref(), ws).await?;
                    results.push((label.clone(), ok));
                    ok
                }
            };
            if !passed {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

async fn run_use(
    g: &Global,
    cfg: &Config,
    app: &AppArg,
    u: &config::PluginUse,
    image_url: Option<&str>,
    workspace: Option<&str>,
) -> anyhow::Result<bool> {
    let mut app = app.clone();
    if let Some(w) = workspace {
        app.inputs.workspace = Some(w.to_string());
    }
    let kind = match u.name.as_str() {
        "exec" => return run_exec(cfg, &app, u, image_url),
        "build" => JobKind::Build { push: true },
        "deploy" => JobKind::Deploy { build: None },
        "release" => JobKind::Release {
            deployment: None,
            prune: false,
            retain: None,
            weight: None,
        },
        "up" => JobKind::Up {
            release: true,
            prune: false,
            retain: None,
        },
        other => anyhow::bail!(
            "{}: a pipeline step cannot use {other:?}: steps use exec, build, deploy, release or up",
            u.location
        ),
    };
    Ok(super::lifecycle::run(g, &app, kind).await? == 0)
}

/// `use "exec" { command = "x" args = [...] }` or `command = ["x", …]`: run here.
fn run_exec(
    cfg: &Config,
    app: &AppArg,
    u: &config::PluginUse,
    image_url: Option<&str>,
) -> anyhow::Result<bool> {
    let mut argv: Vec<String> = match u.config.get("command") {
        Some(serde_json::Value::String(c)) => vec![c.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .with_context(|| {
                format!("{}: `command` must hold strings", u.location_of("command"))
            })?,
        _ => anyhow::bail!(
            "{}: an exec step needs `command`, e.g. command = \"make\" args = [\"test\"]",
            u.location
        ),
    };
    if let Some(serde_json::Value::Array(args)) = u.config.get("args") {
        for a in args {
            match a.as_str() {
                Some(a) => argv.push(a.to_string()),
                None => anyhow::bail!("{}: `args` must hold strings", u.location_of("args")),
            }
        }
    }
    if argv.first().is_none_or(|p| p.is_empty()) {
        anyhow::bail!("{}: `command` is empty", u.location_of("command"));
    }
    if let Some(image) = image_url {
        println!("  │ image_url {image:?} is not used: Cairn runs exec steps on this machine");
    }
    let app_cfg = match app.app.as_deref() {
        Some(a) => cfg.app(Some(a)).ok(),
        None => cfg.app(None).ok(),
    };
    let dir = app_cfg.map_or_else(|| cfg.dir(), |a| cfg.app_dir(a));
    let env = app_cfg.map(|a| a.config_env.clone()).unwrap_or_default();
    Ok(exec_here(&argv, &dir, &env))
}

fn exec_here(
    argv: &[String],
    dir: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> bool {
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(st) if st.success() => true,
        Ok(st) => {
            println!("  ! `{}` exited with {st}", argv.join(" "));
            false
        }
        Err(e) => {
            println!("  ! cannot run `{}`: {e}", argv[0]);
            false
        }
    }
}
