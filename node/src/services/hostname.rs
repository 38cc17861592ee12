//! Hostname service (QUIC adapter of [`crate::api`]): custom host names of the URL service.

use cairn_protocol::api::ClientResponse;
use cairn_protocol::instance::DeploymentRef;

use super::{reply, reply_ok};
use crate::api;
use crate::ctx::Ctx;

pub async fn register(ctx: &Ctx, name: String, target: DeploymentRef) -> ClientResponse {
    reply_ok(api::register_hostname(ctx, name, target).await)
}

pub async fn delete(ctx: &Ctx, name: String) -> ClientResponse {
    reply_ok(api::delete_hostname(ctx, name).await)
}

pub async fn list(ctx: &Ctx) -> ClientResponse {
    reply(api::hostnames(ctx).await, ClientResponse::Hostnames)
}
