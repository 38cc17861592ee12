//! CLI contexts: which node to talk to and how to trust it.
//!
//! A context is a JSON file `<config>/contexts/NAME.json` holding the server
//! address, the pinned CA fingerprint and a user token (the file is 0600).
//! `<config>/current` names the context in use. The embedded default is a
//! context with `local = true`, whose address is read from the local node's
//! ready file each time (the node picks a free port when it starts).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::paths;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("no context named {0:?} (see `cairn context list`)")]
    NotFound(String),
    #[error("a context named {0:?} already exists (delete it first, or pick another name)")]
    Exists(String),
    #[error("invalid context name {0:?}: use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid context file: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    /// host:port of a node's QUIC listener (unused when `local`).
    pub address: String,
    pub ca_fingerprint: String,
    pub token: String,
    /// The embedded default: a local node the CLI starts when needed.
    #[serde(default)]
    pub local: bool,
    /// QUIC addresses of the cluster's other members, as last learned from
    /// a node (`ServerInfo`). The CLI moves to one of them when `address`
    /// does not answer; refreshed on every successful connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// An enrolled runner's certificate (issue 19): connections go out on
    /// the runner ALPN with it instead of a token. Never saved in a context
    /// file (the agent keeps it in its own data dir).
    #[serde(skip)]
    pub runner: Option<cairn_protocol::pki::CertifiedKey>,
}

/// The format of a context file this build writes. A file carries it as
/// `"format"` (none: release 0.1.0, the same fields). Fields added later
/// come with defaults, so older files keep loading; a file of a newer format
/// is refused, naming both, instead of being misread.
pub const CONTEXT_FORMAT: u32 = 1;

/// A context as its file holds it.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    #[serde(default)]
    format: u32,
    #[serde(flatten)]
    ctx: Context,
}

impl Context {
    /// Where to dial, in order of preference: `address`, then the other
    /// members (without duplicates).
    pub fn addresses(&self) -> Vec<String> {
        let mut out = vec![self.address.clone()];
        for m in &self.members {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }
}

fn dir() -> PathBuf {
    paths::config_dir().join("contexts")
}

fn file(name: &str) -> PathBuf {
    dir().join(format!("{name}.json"))
}

fn current_file() -> PathBuf {
    paths::config_dir().join("current")
}

fn check_name(name: &str) -> Result<(), ContextError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ContextError::BadName(name.to_string()));
    }
    Ok(())
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn save(ctx: &Context, overwrite: bool) -> Result<(), ContextError> {
    check_name(&ctx.name)?;
    let path = file(&ctx.name);
    if !overwrite && path.exists() {
        return Err(ContextError::Exists(ctx.name.clone()));
    }
    std::fs::create_dir_all(dir()).map_err(io(&dir()))?;
    let on_disk = OnDisk {
        format: CONTEXT_FORMAT,
        ctx: ctx.clone(),
    };
    let json = serde_json::to_vec_pretty(&on_disk).map_err(|e| ContextError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    cairn_node::identity::write_atomic(&path, &json, true).map_err(|e| ContextError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })
}

pub fn load(name: &str) -> Result<Context, ContextError> {
    check_name(name)?;
    let path = file(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ContextError::NotFound(name.to_string()))
        }
        Err(e) => return Err(ContextError::Io { path, source: e }),
    };
    let on_disk: OnDisk = serde_json::from_str(&text).map_err(|e| ContextError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if on_disk.format > CONTEXT_FORMAT {
        return Err(ContextError::Corrupt {
            path,
            message: format!(
                "written in format {} by a newer cairn; this cairn ({}) reads formats up to {CONTEXT_FORMAT}: upgrade it",
                on_disk.format,
                cairn_protocol::VERSION
            ),
        });
    }
    Ok(on_disk.ctx)
}

pub fn list() -> Result<Vec<Context>, ContextError> {
    let d = dir();
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ContextError::Io { path: d, source: e }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(stem) = name.strip_suffix(".json") {
            out.push(load(stem)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn delete(name: &str) -> Result<(), ContextError> {
    check_name(name)?;
    let path = file(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ContextError::NotFound(name.to_string()))
        }
        Err(e) => return Err(ContextError::Io { path, source: e }),
    }
    if current()?.as_deref() == Some(name) {
        let _ = std::fs::remove_file(current_file());
    }
    Ok(())
}

/// The name of the context in use, if one is set.
pub fn current() -> Result<Option<String>, ContextError> {
    let path = current_file();
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ContextError::Io { path, source: e }),
    }
}

pub fn set_current(name: &str) -> Result<(), ContextError> {
    load(name)?;
    std::fs::create_dir_all(paths::config_dir()).map_err(io(&paths::config_dir()))?;
    let path = current_file();
    std::fs::write(&path, name).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: CAIRN_HOME is process-wide.
    #[test]
    fn save_load_list_use_delete() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::env::set_var("CAIRN_HOME", tmp.path());
        let c = Context {
            name: "prod".into(),
            address: "10.0.0.1:9701".into(),
            ca_fingerprint: "sha256:ab".into(),
            token: "t".into(),
            local: false,
            members: vec!["10.0.0.2:9701".into()],
            runner: None,
        };
        save(&c, false).expect("save");
        assert!(matches!(save(&c, false), Err(ContextError::Exists(_))));
        assert_eq!(load("prod").expect("load"), c);
        assert!(matches!(load("nope"), Err(ContextError::NotFound(_))));
        assert!(matches!(
            save(
                &Context {
                    name: "a b".into(),
                    ..c.clone()
                },
                false
            ),
            Err(ContextError::BadName(_))
        ));
        assert_eq!(current().expect("current"), None);
        set_current("prod").expect("use");
        assert_eq!(current().expect("current").as_deref(), Some("prod"));
        assert_eq!(list().expect("list").len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file("prod"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "context files hold a token");
        }
        // The file says its format; one without (release 0.1.0's) loads, a
        // newer one is refused naming both, and unknown fields are ignored.
        let text = std::fs::read_to_string(file("prod")).expect("read");
        assert!(text.contains("\"format\": 1"), "{text}");
        let old =
            r#"{"name":"old","address":"a:1","ca_fingerprint":"f","token":"t","local":false}"#;
        std::fs::write(file("old"), old).expect("write");
        assert_eq!(load("old").expect("0.1.0 file").address, "a:1");
        let newer = r#"{"format":2,"name":"new","address":"a:1","ca_fingerprint":"f","token":"t","later":[1]}"#;
        std::fs::write(file("new"), newer).expect("write");
        let e = load("new").expect_err("newer format").to_string();
        assert!(
            e.contains("format 2") && e.contains("formats up to 1"),
            "{e}"
        );
        std::fs::remove_file(file("new")).expect("rm");
        std::fs::remove_file(file("old")).expect("rm");
        delete("prod").expect("delete");
        assert_eq!(current().expect("current"), None);
        assert!(list().expect("list").is_empty());
        std::env::remove_var("CAIRN_HOME");
    }
}
