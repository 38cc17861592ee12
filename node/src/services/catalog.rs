//! Catalog service: what was built, pushed, deployed and released.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::OpKind;

use crate::server::Ctx;
use crate::state::{Command, Response};

pub async fn list_operations(
    ctx: &Arc<Ctx>,
    kind: OpKind,
    project: Option<String>,
    app: Option<String>,
) -> ClientResponse {
    match ctx
        .read(|s| s.operations_of(kind, project.as_deref(), app.as_deref()))
        .await
    {
        Ok(ops) => ClientResponse::Operations(ops),
        Err(e) => ClientResponse::Error {
            message: format!("cannot read the catalog: {e}"),
        },
    }
}

pub async fn list_runners(ctx: &Arc<Ctx>) -> ClientResponse {
    match ctx.read(|s| s.runners.values().cloned().collect()).await {
        Ok(r) => ClientResponse::Runners(r),
        Err(e) => ClientResponse::Error {
            message: format!("cannot read the catalog: {e}"),
        },
    }
}

/// Remove an app, or a project with all its apps, from the records (users
/// only; the state machine refuses while deployments are active or jobs
/// unfinished).
pub async fn remove_apps(
    ctx: &Arc<Ctx>,
    s: &crate::server::ConnSession,
    project: String,
    app: Option<String>,
) -> ClientResponse {
    if s.principal.scope != cairn_protocol::types::TokenScope::User {
        return ClientResponse::Error {
            message: "apps and projects are removed with a user token".into(),
        };
    }
    match ctx.write(Command::RemoveApps { project, app }).await {
        Ok(Response::Removed(r)) => ClientResponse::Removed(r),
        Ok(other) => ClientResponse::Error {
            message: format!("unexpected answer from the state machine: {other:?}"),
        },
        Err(message) => ClientResponse::Error { message },
    }
}
