//! Catalog service: what was built, pushed, deployed and released.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::types::OpKind;

use crate::server::Ctx;

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
