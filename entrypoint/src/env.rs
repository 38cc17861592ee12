//! The entrypoint's configuration, from environment variables.
//!
//! Parsing only: no lookups, no connections. Every error names its variable.
//! An empty variable counts as unset (container tools often set `VAR=`).

use std::ffi::OsString;
use std::fmt;

/// Comma-separated cluster node addresses.
pub const ADDRS: &str = "CAIRN_ADDRS";
/// The pinned cluster CA's fingerprint.
pub const CA_FINGERPRINT: &str = "CAIRN_CA_FINGERPRINT";
/// The deployment this instance belongs to.
pub const DEPLOYMENT_ID: &str = "CAIRN_DEPLOYMENT_ID";
/// The deployment-scoped entrypoint token.
pub const ENTRYPOINT_TOKEN: &str = "CAIRN_ENTRYPOINT_TOKEN";
/// Exec the command directly, doing nothing else.
pub const DISABLE: &str = "CAIRN_DISABLE";
/// Comma-separated variable names that the cluster's configuration does not
/// override (the platform sets them, e.g. `PORT`).
pub const ENV_FIXED: &str = "CAIRN_ENV_FIXED";

/// The connection settings, in the order `--help` and warnings list them.
pub const CONNECTION_VARS: [&str; 4] = [ADDRS, CA_FINGERPRINT, DEPLOYMENT_ID, ENTRYPOINT_TOKEN];

/// Variables that the child does not inherit: it has no use for them and
/// should not be able to act as its entrypoint.
pub const HIDDEN_FROM_CHILD: [&str; 1] = [ENTRYPOINT_TOKEN];

/// A node's QUIC port when an address names none (DESIGN: "Wire").
pub const DEFAULT_NODE_PORT: u16 = 9701;

/// The longest deployment id accepted.
const MAX_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointEnv {
    /// `CAIRN_DISABLE` is set: run the command as if we were not there.
    pub disable: bool,
    /// `None` when no connection setting is set: run without the cluster.
    pub cluster: Option<ClusterConfig>,
}

/// Everything needed to reach the cluster as this deployment's entrypoint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// At least one.
    pub addrs: Vec<NodeAddr>,
    /// `sha256:` and 64 lowercase hex digits, as `cairn_protocol::pki::fingerprint` writes it.
    pub ca_fingerprint: String,
    pub deployment_id: String,
    /// Secret: not shown by `Debug`.
    pub token: String,
    /// Names the configuration may not override ([`ENV_FIXED`]).
    pub fixed_env: Vec<String>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("addrs", &self.addrs)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("deployment_id", &self.deployment_id)
            .field("token", &"<redacted>")
            .field("fixed_env", &self.fixed_env)
            .finish()
    }
}

/// A node address as given: a host name or IP literal and a port. Names are
/// resolved when connecting, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("{var} is not valid UTF-8")]
    NotUnicode { var: &'static str },
    #[error("{} not set (the other connection settings are)", missing_list(.vars))]
    Incomplete { vars: Vec<&'static str> },
}

fn missing_list(vars: &[&str]) -> String {
    match vars {
        [one] => format!("{one} is"),
        _ => format!("{} are", vars.join(", ")),
    }
}

impl EntrypointEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|var| std::env::var_os(var))
    }

    /// Parses the variables `lookup` answers. With `CAIRN_DISABLE` set, the
    /// connection settings are not looked at. With none of them set,
    /// `cluster` is `None`; with only some set, that is an error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, EnvError> {
        let value = |var: &'static str| -> Result<Option<String>, EnvError> {
            match lookup(var) {
                None => Ok(None),
                Some(v) => match v.into_string() {
                    Ok(s) if s.trim().is_empty() => Ok(None),
                    Ok(s) => Ok(Some(s)),
                    Err(_) => Err(EnvError::NotUnicode { var }),
                },
            }
        };

        let disable = match value(DISABLE)? {
            None => false,
            Some(v) => parse_bool(&v).ok_or_else(|| EnvError::Invalid {
                var: DISABLE,
                reason: format!("{v:?} is not a boolean (use 1 or 0)"),
            })?,
        };
        if disable {
            return Ok(Self {
                disable,
                cluster: None,
            });
        }

        let addrs = value(ADDRS)?;
        let fingerprint = value(CA_FINGERPRINT)?;
        let deployment = value(DEPLOYMENT_ID)?;
        let token = value(ENTRYPOINT_TOKEN)?;
        let set = [&addrs, &fingerprint, &deployment, &token];
        if set.iter().all(|v| v.is_none()) {
            return Ok(Self {
                disable,
                cluster: None,
            });
        }
        let missing: Vec<&'static str> = CONNECTION_VARS
            .iter()
            .zip(set)
            .filter(|(_, v)| v.is_none())
            .map(|(var, _)| *var)
            .collect();
        let (Some(addrs), Some(fingerprint), Some(deployment), Some(token)) =
            (addrs, fingerprint, deployment, token)
        else {
            return Err(EnvError::Incomplete { vars: missing });
        };

        Ok(Self {
            disable,
            cluster: Some(ClusterConfig {
                addrs: parse_addrs(&addrs)?,
                ca_fingerprint: parse_fingerprint(&fingerprint)?,
                deployment_id: parse_deployment_id(&deployment)?,
                token: parse_token(&token)?,
                fixed_env: parse_names(value(ENV_FIXED)?.as_deref().unwrap_or(""))?,
            }),
        })
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn invalid(var: &'static str, reason: impl Into<String>) -> EnvError {
    EnvError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// `host[:port]` entries, comma-separated; IPv6 literals in brackets when a
/// port follows (`[::1]:9701`).
fn parse_addrs(v: &str) -> Result<Vec<NodeAddr>, EnvError> {
    v.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, entry)| {
            parse_addr(entry).map_err(|reason| {
                invalid(ADDRS, format!("address {} ({entry:?}): {reason}", i + 1))
            })
        })
        .collect()
}

fn parse_addr(entry: &str) -> Result<NodeAddr, String> {
    if entry.is_empty() {
        return Err("empty".into());
    }
    if entry.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err("expected host:port".into());
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '['")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(after.strip_prefix(':').ok_or("expected ':' after ']'")?),
            ),
        }
    } else if entry.matches(':').count() > 1 {
        // A bare IPv6 literal: no port can follow without brackets.
        (entry, None)
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if (entry.starts_with('[') || host.contains(':')) && host.parse::<std::net::Ipv6Addr>().is_err()
    {
        return Err("not an IPv6 address".into());
    }
    let port = match port {
        None => DEFAULT_NODE_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("bad port {p:?}")),
        },
    };
    Ok(NodeAddr {
        host: host.to_string(),
        port,
    })
}

/// `sha256:<64 hex>` (a bare 64-hex digest is accepted too); normalised to
/// lowercase with the prefix.
fn parse_fingerprint(v: &str) -> Result<String, EnvError> {
    let v = v.trim();
    let hex = v.strip_prefix("sha256:").unwrap_or(v);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            CA_FINGERPRINT,
            "expected sha256: followed by 64 hex digits (as `cairn server info` shows it)",
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

fn parse_deployment_id(v: &str) -> Result<String, EnvError> {
    let v = v.trim();
    if v.len() > MAX_ID_LEN {
        return Err(invalid(
            DEPLOYMENT_ID,
            format!("longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            DEPLOYMENT_ID,
            "only printable ASCII without spaces is allowed",
        ));
    }
    Ok(v.to_string())
}

/// `NAME,NAME…` (empty entries ignored); each a valid variable name.
fn parse_names(v: &str) -> Result<Vec<String>, EnvError> {
    v.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            if n.contains('=') || n.contains('\0') {
                Err(invalid(ENV_FIXED, format!("{n:?} is not a variable name")))
            } else {
                Ok(n.to_string())
            }
        })
        .collect()
}

fn parse_token(v: &str) -> Result<String, EnvError> {
    let v = v.trim();
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        // Never echo a secret.
        return Err(invalid(
            ENTRYPOINT_TOKEN,
            "contains spaces or non-printable characters",
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(vars: &[(&str, &str)]) -> Result<EntrypointEnv, EnvError> {
        EntrypointEnv::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn full() -> Vec<(&'static str, &'static str)> {
        vec![
            (ADDRS, "node1:9701, 10.0.0.2,[::1]:7000,::1"),
            (CA_FINGERPRINT, FP),
            (DEPLOYMENT_ID, "web/v3"),
            (ENTRYPOINT_TOKEN, "cairn_ep_abc"),
        ]
    }

    fn with(var: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut vars = full();
        vars.retain(|(k, _)| *k != var);
        vars.push((var, value));
        vars
    }

    fn invalid_var(vars: &[(&str, &str)]) -> &'static str {
        match parse(vars) {
            Err(EnvError::Invalid { var, .. }) => var,
            other => panic!("expected an invalid variable, got {other:?}"),
        }
    }

    #[test]
    fn nothing_set_means_no_cluster() {
        let env = parse(&[]).expect("valid");
        assert_eq!(
            env,
            EntrypointEnv {
                disable: false,
                cluster: None
            }
        );
        // Empty counts as unset.
        assert_eq!(
            parse(&[(ADDRS, ""), (DISABLE, "")]).expect("valid").cluster,
            None
        );
    }

    #[test]
    fn full_config_parses() {
        let env = parse(&full()).expect("valid");
        let cluster = env.cluster.expect("cluster");
        let addrs: Vec<String> = cluster.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            addrs,
            ["node1:9701", "10.0.0.2:9701", "[::1]:7000", "[::1]:9701"]
        );
        assert_eq!(cluster.ca_fingerprint, FP);
        assert_eq!(cluster.deployment_id, "web/v3");
        assert_eq!(cluster.token, "cairn_ep_abc");
        assert!(cluster.fixed_env.is_empty());
        assert!(
            !format!("{cluster:?}").contains("cairn_ep_abc"),
            "Debug hides the token"
        );
    }

    #[test]
    fn partial_config_names_the_missing_variables() {
        let err = parse(&[(ADDRS, "n:1"), (DEPLOYMENT_ID, "d")]).expect_err("incomplete");
        assert_eq!(
            err,
            EnvError::Incomplete {
                vars: vec![CA_FINGERPRINT, ENTRYPOINT_TOKEN]
            }
        );
        assert_eq!(
            err.to_string(),
            "CAIRN_CA_FINGERPRINT, CAIRN_ENTRYPOINT_TOKEN are not set (the other connection settings are)"
        );
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for bad in [
            "",
            "a,,b",
            "host:",
            "host:0",
            "host:99999",
            "host:x",
            "[::1",
            "[::1]x",
            "[nothost]:1",
            ":80",
            "a b:1",
            "http://a",
        ] {
            if bad.is_empty() {
                continue; // empty = unset, tested elsewhere
            }
            assert_eq!(invalid_var(&with(ADDRS, bad)), ADDRS, "{bad:?}");
        }
        for bad in [
            "sha256:abc",
            "md5:0123",
            &FP[..FP.len() - 1],
            "sha256:zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let bad: &'static str = Box::leak(bad.to_string().into_boxed_str());
            assert_eq!(
                invalid_var(&with(CA_FINGERPRINT, bad)),
                CA_FINGERPRINT,
                "{bad:?}"
            );
        }
        assert_eq!(invalid_var(&with(DEPLOYMENT_ID, "web v3")), DEPLOYMENT_ID);
        assert_eq!(
            invalid_var(&with(ENTRYPOINT_TOKEN, "tok en")),
            ENTRYPOINT_TOKEN
        );
        assert_eq!(invalid_var(&[(DISABLE, "maybe")]), DISABLE);
        let err = parse(&with(ADDRS, "ok:1,bad:x")).expect_err("bad port");
        assert_eq!(
            err.to_string(),
            "CAIRN_ADDRS: address 2 (\"bad:x\"): bad port \"x\""
        );
    }

    #[test]
    fn fixed_names_parse() {
        let env = parse(&with(ENV_FIXED, "PORT, HOST,,")).expect("valid");
        assert_eq!(env.cluster.expect("cluster").fixed_env, ["PORT", "HOST"]);
        assert_eq!(invalid_var(&with(ENV_FIXED, "A=B")), ENV_FIXED);
    }

    #[test]
    fn the_token_is_never_echoed() {
        let err = parse(&with(ENTRYPOINT_TOKEN, "secret\u{1}value")).expect_err("invalid");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn fingerprint_is_normalised() {
        let bare = FP.trim_start_matches("sha256:").to_ascii_uppercase();
        let bare: &'static str = Box::leak(bare.into_boxed_str());
        let env = parse(&with(CA_FINGERPRINT, bare)).expect("valid");
        assert_eq!(env.cluster.expect("cluster").ca_fingerprint, FP);
    }

    #[test]
    fn disable_wins_over_everything_else() {
        for yes in ["1", "true", "YES", "on"] {
            let env = parse(&[(DISABLE, yes), (ADDRS, "::bad::")]).expect("disabled");
            assert!(env.disable, "{yes}");
            assert_eq!(env.cluster, None);
        }
        for no in ["0", "false", "No", "off"] {
            assert!(!parse(&[(DISABLE, no)]).expect("valid").disable, "{no}");
        }
    }

    #[test]
    fn non_unicode_is_an_error_naming_the_variable() {
        use std::os::unix::ffi::OsStringExt;
        let err = EntrypointEnv::from_lookup(|name| {
            (name == DEPLOYMENT_ID).then(|| OsString::from_vec(vec![0xff, 0xfe]))
        })
        .expect_err("not unicode");
        assert_eq!(err, EnvError::NotUnicode { var: DEPLOYMENT_ID });
    }
}
