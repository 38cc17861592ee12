//! The app every target serves (a mode of this binary, dispatched from
//! `main` before anything else starts):
//!
//! `url-bench __serve [PORT]` answers every request on `127.0.0.1:PORT`
//! (else `$PORT`, as the process platform sets it) with `200` and a short
//! body naming the instance, over HTTP/1.1 with keep-alive. It is a small
//! hyper server on a tokio runtime of its own (`URL_BENCH_APP_THREADS`
//! workers, default 2), so the app itself is never what limits a target.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

pub fn main_serve(args: &[String]) -> ExitCode {
    let port = args
        .first()
        .cloned()
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port else {
        eprintln!("usage: url-bench __serve PORT (or PORT in the environment)");
        return ExitCode::from(2);
    };
    let threads = std::env::var("URL_BENCH_APP_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("__serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(SocketAddr::from(([127, 0, 0, 1], port)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("__serve: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let instance = std::env::var("CAIRN_INSTANCE").unwrap_or_else(|_| "direct".into());
    let body = Bytes::from(format!("hello from url-bench ({instance})\n"));
    eprintln!("__serve: listening on {addr}");
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little, go on.
                eprintln!("__serve: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(body))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
