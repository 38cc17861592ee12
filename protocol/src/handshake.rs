//! Connection roles, ALPN names and the first frame on every connection.
//!
//! Every QUIC connection negotiates one ALPN name per role. The first
//! bidirectional stream the connecting side opens carries a [`Hello`]; the
//! node answers with a [`HelloReply`]. A version outside the node's range or
//! a bad credential is refused with a readable reason, never a hang.
//!
//! ## Version negotiation
//!
//! Each side speaks a range of protocol versions, [`OLDEST_PROTOCOL_VERSION`]
//! to [`PROTOCOL_VERSION`], and a connection uses the highest version both
//! speak ([`negotiate`]). The [`Hello`] frame itself is frozen (release 0.1.0
//! decodes it exactly and accepts only `version == 4`), so the range travels
//! inside it without changing its shape:
//! - `Hello::version` is the *oldest* version the sender speaks, which is
//!   what a 0.1.0 node (protocol 4 only) needs to see to agree;
//! - `Hello::agent` ends with `"; protocol MIN-MAX"` ([`Versions::tag`]),
//!   which a 0.1.0 node only logs. A hello without it speaks exactly
//!   `version` (every 0.1.0 program).
//!
//! The node answers [`HelloReply::Agreed`] (the negotiated version, its own
//! release and range) to a sender whose range reaches past 4, and the legacy
//! [`HelloReply::Welcome`] to one that speaks only 4, which could not decode
//! anything else. A sender that gets `Welcome` talks version 4 to a node of
//! release 0.1.0 (or one that speaks only 4).
//!
//! What each version added (a newer version only ever appends enum variants,
//! so a message valid in version N encodes the same in N+1):
//! - 4: release 0.1.0.
//! - 5: `HelloReply::Agreed`; `ClientRequest::Cluster`; the peer requests
//!   `LeaderRequest::Cluster`; the gated command `SetClusterVersion`.

use serde::{Deserialize, Serialize};

/// The newest version of the wire protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 5;
/// The oldest version this build still speaks: the previous release's, so a
/// mixed cluster works during an upgrade and entrypoints baked into images of
/// that release keep connecting.
pub const OLDEST_PROTOCOL_VERSION: u32 = 4;
/// The version of release 0.1.0, which spoke only that one.
pub const V0_1_PROTOCOL_VERSION: u32 = 4;

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

/// A range of protocol versions, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub min: u32,
    pub max: u32,
}

impl Versions {
    /// What this build speaks.
    pub const OURS: Versions = Versions {
        min: OLDEST_PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    pub fn exactly(v: u32) -> Versions {
        Versions { min: v, max: v }
    }

    /// The suffix a hello's agent carries: `"; protocol 4-5"`.
    pub fn tag(self) -> String {
        format!("; protocol {}-{}", self.min, self.max)
    }

    pub fn contains(self, v: u32) -> bool {
        self.min <= v && v <= self.max
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "protocol version {}", self.min)
        } else {
            write!(f, "protocol versions {} to {}", self.min, self.max)
        }
    }
}

/// First frame on a connection's first stream. Its shape is frozen: see the
/// module docs for how the range travels in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The oldest protocol version the sender speaks.
    pub version: u32,
    pub role: Role,
    /// A user, runner or entrypoint token (see [`crate::token`]).
    pub token: String,
    /// Who is speaking, e.g. "cairn 0.2.0; protocol 4-5".
    pub agent: String,
}

impl Hello {
    /// The hello of this build: `agent` is e.g. "cairn 0.2.0".
    pub fn new(role: Role, token: String, agent: &str) -> Hello {
        Hello {
            version: Versions::OURS.min,
            role,
            token,
            agent: format!("{agent}{}", Versions::OURS.tag()),
        }
    }

    /// The range the sender speaks (see the module docs).
    pub fn versions(&self) -> Versions {
        self.parsed().1.unwrap_or(Versions::exactly(self.version))
    }

    /// The agent without the range suffix, e.g. "cairn 0.2.0".
    pub fn who(&self) -> &str {
        self.parsed().0
    }

    fn parsed(&self) -> (&str, Option<Versions>) {
        let Some((who, tail)) = self.agent.rsplit_once("; protocol ") else {
            return (&self.agent, None);
        };
        let range = tail.split_once('-').and_then(|(a, b)| {
            let min = a.parse::<u32>().ok()?;
            let max = b.parse::<u32>().ok()?;
            // The range must include the version the hello states.
            (min == self.version && min <= max).then_some(Versions { min, max })
        });
        match range {
            Some(r) => (who, Some(r)),
            None => (&self.agent, None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The answer to a sender that speaks only version 4 (release 0.1.0),
    /// which decodes nothing else; `version` is then 4.
    Welcome {
        node_id: u64,
        version: u32,
        /// Who the token belongs to, e.g. "user:admin".
        principal: String,
    },
    Refused {
        reason: String,
    },
    /// The answer to a sender whose range reaches past version 4.
    Agreed {
        node_id: u64,
        /// The version this connection speaks: the highest both share.
        version: u32,
        principal: String,
        /// The node's release, e.g. "0.2.0".
        release: String,
        /// What the node speaks.
        versions: Versions,
    },
}

/// What the other side of a connection runs, as learnt from its hello or
/// its answer to ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speaks {
    /// The version the connection uses.
    pub version: u32,
    /// The other side's range.
    pub versions: Versions,
    /// Its release ("0.1.0" for a program that speaks only version 4).
    pub release: String,
}

impl Speaks {
    /// The other side of a legacy `Welcome`: a 0.1.0-era program.
    pub fn legacy(version: u32) -> Speaks {
        Speaks {
            version,
            versions: Versions::exactly(version),
            release: release_of_legacy(version).to_string(),
        }
    }
}

/// The release behind a program that speaks only `version`.
pub fn release_of_legacy(version: u32) -> &'static str {
    if version == V0_1_PROTOCOL_VERSION {
        "0.1.0"
    } else {
        "unknown"
    }
}

/// The release named in an agent string like "cairn-node 0.2.0 (node 1a)".
pub fn release_in_agent(who: &str) -> Option<&str> {
    let word = who.split_whitespace().nth(1)?;
    word.chars()
        .next()
        .filter(char::is_ascii_digit)
        .map(|_| word)
}

/// The version a connection between `ours` (this side, named `me`, e.g.
/// "this node (cairn-node 0.2.0)") and `theirs` (named `them`) uses: the
/// highest both speak. The refusal names both ranges and what to upgrade.
pub fn negotiate(ours: Versions, me: &str, theirs: Versions, them: &str) -> Result<u32, String> {
    let version = ours.max.min(theirs.max);
    if version >= ours.min && version >= theirs.min {
        return Ok(version);
    }
    let advice = if theirs.max < ours.min {
        format!(
            "upgrade {them} to a release that speaks version {}",
            ours.min
        )
    } else {
        format!(
            "upgrade {me} to a release that speaks version {}",
            theirs.min
        )
    };
    Err(format!(
        "protocol version mismatch: {me} speaks {ours}, {them} speaks {theirs}; {advice}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    #[test]
    fn the_highest_shared_version_wins_and_a_gap_names_both_ranges() {
        let r = |min, max| Versions { min, max };
        assert_eq!(negotiate(r(4, 5), "node", r(4, 5), "cli"), Ok(5));
        assert_eq!(negotiate(r(4, 5), "node", r(4, 4), "cli"), Ok(4));
        assert_eq!(negotiate(r(4, 4), "node", r(4, 7), "cli"), Ok(4));
        assert_eq!(negotiate(r(5, 6), "node", r(4, 5), "cli"), Ok(5));
        let old = negotiate(r(5, 6), "this node", r(4, 4), "cairn 0.1.0").expect_err("gap");
        assert_eq!(
            old,
            "protocol version mismatch: this node speaks protocol versions 5 to 6, cairn 0.1.0 \
             speaks protocol version 4; upgrade cairn 0.1.0 to a release that speaks version 5"
        );
        let new = negotiate(r(4, 5), "this node", r(7, 9), "cairn 0.9.0").expect_err("gap");
        assert!(
            new.contains("versions 4 to 5") && new.contains("versions 7 to 9"),
            "{new}"
        );
        assert!(
            new.ends_with("upgrade this node to a release that speaks version 7"),
            "{new}"
        );
    }

    #[test]
    fn a_hello_carries_its_range_in_a_shape_release_0_1_decodes() {
        let h = Hello::new(Role::Client, "t".into(), "cairn 0.2.0");
        assert_eq!(h.version, 4, "0.1.0 nodes accept exactly 4");
        assert_eq!(h.versions(), Versions::OURS);
        assert_eq!(h.who(), "cairn 0.2.0");
        assert_eq!(release_in_agent(h.who()), Some("0.2.0"));

        // Release 0.1.0's frame layout: the same four fields, in this order.
        #[derive(Serialize, Deserialize)]
        struct HelloV0_1 {
            version: u32,
            role: Role,
            token: String,
            agent: String,
        }
        let bytes = frame::encode(&h).expect("encode");
        let (old, _): (HelloV0_1, usize) = frame::decode(&bytes).expect("decodes").expect("whole");
        assert_eq!(old.version, 4);

        // A 0.1.0 hello speaks exactly its version.
        let legacy = Hello {
            version: 4,
            role: Role::Entrypoint,
            token: String::new(),
            agent: "cairn-entrypoint 0.1.0".into(),
        };
        assert_eq!(legacy.versions(), Versions::exactly(4));
        assert_eq!(legacy.who(), "cairn-entrypoint 0.1.0");
        // A suffix that does not start at the stated version is not a range.
        let odd = Hello {
            version: 4,
            agent: "x; protocol 2-9".into(),
            ..legacy
        };
        assert_eq!(odd.versions(), Versions::exactly(4));
        assert_eq!(release_in_agent("cairn-node (node 1)"), None);
    }

    #[test]
    fn legacy_replies_keep_their_encoding() {
        // 0.1.0 decodes `Welcome` as variant 0 and `Refused` as variant 1.
        let w = frame::encode_body(&HelloReply::Welcome {
            node_id: 1,
            version: 4,
            principal: "p".into(),
        })
        .expect("encode");
        assert_eq!(w[0], 0);
        let r = frame::encode_body(&HelloReply::Refused { reason: "r".into() }).expect("encode");
        assert_eq!(r[0], 1);
    }
}
