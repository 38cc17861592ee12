//! Command line: `cairn-entrypoint [--] CMD ARGS…`.
//!
//! Hand-rolled (no clap) to keep the static binary small. Only the first
//! argument is ours: everything from CMD on belongs to the app, so
//! `cairn-entrypoint ls -l` runs `ls -l`.

use std::ffi::OsString;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Help,
    Version,
    Run {
        program: OsString,
        args: Vec<OsString>,
    },
}

/// A command line we cannot use (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub const USAGE: &str = "Usage: cairn-entrypoint [--] CMD [ARGS...]";

pub const HELP: &str = "\
cairn-entrypoint: runs an app process for Cairn. It passes the app's output
through, forwards signals to it, reaps zombies when it is PID 1, and exits
with the app's exit status.

Usage: cairn-entrypoint [--] CMD [ARGS...]

Options (only before CMD; use -- when CMD itself starts with '-'):
  -h, --help     Print this help
  -V, --version  Print the version

Environment:
  CAIRN_ADDRS             Cluster node addresses, comma-separated host[:port]
                          (port 9701 when omitted; [v6]:port for IPv6)
  CAIRN_CA_FINGERPRINT    Fingerprint of the cluster CA to pin (sha256:<64 hex>)
  CAIRN_DEPLOYMENT_ID     The deployment this instance belongs to (its number)
  CAIRN_ENTRYPOINT_TOKEN  This deployment's entrypoint token (not passed on to CMD)
  CAIRN_DISABLE           1/true: exec CMD directly (same PID), nothing else

With the connection settings, it registers this instance with the cluster
and starts CMD with the deployment's configuration as env vars (waiting at
most 5 s for it: otherwise CMD starts without it while the connection is
retried in the background). A configuration change restarts CMD gracefully
(TERM, then KILL after 10 s). A lost connection leaves CMD alone and is
retried with backoff over every address.

When the connection settings are not set (or not valid), CMD runs without the
cluster and one warning line says why.

Signals: TERM, INT, HUP and QUIT are forwarded to CMD's process group (CMD
runs in a group of its own); USR1, USR2 and WINCH to CMD alone.

Exit status: CMD's exit status; 128+N if CMD was killed by signal N; 2 for a
usage error; 127 if CMD was not found; 126 if it could not be run.
";

/// Parses the arguments after the program name.
pub fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let first = args
        .next()
        .ok_or_else(|| UsageError("missing CMD".into()))?;
    let program = match first.to_str() {
        Some("--") => args
            .next()
            .ok_or_else(|| UsageError("missing CMD after --".into()))?,
        Some("-h" | "--help") => return Ok(Invocation::Help),
        Some("-V" | "--version") => return Ok(Invocation::Version),
        Some(opt) if opt.starts_with('-') && opt.len() > 1 => {
            return Err(UsageError(format!(
                "unknown option {opt:?} (put -- before a CMD that starts with '-')"
            )))
        }
        _ => first,
    };
    if program.is_empty() {
        return Err(UsageError("CMD is empty".into()));
    }
    Ok(Invocation::Run {
        program,
        args: args.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(program: &str, args: &[&str]) -> Invocation {
        Invocation::Run {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn command_and_its_arguments() {
        assert_eq!(
            parse_strs(&["ls", "-l", "--", "x"]),
            Ok(run("ls", &["-l", "--", "x"]))
        );
        assert_eq!(parse_strs(&["--", "ls", "-l"]), Ok(run("ls", &["-l"])));
        assert_eq!(parse_strs(&["--", "--help"]), Ok(run("--help", &[])));
        assert_eq!(parse_strs(&["--", "-"]), Ok(run("-", &[])));
        assert_eq!(parse_strs(&["sh", "--help"]), Ok(run("sh", &["--help"])));
    }

    #[test]
    fn our_own_options() {
        assert_eq!(parse_strs(&["--help"]), Ok(Invocation::Help));
        assert_eq!(parse_strs(&["-h", "ls"]), Ok(Invocation::Help));
        assert_eq!(parse_strs(&["-V"]), Ok(Invocation::Version));
    }

    #[test]
    fn usage_errors() {
        assert!(parse_strs(&[]).is_err());
        assert!(parse_strs(&["--"]).is_err());
        assert!(parse_strs(&[""]).is_err());
        assert!(parse_strs(&["-x", "ls"]).is_err());
    }

    #[test]
    fn help_explains_every_variable() {
        for var in crate::env::CONNECTION_VARS
            .iter()
            .chain([&crate::env::DISABLE])
        {
            assert!(HELP.contains(var), "{var}");
        }
    }
}
