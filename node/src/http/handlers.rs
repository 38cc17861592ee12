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

use super::{authenticate, HttpError, WorkspaceQuery, OPENAPI};
use crate::api::auth::Action;
use crate::api::{self, ApiError, Caller};
use crate::ctx::Ctx;

type Shared = Arc<Ctx>;

/// Every route of the API (and the OpenAPI document).
pub fn router(ctx: Arc<Ctx>, secure: bool) -> Router {
    let ui = crate::http::ui::router(crate::http::ui::Ui {
        ctx: ctx.clone(),
        secure,
    });
    let api = Router::new()
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
        .route(
            "/api/v1/projects/{project}/apps/{app}",
            get(app_view).delete(remove_app),
        )
        .route(
            "/api/v1/projects/{project}/apps/{app}/deployments/{sequence}/release",
            post(release_deployment),
        )
        .route(
            "/api/v1/projects/{project}/apps/{app}/deployments/{sequence}/destroy",
            post(destroy_deployment),
        )
        .route("/api/v1/projects/{project}/apps/{app}/logs", get(app_logs))
        .route(
            "/api/v1/projects/{project}/apps/{app}/traffic",
            get(app_traffic),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            authenticated,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(ctx.clone());
    ui.merge(api)
        .layer(axum::middleware::from_fn_with_state(ctx, traced))
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
///
/// A request that changes something and carries the UI's session cookie instead of a bearer
/// token must also carry the session's `X-Cairn-CSRF` header (the UI's pages hold it), so
/// another site cannot act with a signed-in person's cookie.
async fn authenticated(State(ctx): State<Shared>, mut req: Request, next: Next) -> Response {
    let by_cookie = !req.headers().contains_key("authorization");
    if by_cookie && !req.method().is_safe() {
        let expected = super::token_of(req.headers()).map(|s| crate::http::ui::csrf_token(&s));
        let given = req
            .headers()
            .get("x-cairn-csrf")
            .and_then(|v| v.to_str().ok());
        if expected.is_some() && given != expected.as_deref() {
            return HttpError(ApiError::new(
                api::ErrorKind::Refused,
                "a request with the UI's session cookie must carry its X-Cairn-CSRF header (or use Authorization: Bearer)",
            ))
            .into_response();
        }
    }
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
    Json(api::server_info(&ctx)).into_response()
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
        ctx.metrics.render(
            &ctx.raft,
            ctx.jobs.connected_runners().len(),
            ctx.attached.count(),
        ),
    )
        .into_response()
}

/// One app in one workspace: its route, operations, instances, config (secrets masked) and
/// recent jobs.
async fn app_view(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, app)): Path<(String, String)>,
    Query(q): Query<WorkspaceQuery>,
) -> Response {
    guard!(caller, Action::Read);
    json(
        api::app::app_view(&ctx, project, app, q.workspace())
            .await
            .map(|mut v| {
                v.config = shown(std::mem::take(&mut v.config));
                v
            }),
    )
}

#[derive(Deserialize, Default)]
struct ReleaseBody {
    weight: Option<u8>,
}

async fn release_deployment(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, app, sequence)): Path<(String, String, u64)>,
    Query(q): Query<WorkspaceQuery>,
    body: Option<Json<ReleaseBody>>,
) -> Response {
    guard!(caller, Action::QueueJob);
    let weight = body.map(|Json(b)| b.weight).unwrap_or_default();
    let action = api::app::DeploymentAction::Release { weight };
    queued(
        api::app::deployment_job(&ctx, &caller, project, app, q.workspace(), sequence, action)
            .await,
    )
}

async fn destroy_deployment(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, app, sequence)): Path<(String, String, u64)>,
    Query(q): Query<WorkspaceQuery>,
) -> Response {
    guard!(caller, Action::QueueJob);
    let action = api::app::DeploymentAction::Destroy;
    queued(
        api::app::deployment_job(&ctx, &caller, project, app, q.workspace(), sequence, action)
            .await,
    )
}

/// 201 with the queued job's id, or the error.
fn queued(r: Result<JobId, ApiError>) -> Response {
    match r {
        Ok(id) => (StatusCode::CREATED, Json(Queued { id })).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

#[derive(Deserialize)]
struct LogsParams {
    workspace: Option<String>,
    deployment: Option<u64>,
    instance: Option<String>,
    tail: Option<u32>,
    since_ms: Option<u64>,
}

/// Server-sent events: the deployment's log lines, `event: lines` with a JSON array of
/// entries, the history first and then live lines while the client stays; `event: problem`
/// if the query cannot be answered.
async fn app_logs(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, app)): Path<(String, String)>,
    Query(q): Query<LogsParams>,
) -> Response {
    guard!(caller, Action::Logs);
    let query = cairn_protocol::instance::LogsQuery {
        target: DeploymentRef {
            project,
            app,
            workspace: q
                .workspace
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| DEFAULT_WORKSPACE.to_string()),
            sequence: q.deployment,
        },
        instance: q.instance.filter(|i| !i.is_empty()),
        since_ms: q.since_ms,
        tail: q.tail,
        follow: true,
    };
    let mut answers = crate::logs::query(ctx.logs_ctx(), query);
    use cairn_protocol::api::ClientResponse;
    // The first answer decides the status: a query that names nothing is an HTTP error,
    // not a stream.
    let first = answers.recv().await;
    if let Some(ClientResponse::Error { message }) = &first {
        return HttpError(ApiError::not_found(message.clone())).into_response();
    }
    let head = futures::stream::iter(first);
    let rest = futures::stream::unfold(
        answers,
        |mut a| async move { a.recv().await.map(|x| (x, a)) },
    );
    use futures::StreamExt as _;
    let stream = head.chain(rest).map(|answer| {
        let ev = match answer {
            ClientResponse::LogLines(lines) => Event::default()
                .event("lines")
                .data(serde_json::to_string(&lines).unwrap_or_else(|_| "[]".into())),
            ClientResponse::Error { message } => Event::default().event("problem").data(message),
            other => Event::default()
                .event("end")
                .data(serde_json::to_string(&format!("{other:?}")).unwrap_or_default()),
        };
        Ok::<Event, Infallible>(ev)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(serde::Serialize)]
struct DeploymentTraffic {
    deployment: u64,
    requests: u64,
}

/// The requests this node's ingress has routed to each of the app's deployments since it
/// started (what the UI's chart turns into requests per second).
async fn app_traffic(
    State(ctx): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((project, app)): Path<(String, String)>,
    Query(q): Query<WorkspaceQuery>,
) -> Response {
    guard!(caller, Action::Read);
    let t = ctx.metrics.traffic(&project, &app, &q.workspace());
    Json(
        t.into_iter()
            .map(|(deployment, requests)| DeploymentTraffic {
                deployment,
                requests,
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}
