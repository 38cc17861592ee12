//! The HTTP API (issue 17): JSON over HTTP on every node, an adapter over the service layer
//! ([`crate::api`]) like the QUIC services, so both answer the same. Bearer tokens with the
//! same scopes as QUIC (an entrypoint, join or bootstrap token gets nothing here); TLS with
//! the node's cluster certificate, or plain HTTP when the node listens on loopback. The
//! OpenAPI document (`docs/openapi.json`) is kept in the repository and served at
//! `/api/openapi.json`.

mod handlers;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Caller, ErrorKind};
use crate::ctx::Ctx;

/// The HTTP API's default port, next to QUIC's 9701 and the ingress's 9703.
pub const DEFAULT_PORT: u16 = 9702;

/// The OpenAPI 3 document of the routes below, as kept in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A bound HTTP API listener.
pub struct HttpApi {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl HttpApi {
    /// Listen on `addr`; over TLS with `tls` (the node's certificate) unless `None`.
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<HttpApi> {
        Ok(HttpApi {
            listener: TcpListener::bind(addr).await?,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.listener.local_addr()?))
    }

    pub async fn run(self, ctx: Arc<Ctx>, shutdown: CancellationToken) {
        let router = handlers::router(ctx, self.tls.is_some());
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "http api: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let router = router.clone();
            let tls = self.tls.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(router);
                let builder = auto::Builder::new(TokioExecutor::new());
                let served = async {
                    match tls {
                        Some(acceptor) => {
                            let tls = match tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(tcp),
                            )
                            .await
                            {
                                Ok(Ok(t)) => t,
                                _ => return,
                            };
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = served => {}
                }
                tracing::trace!(%peer, "http api connection closed");
            });
        }
    }
}

/// The TLS config of the HTTP API: the node's certificate (issued by the cluster CA, which
/// clients trust), HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_config(
    identity: &crate::identity::Identity,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(identity.cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the node's certificate: {e:?}"))?;
    chain.extend(
        CertificateDer::pem_slice_iter(identity.ca_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the cluster CA: {e:?}"))?,
    );
    let key = PrivateKeyDer::from_pem_slice(identity.cert.key_pem.as_bytes())
        .map_err(|e| format!("the node's key: {e:?}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// `?workspace=W` of the API's and the UI's app routes: absent or empty is the default.
#[derive(serde::Deserialize)]
pub(crate) struct WorkspaceQuery {
    pub workspace: Option<String>,
}

impl WorkspaceQuery {
    pub fn workspace(&self) -> String {
        self.workspace
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| cairn_protocol::types::DEFAULT_WORKSPACE.to_string())
    }
}

/// An error as the HTTP API answers it: the kind's status and
/// `{"error": {"kind": …, "message": …}}`.
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error": { "kind": self.0.kind, "message": self.0.message }
        });
        (status, Json(body)).into_response()
    }
}

/// Unauthenticated: 401 with the `WWW-Authenticate` challenge.
fn unauthenticated(message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "kind": "unauthenticated", "message": message }
    });
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer realm=\"cairn\"")],
        Json(body),
    )
        .into_response()
}

/// The token a request carries: `Authorization: Bearer …`, else the UI's session cookie.
pub(crate) fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim().to_string());
        }
        return None;
    }
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The UI's session cookie: the token, HTTP-only.
pub const SESSION_COOKIE: &str = "cairn_session";

/// Who is asking, from the request's token; a user token (the single-purpose
/// tokens get nothing over HTTP).
pub(crate) async fn authenticate(ctx: &Ctx, headers: &HeaderMap) -> Result<Caller, Response> {
    let Some(secret) = token_of(headers) else {
        return Err(unauthenticated(
            "no token: send Authorization: Bearer TOKEN (a user token, e.g. from `cairn context show --token`)",
        ));
    };
    let hash = cairn_protocol::token::hash(&secret);
    let now = cairn_protocol::now_ms();
    let mut rec = ctx.raft.read_local(|s| s.token(&hash, now).cloned());
    if rec.is_none() {
        // This node may lag behind a token just created through the leader.
        rec = ctx
            .query(move |s| s.token(&hash, now).cloned())
            .await
            .unwrap_or(None);
    }
    let Some(rec) = rec else {
        return Err(unauthenticated(
            "the token is not valid (unknown, revoked or expired)",
        ));
    };
    use cairn_protocol::types::TokenScope;
    if !matches!(rec.scope, TokenScope::User) {
        return Err(HttpError(ApiError::new(
            ErrorKind::Refused,
            "this token cannot use the HTTP API: it takes a user token (a runner token only enrolls runners)",
        ))
        .into_response());
    }
    Ok(Caller {
        name: crate::api::auth::principal_name(&rec),
        scope: rec.scope.clone(),
        speaks: cairn_protocol::handshake::PROTOCOL_VERSION,
        release: cairn_protocol::VERSION.to_string(),
    })
}
