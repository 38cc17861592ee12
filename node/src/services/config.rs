//! Config service (QUIC adapter of [`crate::api`]): app configuration variables by scope.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::{ConfigScope, ConfigVar};

use super::{reply, reply_ok};
use crate::api;
use crate::ctx::Ctx;

pub async fn set(ctx: &Arc<Ctx>, var: ConfigVar) -> ClientResponse {
    reply_ok(api::set_config(ctx, var).await)
}

pub async fn delete(ctx: &Ctx, scope: ConfigScope, name: String) -> ClientResponse {
    reply_ok(api::delete_config(ctx, scope, name).await)
}

pub async fn list(ctx: &Ctx, scope: Option<ConfigScope>) -> ClientResponse {
    reply(api::config(ctx, scope).await, ClientResponse::Config)
}
