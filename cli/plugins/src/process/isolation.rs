//! What an instance of the `process` platform gets to see of the machine.
//!
//! - **A clean environment**: [`base_env`] — `PATH`, `LANG`, `LC_ALL`, `TZ`
//!   as the runner has them, its own `HOME` and `TMPDIR`, `USER`/`LOGNAME`
//!   when it runs as another user, and the names the config's `pass_env`
//!   allows; then the platform's `CAIRN_*` variables, the app's config and
//!   the port. Nothing else of the shell that ran `cairn up` (cloud keys,
//!   tokens) reaches it, nor its supervisor.
//! - **Its own home**: `v<N>.home/instance-<i>/` (mode 0700), with `tmp/`.
//! - **Another user, when the runner is root**: instances run as the
//!   config's `user`, or by default as the system user [`DEFAULT_USER`],
//!   which is created (`useradd --system`) if missing. Their code and homes
//!   then live under [`instance_root`] (`/var/lib/cairn/instances`, or
//!   `CAIRN_INSTANCE_ROOT`), reachable by that user, owned by it; the
//!   supervisor's spec (with the entrypoint token), its state, the logs, the
//!   CLI's contexts and the node's data stay in root's 0700 directories.
//!   `user = "root"` keeps instances as root (explicitly).
//!
//! What it does not give: as a non-root runner, instances run as the
//! runner's own user, so they can read whatever that user can (its contexts
//! and tokens, a local node's data dir). Instances running as the same user
//! (all of [`DEFAULT_USER`]'s) can read each other's files and signal each
//! other. There is no limit on CPU, memory or network: use the docker
//! platform for that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::PluginError;

/// The system user instances run as when the runner is root and the config
/// names none.
pub const DEFAULT_USER: &str = "cairn-app";

/// Where instances that run as another user keep their code and homes.
pub const DEFAULT_INSTANCE_ROOT: &str = "/var/lib/cairn/instances";

/// Variables of the runner's environment every instance gets (when set).
pub const INHERITED: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// `PATH` when the runner has none, and for instances that run as another
/// user (the runner's may name folders that user cannot enter, such as
/// root's home, which makes a missing program "permission denied").
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user instances run as (other than the runner's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Who runs the instances: `None` for the runner's own user. As root, the
/// config's `user` (which must exist) or [`DEFAULT_USER`] (created when
/// missing); `user = "root"` keeps root. Not root: only the runner's own
/// user can be named.
pub fn run_as(user: Option<&str>) -> Result<Option<RunAs>, PluginError> {
    let euid = nix::unistd::geteuid();
    let lookup = |name: &str| {
        nix::unistd::User::from_name(name)
            .map_err(|e| PluginError::Failed(format!("looking up user {name:?}: {e}")))
    };
    if !euid.is_root() {
        if let Some(name) = user {
            let me = nix::unistd::User::from_uid(euid).ok().flatten();
            if me.as_ref().is_none_or(|u| u.name != name) {
                return Err(PluginError::Failed(format!(
                    "process platform: user = {name:?} needs a runner running as root (this one runs as uid {euid}); remove it to run instances as the runner's user"
                )));
            }
        }
        return Ok(None);
    }
    let name = user.unwrap_or(DEFAULT_USER);
    let found = match lookup(name)? {
        Some(u) => u,
        None if user.is_none() => {
            create_system_user(name)?;
            lookup(name)?.ok_or_else(|| {
                PluginError::Failed(format!("user {name} was created but cannot be found"))
            })?
        }
        None => {
            return Err(PluginError::Failed(format!(
                "process platform: no user {name:?} on this machine (create it, or remove `user` to use {DEFAULT_USER})"
            )))
        }
    };
    if found.uid.is_root() {
        return Ok(None);
    }
    Ok(Some(RunAs {
        name: found.name,
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
    }))
}

/// `useradd --system` a user with no home and no login shell.
fn create_system_user(name: &str) -> Result<(), PluginError> {
    let out = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .map_err(|e| {
            PluginError::io(
                format!("running useradd to create the user {name} instances run as (or name one with `user` in the process platform's config)"),
                e,
            )
        })?;
    // 9: the user exists (another runner created it meanwhile).
    if out.status.success() || out.status.code() == Some(9) {
        return Ok(());
    }
    Err(PluginError::Failed(format!(
        "cannot create the user {name} instances run as (useradd: {}); name an existing one with `user` in the process platform's config",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Where the deployments of a runner whose data dir is `data_dir` keep the
/// code and homes of instances that run as another user: under
/// `CAIRN_INSTANCE_ROOT` (default [`DEFAULT_INSTANCE_ROOT`]), one folder per
/// runner data dir.
pub fn instance_root(data_dir: &Path) -> PathBuf {
    let base = std::env::var_os("CAIRN_INSTANCE_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_INSTANCE_ROOT), PathBuf::from);
    let hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
        hex::encode(&d[..8])
    };
    base.join(hash)
}

/// Creates `dir` and its missing parents as root-owned, mode 0711 (others
/// may pass through, not list), so that a user given a folder inside can
/// reach it.
pub fn create_traversable(dir: &Path) -> Result<(), PluginError> {
    use std::os::unix::fs::PermissionsExt;
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PluginError::io(format!("creating {}", d.display()), e)),
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| PluginError::io(format!("setting the mode of {}", d.display()), e))?;
    }
    Ok(())
}

/// Gives `path` and everything below it to `who` (symlinks themselves, not
/// their targets).
pub fn chown_tree(path: &Path, who: &RunAs) -> Result<(), PluginError> {
    let uid = Some(nix::unistd::Uid::from_raw(who.uid));
    let gid = Some(nix::unistd::Gid::from_raw(who.gid));
    let err = |p: &Path, e: nix::Error| {
        PluginError::Failed(format!("giving {} to user {}: {e}", p.display(), who.name))
    };
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        uid,
        gid,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(path, e))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| PluginError::io(format!("reading {}", path.display()), e))?;
            chown_tree(&e.path(), who)?;
        }
    }
    Ok(())
}

/// An instance's home (`HOME`, with `tmp/` for `TMPDIR`): created mode
/// 0700, owned by `who` when given.
pub fn create_home(home: &Path, who: Option<&RunAs>) -> Result<(), PluginError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = home.join("tmp");
    std::fs::create_dir_all(&tmp)
        .map_err(|e| PluginError::io(format!("creating {}", tmp.display()), e))?;
    for d in [home, tmp.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| PluginError::io(format!("setting the mode of {}", d.display()), e))?;
    }
    if let Some(who) = who {
        chown_tree(home, who)?;
    }
    Ok(())
}

/// The environment an instance starts from (before the platform's
/// `CAIRN_*` variables, the app's config and the port): see the module doc.
/// `lookup` reads the runner's environment.
pub fn base_env(
    home: &Path,
    who: Option<&RunAs>,
    pass_env: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in INHERITED
        .iter()
        .copied()
        .chain(pass_env.iter().map(String::as_str))
    {
        if name == "PATH" && who.is_some() && !pass_env.iter().any(|p| p == "PATH") {
            continue;
        }
        if let Some(v) = lookup(name) {
            env.insert(name.to_string(), v);
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env.insert("HOME".into(), home.display().to_string());
    env.insert("TMPDIR".into(), home.join("tmp").display().to_string());
    if let Some(who) = who {
        env.insert("USER".into(), who.name.clone());
        env.insert("LOGNAME".into(), who.name.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_environment_holds_only_what_is_allowed() {
        let runner: BTreeMap<&str, &str> = [
            ("PATH", "/bin"),
            ("AWS_SECRET_ACCESS_KEY", "leak"),
            ("HOME", "/root"),
            ("KEEP", "yes"),
            ("LANG", "C.UTF-8"),
        ]
        .into_iter()
        .collect();
        let lookup = |k: &str| runner.get(k).map(|v| v.to_string());
        let env = base_env(Path::new("/h/i0"), None, &["KEEP".into()], lookup);
        let want: BTreeMap<String, String> = [
            ("HOME", "/h/i0"),
            ("KEEP", "yes"),
            ("LANG", "C.UTF-8"),
            ("PATH", "/bin"),
            ("TMPDIR", "/h/i0/tmp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        // No PATH at all: a sane default; and for another user, the default
        // unless pass_env names PATH.
        let env = base_env(Path::new("/h"), None, &[], |_| None);
        assert_eq!(env["PATH"], DEFAULT_PATH);
        let who = RunAs {
            name: "app".into(),
            uid: 999,
            gid: 999,
        };
        let env = base_env(Path::new("/h"), Some(&who), &[], lookup);
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["USER"], "app");
        let env = base_env(Path::new("/h"), Some(&who), &["PATH".into()], lookup);
        assert_eq!(env["PATH"], "/bin");
    }

    #[test]
    fn instance_roots_differ_per_runner_data_dir() {
        let a = instance_root(Path::new("/a"));
        let b = instance_root(Path::new("/b"));
        assert_ne!(a, b);
        assert_eq!(a, instance_root(Path::new("/a")));
    }
}
