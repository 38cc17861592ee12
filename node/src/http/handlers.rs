//! The HTTP API's routes: each authenticates, checks the caller may ([`crate::api::auth`]),
//! and calls the service layer. Paths are under `/api/v1`; `docs/openapi.json` describes
//! every one (a test checks the two agree).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use cairn_protocol::instance::DeploymentRef;
use cairn_protocol::types::{ConfigScope, ConfigVar, JobId, JobSpec, OpKind, DEFAULT_WORKSPACE};
use serde::Deserialize;

use super::{authenticate, HttpError, OPENAPI};
use crate::api::auth::Action;
use crate::api::{self, ApiError, Caller};
use crate::server::Ctx;

type Shared = Arc<Ctx>;

/// Every route of the API (and the OpenAPI document).
pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/info", get(info))
        .route("/api/v1/members", get(members))
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/operations/{kind}", get(operations))
        .route("/api/v1/jobs", get(jobs).post(queue_job))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/events", get(job_events))
        .route("/api/v1/runners", get(runners))
        .route("/api/v1/instances", get(instances))
        .route("/api/v1/config", get(all_config))
        .route("/api/v1/projects/{project}/config", get(config))
        .route(
            "/api/v1/projects/{project}/config/{name}",
            axum::routing::put(set_config).delete(delete_config),
        )
        .route("/api/v1/hostnames", get(hostnames).post(register_hostname))
        .route("/api/v1/hostnames/{name}", delete(delete_hostname))
        .route("/api/v1/projects/{project}", delete(remove_project))
        .route("/api/v1/projects/{project}/apps/{app}", delete(remove_app))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            authenticated,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), traced))
        .with_state(ctx)
}

/// Every error is JSON (`{"error": {kind, message}}`): the extractors' own rejections
/// (a body that is not the JSON a route takes, a path or query that does not parse) are
/// plain text, and become `invalid` (400).
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get("allow").cloned();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        // The status stays: the route exists, not with this method.
        let body = serde_json::json!({ "error": {
            "kind": "invalid",
            "message": "this route does not take that method (see /api/openapi.json)",
        }});
        let mut r = (status, Json(body)).into_response();
        if let Some(allow) = allow {
            r.headers_mut().insert("allow", allow);
        }
        return r;
    }
    let e = match status {
        StatusCode::NOT_FOUND => ApiError::not_found(text),
        s if s.is_server_error() => ApiError::internal(text),
        _ => ApiError::invalid(text),
    };
    HttpError(e).into_response()
}

/// Every request in a tracing span, counted in the metrics by route and status.
async fn traced(State(ctx): State<Shared>, req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_string();
    let request = format!("{} {route}", req.method());
    let span = tracing::debug_span!("request", transport = "http", request = %request);
    let started = std::time::Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    ctx.metrics.api("http", &request, &status.to_string());
    span.in_scope(|| {
        tracing::debug!(
            status,
            took_ms = started.elapsed().as_millis() as u64,
            "served"
        )
    });
    resp
}

/// Every route needs a token: the caller goes into the request's extensions before any
/// extractor runs, so an unauthenticated request gets 401 whatever else is wrong with it.
async fn authenticated(State(ctx): State<Shared>, mut req: Request, next: Next) -> Response {
    match authenticate(&ctx, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(r) => r,
    }
}

/// The JSON of `r`, or its error.
fn json<T: serde::Serialize>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

/// 204, or the error.
fn done(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

/// Return the refusal unless the caller may do `$action`.
macro_rules! guard {
    ($caller:expr, $action:expr) => {
        if let Err(e) = $caller.may($action) {
            return HttpError(e).into_response();
        }
    };
}

async fn not_found() -> Response {
    HttpError(ApiError::not_found(
        "no such route: the API's routes are listed in /api/openapi.json",
    ))
    .into_response()
}

async fn openapi(Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    ([("content-type", "application/json")], OPENAPI).into_response()
}

async fn info(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    match crate::services::server::info(&ctx) {
        cairn_protocol::api::ClientResponse::ServerInfo(i) => Json(*i).into_response(),
        other => HttpError(ApiError::internal(format!("unexpected {other:?}"))).into_response(),
    }
}

async fn members(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    json(api::members(&ctx).await)
}

#[derive(serde::Serialize)]
struct AppRef {
    project: String,
    app: String,
}

async fn apps(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    json(api::apps(&ctx).await.map(|v| {
        v.into_iter()
            .map(|(project, app)| AppRef { project, app })
            .collect::<Vec<_>>()
    }))
}

#[derive(Deserialize)]
struct AppFilter {
    project: Option<String>,
    app: Option<String>,
}

fn op_kind(kind: &str) -> Result<OpKind, ApiError> {
    Ok(match kind {
        "builds" => OpKind::Build,
        "artifacts" => OpKind::Artifact,
        "deployments" => OpKind::Deployment,
        "releases" => OpKind::Release,
        other => {
            return Err(ApiError::not_found(format!(
                "no operations of kind {other:?}: builds, artifacts, deployments or releases"
            )))
        }
    })
}

async fn operations(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(kind): Path<String>,
    Query(f): Query<AppFilter>,
) -> Response {
    guard!(caller, Action::Read);
    let kind = match op_kind(&kind) {
        Ok(k) => k,
        Err(e) => return HttpError(e).into_response(),
    };
    json(api::operations(&ctx, kind, f.project, f.app).await)
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn jobs(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(l): Query<Limit>,
) -> Response {
    guard!(caller, Action::Read);
    json(api::jobs(&ctx, &caller, l.limit.unwrap_or(100)).await)
}

async fn job(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<JobId>,
) -> Response {
    guard!(caller, Action::Read);
    json(api::job(&ctx, &caller, id).await)
}

#[derive(serde::Serialize)]
struct Queued {
    id: JobId,
}

async fn queue_job(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(spec): Json<JobSpec>,
) -> Response {
    guard!(caller, Action::QueueJob);
    match api::queue_job(&ctx, &caller, spec).await {
        Ok(id) => (StatusCode::CREATED, Json(Queued { id })).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

async fn cancel_job(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<JobId>,
) -> Response {
    guard!(caller, Action::CancelJob);
    done(api::cancel_job(&ctx, id).await)
}

/// Server-sent events: each job event as one `event: job` with its JSON, ending after
/// `Finished`.
async fn job_events(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<JobId>,
) -> Response {
    guard!(caller, Action::AttachJob);
    let (_, events) = match api::follow_job(&ctx, &caller, id).await {
        Ok(f) => f,
        Err(e) => return HttpError(e).into_response(),
    };
    let stream = futures::stream::unfold(events, |mut events| async move {
        let ev = events.next().await?;
        let data = serde_json::to_string(&ev).unwrap_or_else(|_| "{}".into());
        Some((
            Ok::<Event, Infallible>(Event::default().event("job").data(data)),
            events,
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn runners(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    json(api::runners(&ctx).await)
}

async fn instances(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::ListInstances);
    json(api::instances(&ctx).await)
}

#[derive(Deserialize)]
struct ScopeQuery {
    app: Option<String>,
    workspace: Option<String>,
}

/// The scope of `project` a query names (an empty value counts as absent).
fn scope_of(project: String, q: &ScopeQuery) -> ConfigScope {
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    ConfigScope::of(project, given(&q.app), given(&q.workspace))
}

/// Secrets masked, Cairn's reserved variables left out.
fn shown(vars: Vec<ConfigVar>) -> Vec<ConfigVar> {
    vars.into_iter()
        .filter(|v| !cairn_protocol::config::is_reserved(&v.name))
        .map(|v| ConfigVar {
            value: cairn_protocol::config::shown_value(&v).to_string(),
            ..v
        })
        .collect()
}

/// Config variables of every scope.
async fn all_config(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    json(api::config(&ctx, None).await.map(shown))
}

/// Config variables of one scope of a project.
async fn config(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(project): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Response {
    guard!(caller, Action::Read);
    json(
        api::config(&ctx, Some(scope_of(project, &q)))
            .await
            .map(shown),
    )
}

#[derive(Deserialize)]
struct NewValue {
    value: String,
    #[serde(default)]
    secret: bool,
}

async fn set_config(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, name)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
    Json(v): Json<NewValue>,
) -> Response {
    guard!(caller, Action::WriteConfig);
    let var = ConfigVar {
        scope: scope_of(project, &q),
        name,
        value: v.value,
        secret: v.secret,
    };
    done(api::set_config(&ctx, var).await)
}

async fn delete_config(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, name)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Response {
    guard!(caller, Action::WriteConfig);
    done(api::delete_config(&ctx, scope_of(project, &q), name).await)
}

async fn hostnames(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    json(api::hostnames(&ctx).await)
}

#[derive(Deserialize)]
struct NewHostname {
    name: String,
    project: String,
    app: String,
    workspace: Option<String>,
    deployment: Option<u64>,
}

async fn register_hostname(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(h): Json<NewHostname>,
) -> Response {
    guard!(caller, Action::ManageHostnames);
    let target = DeploymentRef {
        project: h.project,
        app: h.app,
        workspace: h.workspace.unwrap_or_else(|| DEFAULT_WORKSPACE.to_string()),
        sequence: h.deployment,
    };
    match api::register_hostname(&ctx, h.name, target).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

async fn delete_hostname(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    guard!(caller, Action::ManageHostnames);
    done(api::delete_hostname(&ctx, name).await)
}

async fn remove_project(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(project): Path<String>,
) -> Response {
    guard!(caller, Action::RemoveApps);
    json(api::remove_apps(&ctx, project, None).await)
}

async fn remove_app(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, app)): Path<(String, String)>,
) -> Response {
    guard!(caller, Action::RemoveApps);
    json(api::remove_apps(&ctx, project, Some(app)).await)
}

/// Prometheus's text format.
async fn metrics(State(ctx): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    guard!(caller, Action::Read);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        ctx.metrics.render(&ctx),
    )
        .into_response()
}
