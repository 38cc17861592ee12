//! Server service: node information and the bootstrap exchange.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::{TokenRecord, TokenScope};
use cairn_protocol::{now_ms, token};

use crate::ctx::Ctx;
use crate::state::Command;

pub async fn exchange_bootstrap(ctx: &Arc<Ctx>, name: &str) -> ClientResponse {
    // The connection was authenticated with the bootstrap secret; find its
    // record (still unspent) by scope.
    let Some(boot) = ctx.raft.read_local(|st| {
        st.tokens
            .values()
            .find(|t| t.scope == TokenScope::Bootstrap && !t.revoked)
            .cloned()
    }) else {
        return ClientResponse::Error {
            message: "the bootstrap token was already used".into(),
        };
    };
    let secret = token::generate("user");
    let user = TokenRecord {
        id: format!("user-{}", &token::hash(&secret)[..12]),
        hash: token::hash(&secret),
        scope: TokenScope::User,
        name: if name.is_empty() {
            "admin".into()
        } else {
            name.to_string()
        },
        created_ms: now_ms(),
        expires_ms: None,
        revoked: false,
    };
    match ctx
        .write(Command::ConsumeBootstrap {
            bootstrap_hash: boot.hash,
            user,
        })
        .await
    {
        Ok(_) => ClientResponse::Token { token: secret },
        Err(message) => ClientResponse::Error { message },
    }
}

/// `SnapshotSave`: a snapshot file (header and bincode of the state, see
/// [`crate::raft::snapshot_file`]) of the state as of the leader's read index
/// (a consistent point of the replicated state), in `SnapshotChunk` frames.
/// Users only: the state holds the CA key.
pub async fn snapshot_save(ctx: &Arc<Ctx>, mut send: quinn::SendStream) {
    let resp = match ctx.read(crate::raft::encode_snapshot_file).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(format!("cannot encode the state: {e}")),
        Err(e) => Err(e),
    };
    match resp {
        Err(message) => {
            let _ =
                cairn_protocol::frame::write(&mut send, &ClientResponse::Error { message }).await;
        }
        Ok(bytes) => {
            let mut chunks = bytes.chunks(cairn_protocol::api::SNAPSHOT_CHUNK).peekable();
            if chunks.peek().is_none() {
                let _ = cairn_protocol::frame::write(
                    &mut send,
                    &ClientResponse::SnapshotChunk {
                        data: Vec::new(),
                        last: true,
                    },
                )
                .await;
            }
            while let Some(c) = chunks.next() {
                let last = chunks.peek().is_none();
                let frame = ClientResponse::SnapshotChunk {
                    data: c.to_vec(),
                    last,
                };
                if cairn_protocol::frame::write(&mut send, &frame)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = send.finish();
}
