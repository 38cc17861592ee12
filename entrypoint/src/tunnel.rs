//! URL tunnels: a stream the node opened on this entrypoint's connection,
//! spliced to a TCP connection to the app on the loopback interface.
//!
//! Nothing listens on the entrypoint's side (the stream rides the
//! connection the entrypoint opened), and the app needs no change: it
//! serves on its `PORT` as usual.
//!
//! Invariants:
//! - One [`TunnelReply`] frame first: `Connected` only once the TCP
//!   connection is up, so the node can try another instance otherwise.
//! - Half-closes pass through: the end of the node's input shuts down the
//!   write side of the TCP connection, and the app's end of output finishes
//!   the stream.

use std::time::Duration;

use cairn_protocol::frame;
use cairn_protocol::instance::TunnelReply;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::exec::AppContext;

/// How long connecting to the app may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one tunnel: connect to the app on `port` (default: its `PORT`),
/// answer, then copy bytes both ways until both directions end.
pub async fn serve<R, W>(app: &dyn AppContext, port: Option<u16>, mut input: R, mut output: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tcp = match port.or_else(|| app_port(app)) {
        None => Err("the app has no PORT and the tunnel named none".to_string()),
        Some(port) => connect(port).await,
    };
    let tcp = match tcp {
        Ok(tcp) => tcp,
        Err(reason) => {
            let _ = frame::write(&mut output, &TunnelReply::Failed { reason }).await;
            let _ = output.shutdown().await;
            return;
        }
    };
    if frame::write(&mut output, &TunnelReply::Connected)
        .await
        .is_err()
    {
        return;
    }
    let (mut tcp_in, mut tcp_out) = tcp.into_split();
    let up = async {
        let r = tokio::io::copy(&mut input, &mut tcp_out).await;
        let _ = tcp_out.shutdown().await;
        r
    };
    let down = async {
        let r = tokio::io::copy(&mut tcp_in, &mut output).await;
        let _ = output.shutdown().await;
        r
    };
    let _ = tokio::join!(up, down);
}

/// The app's port: `PORT` as the app sees it (the cluster's configuration
/// or the entrypoint's own environment).
pub fn app_port(app: &dyn AppContext) -> Option<u16> {
    let spec = app.app_spec();
    let from_spec = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PORT")
        .map(|(_, v)| v.to_string_lossy().into_owned());
    from_spec
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.trim().parse().ok())
}

async fn connect(port: u16) -> Result<TcpStream, String> {
    let mut last = String::new();
    for host in ["127.0.0.1", "::1"] {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = format!("cannot connect to the app on port {port}: {e}"),
            Err(_) => {
                last = format!(
                    "the app did not accept a connection on port {port} within {CONNECT_TIMEOUT:?}"
                )
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::ChildSpec;
    use tokio::io::{duplex, AsyncReadExt};

    fn app_on(port: Option<u16>) -> ChildSpec {
        let mut spec = ChildSpec::new("unused", Vec::<String>::new());
        if let Some(p) = port {
            spec.env.push(("PORT".into(), p.to_string().into()));
        }
        spec
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_with_half_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // An echo server that upper-cases, then closes when its input ends.
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            s.write_all(&got.to_ascii_uppercase()).await.expect("write");
        });
        let (client, node_side) = duplex(64 * 1024);
        let (node_in, node_out) = tokio::io::split(node_side);
        let app = app_on(Some(port));
        let tunnel = tokio::spawn(async move { serve(&app, None, node_in, node_out).await });
        let (mut c_in, mut c_out) = tokio::io::split(client);
        let reply: TunnelReply = frame::read_required(&mut c_in).await.expect("reply");
        assert_eq!(reply, TunnelReply::Connected);
        c_out.write_all(b"hello tunnel").await.expect("send");
        c_out.shutdown().await.expect("half-close");
        let mut back = Vec::new();
        c_in.read_to_end(&mut back).await.expect("read back");
        assert_eq!(back, b"HELLO TUNNEL");
        server.await.expect("server");
        tunnel.await.expect("tunnel");
    }

    #[tokio::test]
    async fn an_app_that_is_not_listening_fails_the_tunnel_with_a_reason() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (client, node_side) = duplex(1024);
        let (node_in, node_out) = tokio::io::split(node_side);
        let app = app_on(None);
        tokio::spawn(async move { serve(&app, Some(port), node_in, node_out).await });
        let (mut c_in, _c_out) = tokio::io::split(client);
        match frame::read_required::<_, TunnelReply>(&mut c_in).await {
            Ok(TunnelReply::Failed { reason }) => {
                assert!(reason.contains(&format!("port {port}")), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_port_comes_from_the_apps_env() {
        assert_eq!(app_port(&app_on(Some(4321))), Some(4321));
    }
}
