//! The web UI (issue 17), served by every node at `/` next to the HTTP API: server-rendered
//! HTML over the same service layer ([`crate::api`]), with one small script for the live
//! parts (logs, a job's output, the traffic chart, tables that refresh). No Node toolchain:
//! the markup is Rust ([`maud`]), the stylesheet and script are files compiled in.
//!
//! Signing in takes a user (or runner) token; the UI keeps it in an HTTP-only,
//! `SameSite=Strict` cookie (`Secure` when the node serves HTTPS). Every form that changes
//! something carries a token derived from the session ([`csrf_token`]), checked before the
//! action, and a cross-site `Origin` is refused.

mod pages;

use std::sync::Arc;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use cairn_protocol::types::{JobId, OpKind};
use maud::Markup;
use serde::Deserialize;

use crate::api::app::DeploymentAction;
use crate::api::auth::Action;
use crate::api::{self, ApiError, Caller};
use crate::ctx::Ctx;
use crate::http::WorkspaceQuery;

/// What the UI's handlers share.
#[derive(Clone)]
pub struct Ui {
    pub ctx: Arc<Ctx>,
    /// The node serves HTTPS: the session cookie is `Secure`.
    pub secure: bool,
}

/// A signed-in person: who, and the token their forms carry.
#[derive(Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
}

/// The value a session's forms carry: derived from its secret, so another site (which can
/// neither read the cookie nor the page) cannot make it.
pub fn csrf_token(secret: &str) -> String {
    cairn_protocol::token::hash(&format!("cairn-ui-csrf:{secret}"))[..32].to_string()
}

const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");

/// The UI's routes. Pages need a session (else they redirect to the sign-in page); the
/// stylesheet, the script and the sign-in page do not.
pub fn router(ui: Ui) -> Router {
    let pages = Router::new()
        .route("/", get(overview))
        .route("/apps/{project}/{app}", get(app_page))
        .route(
            "/apps/{project}/{app}/{kind}/{sequence}",
            get(operation_page),
        )
        .route(
            "/apps/{project}/{app}/deployments/{sequence}/release",
            post(release),
        )
        .route(
            "/apps/{project}/{app}/deployments/{sequence}/destroy",
            post(destroy),
        )
        .route("/jobs", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/runners", get(runners_page))
        .route("/cluster", get(cluster_page))
        .route("/signout", post(sign_out))
        .layer(axum::middleware::from_fn_with_state(ui.clone(), signed_in));
    Router::new()
        .route("/signin", get(sign_in_page).post(sign_in))
        .route("/ui/ui.css", get(|| async { asset("text/css", CSS) }))
        .route("/ui/ui.js", get(|| async { asset("text/javascript", JS) }))
        .merge(pages)
        .with_state(ui)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            ("content-type", content_type),
            ("cache-control", "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

fn html(m: Markup) -> Response {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
            (
                "content-security-policy",
                "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        Html(m.into_string()),
    )
        .into_response()
}

/// Pages need a session: without a valid one, the sign-in page (then back here).
async fn signed_in(State(ui): State<Ui>, mut req: Request, next: Next) -> Response {
    let secret = crate::http::token_of(req.headers());
    let caller = match &secret {
        Some(_) => crate::http::authenticate(&ui.ctx, req.headers()).await.ok(),
        None => None,
    };
    let (Some(secret), Some(caller)) = (secret, caller) else {
        let here = req
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        if req.method() != axum::http::Method::GET {
            return error_page(
                StatusCode::UNAUTHORIZED,
                None,
                "Your session has ended: sign in again.",
            );
        }
        return Redirect::to(&format!("/signin?next={}", urlencode(&here))).into_response();
    };
    req.extensions_mut().insert(Session {
        caller,
        csrf: csrf_token(&secret),
    });
    next.run(req).await
}

/// `s` as a URL query value.
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn error_page(status: StatusCode, session: Option<&Session>, message: &str) -> Response {
    let mut r = html(pages::error(session, status, message));
    *r.status_mut() = status;
    r
}

fn api_error_page(session: &Session, e: ApiError) -> Response {
    let status =
        StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_page(status, Some(session), &e.message)
}

/// The refusal of a form's action, unless its CSRF token is this session's and the browser
/// does not say it came from another site.
fn forged(session: &Session, headers: &HeaderMap, csrf: &str) -> Option<Response> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let origin_differs = match (
        headers.get("origin").and_then(|v| v.to_str().ok()),
        headers.get("host").and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => {
            origin != "null" && origin.split_once("://").map(|(_, h)| h) != Some(host)
        }
        _ => false,
    };
    (cross_site || origin_differs || csrf != session.csrf).then(|| {
        error_page(
            StatusCode::FORBIDDEN,
            Some(session),
            "This form did not come from this page (its cross-site request token does not match): reload the page and try again.",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Sign in and out

#[derive(Deserialize)]
struct Next_ {
    next: Option<String>,
}

/// Only a path on this site (never `//host` or a scheme).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

async fn sign_in_page(Query(q): Query<Next_>) -> Response {
    html(pages::sign_in(&safe_next(q.next.as_deref()), None))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
    next: Option<String>,
}

async fn sign_in(State(ui): State<Ui>, Form(f): Form<SignIn>) -> Response {
    let next = safe_next(f.next.as_deref());
    let token = f.token.trim().to_string();
    let mut headers = HeaderMap::new();
    let refused = |message: &str| {
        let mut r = html(pages::sign_in(&next, Some(message)));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r
    };
    let Ok(value) = format!("Bearer {token}").parse() else {
        return refused("That is not a token.");
    };
    headers.insert("authorization", value);
    if token.is_empty() {
        return refused("Paste a token to sign in.");
    }
    if crate::http::authenticate(&ui.ctx, &headers).await.is_err() {
        return refused(
            "That token is not valid here: it is unknown, revoked or expired, or it is not a user token.",
        );
    }
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        crate::http::SESSION_COOKIE,
        if ui.secure { "; Secure" } else { "" }
    );
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut()
        .insert("set-cookie", cookie.parse().expect("a valid cookie header"));
    r
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

async fn sign_out(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<Csrf>,
) -> Response {
    if let Some(r) = forged(&session, &headers, &f.csrf) {
        return r;
    }
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        crate::http::SESSION_COOKIE,
        if ui.secure { "; Secure" } else { "" }
    );
    let mut r = Redirect::to("/signin").into_response();
    r.headers_mut()
        .insert("set-cookie", cookie.parse().expect("a valid cookie header"));
    r
}

// ---------------------------------------------------------------------------------------------
// Pages

async fn overview(State(ui): State<Ui>, Extension(session): Extension<Session>) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    match api::app::overview(&ui.ctx).await {
        Ok(apps) => html(pages::overview(&session, &apps)),
        Err(e) => api_error_page(&session, e),
    }
}

async fn app_page(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path((project, app)): Path<(String, String)>,
    Query(q): Query<WorkspaceQuery>,
) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    match api::app::app_view(&ui.ctx, project, app, q.workspace()).await {
        Ok(view) => html(pages::app(&session, &view)),
        Err(e) => api_error_page(&session, e),
    }
}

async fn operation_page(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path((project, app, kind, sequence)): Path<(String, String, String, u64)>,
    Query(q): Query<WorkspaceQuery>,
) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    let kind = match kind.as_str() {
        "builds" => OpKind::Build,
        "artifacts" => OpKind::Artifact,
        "deployments" => OpKind::Deployment,
        "releases" => OpKind::Release,
        other => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(&session),
                &format!("There are no operations of kind {other:?}."),
            )
        }
    };
    let workspace = q.workspace();
    let ops = match api::operations(&ui.ctx, kind, Some(project.clone()), Some(app.clone())).await {
        Ok(ops) => ops,
        Err(e) => return api_error_page(&session, e),
    };
    match ops
        .into_iter()
        .find(|o| o.workspace == workspace && o.sequence == sequence)
    {
        Some(op) => html(pages::operation(&session, &op)),
        None => error_page(
            StatusCode::NOT_FOUND,
            Some(&session),
            &format!(
                "App {app} (project {project}, workspace {workspace}) has no {} v{sequence}.",
                pages::kind_word(kind)
            ),
        ),
    }
}

#[derive(Deserialize)]
struct ReleaseForm {
    csrf: String,
    workspace: Option<String>,
    /// Empty or absent: a full release.
    weight: Option<String>,
}

async fn release(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path((project, app, sequence)): Path<(String, String, u64)>,
    Form(f): Form<ReleaseForm>,
) -> Response {
    let weight = match f.weight.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        None => None,
        Some(w) => match w.trim_end_matches('%').parse::<u8>() {
            Ok(w) => Some(w),
            Err(_) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    Some(&session),
                    &format!("A canary's weight is a percentage from 1 to 100, not {w:?}."),
                )
            }
        },
    };
    let form = (&headers, f.csrf.as_str(), f.workspace);
    let action = DeploymentAction::Release { weight };
    act(&ui, &session, form, project, app, sequence, action).await
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: String,
    workspace: Option<String>,
}

async fn destroy(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path((project, app, sequence)): Path<(String, String, u64)>,
    Form(f): Form<ActionForm>,
) -> Response {
    let form = (&headers, f.csrf.as_str(), f.workspace);
    let action = DeploymentAction::Destroy;
    act(&ui, &session, form, project, app, sequence, action).await
}

/// Queue the action's job and show it, once its form is this page's. `form`: the request's
/// headers, the form's CSRF token and workspace.
async fn act(
    ui: &Ui,
    session: &Session,
    form: (&HeaderMap, &str, Option<String>),
    project: String,
    app: String,
    sequence: u64,
    action: DeploymentAction,
) -> Response {
    let (headers, csrf, workspace) = form;
    if let Some(r) = forged(session, headers, csrf) {
        return r;
    }
    let workspace = WorkspaceQuery { workspace }.workspace();
    if let Err(e) = session.caller.may(Action::QueueJob) {
        return api_error_page(session, e);
    }
    match api::app::deployment_job(
        &ui.ctx,
        &session.caller,
        project,
        app,
        workspace,
        sequence,
        action,
    )
    .await
    {
        Ok(id) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(e) => api_error_page(session, e),
    }
}

async fn jobs_page(State(ui): State<Ui>, Extension(session): Extension<Session>) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    match api::jobs(&ui.ctx, &session.caller, 100).await {
        Ok(jobs) => html(pages::jobs(&session, &jobs)),
        Err(e) => api_error_page(&session, e),
    }
}

async fn job_page(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<JobId>,
) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    match api::job(&ui.ctx, &session.caller, id).await {
        Ok(job) => html(pages::job(&session, &job)),
        Err(e) => api_error_page(&session, e),
    }
}

async fn cancel(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<JobId>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Some(r) = forged(&session, &headers, &f.csrf) {
        return r;
    }
    if let Err(e) = session.caller.may(Action::CancelJob) {
        return api_error_page(&session, e);
    }
    match api::cancel_job(&ui.ctx, id).await {
        Ok(()) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(e) => api_error_page(&session, e),
    }
}

async fn runners_page(State(ui): State<Ui>, Extension(session): Extension<Session>) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    match api::runners(&ui.ctx).await {
        Ok(runners) => {
            let rows: Vec<_> = runners
                .into_iter()
                .map(|r| {
                    let connected = ui.ctx.jobs.is_connected(&r.id);
                    (r, connected)
                })
                .collect();
            html(pages::runners(&session, &rows))
        }
        Err(e) => api_error_page(&session, e),
    }
}

async fn cluster_page(State(ui): State<Ui>, Extension(session): Extension<Session>) -> Response {
    if let Err(e) = session.caller.may(Action::Read) {
        return api_error_page(&session, e);
    }
    let info = api::server_info(&ui.ctx);
    match api::members(&ui.ctx).await {
        Ok(members) => html(pages::cluster(&session, &members, &info)),
        Err(e) => api_error_page(&session, e),
    }
}
