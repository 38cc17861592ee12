//! External plugins: programs named `cairn-plugin-NAME` that speak the plugin protocol
//! (`cairn_plugin_sdk::protocol`, docs/plugins.md) over their stdin and stdout.
//!
//! One process per session: [`ExternalPlugin::describe`] asks what the plugin offers (its
//! components and mappers); every operation (configure, build, push, deploy, destroy,
//! release, map) is a session of its own. A session's process runs in a process group of
//! its own, which is killed when the session ends however it ends (done, failed, timed out,
//! dropped because the job was cancelled), so nothing the plugin started outlives it. A
//! plugin that exits before answering, sends something that is not a frame of the protocol,
//! or takes longer than its time fails the operation with an error saying which, with the
//! last lines it wrote to stderr.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cairn_plugin_sdk::protocol::{
    self, Component, ComponentKind, HostMsg, MapperInfo, Op, OpInfo, PluginMsg, StepStatus,
    Stream as PStream,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::{
    Builder, DeploymentHealth, OpContext, Platform, PluginError, Registry, ReleaseOptions,
    ReleaseOutcome, Releaser, Stream, Value,
};

/// The prefix of a plugin program's name.
pub const PROGRAM_PREFIX: &str = "cairn-plugin-";

/// How long a plugin has to describe itself or check a config.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an operation may take unless the config's `plugin "NAME" { timeout = … }` says.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How many of the plugin's last stderr lines an error quotes.
const STDERR_TAIL: usize = 5;

/// The program for plugin `name`: `cairn-plugin-NAME` in the first of `dirs` that holds
/// one, else on `PATH`.
pub fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let program = format!("{PROGRAM_PREFIX}{name}");
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(&program))
        .find(|p| is_executable(p))
}

/// Checks that the program at `path` has the digest `want` (`sha256:HEX` or bare `HEX`),
/// as `plugin "NAME" { checksum = … }` pins it.
pub fn check_digest(name: &str, path: &Path, want: &str) -> Result<(), PluginError> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).map_err(|e| {
        PluginError::Failed(format!(
            "plugin \"{name}\": cannot read {}: {e}",
            path.display()
        ))
    })?;
    let have = hex::encode(sha2::Sha256::digest(&bytes));
    let want_hex = want
        .strip_prefix("sha256:")
        .unwrap_or(want)
        .to_ascii_lowercase();
    if have != want_hex {
        return Err(PluginError::Failed(format!(
            "plugin \"{name}\": {} has sha256:{have}, and the config pins {want}: not running it",
            path.display()
        )));
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A plugin program and what it offers.
#[derive(Debug)]
pub struct ExternalPlugin {
    pub name: String,
    pub path: PathBuf,
    pub version: u32,
    pub components: Vec<Component>,
    pub mappers: Vec<MapperInfo>,
    /// The time an operation may take.
    pub timeout: Duration,
    /// Type names as `'static` strs (the plugin traits hand out `&'static str`), interned:
    /// kept for the life of the process, once per distinct name.
    statics: Vec<(&'static str, Vec<&'static str>)>,
}

/// `s` as a `&'static str`, interned: each distinct type name is leaked once per process
/// however many times plugins are described (a runner agent describes them for every job).
fn leak(s: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.push(n);
    n
}

/// `items` as a `&'static` slice, interned like [`leak`].
fn leak_slice(items: &[&'static str]) -> &'static [&'static str] {
    type Slices = Vec<&'static [&'static str]>;
    static SLICES: std::sync::Mutex<Slices> = std::sync::Mutex::new(Vec::new());
    let mut slices = SLICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = slices.iter().find(|s| **s == items) {
        return s;
    }
    let s: &'static [&'static str] = Box::leak(items.to_vec().into_boxed_slice());
    slices.push(s);
    s
}

impl ExternalPlugin {
    /// Runs the program once to learn what it offers.
    pub async fn describe(
        name: &str,
        path: &Path,
        timeout: Duration,
    ) -> Result<ExternalPlugin, PluginError> {
        let (version, components, mappers) = {
            let mut s = Session::start(name, path)?;
            let hello = s.hello(DESCRIBE_TIMEOUT).await;
            s.finish().await;
            hello?
        };
        let statics = components
            .iter()
            .map(|c| {
                (
                    leak(&c.output_type),
                    c.input_types.iter().map(|t| leak(t)).collect(),
                )
            })
            .collect();
        Ok(ExternalPlugin {
            name: name.to_string(),
            path: path.to_path_buf(),
            version,
            components,
            mappers,
            timeout,
            statics,
        })
    }

    pub fn has(&self, kind: ComponentKind) -> bool {
        self.components.iter().any(|c| c.kind == kind)
    }

    fn types(&self, kind: ComponentKind) -> Option<(&'static str, &[&'static str])> {
        let i = self.components.iter().position(|c| c.kind == kind)?;
        let (out, ins) = &self.statics[i];
        Some((*out, ins.as_slice()))
    }

    /// One request, its output streamed into `ctx` (when there is one).
    async fn call(
        &self,
        call: Call<'_>,
        ctx: Option<&mut OpContext>,
        timeout: Duration,
    ) -> Result<Option<Value>, PluginError> {
        let Call {
            op,
            kind,
            config,
            input,
            to,
        } = call;
        let info = ctx
            .as_ref()
            .map(|c| OpInfo {
                project: c.project.clone(),
                app: c.app.clone(),
                workspace: c.workspace.clone(),
                sequence: c.sequence,
                source_dir: c.source_dir.display().to_string(),
                data_dir: c
                    .data_dir
                    .join("plugins")
                    .join(&self.name)
                    .display()
                    .to_string(),
                env: c.env.clone(),
            })
            .unwrap_or_default();
        if !info.data_dir.is_empty() {
            let _ = std::fs::create_dir_all(&info.data_dir);
        }
        let req = HostMsg::Request {
            op,
            kind,
            config: config.clone(),
            info,
            input: input.map(|v| protocol::Value {
                type_name: v.type_name.clone(),
                data: v.data.clone(),
            }),
            to: to.map(String::from),
        };
        let mut s = Session::start(&self.name, &self.path)?;
        let result = tokio::time::timeout(timeout, async {
            s.hello(timeout).await?;
            s.send(&req).await?;
            s.answer(ctx).await
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(s.fail(&format!(
                "did not finish within {} and was stopped",
                human(timeout)
            ))),
        };
        s.finish().await;
        result
    }

    /// Checks the config of its `kind` component (before anything runs).
    pub async fn configure(
        &self,
        kind: ComponentKind,
        config: &serde_json::Value,
    ) -> Result<(), PluginError> {
        let call = Call {
            op: Op::Configure,
            kind: Some(kind),
            config,
            input: None,
            to: None,
        };
        self.call(call, None, DESCRIBE_TIMEOUT).await.map(|_| ())
    }
}

/// What one request asks.
struct Call<'a> {
    op: Op,
    kind: Option<ComponentKind>,
    config: &'a serde_json::Value,
    input: Option<&'a Value>,
    to: Option<&'a str>,
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 60 && d.as_secs().is_multiple_of(60) {
        format!("{} min", d.as_secs() / 60)
    } else if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// One running plugin process.
struct Session {
    name: String,
    child: tokio::process::Child,
    pgid: Option<i32>,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::process::ChildStdout,
    stderr_tail: Arc<std::sync::Mutex<VecDeque<String>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// Stderr lines to show in the job as they come.
    live: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

impl Session {
    fn start(name: &str, path: &Path) -> Result<Session, PluginError> {
        let mut cmd = tokio::process::Command::new(path);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            PluginError::Failed(format!(
                "plugin \"{name}\": cannot start {}: {e}",
                path.display()
            ))
        })?;
        let pgid = child.id().map(|p| p as i32);
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| PluginError::Failed(format!("plugin \"{name}\": no stdout pipe")))?;
        let stderr = child.stderr.take();
        let tail = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stderr_task = stderr.map(|stderr| {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL {
                            t.pop_front();
                        }
                        t.push_back(line.clone());
                    }
                    let _ = tx.send(line);
                }
            })
        });
        Ok(Session {
            name: name.to_string(),
            child,
            pgid,
            stdin,
            stdout,
            stderr_tail: tail,
            stderr_task,
            live: Some(rx),
        })
    }

    /// An error about this plugin, with its last stderr lines.
    fn fail(&self, what: &str) -> PluginError {
        let tail: Vec<String> = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!("; its last stderr lines: {}", tail.join(" | "))
        };
        PluginError::Failed(format!("plugin \"{}\" {what}{tail}", self.name))
    }

    async fn send(&mut self, msg: &HostMsg) -> Result<(), PluginError> {
        let mut buf = Vec::new();
        protocol::write_frame(&mut buf, msg)
            .map_err(|e| self.fail(&format!("cannot be sent a request: {e}")))?;
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.fail("has no stdin"));
        };
        if stdin.write_all(&buf).await.is_err() || stdin.flush().await.is_err() {
            return Err(self.exited().await);
        }
        Ok(())
    }

    /// The error for a plugin that stopped talking: how it exited.
    async fn exited(&mut self) -> PluginError {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        // Let the stderr reader take the last lines.
        if let Some(t) = self.stderr_task.as_mut() {
            let _ = tokio::time::timeout(Duration::from_millis(500), t).await;
            self.stderr_task = None;
        }
        let how = match status {
            Ok(Ok(st)) => match (
                st.code(),
                std::os::unix::process::ExitStatusExt::signal(&st),
            ) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "exited".to_string(),
            },
            _ => "closed its stdout".to_string(),
        };
        self.fail(&format!("{how} before it answered"))
    }

    async fn read(&mut self) -> Result<Option<PluginMsg>, PluginError> {
        let mut len = [0u8; 4];
        match self.stdout.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(self.fail(&format!("cannot be read: {e}"))),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > protocol::MAX_FRAME {
            let text = String::from_utf8_lossy(&len).escape_debug().to_string();
            return Err(self.fail(&format!(
                "spoke garbage on stdout: {n} bytes announced (it began {text:?}), not a frame of the plugin protocol (plugins write text to stderr, never stdout)"
            )));
        }
        let mut body = vec![0u8; n];
        if self.stdout.read_exact(&mut body).await.is_err() {
            return Err(self.fail("stopped in the middle of a frame"));
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            let start: String = String::from_utf8_lossy(&body).chars().take(60).collect();
            self.fail(&format!(
                "spoke garbage on stdout: {start:?} is not a message of the plugin protocol ({e})"
            ))
        })
    }

    /// Sends hello and reads the plugin's.
    async fn hello(
        &mut self,
        timeout: Duration,
    ) -> Result<(u32, Vec<Component>, Vec<MapperInfo>), PluginError> {
        let hello = HostMsg::Hello {
            versions: protocol::VERSIONS.to_vec(),
        };
        let answer = tokio::time::timeout(timeout, async {
            // A program that is no plugin may print and exit before reading anything: what
            // it printed says more than the closed pipe.
            let sent = self.send(&hello).await;
            match self.read().await {
                Ok(None) => sent.map(|()| None),
                other => other,
            }
        })
        .await
        .map_err(|_| {
            self.fail(&format!(
                "did not answer hello within {} and was stopped",
                human(timeout)
            ))
        })??;
        match answer {
            Some(PluginMsg::Hello {
                version,
                components,
                mappers,
                ..
            }) if protocol::VERSIONS.contains(&version) => Ok((version, components, mappers)),
            Some(PluginMsg::Hello { version, .. }) => Err(self.fail(&format!(
                "chose protocol version {version}, which this Cairn does not speak ({:?})",
                protocol::VERSIONS
            ))),
            Some(PluginMsg::Error { message, .. }) => {
                Err(self.fail(&format!("refused: {message}")))
            }
            Some(other) => Err(self.fail(&format!("answered hello with {other:?}"))),
            None => Err(self.exited().await),
        }
    }

    /// Reads until done or error, streaming output into `ctx`.
    async fn answer(
        &mut self,
        mut ctx: Option<&mut OpContext>,
    ) -> Result<Option<Value>, PluginError> {
        let mut live = self.live.take();
        let result = loop {
            let msg = tokio::select! {
                biased;
                line = async {
                    match live.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match line {
                        Some(line) => {
                            if let Some(c) = ctx.as_deref_mut() {
                                c.out.line(Stream::Stderr, &line);
                            }
                        }
                        None => live = None,
                    }
                    continue;
                }
                msg = self.read() => msg,
            };
            match msg? {
                None => break Err(self.exited().await),
                Some(PluginMsg::Done { value }) => {
                    break Ok(value.map(|v| Value {
                        type_name: v.type_name,
                        data: v.data,
                    }))
                }
                Some(PluginMsg::Error { message, field }) => {
                    break Err(match field {
                        Some(field) => PluginError::Config {
                            plugin: self.name.clone(),
                            field,
                            message,
                        },
                        None => PluginError::Failed(format!("plugin \"{}\": {message}", self.name)),
                    })
                }
                Some(msg) => {
                    if let Some(c) = ctx.as_deref_mut() {
                        show(c, msg);
                    }
                }
            }
        };
        // What the plugin wrote to stderr up to its answer.
        if let (Some(rx), Some(c)) = (live.as_mut(), ctx) {
            while let Ok(line) = rx.try_recv() {
                c.out.line(Stream::Stderr, &line);
            }
        }
        result
    }

    /// Ends the session: stdin closed, the process group killed, the process reaped.
    async fn finish(mut self) {
        self.stdin = None;
        if let Some(pgid) = self.pgid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Session {
    /// A session dropped mid-way (the job was cancelled): kill what the plugin started.
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A step, table or output line of the plugin, as job output.
fn show(ctx: &mut OpContext, msg: PluginMsg) {
    match msg {
        PluginMsg::Output { stream, line } => {
            let s = match stream {
                PStream::Stdout => Stream::Stdout,
                PStream::Stderr => Stream::Stderr,
                PStream::Info => Stream::Info,
            };
            ctx.out.line(s, &line);
        }
        PluginMsg::Step {
            name,
            status,
            detail,
            ..
        } => {
            let line = match (status, detail) {
                (StepStatus::Started, _) => format!("» {name}"),
                (StepStatus::Ok, _) => format!("✓ {name}"),
                (StepStatus::Failed, Some(d)) => format!("✗ {name}: {d}"),
                (StepStatus::Failed, None) => format!("✗ {name}"),
            };
            ctx.out.line(Stream::Info, &line);
        }
        PluginMsg::Table { headers, rows } => {
            let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
            for r in &rows {
                for (i, c) in r.iter().enumerate() {
                    if i < widths.len() {
                        widths[i] = widths[i].max(c.chars().count());
                    }
                }
            }
            let fmt = |cells: &[String]| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            ctx.out.line(Stream::Info, &fmt(&headers));
            for r in &rows {
                ctx.out.line(Stream::Info, &fmt(r));
            }
        }
        other => ctx.out.line(
            Stream::Stderr,
            &format!("(unexpected message from the plugin: {other:?})"),
        ),
    }
}

/// One component of an external plugin, with the config of its `use` block.
pub struct ExternalComponent {
    plugin: Arc<ExternalPlugin>,
    kind: ComponentKind,
    config: serde_json::Value,
    output: &'static str,
    inputs: &'static [&'static str],
}

impl ExternalComponent {
    /// The `kind` component of `plugin` with `config`, checked by the plugin. Blocks on the
    /// check when called outside a runtime is not possible: the caller is async-free, so the
    /// check runs on a small runtime of its own when there is none.
    pub fn new(
        plugin: Arc<ExternalPlugin>,
        kind: ComponentKind,
        config: &serde_json::Value,
    ) -> Result<ExternalComponent, PluginError> {
        let (output, inputs) = plugin.types(kind).ok_or_else(|| {
            PluginError::Failed(format!(
                "plugin \"{}\" has no {kind:?} component",
                plugin.name
            ))
        })?;
        let inputs = leak_slice(inputs);
        block_on(plugin.configure(kind, config))?;
        Ok(ExternalComponent {
            plugin,
            kind,
            config: config.clone(),
            output,
            inputs,
        })
    }

    async fn op(
        &self,
        op: Op,
        ctx: &mut OpContext,
        input: Option<&Value>,
    ) -> Result<Option<Value>, PluginError> {
        let call = Call {
            op,
            kind: Some(self.kind),
            config: &self.config,
            input,
            to: None,
        };
        self.plugin.call(call, Some(ctx), self.plugin.timeout).await
    }

    async fn made(
        &self,
        op: Op,
        ctx: &mut OpContext,
        input: Option<&Value>,
    ) -> Result<Value, PluginError> {
        let v = self.op(op, ctx, input).await?.ok_or_else(|| {
            PluginError::Failed(format!(
                "plugin \"{}\" finished {op:?} without a value",
                self.plugin.name
            ))
        })?;
        if v.type_name != self.output {
            return Err(PluginError::Failed(format!(
                "plugin \"{}\" made a {} where it declared {}",
                self.plugin.name, v.type_name, self.output
            )));
        }
        Ok(v)
    }
}

/// Runs `f` to completion from sync code (the catalog's factories are sync): on the current
/// runtime's blocking pool when there is a multi-threaded one, else on a runtime of its own in
/// a thread of its own.
pub(crate) fn block_on<T: Send>(
    f: impl std::future::Future<Output = Result<T, PluginError>> + Send,
) -> Result<T, PluginError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| PluginError::Failed(format!("cannot start a runtime: {e}")))?
                    .block_on(f)
            })
            .join()
            .unwrap_or_else(|_| Err(PluginError::Failed("a plugin session panicked".into())))
        }),
    }
}

#[async_trait]
impl Builder for ExternalComponent {
    fn output_type(&self) -> &'static str {
        self.output
    }
    async fn build(&self, ctx: &mut OpContext) -> Result<Value, PluginError> {
        self.made(Op::Build, ctx, None).await
    }
}

#[async_trait]
impl Registry for ExternalComponent {
    fn input_types(&self) -> &[&'static str] {
        self.inputs
    }
    fn output_type(&self) -> &'static str {
        self.output
    }
    async fn push(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        self.made(Op::Push, ctx, Some(input)).await
    }
}

#[async_trait]
impl Platform for ExternalComponent {
    fn input_types(&self) -> &[&'static str] {
        self.inputs
    }
    fn output_type(&self) -> &'static str {
        self.output
    }
    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        self.made(Op::Deploy, ctx, Some(input)).await
    }
    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        self.op(Op::Destroy, ctx, Some(deployment))
            .await
            .map(|_| ())
    }
    async fn destroy_interrupted(&self, ctx: &mut OpContext) -> Result<String, PluginError> {
        ctx.info(&format!(
            "plugin \"{}\" cannot find a deployment whose deploy never returned: nothing removed",
            self.plugin.name
        ));
        Ok(String::new())
    }
    async fn status(
        &self,
        _ctx: &mut OpContext,
        _deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
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

#[async_trait]
impl Releaser for ExternalComponent {
    fn input_types(&self) -> &[&'static str] {
        self.inputs
    }
    fn output_type(&self) -> &'static str {
        self.output
    }
    async fn release(
        &self,
        ctx: &mut OpContext,
        target: &Value,
        _others: &[(u64, Value)],
        _opts: &ReleaseOptions,
    ) -> Result<ReleaseOutcome, PluginError> {
        let value = self.made(Op::Release, ctx, Some(target)).await?;
        let urls = value
            .data
            .get("url")
            .and_then(|u| u.as_str())
            .map(|u| vec![u.to_string()])
            .unwrap_or_default();
        Ok(ReleaseOutcome {
            value,
            urls,
            pruned: Vec::new(),
        })
    }
}

/// Runs an external plugin's mapper from `value` to `to`.
pub async fn map(
    plugin: &ExternalPlugin,
    value: &Value,
    to: &str,
    ctx: &mut OpContext,
) -> Result<Value, PluginError> {
    let call = Call {
        op: Op::Map,
        kind: None,
        config: &serde_json::Value::Null,
        input: Some(value),
        to: Some(to),
    };
    plugin
        .call(call, Some(ctx), plugin.timeout)
        .await?
        .ok_or_else(|| {
            PluginError::Failed(format!(
                "plugin \"{}\" mapped {} without a value",
                plugin.name, value.type_name
            ))
        })
}
