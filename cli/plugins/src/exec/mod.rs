//! Platform `exec`: Waypoint's generic platform that deploys by running a
//! command (`kubectl apply`, `terraform apply`, a script) with the artifact's
//! values templated into files.
//!
//! ```hcl
//! deploy {
//!   use "exec" {
//!     command = ["kubectl", "apply", "-f", "<TPL>"]
//!     template {
//!       path = "./k8s"      # a file or a directory
//!     }
//!   }
//! }
//! ```
//!
//! Fields: `command` (a list: program and arguments; or a string, the program,
//! with `args`), `template { path }` (optional), `dir` (the working directory,
//! relative to the app's source directory, which is the default) and `env`
//! (added to the runner's environment for the command).
//!
//! The template (a file, or a directory rendered file by file into the same
//! layout) is rendered ([`template`]) into a private directory under the
//! runner's data directory; `<TPL>` in the command is replaced by the rendered
//! file's or directory's path. The rendered files are removed once the command
//! has ended (or the deploy was cancelled). Template data: `.Input.NAME`, the
//! input value's fields (with Waypoint's `DockerImageFull`, `DockerImageName`,
//! `DockerImageTag` for an image), `.Env.NAME` (the command's environment: the
//! runner's, the app's config env over it, this plugin's `env` over both),
//! `.App`, `.Project`, `.Workspace`.
//!
//! Invariants:
//! - The command runs in its own process group, killed as a whole when the
//!   deploy is cancelled.
//! - Exec deployments are not destroyed: the command's effects are outside
//!   Cairn's view, so `destroy` succeeds and says so, and `status` knows of no
//!   instances.

mod template;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Split};

use crate::command::resolve_program;
use crate::{
    async_trait, command, config_error, files, null, parse_config, DeploymentHealth, OpContext,
    OutputSink, Platform, PluginError, Stream, Value,
};

pub const DEPLOYMENT: &str = "exec.Deployment";

/// Replaced in the command by the rendered template's path.
pub const TPL: &str = "<TPL>";

/// What the platform takes: every artifact Cairn's builders and registries
/// produce (it only reads the value's fields, for templates).
pub const INPUT_TYPES: &[&str] = &[
    "docker.Image",
    files::ARTIFACT,
    files::STORED_ARTIFACT,
    command::OUTPUT,
    null::ARTIFACT,
];

/// What `destroy` says.
const NOT_DESTROYED: &str = "exec deployments are not destroyed: the command's effects stay";

/// Output lines kept for the error of a failed command.
const TAIL_LINES: usize = 10;

/// How long output is still read after the command exited, when a process it
/// left in the background holds its output open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// `exec.Deployment`: the command a deploy ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// As it ran, `<TPL>` replaced (by a path removed since).
    pub command: Vec<String>,
    pub dir: PathBuf,
    /// Always 0: a command that fails fails the deploy.
    pub exit_code: i32,
    /// The template's `path` as configured.
    #[serde(default)]
    pub template: Option<PathBuf>,
    /// The rendered files: a file template's file name, or the paths inside a
    /// directory template (with `/`), sorted.
    #[serde(default)]
    pub template_files: Vec<String>,
}

impl crate::Typed for Deployment {
    const TYPE_NAME: &'static str = DEPLOYMENT;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    command: CommandField,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    template: Option<TemplateConfig>,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateConfig {
    path: PathBuf,
}

/// `command = ["prog", "arg"]` or `command = "prog"`.
#[derive(Debug)]
enum CommandField {
    Line(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for CommandField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandField;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<CommandField, E> {
                Ok(CommandField::Line(s.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandField, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(CommandField::List(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Platform `exec`.
pub struct ExecPlatform {
    /// Program and arguments.
    argv: Vec<String>,
    template: Option<PathBuf>,
    dir: Option<PathBuf>,
    env: BTreeMap<String, String>,
}

impl ExecPlatform {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Platform>, PluginError> {
        let config: Config = parse_config("exec", config)?;
        let argv = match (config.command, config.args) {
            (CommandField::List(list), None) => list,
            (CommandField::List(_), Some(_)) => {
                return Err(config_error(
                    "exec",
                    "args",
                    "goes with a string `command`; with a list, put the arguments in the list",
                ))
            }
            (CommandField::Line(program), args) => {
                let mut argv = vec![program];
                argv.extend(args.unwrap_or_default());
                argv
            }
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(config_error(
                "exec",
                "command",
                "must name a program to run",
            ));
        }
        let template = config.template.map(|t| t.path);
        if template.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(config_error(
                "exec",
                "template.path",
                "must name a file or a directory",
            ));
        }
        if template.is_none() && argv.iter().any(|a| a.contains(TPL)) {
            return Err(config_error(
                "exec",
                "command",
                "uses <TPL> but there is no `template` block to render",
            ));
        }
        Ok(Box::new(ExecPlatform {
            argv,
            template,
            dir: config.dir,
            env: config.env,
        }))
    }

    /// The working directory, which must exist.
    fn workdir(&self, ctx: &OpContext) -> Result<PathBuf, PluginError> {
        let dir = match &self.dir {
            Some(dir) => ctx.source_dir.join(dir),
            None => ctx.source_dir.clone(),
        };
        if !dir.is_dir() {
            return Err(PluginError::Failed(format!(
                "exec: working directory {} is not a directory",
                dir.display()
            )));
        }
        Ok(dir)
    }
}

#[async_trait]
impl Platform for ExecPlatform {
    fn input_types(&self) -> &[&'static str] {
        INPUT_TYPES
    }

    fn output_type(&self) -> &'static str {
        DEPLOYMENT
    }

    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let dir = self.workdir(ctx)?;
        // What the command gets besides the runner's environment.
        let mut env = ctx.env.clone();
        env.extend(self.env.clone());
        let rendered = match &self.template {
            Some(path) => {
                let mut all: BTreeMap<String, String> = std::env::vars().collect();
                all.extend(env.clone());
                let data = template::Data {
                    input_type: input.type_name.clone(),
                    input: template::Data::input_fields(&input.data),
                    env: all,
                    app: ctx.app.clone(),
                    project: ctx.project.clone(),
                    workspace: ctx.workspace.clone(),
                };
                let r = tokio::task::block_in_place(|| render_template(ctx, path, &data))?;
                ctx.info(&format!(
                    "rendered template {} ({} file{}) from the {}",
                    path.display(),
                    r.files.len(),
                    if r.files.len() == 1 { "" } else { "s" },
                    input.type_name
                ));
                Some(r)
            }
            None => None,
        };
        let argv: Vec<String> = match &rendered {
            Some(r) => {
                let tpl = r.path.to_string_lossy();
                self.argv.iter().map(|a| a.replace(TPL, &tpl)).collect()
            }
            None => self.argv.clone(),
        };
        if rendered.is_some() && !self.argv.iter().any(|a| a.contains(TPL)) {
            ctx.info("the command does not use <TPL>: it is not given the rendered template");
        }
        let shown = argv.join(" ");
        ctx.info(&format!("running `{shown}` in {}", dir.display()));
        let result = run_command(&argv, &dir, &env, ctx.out.as_mut()).await;
        let template_files = match rendered {
            Some(r) => r.remove(ctx),
            None => Vec::new(),
        };
        let (code, tail) = result?;
        if code != Some(0) {
            let exit = match code {
                Some(code) => format!("exited with code {code}"),
                None => "was killed by a signal".to_string(),
            };
            let output = if tail.is_empty() {
                "it printed nothing".to_string()
            } else {
                format!("last output: {}", Vec::from(tail).join(" | "))
            };
            return Err(PluginError::Failed(format!(
                "command `{shown}` {exit}; {output}"
            )));
        }
        Value::of(&Deployment {
            command: argv,
            dir,
            exit_code: 0,
            template: self.template.clone(),
            template_files,
        })
    }

    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        deployment.get::<Deployment>()?;
        ctx.info(NOT_DESTROYED);
        Ok(())
    }

    async fn destroy_interrupted(&self, _ctx: &mut OpContext) -> Result<String, PluginError> {
        // The runner shows what this returns.
        Ok(format!("nothing: {NOT_DESTROYED}"))
    }

    async fn status(
        &self,
        ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
        deployment.get::<Deployment>()?;
        ctx.info("status unknown: an exec deployment has no instances Cairn can see");
        Ok(DeploymentHealth {
            total: 0,
            alive: 0,
            instances: Vec::new(),
        })
    }

    fn url(&self, _deployment: &Value) -> Option<String> {
        None
    }
}

/// A rendered template, in a private directory removed by [`Rendered::remove`]
/// or when dropped (a cancelled deploy).
struct Rendered {
    /// The private directory holding it.
    root: PathBuf,
    /// The rendered file or directory: what `<TPL>` stands for.
    path: PathBuf,
    /// Relative to the template (a file: its name), sorted.
    files: Vec<String>,
}

impl Rendered {
    /// Removes the rendered files (saying so when that fails); returns their names.
    fn remove(mut self, ctx: &mut OpContext) -> Vec<String> {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            ctx.info(&format!(
                "could not remove the rendered template {}: {e}",
                self.root.display()
            ));
        }
        self.root = PathBuf::new();
        std::mem::take(&mut self.files)
    }
}

impl Drop for Rendered {
    fn drop(&mut self) {
        if !self.root.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

static RENDER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Renders the template at `path` (relative to the source directory) into a
/// new private directory under `<data_dir>/exec/`.
fn render_template(
    ctx: &OpContext,
    path: &Path,
    data: &template::Data,
) -> Result<Rendered, PluginError> {
    let src = ctx.source_dir.join(path);
    let meta = fs::metadata(&src)
        .map_err(|e| PluginError::io(format!("exec: template {}", path.display()), e))?;
    let base = ctx.data_dir.join("exec");
    fs::create_dir_all(&base)
        .map_err(|e| PluginError::io(format!("creating {}", base.display()), e))?;
    let n = RENDER_COUNTER.fetch_add(1, Ordering::Relaxed);
    let root = base.join(format!(
        ".render-{}-v{}-{}-{n}",
        safe_name(&ctx.app),
        ctx.sequence,
        std::process::id()
    ));
    private_dir(&root)?;
    let mut rendered = Rendered {
        root: root.clone(),
        path: PathBuf::new(),
        files: Vec::new(),
    };
    let name = std::path::absolute(&src)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_os_string()))
        .filter(|n| n != "." && n != "..")
        .unwrap_or_else(|| "template".into());
    rendered.path = root.join(&name);
    if meta.is_dir() {
        // The data dir may be inside the template directory (`path = "."`).
        let skip = fs::canonicalize(&ctx.data_dir).ok();
        render_dir(
            &src,
            &rendered.path,
            path,
            "",
            skip.as_deref(),
            data,
            &mut rendered.files,
        )?;
        rendered.files.sort();
    } else {
        render_file(&src, &rendered.path, path, data)?;
        rendered.files.push(name.to_string_lossy().into_owned());
    }
    Ok(rendered)
}

/// Renders the directory `src` into `dest` (created), recording the files as
/// `prefix` + their relative paths. `shown` names `src` in errors.
fn render_dir(
    src: &Path,
    dest: &Path,
    shown: &Path,
    prefix: &str,
    skip: Option<&Path>,
    data: &template::Data,
    files: &mut Vec<String>,
) -> Result<(), PluginError> {
    private_dir(dest)?;
    let entries = fs::read_dir(src)
        .map_err(|e| PluginError::io(format!("exec: reading template {}", shown.display()), e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            PluginError::io(format!("exec: reading template {}", shown.display()), e)
        })?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let from = src.join(&name);
        let to = dest.join(&name);
        let shown = shown.join(&name);
        let rel = format!("{prefix}{}", name.to_string_lossy());
        // Symlinks are followed.
        let meta = fs::metadata(&from)
            .map_err(|e| PluginError::io(format!("exec: template {}", shown.display()), e))?;
        if meta.is_dir() {
            if skip.is_some_and(|s| fs::canonicalize(&from).is_ok_and(|c| c == s)) {
                continue;
            }
            if fs::symlink_metadata(&from).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(PluginError::Failed(format!(
                    "exec: template {}: a symlink to a directory (not followed)",
                    shown.display()
                )));
            }
            render_dir(&from, &to, &shown, &format!("{rel}/"), skip, data, files)?;
        } else {
            render_file(&from, &to, &shown, data)?;
            files.push(rel);
        }
    }
    Ok(())
}

/// Renders one file, keeping its permission bits. A file that is not UTF-8
/// text is copied as it is.
fn render_file(
    src: &Path,
    dest: &Path,
    shown: &Path,
    data: &template::Data,
) -> Result<(), PluginError> {
    let bytes = fs::read(src)
        .map_err(|e| PluginError::io(format!("exec: reading template {}", shown.display()), e))?;
    let bytes = match String::from_utf8(bytes) {
        Ok(text) => template::render(&text, data)
            .map_err(|e| PluginError::Failed(format!("exec: template {}: {e}", shown.display())))?
            .into_bytes(),
        Err(not_text) => not_text.into_bytes(),
    };
    fs::write(dest, bytes)
        .map_err(|e| PluginError::io(format!("writing {}", dest.display()), e))?;
    if let Ok(meta) = fs::metadata(src) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        let _ = fs::set_permissions(dest, fs::Permissions::from_mode(mode));
    }
    Ok(())
}

/// Creates `dir`, readable by this user only (rendered templates may hold
/// config values).
fn private_dir(dir: &Path) -> Result<(), PluginError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| PluginError::io(format!("creating {}", dir.display()), e))
}

/// `[A-Za-z0-9_.-]` only.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Kills a command's process group when dropped before [`GroupGuard::disarm`]:
/// a cancelled deploy leaves none of the command's processes running.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs `argv` in `dir` with `env` added, stdin closed, in a new process group,
/// sending its output line by line to `out`. Returns the exit code (`None` when
/// killed by a signal) and the last lines of output. The whole group is killed
/// when the returned future is dropped before the command ends.
async fn run_command(
    argv: &[String],
    dir: &Path,
    env: &BTreeMap<String, String>,
    out: &mut dyn OutputSink,
) -> Result<(Option<i32>, VecDeque<String>), PluginError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| PluginError::Failed("empty command".to_string()))?;
    let mut child = tokio::process::Command::new(resolve_program(program, dir))
        .args(args)
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| PluginError::io(format!("starting `{program}`"), e))?;
    let mut group = GroupGuard(child.id());
    let mut stdout = child.stdout.take().map(|p| BufReader::new(p).split(b'\n'));
    let mut stderr = child.stderr.take().map(|p| BufReader::new(p).split(b'\n'));
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut status = None;
    let mut drain_until = None;
    // Until both pipes are closed, or shortly after the command exited when
    // something it left running keeps them open. All branches are cancel-safe.
    while stdout.is_some() || stderr.is_some() {
        let deadline = async {
            match drain_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let (stream, got) = tokio::select! {
            got = next_line(&mut stdout), if stdout.is_some() => (Stream::Stdout, got),
            got = next_line(&mut stderr), if stderr.is_some() => (Stream::Stderr, got),
            exited = child.wait(), if status.is_none() => {
                let exited = exited
                    .map_err(|e| PluginError::io(format!("waiting for `{program}`"), e))?;
                status = Some(exited);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                continue;
            }
            () = deadline => {
                out.line(
                    Stream::Info,
                    "the command exited but a process it started keeps its output open: not waiting for it",
                );
                break;
            }
        };
        match got {
            Some(line) => {
                out.line(stream, &line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(shorten(&line));
            }
            None if stream == Stream::Stdout => stdout = None,
            None => stderr = None,
        }
    }
    let status = match status {
        Some(status) => status,
        None => child
            .wait()
            .await
            .map_err(|e| PluginError::io(format!("waiting for `{program}`"), e))?,
    };
    // The command ended by itself: what it left running in the background
    // (if anything) is its business.
    group.disarm();
    Ok((status.code(), tail))
}

/// At most 200 characters of a line, for an error message.
fn shorten(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// The next line of a pipe, without its line ending; `None` at its end.
async fn next_line<R: AsyncBufRead + Unpin>(pipe: &mut Option<Split<R>>) -> Option<String> {
    let pipe = pipe.as_mut()?;
    match pipe.next_segment().await {
        Ok(Some(mut line)) => {
            while line.last().is_some_and(|b| *b == b'\r') {
                line.pop();
            }
            Some(String::from_utf8_lossy(&line).into_owned())
        }
        Ok(None) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests;
