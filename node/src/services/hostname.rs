//! Hostname service: custom host names of the URL service.

use std::sync::Arc;

use cairn_protocol::api::ClientResponse;
use cairn_protocol::instance::DeploymentRef;
use cairn_protocol::types::{Hostname, OpKind, TokenScope};

use crate::server::{ConnSession, Ctx};
use crate::state::{check_hostname, Command};

/// Register `name` for `target` (checked: a valid host name, an existing
/// app, an existing deployment when one is named).
pub async fn register(
    ctx: &Arc<Ctx>,
    s: &ConnSession,
    name: String,
    target: DeploymentRef,
) -> ClientResponse {
    if let Err(message) = user_only(s) {
        return ClientResponse::Error { message };
    }
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Err(message) = check_hostname(&name) {
        return ClientResponse::Error { message };
    }
    // Names under the cluster domain one label deep are apps' own.
    let domain = ctx
        .ingress
        .as_ref()
        .map_or(crate::ingress::DEFAULT_DOMAIN, |i| i.domain.as_str());
    if let Some(message) = crate::ingress::route::reserved(domain, &name) {
        return ClientResponse::Error { message };
    }
    let t = target.clone();
    let known = ctx
        .read(move |st| {
            if !st.apps.contains_key(&(t.project.clone(), t.app.clone())) {
                return Err(format!("project {} has no app {}", t.project, t.app));
            }
            if let Some(seq) = t.sequence {
                let exists = st.operations.values().any(|o| {
                    o.kind == OpKind::Deployment
                        && o.project == t.project
                        && o.app == t.app
                        && o.workspace == t.workspace
                        && o.sequence == seq
                });
                if !exists {
                    return Err(format!("app {} has no deployment v{seq}", t.app));
                }
            }
            Ok(())
        })
        .await
        .and_then(|r| r);
    if let Err(message) = known {
        return ClientResponse::Error { message };
    }
    let hostname = Hostname {
        name,
        project: target.project,
        app: target.app,
        workspace: target.workspace,
        deployment: target.sequence,
        created_ms: 0,
    };
    answer(ctx.write(Command::RegisterHostname { hostname }).await)
}

pub async fn delete(ctx: &Arc<Ctx>, s: &ConnSession, name: String) -> ClientResponse {
    if let Err(message) = user_only(s) {
        return ClientResponse::Error { message };
    }
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    answer(ctx.write(Command::DeleteHostname { name }).await)
}

pub async fn list(ctx: &Arc<Ctx>) -> ClientResponse {
    match ctx
        .read(|st| st.hostnames.values().cloned().collect::<Vec<_>>())
        .await
    {
        Ok(v) => ClientResponse::Hostnames(v),
        Err(message) => ClientResponse::Error { message },
    }
}

fn user_only(s: &ConnSession) -> Result<(), String> {
    match s.principal.scope {
        TokenScope::User => Ok(()),
        _ => Err("hostnames are managed with a user token".into()),
    }
}

fn answer<T>(r: Result<T, String>) -> ClientResponse {
    match r {
        Ok(_) => ClientResponse::Ok,
        Err(message) => ClientResponse::Error { message },
    }
}
