//! Runner operations, one module each. `run` picks the one a job asks for.

mod build;
mod deploy;
mod destroy;
mod release;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::types::{JobKind, OpKind, OpStatus, Operation, ResourceState, Source};
use cairn_protocol::{frame, rpc};
use sha2::Digest as _;

use super::job::{value_of, JobFailure, JobRun};
use crate::config::{self, AppConfig};
use crate::lifecycle::{self, Stages};
use crate::plugins::Value;

/// The app a job works on, loaded on the runner.
pub struct Loaded {
    pub app: AppConfig,
    pub source_dir: PathBuf,
    pub stages: Stages,
    /// The program's catalog with the external plugins this config uses.
    pub catalog: std::sync::Arc<crate::plugins::Catalog>,
    /// The app's config as the cluster resolves it (every scope, by
    /// precedence): what deploy and release steps, and so the deployed
    /// processes, run with. Read for jobs that deploy or release; empty
    /// otherwise. (Build and push steps run with the file's `config_env`.)
    pub env: BTreeMap<String, String>,
    /// What the cluster holds for the project (stored input variable values, the config
    /// `dynamic("cairn", …)` reads), read once for the job.
    pub server: config::ServerValues,
    /// `url { auto_hostname }` (the app's block over the top-level one; default true): whether
    /// the release answers at the app's own name.
    pub auto_hostname: bool,
}

/// The job's config, evaluated for its workspace (and with `artifact` when a stage reads
/// `artifact.*`), and its app.
fn load_app(
    run: &JobRun,
    artifact: Option<serde_json::Value>,
    deploy: Option<serde_json::Value>,
    server: &config::ServerValues,
) -> Result<(config::Config, AppConfig), JobFailure> {
    let (dir, file) = run
        .source
        .clone()
        .ok_or_else(|| JobFailure::new("the job's source is not on this runner yet"))?;
    let path = dir.join(file);
    let inputs = config::Inputs {
        workspace: Some(run.job.spec.workspace.clone()),
        artifact,
        deploy,
        server: Some(server.clone()),
        ..(*run.opts.inputs).clone()
    };
    let cfg = config::load_with(&path, &inputs).map_err(|e| JobFailure::new(e.to_string()))?;
    let app = cfg
        .app(Some(&run.job.spec.app))
        .map_err(|e| JobFailure::new(e.to_string()))?
        .clone();
    cfg.runnable(&app)
        .map_err(|e| JobFailure::new(e.to_string()))?;
    Ok((cfg, app))
}

/// The deploy stage's platform made again from the config evaluated with the artifact, for
/// a deploy stage with fields that read `artifact.*`.
fn platform_with_artifact(
    run: &JobRun,
    l: &Loaded,
    artifact: &Value,
) -> Result<std::sync::Arc<dyn crate::plugins::Platform>, JobFailure> {
    let (_, app) = load_app(run, Some(artifact.data.clone()), None, &l.server)?;
    let p = &app.deploy_stage().map_err(JobFailure::new)?.plugin;
    let platform = l
        .catalog
        .platform(&p.name, &p.config)
        .map_err(|e| JobFailure::new(lifecycle::locate(p, e)))?;
    Ok(std::sync::Arc::from(platform))
}

/// The platform that made deployment `d`: the deploy stage's, made again with the
/// artifact `d` was deployed from when the stage reads `artifact.*` (so destroy and status
/// work on such a platform as deploy did).
async fn platform_for(
    run: &JobRun,
    l: &Loaded,
    d: &Operation,
) -> Result<std::sync::Arc<dyn crate::plugins::Platform>, JobFailure> {
    let stage = l.app.deploy_stage().map_err(JobFailure::new)?;
    if stage.plugin.deferred.is_empty() {
        return Ok(l.stages.platform.clone());
    }
    let artifact = match d.input_seq {
        Some(b) => latest_build_values(run, Some(b)).await?.1.pop(),
        None => None,
    };
    match artifact {
        Some(a) => platform_with_artifact(run, l, &a),
        None => Ok(l.stages.platform.clone()),
    }
}

/// The registry stage's registry made again from the config evaluated with the build's
/// value (`artifact.*`), for a registry stage with fields that read it.
fn registry_with_artifact(
    run: &JobRun,
    l: &Loaded,
    built: &Value,
) -> Result<std::sync::Arc<dyn crate::plugins::Registry>, JobFailure> {
    let (_, app) = load_app(run, Some(built.data.clone()), None, &l.server)?;
    let stage = app.build_stage().map_err(JobFailure::new)?;
    let Some(reg) = &stage.registry else {
        return Err(JobFailure::new(
            "the registry stage is gone from the config",
        ));
    };
    let p = &reg.plugin;
    let registry = l
        .catalog
        .registry(&p.name, &p.config)
        .map_err(|e| JobFailure::new(lifecycle::locate(p, e)))?;
    Ok(std::sync::Arc::from(registry))
}

/// The release stage's releaser made again from the config evaluated with the deployment
/// (`deploy.*`) and the artifact it was made from (`artifact.*`), for a release stage with
/// fields that read them.
fn releaser_with_deployment(
    run: &JobRun,
    l: &Loaded,
    artifact: Option<&Value>,
    deployment: &Value,
) -> Result<std::sync::Arc<dyn crate::plugins::Releaser>, JobFailure> {
    let (_, app) = load_app(
        run,
        artifact.map(|a| a.data.clone()),
        Some(deployment.data.clone()),
        &l.server,
    )?;
    let Some(stage) = &app.release else {
        return Err(JobFailure::new("the release stage is gone from the config"));
    };
    let p = &stage.plugin;
    let releaser = l
        .catalog
        .releaser(&p.name, &p.config)
        .map_err(|e| JobFailure::new(lifecycle::locate(p, e)))?;
    Ok(std::sync::Arc::from(releaser))
}

async fn load(run: &JobRun) -> Result<Loaded, JobFailure> {
    let spec = &run.job.spec;
    let server = crate::appconfig::server_values(
        &mut run.conn(),
        &spec.project,
        std::slice::from_ref(&spec.app),
        &spec.workspace,
    )
    .await
    .map_err(|e| JobFailure::new(format!("cannot read the project's config: {e}")))?;
    let (cfg, app) = load_app(run, None, None, &server)?;
    run.mask.add_config(&cfg, &app);
    let auto_hostname = [&app.url, &cfg.url]
        .into_iter()
        .find_map(|u| u.as_ref().and_then(|u| u.auto_hostname))
        .unwrap_or(true);
    let source_dir = cfg.app_dir(&app);
    let catalog = lifecycle::catalog_for(&cfg, &run.opts.catalog)
        .await
        .map_err(JobFailure::new)?;
    let stages = lifecycle::instantiate(&app, &catalog).map_err(JobFailure::new)?;
    Ok(Loaded {
        app,
        source_dir,
        stages,
        catalog,
        env: BTreeMap::new(),
        server,
        auto_hostname,
    })
}

/// The job's app's environment, from the cluster's config.
async fn resolved_env(run: &JobRun) -> Result<BTreeMap<String, String>, JobFailure> {
    let spec = &run.job.spec;
    crate::appconfig::resolved_env(&mut run.conn(), &spec.project, &spec.app, &spec.workspace)
        .await
        .map_err(|e| JobFailure::new(format!("cannot read the app's config: {e}")))
}

/// Make the job's source a directory on this machine: a local one as it
/// is; an uploaded one fetched from the node (checked against its digest)
/// and unpacked under `<runner dir>/sources/`, once per digest; a git one
/// cloned under `<runner dir>/git/job-N`. The last two show as a step.
async fn materialize(run: &mut JobRun) -> Result<(), JobFailure> {
    let data_dir = run.opts.data_dir.clone();
    let (dir, file) = match run.job.spec.source.clone() {
        Source::Local { dir, config } => (PathBuf::from(dir), config),
        Source::Upload {
            digest,
            size,
            config,
        } => {
            let conn = run.conn();
            let title = format!("Fetching the source {}…", &digest[..digest.len().min(19)]);
            let dir = run
                .plain_step(&title, 0, data_dir.clone(), move |mut ctx| async move {
                    fetch_source(&conn, &data_dir, &digest, size, ctx.out.as_mut()).await
                })
                .await?;
            (dir, config)
        }
        Source::Git {
            url,
            git_ref,
            path,
            config,
        } => {
            let dest = data_dir.join("git").join(format!("job-{}", run.job.id));
            let title = format!("Cloning {url}");
            let dir = run
                .plain_step(&title, 0, data_dir.clone(), move |mut ctx| async move {
                    clone_git(
                        &url,
                        git_ref.as_deref(),
                        path.as_deref(),
                        &dest,
                        ctx.out.as_mut(),
                    )
                    .await
                })
                .await?;
            (dir, config)
        }
    };
    run.source = Some((dir, file));
    Ok(())
}

async fn fetch_source(
    conn: &quinn::Connection,
    data_dir: &std::path::Path,
    digest: &str,
    size: u64,
    out: &mut dyn crate::plugins::OutputSink,
) -> Result<PathBuf, String> {
    use tokio::io::AsyncWriteExt;
    let info = crate::plugins::Stream::Info;
    let hex = cairn_protocol::types::source_digest_hex(digest)?;
    let root = data_dir.join("sources");
    let dest = root.join(format!("sha256-{hex}"));
    if dest.is_dir() {
        out.line(info, &format!("already unpacked in {}", dest.display()));
        return Ok(dest);
    }
    let started = std::time::Instant::now();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("fetching the job's source {digest}: {what}: {e}")
    };
    std::fs::create_dir_all(&root).map_err(|e| fail(&root.display().to_string(), &e))?;
    let req = ClientRequest::FetchSource {
        digest: digest.to_string(),
    };
    let (_send, mut recv) = rpc::open(conn, &req)
        .await
        .map_err(|e| fail("asking the node", &e))?;
    match frame::read_required::<_, ClientResponse>(&mut recv)
        .await
        .map_err(|e| fail("reading the answer", &e))?
    {
        ClientResponse::SourceFound { size: s } if s == size => {}
        ClientResponse::SourceFound { size: s } => {
            return Err(fail("the node", &format!("has {s} bytes, not {size}")))
        }
        ClientResponse::Error { message } => return Err(fail("the node", &message)),
        other => return Err(fail("the node", &format!("answered {other:?}"))),
    }
    let tmp = tempfile::Builder::new()
        .prefix(".fetching-")
        .tempfile_in(&root)
        .map_err(|e| fail(&root.display().to_string(), &e))?;
    let mut file = tokio::fs::File::from_std(
        tmp.reopen()
            .map_err(|e| fail(&tmp.path().display().to_string(), &e))?,
    );
    let mut hash = sha2::Sha256::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = recv
            .read(&mut buf)
            .await
            .map_err(|e| fail(&format!("after {got} bytes"), &e))?;
        let Some(n) = n else { break };
        got += n as u64;
        if got > size {
            return Err(fail("the node", &"sent more than the source's size"));
        }
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])
            .await
            .map_err(|e| fail(&tmp.path().display().to_string(), &e))?;
    }
    file.flush()
        .await
        .map_err(|e| fail(&tmp.path().display().to_string(), &e))?;
    let actual = format!("sha256:{}", hex::encode(hash.finalize()));
    if got != size || actual != digest {
        return Err(fail(
            "the bytes received",
            &format!("{got} bytes, {actual}: not the source"),
        ));
    }
    let tarball = tmp.path().to_path_buf();
    let into = dest.clone();
    tokio::task::spawn_blocking(move || crate::upload::unpack(&tarball, &into))
        .await
        .map_err(|e| fail("unpacking", &e))?
        .map_err(|e| fail("unpacking", &e))?;
    drop(tmp);
    out.line(
        info,
        &format!(
            "fetched {:.1} MB from the node and unpacked it in {} ({:.1} s)",
            size as f64 / (1024.0 * 1024.0),
            dest.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(dest)
}

/// Clone `url` (at `git_ref`, a branch, tag or commit) into `dest` and
/// return `dest/path`. The runner's own git credentials (its SSH keys, its
/// credential helper) are what git uses; it never prompts.
async fn clone_git(
    url: &str,
    git_ref: Option<&str>,
    path: Option<&str>,
    dest: &std::path::Path,
    out: &mut dyn crate::plugins::OutputSink,
) -> Result<PathBuf, String> {
    let info = crate::plugins::Stream::Info;
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let git = |args: &[&str]| {
        let mut c = tokio::process::Command::new("git");
        c.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        c
    };
    let run = |mut c: tokio::process::Command| async move {
        let o = c
            .output()
            .await
            .map_err(|e| format!("cannot run git: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            let last: Vec<&str> = err.lines().rev().take(3).collect();
            Err(last.into_iter().rev().collect::<Vec<_>>().join(" / "))
        }
    };
    let d = dest.to_string_lossy().into_owned();
    // A branch or tag: a shallow clone of it. A commit (or a clone that
    // cannot be shallow): the whole history, then a checkout.
    let shallow = match git_ref {
        Some(r) => {
            run(git(&[
                "clone", "--quiet", "--depth", "1", "--branch", r, url, &d,
            ]))
            .await
        }
        None => run(git(&["clone", "--quiet", "--depth", "1", url, &d])).await,
    };
    if let Err(first) = shallow {
        let Some(r) = git_ref else {
            return Err(format!("git clone {url}: {first}"));
        };
        if dest.exists() {
            let _ = std::fs::remove_dir_all(dest);
        }
        run(git(&["clone", "--quiet", url, &d]))
            .await
            .map_err(|e| format!("git clone {url}: {e}"))?;
        run(git(&["-C", &d, "checkout", "--quiet", r]))
            .await
            .map_err(|e| {
                format!("git checkout {r} in {url}: {e} (the first attempt said: {first})")
            })?;
    }
    let commit = run(git(&["-C", &d, "rev-parse", "HEAD"]))
        .await
        .unwrap_or_default();
    out.line(
        info,
        &format!(
            "cloned {url}{} at commit {commit}",
            git_ref.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    );
    let dir = match path.filter(|p| !p.is_empty()) {
        Some(p) => {
            if std::path::Path::new(p)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
                || p.starts_with('/')
            {
                return Err(format!(
                    "data_source path {p:?} must stay inside the repository"
                ));
            }
            dest.join(p)
        }
        None => dest.to_path_buf(),
    };
    if !dir.is_dir() {
        return Err(format!(
            "the repository has no directory {:?} at that commit",
            path.unwrap_or(".")
        ));
    }
    Ok(dir)
}

pub async fn run(run: &mut JobRun) -> Result<(), JobFailure> {
    materialize(run).await?;
    let mut loaded = load(run).await?;
    if matches!(
        run.job.spec.kind,
        JobKind::Up { .. } | JobKind::Deploy { .. } | JobKind::Release { .. }
    ) {
        loaded.env = resolved_env(run).await?;
    }
    match run.job.spec.kind.clone() {
        JobKind::Up {
            release,
            prune,
            retain,
        } => {
            let (build, artifact) = build::run(run, &loaded, true).await?;
            let values: Vec<Value> = [Some(build.1.clone()), artifact.map(|a| a.1)]
                .into_iter()
                .flatten()
                .collect();
            let dep = deploy::run(run, &loaded, build.0, values).await?;
            if release {
                release::run(run, &loaded, dep, prune, retain).await?;
            }
            Ok(())
        }
        JobKind::Build { push } => build::run(run, &loaded, push).await.map(|_| ()),
        JobKind::Deploy { build } => {
            let (seq, values) = latest_build_values(run, build).await?;
            deploy::run(run, &loaded, seq, values).await.map(|_| ())
        }
        JobKind::Release {
            deployment,
            prune,
            retain,
            weight: _,
        } => {
            let target = find_deployment(run, deployment).await?;
            let value = value_of(&target)?;
            release::run(run, &loaded, (target.sequence, value), prune, retain).await
        }
        JobKind::Destroy { deployment } => destroy::run(run, &loaded, deployment).await,
        JobKind::Status => status::run(run, &loaded).await,
    }
}

/// The latest successful build (or `want`), plus its pushed artifact if any.
async fn latest_build_values(
    run: &JobRun,
    want: Option<u64>,
) -> Result<(u64, Vec<Value>), JobFailure> {
    let builds = run.operations(OpKind::Build).await?;
    let build = builds
        .iter()
        .rev()
        .find(|b| b.status == OpStatus::Success && want.is_none_or(|w| b.sequence == w))
        .ok_or_else(|| match want {
            Some(w) => JobFailure::new(format!(
                "no successful build v{w} of app {:?}",
                run.job.spec.app
            )),
            None => JobFailure::new(format!(
                "app {:?} has no successful build yet: run `cairn build` first",
                run.job.spec.app
            )),
        })?;
    let mut values = vec![value_of(build)?];
    let artifacts = run.operations(OpKind::Artifact).await?;
    if let Some(a) = artifacts
        .iter()
        .rev()
        .find(|a| a.status == OpStatus::Success && a.input_seq == Some(build.sequence))
    {
        values.push(value_of(a)?);
    }
    Ok((build.sequence, values))
}

/// A deployment that can be released: `want`, or the latest one.
async fn find_deployment(run: &JobRun, want: Option<u64>) -> Result<Operation, JobFailure> {
    let deps = run.operations(OpKind::Deployment).await?;
    let app = &run.job.spec.app;
    let found = match want {
        Some(w) => deps
            .into_iter()
            .find(|d| d.sequence == w)
            .ok_or_else(|| JobFailure::new(format!("app {app:?} has no deployment v{w}")))?,
        None => deps
            .into_iter()
            .rev()
            .find(|d| d.status == OpStatus::Success && d.state == ResourceState::Active)
            .ok_or_else(|| {
                JobFailure::new(format!(
                    "app {app:?} has no running deployment: run `cairn deploy` first"
                ))
            })?,
    };
    if found.status != OpStatus::Success {
        return Err(JobFailure::new(format!(
            "deployment v{} did not succeed ({}); it cannot be released",
            found.sequence,
            found.status.word()
        )));
    }
    if found.state == ResourceState::Destroyed {
        return Err(JobFailure::new(format!(
            "deployment v{} was destroyed; deploy again",
            found.sequence
        )));
    }
    Ok(found)
}
