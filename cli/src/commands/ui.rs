//! `cairn ui`: where the context's node serves its web UI, and the token to sign in with.

use super::Global;
use crate::client;

#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    /// Also print this context's token, to paste into the sign-in page (it is a secret:
    /// whoever holds it acts as you).
    #[arg(long)]
    pub token: bool,
}

/// The web UI's address for a node reached at QUIC `address`: the same host, the HTTP
/// API's default port, over HTTPS (a node serves plain HTTP only on loopback).
pub fn ui_url_for(address: &str) -> String {
    let host = match address.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => address,
    };
    let loopback = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
        || host == "localhost";
    let scheme = if loopback { "http" } else { "https" };
    format!("{scheme}://{host}:{}/", cairn_node::http::DEFAULT_PORT)
}

pub async fn run(g: &Global, a: &UiArgs) -> anyhow::Result<i32> {
    let ctx = client::resolve(g.context.as_deref(), false).await?;
    let url = if ctx.local {
        crate::local::running()
            .and_then(|r| r.http)
            .map(|u| format!("{}/", u.trim_end_matches('/')))
            .unwrap_or_else(|| ui_url_for(&ctx.address))
    } else {
        ui_url_for(&ctx.address)
    };
    println!("{url}");
    if a.token {
        println!("{}", ctx.token);
    } else {
        eprintln!(
            "Sign in with context {:?}'s token: `cairn ui --token` prints it.",
            ctx.name
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_is_on_the_nodes_host_at_the_http_port() {
        assert_eq!(ui_url_for("127.0.0.1:9701"), "http://127.0.0.1:9702/");
        assert_eq!(ui_url_for("[::1]:9701"), "http://[::1]:9702/");
        assert_eq!(
            ui_url_for("node1.example.com:9701"),
            "https://node1.example.com:9702/"
        );
        assert_eq!(ui_url_for("10.0.0.5:4000"), "https://10.0.0.5:9702/");
    }
}
