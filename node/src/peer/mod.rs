//! The peer network: Raft between nodes over QUIC (ALPN `cairn-peer`,
//! mutual TLS with certificates from the cluster CA), and everything a
//! follower asks of the leader.
//!
//! Code map:
//! - [`msg`]: the peer messages (wrappers around openraft's RPC types,
//!   [`LeaderRequest`]s, and relayed job offers).
//! - [`transport`]: [`QuicTransport`], the client side: one cached
//!   connection per peer, one stream per RPC; implements
//!   [`PeerTransport`](crate::raft::PeerTransport) with openraft's error kinds.
//! - The callee side of a peer connection and what the leader does for forwarded requests
//!   are the composition root's (`crate::server::peers`, `crate::server::leader`): they
//!   serve the whole node.
//! - [`join`]: the joining node's side of `cairn-node --join`.
//!
//! Routing a request to the leader (writes, linearizable reads) is [`crate::cluster`]'s.

pub mod join;
pub mod msg;
pub mod transport;

use std::time::Duration;

pub use msg::{LeaderRequest, LeaderResponse, PeerRequest, PeerResponse, MAX_SNAPSHOT_BYTES};
pub use transport::{PeerError, QuicTransport, PEER_CONNECT_TIMEOUT};

/// How long one attempt at the leader may take before it is given up (and
/// retried, when that is safe, within [`crate::cluster::ROUTE_DEADLINE`]). An attempt also
/// ends at once when Raft reports that the leadership moved.
pub const LEADER_RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long adding a member may take (the learner catches up first).
pub const ADD_MEMBER_TIMEOUT: Duration = Duration::from_secs(60);
