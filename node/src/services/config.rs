//! Config service: app configuration variables by scope.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::{ConfigScope, ConfigVar};

use crate::server::Ctx;
use crate::state::Command;

/// Longest variable name and value accepted.
pub const MAX_NAME: usize = 256;
pub const MAX_VALUE: usize = 64 * 1024;

pub async fn set(ctx: &Arc<Ctx>, var: ConfigVar) -> ClientResponse {
    if var.name.is_empty()
        || var.name.len() > MAX_NAME
        || var.name.contains('=')
        || var.name.contains('\0')
    {
        return ClientResponse::Error {
            message: format!("invalid config variable name {:?}", var.name),
        };
    }
    if var.value.len() > MAX_VALUE {
        return ClientResponse::Error {
            message: format!(
                "config value of {} bytes is over the {MAX_VALUE}-byte limit",
                var.value.len()
            ),
        };
    }
    // CHAOS-HARNESS PLANTED BUG (debug builds only): acknowledge before the
    // write commits, so chaos/ can show its checker catches lost writes.
    if crate::server::chaos_bug("ack-before-commit") {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ctx.write(Command::SetConfig { var }).await;
        });
        return ClientResponse::Ok;
    }
    match ctx.write(Command::SetConfig { var }).await {
        Ok(_) => ClientResponse::Ok,
        Err(message) => ClientResponse::Error { message },
    }
}

pub async fn delete(ctx: &Arc<Ctx>, scope: ConfigScope, name: String) -> ClientResponse {
    match ctx.write(Command::DeleteConfig { scope, name }).await {
        Ok(_) => ClientResponse::Ok,
        Err(message) => ClientResponse::Error { message },
    }
}

pub async fn list(ctx: &Arc<Ctx>, scope: Option<ConfigScope>) -> ClientResponse {
    let r = ctx.read(|s| s.config_in(scope.as_ref())).await;
    match r {
        Ok(vars) => ClientResponse::Config(vars),
        Err(e) => ClientResponse::Error {
            message: format!("cannot read config: {e}"),
        },
    }
}
