//! The library every Cairn binary shares: frames, the handshake, messages,
//! PKI, tokens, catalog types and the QUIC RPC helpers.

pub mod api;
pub mod config;
pub mod frame;
pub mod handshake;
pub mod instance;
pub mod pki;
pub mod private;
pub mod rpc;
pub mod socket;
pub mod token;
pub mod types;

/// Crate version, reported in handshakes and `cairn status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
