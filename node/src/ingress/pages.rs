//! The ingress's own answers: a readable 404 for a host nothing answers at,
//! and a 502 when the app is known but nothing can answer for it.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::proxy::Body;

pub fn not_found(host: &str, why: &str) -> Response<Body> {
    page(StatusCode::NOT_FOUND, "No app here", host, why)
}

pub fn bad_request(host: &str, why: &str) -> Response<Body> {
    page(StatusCode::BAD_REQUEST, "Bad request", host, why)
}

pub fn method_not_allowed(host: &str, why: &str) -> Response<Body> {
    page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        host,
        why,
    )
}

pub fn bad_gateway(host: &str, why: &str) -> Response<Body> {
    page(
        StatusCode::BAD_GATEWAY,
        "The app is not answering",
        host,
        why,
    )
}

fn page(status: StatusCode, title: &str, host: &str, why: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}}\
code{{background:#f3f3f3;padding:.1em .3em}}</style></head>\n<body><h1>{title}</h1>\n\
<p><code>{host}</code>: {why}.</p>\n<p><small>{code} · Cairn URL service</small></p></body></html>\n",
        code = status.as_u16(),
        title = escape(title),
        host = escape(host),
        why = escape(why),
    );
    let mut resp = Response::new(
        Full::new(Bytes::from(html))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_say_what_and_escape_it() {
        let resp = bad_gateway("web.localhost", "v2 of <web> has no instance up");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("web.localhost"), "{text}");
        assert!(
            text.contains("v2 of &lt;web&gt; has no instance up"),
            "{text}"
        );
        assert_eq!(not_found("x", "y").status(), StatusCode::NOT_FOUND);
    }
}
