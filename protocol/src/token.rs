//! Tokens: random secrets handed to users, runners and entrypoints. Only
//! their SHA-256 hash is ever stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Bytes of randomness in a token.
pub const TOKEN_BYTES: usize = 32;

/// A new token: `cairn_<kind>_<64 hex chars>`. `kind` is informational
/// ("boot", "user", "runner", "ep").
pub fn generate(kind: &str) -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("cairn_{kind}_{}", hex::encode(bytes))
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = generate("user");
        let b = generate("user");
        assert_ne!(a, b);
        assert!(a.starts_with("cairn_user_"));
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
    }
}
