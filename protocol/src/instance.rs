//! Messages about running app instances: their logs and exec sessions.
//!
//! Three parties speak them:
//! - the **entrypoint** ships its app's output on its registration stream
//!   ([`EntrypointToNode`]) and accepts streams the node opens on its
//!   connection ([`NodeToEntrypoint`] header, then exec frames);
//! - the **node** keeps a rolling window of lines per instance and answers
//!   [`LogsQuery`]s with [`LogEntry`]s, and routes exec sessions to the
//!   instance's node (through the peer mesh when it is another node);
//! - the **CLI** asks for logs and runs exec sessions.
//!
//! An exec session is one stream end to end: the client sends
//! `ClientRequest::Exec` and gets `ClientResponse::ExecOpened` (or `Error`);
//! from then on the client writes [`ExecInput`] frames and reads
//! [`ExecOutput`] frames, which the nodes on the way copy as raw bytes
//! without decoding them. The entrypoint's first frame is
//! [`ExecOutput::Started`] or [`ExecOutput::Failed`]; its last is
//! [`ExecOutput::Exit`] (or `Failed`).

use serde::{Deserialize, Serialize};

use crate::types::OpId;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by Cairn itself, e.g. how many lines were dropped while the
    /// entrypoint was disconnected.
    Notice,
}

/// One line of an app's output, as the entrypoint ships it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedLine {
    /// When the line was complete, by the entrypoint's clock (ms since the epoch).
    pub time_ms: u64,
    pub stream: LogStream,
    /// The line without its newline; invalid UTF-8 replaced.
    pub line: String,
    /// The app wrote more than the entrypoint keeps of one line.
    pub truncated: bool,
}

/// Frames an entrypoint writes on its `RegisterInstance` stream after the
/// node answered `InstanceRegistered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntrypointToNode {
    /// A batch of output lines. `dropped`: lines this entrypoint has dropped
    /// since it started (queue full, mostly while disconnected); the node
    /// notes every increase in the instance's log.
    Logs {
        lines: Vec<ShippedLine>,
        dropped: u64,
    },
}

/// The most lines in one [`EntrypointToNode::Logs`] batch.
pub const MAX_SHIPPED_BATCH: usize = 512;

/// What `cairn logs` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    pub target: DeploymentRef,
    /// Only this instance (its id, or a unique prefix of it).
    pub instance: Option<String>,
    /// Only lines at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// At most this many of the newest lines of the history (all if `None`).
    pub tail: Option<u32>,
    /// Keep the stream open and send new lines as they arrive.
    pub follow: bool,
}

/// Which deployment of an app: `sequence` (vN), or by default the released
/// one (the newest deployment if none was released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRef {
    pub project: String,
    pub app: String,
    pub workspace: String,
    pub sequence: Option<u64>,
}

/// One line of an instance's log, as the node serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub deployment: OpId,
    /// The deployment's sequence (vN).
    pub sequence: u64,
    pub instance: String,
    /// The node that received the line.
    pub node: u64,
    /// Increases with every line the node receives (any instance); with
    /// `incarnation`, tells a follower where it left off.
    pub seq: u64,
    pub time_ms: u64,
    pub stream: LogStream,
    pub line: String,
    pub truncated: bool,
}

/// The terminal an exec session asked for (`cairn exec -t`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySpec {
    pub rows: u16,
    pub cols: u16,
    /// `TERM` for the command (the client's own, or `xterm`).
    pub term: String,
}

/// What to run in an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Program and arguments; at least the program.
    pub command: Vec<String>,
    /// Allocate a pseudo-terminal (`-t`).
    pub tty: Option<TtySpec>,
    /// Keep stdin open and stream it (`-i`); otherwise it is at end of file.
    pub stdin: bool,
}

/// Longest `ExecSpec::command`, all arguments together.
pub const MAX_EXEC_COMMAND_BYTES: usize = 128 * 1024;

impl ExecSpec {
    /// Why this spec cannot run, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        match self.command.first() {
            None => return Some("no command to run".into()),
            Some(p) if p.is_empty() => return Some("the program name is empty".into()),
            _ => {}
        }
        let bytes: usize = self.command.iter().map(|a| a.len() + 1).sum();
        if bytes > MAX_EXEC_COMMAND_BYTES {
            return Some(format!(
                "the command is {bytes} bytes long; at most {MAX_EXEC_COMMAND_BYTES} are allowed"
            ));
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Some("the command contains a NUL byte".into());
        }
        None
    }
}

/// The header of a stream a node opens on an entrypoint's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeToEntrypoint {
    /// Run a command in the app's context; exec frames follow.
    Exec(ExecSpec),
    /// Connect to the app on the loopback interface, on `port` (by default
    /// the app's `PORT`). The entrypoint answers one [`TunnelReply`] frame;
    /// after `Connected` the stream carries the TCP connection's bytes both
    /// ways, and each side's end of input is the other's.
    Tunnel { port: Option<u16> },
}

/// The entrypoint's answer to [`NodeToEntrypoint::Tunnel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelReply {
    Connected,
    /// The app could not be reached (not listening yet, no `PORT`…).
    Failed {
        reason: String,
    },
}

/// Frames from the client to the command of an exec session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecInput {
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The client's stdin ended.
    StdinEof,
    /// The client's terminal changed size (with a tty only).
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// Frames from the command of an exec session to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecOutput {
    /// The command runs, as `pid` inside the instance.
    Started {
        pid: u32,
    },
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Never sent with a tty (its output is all on `Stdout`).
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The command ended: its exit code, or 128 + the signal that killed it.
    Exit {
        code: i32,
    },
    /// It could not run (or the session broke); `code` is what the client
    /// exits with (127: not found, 126: not runnable).
    Failed {
        message: String,
        code: i32,
    },
}

/// Largest `Stdin`/`Stdout`/`Stderr` payload one frame carries.
pub const EXEC_CHUNK: usize = 32 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn roundtrip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
        let bytes = frame::encode(&v).expect("encodes");
        let (back, used) = frame::decode::<T>(&bytes)
            .expect("decodes")
            .expect("a whole frame");
        assert_eq!(used, bytes.len());
        assert_eq!(back, v);
    }

    #[test]
    fn messages_survive_the_frame_codec() {
        roundtrip(EntrypointToNode::Logs {
            lines: vec![ShippedLine {
                time_ms: 5,
                stream: LogStream::Stderr,
                line: "héllo".into(),
                truncated: true,
            }],
            dropped: 7,
        });
        roundtrip(NodeToEntrypoint::Tunnel { port: Some(8080) });
        roundtrip(TunnelReply::Failed {
            reason: "refused".into(),
        });
        roundtrip(NodeToEntrypoint::Exec(ExecSpec {
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            tty: Some(TtySpec {
                rows: 24,
                cols: 80,
                term: "xterm".into(),
            }),
            stdin: true,
        }));
        for input in [
            ExecInput::Stdin(vec![0, 1, 255]),
            ExecInput::StdinEof,
            ExecInput::Resize { rows: 1, cols: 2 },
        ] {
            roundtrip(input);
        }
        for output in [
            ExecOutput::Started { pid: 9 },
            ExecOutput::Stdout(b"out".to_vec()),
            ExecOutput::Stderr(vec![]),
            ExecOutput::Exit { code: 130 },
            ExecOutput::Failed {
                message: "nope".into(),
                code: 127,
            },
        ] {
            roundtrip(output);
        }
    }

    #[test]
    fn a_byte_payload_is_encoded_compactly() {
        let frame = frame::encode(&ExecOutput::Stdout(vec![0xff; EXEC_CHUNK])).expect("encodes");
        // Tag + length + the bytes themselves, one byte each.
        assert!(frame.len() < EXEC_CHUNK + 16, "{}", frame.len());
    }

    #[test]
    fn exec_specs_are_checked() {
        let spec = |c: &[&str]| ExecSpec {
            command: c.iter().map(|s| s.to_string()).collect(),
            tty: None,
            stdin: false,
        };
        assert!(spec(&[]).invalid().is_some());
        assert!(spec(&[""]).invalid().is_some());
        assert!(spec(&["a\0b"]).invalid().is_some());
        assert!(spec(&["true"]).invalid().is_none());
        let long = "x".repeat(MAX_EXEC_COMMAND_BYTES);
        assert!(spec(&["echo", &long]).invalid().is_some());
    }
}
