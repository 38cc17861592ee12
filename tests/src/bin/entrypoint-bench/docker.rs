//! The Docker side of the exec comparison. No image can be pulled here, so
//! one is made locally, as the entrypoint's own tests do
//! (`entrypoint/tests/static_binary.rs`): a root holding Debian's static
//! busybox (and the static entrypoint), `docker import`ed. The guard
//! removes the container and the image.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::procs::{output_within, Output};

const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `docker info` answers.
pub fn available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn version() -> String {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn docker(args: &[&str]) -> anyhow::Result<Output> {
    let mut c = Command::new("docker");
    c.args(args).stdin(Stdio::null());
    output_within(c, DOCKER_TIMEOUT)
}

fn docker_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = docker(args)?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

/// A static busybox: `explicit`, else `$CAIRN_TEST_BUSYBOX`, else the copy
/// the entrypoint's tests unpacked under `cache`, else Debian's
/// busybox-static fetched there with `apt-get download` (as those tests do).
pub fn static_busybox(explicit: Option<&Path>, cache: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("CAIRN_TEST_BUSYBOX").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let busybox = cache.join("x/bin/busybox");
    if busybox.is_file() {
        return Ok(busybox);
    }
    std::fs::create_dir_all(cache)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", "busybox-static"])
            .current_dir(cache)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        bail!(
            "no static busybox: none in {} and `apt-get download busybox-static` failed (pass --busybox PATH)",
            cache.display()
        );
    }
    let deb = std::fs::read_dir(cache)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("the downloaded busybox-static .deb")?;
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("x"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !busybox.is_file() {
        bail!("cannot unpack {}", deb.display());
    }
    Ok(busybox)
}

/// A running container of a locally made image; dropping it removes both.
pub struct Container {
    pub name: String,
    pub image: String,
    /// What runs as PID 1.
    pub pid1: String,
}

impl Container {
    /// Imports a busybox root (with `entrypoint` when given, a static
    /// binary) as an image and runs it detached: `/cairn-entrypoint
    /// /bin/sleep 3600` as PID 1 when there is an entrypoint, else
    /// `/bin/sleep 3600`.
    pub fn start(busybox: &Path, entrypoint: Option<&Path>, dir: &Path) -> anyhow::Result<Self> {
        let tag = std::process::id();
        let root = dir.join("docker-root");
        for d in ["bin", "proc", "tmp", "etc", "dev", "sys"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy(busybox, root.join("bin/busybox"))
            .with_context(|| format!("copying {}", busybox.display()))?;
        for applet in ["sh", "sleep", "true", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        if let Some(ep) = entrypoint {
            std::fs::copy(ep, root.join("cairn-entrypoint"))?;
        }
        let tarball = dir.join("docker-root.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()?;
        if !tar.success() {
            bail!("tar of {} failed", root.display());
        }
        let image = format!("cairn-entrypoint-bench:busybox-{tag}");
        let name = format!("cairn-entrypoint-bench-{tag}");
        docker_ok(&["import", &tarball.to_string_lossy(), &image])?;
        // From here on the guard owns the image (and the container).
        let mut c = Container {
            name,
            image,
            pid1: String::new(),
        };
        let mut argv = vec!["run", "-d", "--name", &c.name, &c.image];
        let cmd: &[&str] = if entrypoint.is_some() {
            &["/cairn-entrypoint", "/bin/sleep", "3600"]
        } else {
            &["/bin/sleep", "3600"]
        };
        argv.extend_from_slice(cmd);
        let pid1 = cmd.join(" ");
        docker_ok(&argv)?;
        c.pid1 = pid1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if docker(&["exec", &c.name, "true"])?.status.success() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "`docker exec {} true` does not succeed; docker logs:\n{}",
                    c.name,
                    docker(&["logs", &c.name])
                        .map(|o| format!("{}{}", o.stdout, o.stderr))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "-f", self.name.as_str()],
            vec!["rmi", "-f", self.image.as_str()],
        ] {
            match docker(&args) {
                Ok(o) if o.status.success() => {}
                Ok(o) if o.stderr.contains("No such") => {}
                Ok(o) => eprintln!(
                    "entrypoint-bench: cleanup: docker {}: {}",
                    args.join(" "),
                    o.stderr.trim()
                ),
                Err(e) => eprintln!(
                    "entrypoint-bench: cleanup: docker {}: {e:#}",
                    args.join(" ")
                ),
            }
        }
    }
}
