//! Builder `command`: runs a build command in the source directory and records the
//! file it produces.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Split};

use super::files::{self, Artifact};
use super::{
    async_trait, config_error, parse_config, BoxFuture, Builder, Mapper, OpContext, OutputSink,
    PluginError, Stream, Value,
};

pub const OUTPUT: &str = "command.Output";

/// `command.Output`: the file a build command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Absolute path of the produced file.
    pub path: PathBuf,
    pub sha256: String,
    /// Where the `command.Output → files.Artifact` mapper writes its archive.
    #[serde(default)]
    pub artifacts_dir: Option<PathBuf>,
}

impl crate::Typed for Output {
    const TYPE_NAME: &'static str = OUTPUT;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    command: Vec<String>,
    output: PathBuf,
}

/// Builder `command`.
pub struct CommandBuilder {
    config: Config,
}

impl CommandBuilder {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Builder>, PluginError> {
        let config: Config = parse_config("command", config)?;
        if config.command.first().is_none_or(|p| p.is_empty()) {
            return Err(config_error(
                "command",
                "command",
                "must name a program to run",
            ));
        }
        Ok(Box::new(CommandBuilder { config }))
    }
}

#[async_trait]
impl Builder for CommandBuilder {
    fn output_type(&self) -> &'static str {
        OUTPUT
    }

    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        let shown = self.config.command.join(" ");
        ctx.info(&format!(
            "running `{shown}` in {}",
            ctx.source_dir.display()
        ));
        let source_dir = ctx.source_dir.clone();
        // The build command sees the runner's environment, as before config existed.
        let code = run_streaming(
            &self.config.command,
            &source_dir,
            &BTreeMap::new(),
            ctx.out.as_mut(),
        )
        .await?;
        if code != Some(0) {
            return Err(PluginError::CommandFailed {
                command: shown,
                code,
            });
        }
        let path = absolute(&ctx.source_dir.join(&self.config.output))?;
        let meta = fs::metadata(&path).map_err(|e| {
            PluginError::io(
                format!("`{shown}` succeeded but its output {}", path.display()),
                e,
            )
        })?;
        if !meta.is_file() {
            return Err(PluginError::Failed(format!(
                "output {} is not a regular file",
                path.display()
            )));
        }
        let sha256 = tokio::task::block_in_place(|| files::sha256_file(&path))?;
        ctx.info(&format!("output {} (sha256 {sha256})", path.display()));
        Value::of(&Output {
            path,
            sha256,
            artifacts_dir: Some(ctx.data_dir.join("artifacts")),
        })
    }
}

fn absolute(path: &Path) -> Result<PathBuf, PluginError> {
    std::path::absolute(path)
        .map_err(|e| PluginError::io(format!("resolving {}", path.display()), e))
}

/// Kills a command's whole process group when dropped before [`GroupGuard::disarm`]:
/// a job cancelled while its command runs takes the command's children with it.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group is the command's own (process_group(0)): nothing else is in it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs `argv` in `dir` with `env` added and stdin closed, sending its output line
/// by line to `out`. Returns the exit code (`None` when killed by a signal). The
/// command runs in a process group of its own, killed whole when the returned future
/// is dropped (a cancelled job).
pub async fn run_streaming(
    argv: &[String],
    dir: &Path,
    env: &BTreeMap<String, String>,
    out: &mut dyn OutputSink,
) -> Result<Option<i32>, PluginError> {
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
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|e| PluginError::io(format!("starting `{program}`"), e))?;
    let mut group = GroupGuard(child.id().map(|p| p as i32));
    let mut stdout = child.stdout.take().map(|p| BufReader::new(p).split(b'\n'));
    let mut stderr = child.stderr.take().map(|p| BufReader::new(p).split(b'\n'));
    // Ends when both pipes are closed. `next_segment` is cancel-safe.
    while stdout.is_some() || stderr.is_some() {
        let (stream, got) = tokio::select! {
            got = next_segment(&mut stdout), if stdout.is_some() => (Stream::Stdout, got),
            got = next_segment(&mut stderr), if stderr.is_some() => (Stream::Stderr, got),
        };
        match got {
            Some(line) => out.line(stream, &line),
            None if stream == Stream::Stdout => stdout = None,
            None => stderr = None,
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| PluginError::io(format!("waiting for `{program}`"), e))?;
    group.disarm();
    Ok(status.code())
}

/// The next line of a pipe, without its line ending; `None` at its end.
async fn next_segment<R: AsyncBufRead + Unpin>(pipe: &mut Option<Split<R>>) -> Option<String> {
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

/// A relative program path with a `/` (`./build.sh`) is taken relative to `dir`;
/// a bare name is looked up in `PATH`.
pub(crate) fn resolve_program(program: &str, dir: &Path) -> PathBuf {
    let path = Path::new(program);
    if path.is_relative() && program.contains('/') {
        dir.join(path)
    } else {
        path.to_path_buf()
    }
}

/// `command.Output → files.Artifact`: packs the single output file (under its file
/// name, keeping its executable bit) into a deterministic archive.
pub const OUTPUT_TO_ARTIFACT: Mapper = Mapper {
    from: OUTPUT,
    to: files::ARTIFACT,
    f: output_to_artifact,
};

fn output_to_artifact<'a>(
    value: &'a Value,
    _ctx: &'a mut OpContext,
) -> BoxFuture<'a, Result<Value, PluginError>> {
    Box::pin(async move { tokio::task::block_in_place(|| pack_output(value)) })
}

fn pack_output(value: &Value) -> Result<Value, PluginError> {
    let output: Output = value.get::<Output>()?;
    files::check_unchanged(&output.path, &output.sha256)?;
    let (Some(root), Some(name)) = (output.path.parent(), output.path.file_name()) else {
        return Err(PluginError::Failed(format!(
            "{} is not a file path",
            output.path.display()
        )));
    };
    let dir = output
        .artifacts_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-artifacts"));
    let entry = files::file_entry(root, Path::new(name))?;
    let artifact: Artifact = files::write_archive(&dir, root, &[entry])?;
    Value::of(&artifact)
}
