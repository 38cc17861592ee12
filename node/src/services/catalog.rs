//! Catalog service (QUIC adapter of [`crate::api`]): what was built, pushed, deployed and
//! released; runners; removing apps.

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::OpKind;

use super::reply;
use crate::api;
use crate::ctx::Ctx;

pub async fn list_operations(
    ctx: &Ctx,
    kind: OpKind,
    project: Option<String>,
    app: Option<String>,
) -> ClientResponse {
    reply(
        api::operations(ctx, kind, project, app).await,
        ClientResponse::Operations,
    )
}

pub async fn list_runners(ctx: &Ctx) -> ClientResponse {
    reply(api::runners(ctx).await, ClientResponse::Runners)
}

pub async fn remove_apps(ctx: &Ctx, project: String, app: Option<String>) -> ClientResponse {
    reply(
        api::remove_apps(ctx, project, app).await,
        ClientResponse::Removed,
    )
}
