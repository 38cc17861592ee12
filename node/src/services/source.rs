//! Source service (issue 19): uploading a job's source and fetching it
//! (see [`crate::sources`]).

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::frame;

use crate::ctx::Ctx;
use crate::peer::msg::{PeerRequest, PeerResponse};
use crate::state::Command;

/// How long a peer may take to start sending a source.
const PEER_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn answer(send: &mut quinn::SendStream, r: &ClientResponse) {
    let _ = frame::write(send, r).await;
}

fn error(message: String) -> ClientResponse {
    ClientResponse::Error { message }
}

/// Whether the cluster holds `digest` where a member can serve it.
fn held(ctx: &Ctx, digest: &str) -> bool {
    if ctx.sources.has(digest) {
        return true;
    }
    let members = ctx.raft.read_local(|st| {
        st.sources
            .get(digest)
            .map(|r| r.nodes.iter().copied().collect::<Vec<_>>())
            .unwrap_or_default()
    });
    let current: Vec<u64> = ctx.raft.members().into_iter().map(|(id, _)| id).collect();
    members.iter().any(|n| current.contains(n))
}

/// `UploadSource`: see the request's doc.
pub async fn upload(
    ctx: &Arc<Ctx>,
    digest: String,
    size: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    if let Err(e) = crate::sources::check_digest(&digest) {
        return answer(&mut send, &error(e)).await;
    }
    if let Err(e) = super::runner::needs_cluster_version_5(ctx, "uploading a job's source").await {
        return answer(&mut send, &error(e)).await;
    }
    if size > crate::sources::MAX_SOURCE_BYTES {
        return answer(
            &mut send,
            &error(format!(
                "the source is {} MB; the most a node accepts is {} MB",
                size / (1024 * 1024),
                crate::sources::MAX_SOURCE_BYTES / (1024 * 1024)
            )),
        )
        .await;
    }
    if held(ctx, &digest) {
        // Recorded on this node too when it has the bytes but no record.
        if ctx.sources.has(&digest) {
            let _ = record(ctx, &digest, size).await;
        }
        answer(&mut send, &ClientResponse::SourceStored { already: true }).await;
        let _ = send.finish();
        return;
    }
    answer(&mut send, &ClientResponse::SourceReady).await;
    if let Err(e) = ctx.sources.receive(&digest, size, &mut recv).await {
        return answer(&mut send, &error(e)).await;
    }
    let r = match record(ctx, &digest, size).await {
        Ok(()) => ClientResponse::SourceStored { already: false },
        Err(e) => error(e),
    };
    answer(&mut send, &r).await;
    let _ = send.finish();
}

async fn record(ctx: &Ctx, digest: &str, size: u64) -> Result<(), String> {
    ctx.write(Command::RecordSource {
        digest: digest.to_string(),
        size,
        node: ctx.identity.node_id,
    })
    .await
    .map(|_| ())
}

/// `FetchSource`: this node's copy, fetched first from a member that holds
/// it when this node does not.
pub async fn fetch(ctx: &Arc<Ctx>, digest: String, mut send: quinn::SendStream) {
    if let Err(e) = crate::sources::check_digest(&digest) {
        return answer(&mut send, &error(e)).await;
    }
    if !ctx.sources.has(&digest) {
        if let Err(e) = fetch_from_peers(ctx, &digest).await {
            return answer(&mut send, &error(e)).await;
        }
    }
    let (size, file) = match ctx.sources.open(&digest).await {
        Ok(x) => x,
        Err(e) => return answer(&mut send, &error(e)).await,
    };
    answer(&mut send, &ClientResponse::SourceFound { size }).await;
    if let Err(e) = ctx.sources.send(file, &mut send).await {
        tracing::debug!(%digest, error = %e, "sending a source broke off");
    }
}

/// Copy `digest` here from a member that holds it, and record that this
/// node holds it too.
async fn fetch_from_peers(ctx: &Arc<Ctx>, digest: &str) -> Result<(), String> {
    let (size, holders) = ctx
        .read({
            let digest = digest.to_string();
            move |st| {
                st.sources
                    .get(&digest)
                    .map(|r| (r.size, r.nodes.iter().copied().collect::<Vec<_>>()))
            }
        })
        .await?
        .ok_or_else(|| format!("the cluster holds no source {digest} (was it uploaded?)"))?;
    let me = ctx.identity.node_id;
    let addrs = ctx.raft.members();
    let mut failures = Vec::new();
    for node in holders.into_iter().filter(|n| *n != me) {
        let Some(addr) = addrs
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| a.clone())
        else {
            failures.push(format!("node {node:x} is not a member"));
            continue;
        };
        let req = PeerRequest::FetchSource {
            digest: digest.to_string(),
        };
        match ctx
            .peers
            .open_stream(&addr, Some(node), &req, PEER_FETCH_TIMEOUT)
            .await
        {
            Ok((PeerResponse::SourceFound { size: theirs }, _send, mut recv)) if theirs == size => {
                match ctx.sources.receive(digest, size, &mut recv).await {
                    Ok(()) => {
                        record(ctx, digest, size).await?;
                        return Ok(());
                    }
                    Err(e) => failures.push(format!("node {node:x}: {e}")),
                }
            }
            Ok((other, _, _)) => failures.push(format!("node {node:x} answered {other:?}")),
            Err(e) => failures.push(format!("node {node:x}: {e}")),
        }
    }
    Err(format!(
        "no member could send source {digest}: {}",
        if failures.is_empty() {
            "no other member holds it".to_string()
        } else {
            failures.join("; ")
        }
    ))
}

/// Serves `PeerRequest::FetchSource` on a peer stream: `SourceFound` and
/// the bytes, or `Refused`.
pub async fn serve_peer(ctx: &Arc<Ctx>, digest: String, mut send: quinn::SendStream) {
    let opened = match crate::sources::check_digest(&digest) {
        Ok(_) => ctx.sources.open(&digest).await,
        Err(e) => Err(e),
    };
    match opened {
        Ok((size, file)) => {
            if frame::write(&mut send, &PeerResponse::SourceFound { size })
                .await
                .is_ok()
            {
                let _ = ctx.sources.send(file, &mut send).await;
            }
        }
        Err(e) => {
            let _ = frame::write(&mut send, &PeerResponse::Refused(e)).await;
            let _ = send.finish();
        }
    }
}
