//! Platform `process`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::BufReader;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::isolation::{self, RunAs};
use super::supervisor::{read_state, Status, SupervisorSpec, Timing};
use super::{
    app_dir, destroy_deployment, destroy_interrupted, instance_health, log_tail, stop_instance,
    sys, Deployment, Instance, DEPLOYMENT,
};
use crate::command::resolve_program;
use crate::files::{temp_path, Artifact, HashingReader, ARTIFACT};
use crate::{
    async_trait, config_error, parse_config, DeploymentHealth, OpContext, Platform, PluginError,
    Value,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    command: Vec<String>,
    #[serde(default = "one")]
    count: u32,
    #[serde(default = "port_env")]
    port_env: String,
    #[serde(default = "yes")]
    restart: bool,
    /// Relative to the extracted artifact.
    #[serde(default)]
    workdir: Option<PathBuf>,
    /// Wait until each instance accepts TCP connections on its port.
    #[serde(default = "yes")]
    wait_for_port: bool,
    /// Seconds `deploy` waits for the instances to be up.
    #[serde(default = "ten")]
    ready_timeout: u64,
    /// The user instances run as when the runner is root (default: the
    /// system user `cairn-app`, created if missing; "root" keeps root).
    #[serde(default)]
    user: Option<String>,
    /// Variables of the runner's environment instances also get (they start
    /// from a clean one: see `isolation`).
    #[serde(default)]
    pass_env: Vec<String>,
}

fn one() -> u32 {
    1
}

fn port_env() -> String {
    "PORT".to_string()
}

fn yes() -> bool {
    true
}

fn ten() -> u64 {
    10
}

/// Platform `process`.
pub struct ProcessPlatform {
    config: Config,
}

impl ProcessPlatform {
    pub(crate) fn boxed(config: &serde_json::Value) -> Result<Box<dyn Platform>, PluginError> {
        let config: Config = parse_config("process", config)?;
        if config.command.first().is_none_or(|p| p.is_empty()) {
            return Err(config_error(
                "process",
                "command",
                "must name a program to run",
            ));
        }
        if config.count == 0 {
            return Err(config_error("process", "count", "must be at least 1"));
        }
        if config.port_env.is_empty() || config.port_env.contains('=') {
            return Err(config_error(
                "process",
                "port_env",
                "must be a variable name",
            ));
        }
        for name in &config.pass_env {
            if let Err(why) = cairn_protocol::config::check_env_name(name) {
                return Err(config_error(
                    "process",
                    "pass_env",
                    &format!("{name:?}: {why}"),
                ));
            }
        }
        if let Some(workdir) = &config.workdir {
            if workdir.is_absolute()
                || workdir
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(config_error(
                    "process",
                    "workdir",
                    "must be a path inside the artifact",
                ));
            }
        }
        Ok(Box::new(ProcessPlatform { config }))
    }
}

/// Where a deployment's instances run, and as whom.
struct Placement {
    /// The extracted artifact (the working directory).
    dir: PathBuf,
    /// The instances' homes, `instance-<i>/` each.
    homes: PathBuf,
    /// The supervisors' specs, states and logs (private to the runner).
    run_dir: PathBuf,
    who: Option<RunAs>,
}

/// An instance whose supervisor this `deploy` spawned.
struct Started {
    instance: Instance,
    supervisor: Child,
}

#[async_trait]
impl Platform for ProcessPlatform {
    fn input_types(&self) -> &[&'static str] {
        &[ARTIFACT]
    }

    fn output_type(&self) -> &'static str {
        DEPLOYMENT
    }

    async fn deploy(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        tokio::task::block_in_place(|| self.deploy_blocking(ctx, input))
    }

    async fn destroy(&self, ctx: &mut OpContext, deployment: &Value) -> Result<(), PluginError> {
        let deployment: Deployment = deployment.get::<Deployment>()?;
        tokio::task::block_in_place(|| destroy_deployment(&deployment))?;
        ctx.info(&format!("destroyed v{}", deployment.sequence));
        Ok(())
    }

    async fn destroy_interrupted(&self, ctx: &mut OpContext) -> Result<String, PluginError> {
        tokio::task::block_in_place(|| destroy_interrupted(ctx))
    }

    async fn status(
        &self,
        _ctx: &mut OpContext,
        deployment: &Value,
    ) -> Result<DeploymentHealth, PluginError> {
        let deployment: Deployment = deployment.get::<Deployment>()?;
        Ok(health(&deployment))
    }

    fn url(&self, deployment: &Value) -> Option<String> {
        deployment.get::<Deployment>().ok().map(|d| d.url)
    }
}

impl ProcessPlatform {
    fn deploy_blocking(&self, ctx: &mut OpContext, input: &Value) -> Result<Value, PluginError> {
        let artifact: Artifact = input.get::<Artifact>()?;
        let app_dir = app_dir(ctx)?;
        let who = isolation::run_as(self.config.user.as_deref())?;
        // Code and homes of instances running as another user live where
        // that user can reach them; the runner's own files stay private.
        let code_root = match &who {
            Some(_) => {
                let root = isolation::instance_root(&ctx.data_dir).join(&ctx.app);
                isolation::create_traversable(&root)?;
                root
            }
            None => app_dir.clone(),
        };
        let place = Placement {
            dir: code_root.join(format!("v{}", ctx.sequence)),
            homes: code_root.join(format!("v{}.home", ctx.sequence)),
            run_dir: app_dir.join(format!("v{}.run", ctx.sequence)),
            who,
        };
        let dir = place.dir.clone();
        if dir.exists() {
            return Err(PluginError::Failed(format!(
                "{} already exists: v{} was deployed before",
                dir.display(),
                ctx.sequence
            )));
        }
        extract(&artifact, &dir)?;
        if let Some(who) = &place.who {
            isolation::chown_tree(&dir, who)?;
        }
        ctx.info(&format!(
            "extracted {} to {}{}",
            artifact.path.display(),
            dir.display(),
            place
                .who
                .as_ref()
                .map(|w| format!(" (instances run as user {})", w.name))
                .unwrap_or_default()
        ));
        let mut started = Vec::new();
        let result = self.start_all(ctx, &place, &mut started);
        match result {
            Ok(()) => {
                let instances: Vec<Instance> = started
                    .into_iter()
                    .map(|s| {
                        reap_in_background(s.supervisor);
                        s.instance
                    })
                    .collect();
                let url = format!("http://127.0.0.1:{}/", instances[0].port);
                ctx.info(&format!("v{} is up at {url}", ctx.sequence));
                Value::of(&Deployment {
                    app: ctx.app.clone(),
                    sequence: ctx.sequence,
                    dir,
                    instances,
                    url,
                })
            }
            Err(e) => {
                ctx.info(&format!("deploy failed, stopping what was started: {e}"));
                for s in &mut started {
                    let _ = stop_instance(&s.instance);
                    // Whatever happened above, the supervisor must not survive.
                    if s.supervisor.try_wait().ok().flatten().is_none() {
                        let _ = s.supervisor.kill();
                    }
                    let _ = s.supervisor.wait();
                    let _ = fs::remove_file(&s.instance.spec);
                }
                let _ = fs::remove_dir_all(&dir);
                let _ = fs::remove_dir_all(&place.homes);
                Err(e)
            }
        }
    }

    fn start_all(
        &self,
        ctx: &mut OpContext,
        place: &Placement,
        started: &mut Vec<Started>,
    ) -> Result<(), PluginError> {
        let run_dir = place.run_dir.as_path();
        fs::create_dir_all(run_dir)
            .map_err(|e| PluginError::io(format!("creating {}", run_dir.display()), e))?;
        match &place.who {
            Some(_) => isolation::create_traversable(&place.homes)?,
            None => fs::create_dir_all(&place.homes)
                .map_err(|e| PluginError::io(format!("creating {}", place.homes.display()), e))?,
        }
        let workdir = match &self.config.workdir {
            Some(w) => place.dir.join(w),
            None => place.dir.clone(),
        };
        // The entrypoint must be runnable by the instances' user: a copy of
        // it goes where that user can reach it.
        let entrypoint = match (&place.who, &ctx.entrypoint) {
            (Some(_), Some(launch)) => Some(copy_entrypoint(&place.dir, &launch.argv[0])?),
            _ => None,
        };
        let ports = free_ports(self.config.count as usize)?;
        for (index, port) in ports.into_iter().enumerate() {
            let home = place.homes.join(format!("instance-{index}"));
            isolation::create_home(&home, place.who.as_ref())?;
            let s = self.start_one(
                ctx,
                &workdir,
                run_dir,
                Instance0 {
                    index,
                    port,
                    home: &home,
                    who: place.who.as_ref(),
                    entrypoint: entrypoint.as_deref(),
                },
            )?;
            started.push(s);
        }
        let deadline = Instant::now() + Duration::from_secs(self.config.ready_timeout);
        for s in started.iter_mut() {
            wait_ready(s, deadline, self.config.wait_for_port)?;
            ctx.info(&format!(
                "instance {}: port {}, supervisor pid {}, log {}",
                s.instance.index,
                s.instance.port,
                s.instance.supervisor_pid,
                s.instance.log.display()
            ));
        }
        Ok(())
    }

    fn start_one(
        &self,
        ctx: &OpContext,
        workdir: &Path,
        run_dir: &Path,
        one: Instance0<'_>,
    ) -> Result<Started, PluginError> {
        let Instance0 {
            index,
            port,
            home,
            who,
            entrypoint,
        } = one;
        let spec_path = run_dir.join(format!("instance-{index}.spec.json"));
        let state = run_dir.join(format!("instance-{index}.state.json"));
        let log = run_dir.join(format!("instance-{index}.log"));
        // A clean environment: nothing of the shell that ran the runner.
        let mut env: BTreeMap<String, String> =
            isolation::base_env(home, who, &self.config.pass_env, |k| std::env::var(k).ok());
        env.insert("CAIRN_PROJECT".to_string(), ctx.project.clone());
        env.insert("CAIRN_APP".to_string(), ctx.app.clone());
        env.insert("CAIRN_WORKSPACE".to_string(), ctx.workspace.clone());
        env.insert("CAIRN_DEPLOYMENT".to_string(), ctx.sequence.to_string());
        env.insert("CAIRN_INSTANCE".to_string(), index.to_string());
        let command = match &ctx.entrypoint {
            // The entrypoint gets the configuration from the cluster (and
            // every later change); the port stays the platform's.
            Some(launch) => {
                env.extend(launch.env.clone());
                env.insert("CAIRN_ENV_FIXED".to_string(), self.config.port_env.clone());
                let mut app = self.config.command.clone();
                app[0] = resolve_program(&app[0], workdir)
                    .to_string_lossy()
                    .into_owned();
                let mut argv = launch.wrap(&app);
                if let Some(copy) = entrypoint {
                    argv[0] = copy.to_string_lossy().into_owned();
                }
                argv
            }
            None => {
                env.extend(ctx.env.clone());
                self.config.command.clone()
            }
        };
        env.insert(self.config.port_env.clone(), port.to_string());
        let spec = SupervisorSpec {
            command,
            workdir: workdir.to_path_buf(),
            env,
            log: log.clone(),
            state: state.clone(),
            port: Some(port),
            restart: self.config.restart,
            timing: Timing::default(),
            run_as: who.map(|w| (w.uid, w.gid)),
        };
        write_private_json(&spec_path, &spec)?;
        let _ = fs::remove_file(&state);
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| PluginError::io(format!("opening {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| PluginError::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(&ctx.self_exe);
        // The supervisor needs nothing of the runner's environment either
        // (an instance could read its parent's).
        cmd.env_clear();
        for name in isolation::INHERITED {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.arg("__supervise")
            .arg(&spec_path)
            .current_dir(run_dir)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        sys::detach(&mut cmd);
        let supervisor = cmd.spawn().map_err(|e| {
            let _ = fs::remove_file(&spec_path);
            PluginError::io(format!("starting supervisor {}", ctx.self_exe.display()), e)
        })?;
        Ok(Started {
            instance: Instance {
                index,
                port,
                supervisor_pid: supervisor.id(),
                log,
                state,
                spec: spec_path,
            },
            supervisor,
        })
    }
}

/// What differs between the instances of one deployment.
struct Instance0<'a> {
    index: usize,
    port: u16,
    home: &'a Path,
    who: Option<&'a RunAs>,
    /// The entrypoint copy instances run (when they run as another user).
    entrypoint: Option<&'a Path>,
}

/// Copies the entrypoint program next to the deployment (`<dir>.entrypoint`,
/// mode 0755), for instances that run as a user who may not reach the
/// runner's copy.
fn copy_entrypoint(dir: &Path, program: &str) -> Result<PathBuf, PluginError> {
    use std::os::unix::fs::PermissionsExt;
    let copy = PathBuf::from(format!("{}.entrypoint", dir.display()));
    fs::copy(program, &copy)
        .map_err(|e| PluginError::io(format!("copying the entrypoint {program}"), e))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))
        .map_err(|e| PluginError::io(format!("setting the mode of {}", copy.display()), e))?;
    Ok(copy)
}

/// Waits until the supervisor reports a running command and, if asked, until the
/// port accepts connections.
fn wait_ready(s: &mut Started, deadline: Instant, wait_for_port: bool) -> Result<(), PluginError> {
    let index = s.instance.index;
    let fail = |s: &Started, what: String| {
        let tail = log_tail(&s.instance.log);
        PluginError::Failed(format!(
            "instance {index}: {what} (log {}: {tail})",
            s.instance.log.display()
        ))
    };
    let mut running = false;
    let mut restarts = 0;
    loop {
        if let Ok(Some(status)) = s.supervisor.try_wait() {
            return Err(fail(s, format!("supervisor exited ({status})")));
        }
        if let Ok(state) = read_state(&s.instance.state) {
            restarts = state.restarts;
            running = state.status == Status::Running && state.child_pid.is_some();
        }
        if running
            && (!wait_for_port
                || TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, s.instance.port)),
                    Duration::from_millis(200),
                )
                .is_ok())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = if !running {
                format!("not running after the ready timeout ({restarts} restarts)")
            } else {
                format!(
                    "nothing accepts connections on port {} after the ready timeout ({restarts} restarts)",
                    s.instance.port
                )
            };
            return Err(fail(s, what));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Distinct free loopback ports: all bound at once, then released.
fn free_ports(count: usize) -> Result<Vec<u16>, PluginError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::io("choosing a free port", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::io("choosing a free port", e))
}

/// Extracts the artifact into `dir` (through a temporary directory), checking its hash.
fn extract(artifact: &Artifact, dir: &Path) -> Result<(), PluginError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| PluginError::io(format!("creating {}", parent.display()), e))?;
    let tmp = temp_path(parent);
    let result = (|| {
        fs::create_dir(&tmp)?;
        let mut reader = HashingReader::new(BufReader::new(File::open(&artifact.path)?));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&mut reader));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(false);
        archive.unpack(&tmp)?;
        reader.finish()
    })();
    let outcome = match result {
        Ok(sha256) if sha256 == artifact.sha256 => fs::rename(&tmp, dir)
            .map_err(|e| PluginError::io(format!("creating {}", dir.display()), e)),
        Ok(sha256) => Err(PluginError::Failed(format!(
            "{} has sha256 {sha256}, expected {}",
            artifact.path.display(),
            artifact.sha256
        ))),
        Err(e) => Err(PluginError::io(
            format!("extracting {}", artifact.path.display()),
            e,
        )),
    };
    if outcome.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    outcome
}

/// Writes JSON readable by the owner only (the spec holds the app's config env).
fn write_private_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| PluginError::Failed(e.to_string()))?;
    cairn_protocol::private::write(path, &bytes)
        .map_err(|e| PluginError::io(format!("writing {}", path.display()), e))
}

/// Reaps the supervisor when it eventually exits, so a long-lived runner does not
/// collect zombies (nothing else waits for it: it outlives this `deploy`).
fn reap_in_background(mut supervisor: Child) {
    let spawned = std::thread::Builder::new()
        .name(format!("reap-{}", supervisor.id()))
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = supervisor.wait();
        });
    // Without the thread the zombie is merely reaped when this process exits.
    drop(spawned);
}

/// How many of the deployment's instances are alive.
pub(crate) fn health(deployment: &Deployment) -> DeploymentHealth {
    let instances: Vec<_> = deployment.instances.iter().map(instance_health).collect();
    DeploymentHealth {
        total: instances.len(),
        alive: instances.iter().filter(|i| i.alive).count(),
        instances,
    }
}
