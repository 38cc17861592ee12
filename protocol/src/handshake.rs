//! Connection roles, ALPN names and the first frame on every connection.
//!
//! Every QUIC connection negotiates one ALPN name per role. The first
//! bidirectional stream the connecting side opens carries a [`Hello`]; the
//! node answers with a [`HelloReply`]. A version mismatch or a bad credential
//! is refused with a readable reason, never a hang.

use serde::{Deserialize, Serialize};

/// Version of the wire protocol. Bumped on any incompatible message change.
pub const PROTOCOL_VERSION: u32 = 4;

pub const ALPN_PEER: &[u8] = b"cairn-peer";
pub const ALPN_CLIENT: &[u8] = b"cairn-client";
pub const ALPN_RUNNER: &[u8] = b"cairn-runner";
pub const ALPN_ENTRYPOINT: &[u8] = b"cairn-entrypoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Peer,
    Client,
    Runner,
    Entrypoint,
}

impl Role {
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Role::Peer => ALPN_PEER,
            Role::Client => ALPN_CLIENT,
            Role::Runner => ALPN_RUNNER,
            Role::Entrypoint => ALPN_ENTRYPOINT,
        }
    }

    pub fn from_alpn(alpn: &[u8]) -> Option<Role> {
        [Role::Peer, Role::Client, Role::Runner, Role::Entrypoint]
            .into_iter()
            .find(|r| r.alpn() == alpn)
    }

    pub fn all_alpns() -> Vec<Vec<u8>> {
        [ALPN_PEER, ALPN_CLIENT, ALPN_RUNNER, ALPN_ENTRYPOINT]
            .iter()
            .map(|a| a.to_vec())
            .collect()
    }
}

/// First frame on a connection's first stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub role: Role,
    /// A user, runner or entrypoint token (see [`crate::token`]).
    pub token: String,
    /// Free-form client identification, e.g. "cairn 0.1.0".
    pub agent: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome {
        node_id: u64,
        version: u32,
        /// Who the token belongs to, e.g. "user:admin".
        principal: String,
    },
    Refused {
        reason: String,
    },
}

/// Check a peer's version; the error text is shown to users as is.
pub fn check_version(theirs: u32) -> Result<(), String> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(format!(
            "protocol version mismatch: this node speaks version {PROTOCOL_VERSION}, the other side speaks {theirs}; upgrade the older one"
        ))
    }
}
