//! The plugin protocol, version 1: what Cairn and a plugin program say to each other over
//! the plugin's stdin and stdout (docs/plugins.md is the prose version).
//!
//! Every message is one **frame**: a 4-byte big-endian length, then that many bytes of a
//! UTF-8 JSON object with a `"type"` field. A frame is at most [`MAX_FRAME`] bytes. The
//! plugin's stderr is free text: Cairn shows its lines in the job's output.
//!
//! A session is one plugin process and one request:
//! 1. Cairn sends [`HostMsg::Hello`] with the protocol versions it speaks;
//! 2. the plugin answers [`PluginMsg::Hello`]: the version it chose, its name, its
//!    components (kind, input types, output type) and its mappers — or
//!    [`PluginMsg::Error`] when it speaks none of the versions;
//! 3. Cairn sends one [`HostMsg::Request`] (or closes stdin when it only wanted the
//!    description);
//! 4. the plugin sends any number of [`PluginMsg::Output`], [`PluginMsg::Step`] and
//!    [`PluginMsg::Table`], then exactly one [`PluginMsg::Done`] or [`PluginMsg::Error`], and
//!    exits.
//!
//! Cairn starts the plugin in a process group of its own and kills the group when the
//! session ends, however it ends; it gives up on a plugin that exceeds its time, exits
//! before answering, or sends something that is not a frame of this protocol.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol versions this crate speaks.
pub const VERSIONS: &[u32] = &[1];

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;

/// The kinds of components a plugin may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    Builder,
    Registry,
    Platform,
    Releaser,
}

/// A typed value, as Cairn's built-in plugins exchange them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    /// e.g. "files.Artifact", "docker.Image", "myplugin.Bundle".
    pub type_name: String,
    pub data: serde_json::Value,
}

/// One component a plugin offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub kind: ComponentKind,
    /// The types it takes (empty for a builder).
    #[serde(default)]
    pub input_types: Vec<String>,
    pub output_type: String,
}

/// A mapper a plugin offers: it turns a value of type `from` into one of type `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapperInfo {
    pub from: String,
    pub to: String,
}

/// What an operation runs for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpInfo {
    pub project: String,
    pub app: String,
    pub workspace: String,
    /// The build or deployment number (v1, v2…).
    pub sequence: u64,
    /// The app's source directory.
    pub source_dir: String,
    /// A directory the plugin may keep files in (the runner's data dir for this plugin).
    pub data_dir: String,
    /// The app's config env variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// The operations a request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Check a component's config without running anything.
    Configure,
    Build,
    Push,
    Deploy,
    Destroy,
    Release,
    /// Run a mapper.
    Map,
}

/// From Cairn to the plugin.
#[allow(clippy::large_enum_variant)] // one message per frame, read once: size does not matter
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMsg {
    Hello {
        versions: Vec<u32>,
    },
    Request {
        op: Op,
        /// The component (for every op but `map`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<ComponentKind>,
        /// The `use` block's fields.
        #[serde(default)]
        config: serde_json::Value,
        #[serde(default)]
        info: OpInfo,
        /// The value to push, deploy, destroy, release or map.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        /// For `map`: the type to produce.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

/// The status of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Started,
    Ok,
    Failed,
}

/// Which stream an output line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Info,
}

/// From the plugin to Cairn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginMsg {
    Hello {
        version: u32,
        name: String,
        #[serde(default)]
        components: Vec<Component>,
        #[serde(default)]
        mappers: Vec<MapperInfo>,
    },
    Output {
        stream: Stream,
        line: String,
    },
    Step {
        id: u32,
        name: String,
        status: StepStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// The operation succeeded; `value` is what it made (none for configure and destroy).
    Done {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// The operation failed. `field` names the config field at fault, for configure.
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

/// Writes one frame.
pub fn write_frame<W: Write + ?Sized, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {} bytes is over the {MAX_FRAME}-byte limit",
            body.len()
        )));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame's bytes; `Ok(None)` at a clean end of stream (before a length).
pub fn read_frame_bytes<R: Read + ?Sized>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame's length",
                ))
            }
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a frame of {len} bytes announced (bytes {:02x?}), over the {MAX_FRAME}-byte limit: not this protocol",
                u32::to_be_bytes(len as u32)
            ),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Reads one frame as a message.
pub fn read_frame<R: Read + ?Sized, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> io::Result<Option<T>> {
    match read_frame_bytes(r)? {
        None => Ok(None),
        Some(body) => serde_json::from_slice(&body).map(Some).map_err(|e| {
            let start: String = String::from_utf8_lossy(&body).chars().take(80).collect();
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame that is not a message of this protocol ({e}): {start:?}"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let mut buf = Vec::new();
        let msg = PluginMsg::Output {
            stream: Stream::Info,
            line: "hi".into(),
        };
        write_frame(&mut buf, &msg).expect("write");
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        let back: PluginMsg = read_frame(&mut buf.as_slice())
            .expect("read")
            .expect("a frame");
        assert_eq!(back, msg);
        // A clean end is None; text where a frame belongs is refused.
        assert!(read_frame::<_, PluginMsg>(&mut &b""[..])
            .expect("eof")
            .is_none());
        let err = read_frame::<_, PluginMsg>(&mut &b"hello world\n"[..]).expect_err("garbage");
        assert!(err.to_string().contains("over the"), "{err}");
    }
}
