//! The other tunnels, set up on loopback the way their READMEs say: a
//! server (the public side) and a client next to the app that dials out to
//! it, exactly Cairn's shape (ingress on the node, entrypoint next to the
//! app). Both carry plain TCP: neither encrypts by default (Cairn's tunnel
//! is QUIC with TLS 1.3).
//!
//! - bore (`bore-cli`): `bore server` listens for control on 7835 (fixed)
//!   and gives each client the public port it asks for (`bore local APP
//!   --to 127.0.0.1 --port P`). Every visitor connection becomes a new TCP connection from
//!   the client to the server.
//! - rathole: `rathole --server s.toml` / `rathole --client c.toml` with
//!   one service; its default transport is TCP, data channels pooled. The
//!   `rathole-noise` row uses its encrypted transport (Noise), when the
//!   binary has that feature: the closest to Cairn's encrypted tunnel.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::procs::{tail, ProcGuard};

/// How long a tunnel may take to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A tunnel's two processes and the public address it gives.
pub struct Tunnel {
    pub name: &'static str,
    pub version: String,
    pub public: String,
    pub server: ProcGuard,
    pub client: ProcGuard,
}

/// Starts `bin args…` in a process group of its own, output to `log`.
pub fn spawn_logged(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<ProcGuard> {
    let f = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(ProcGuard { child })
}

/// `bin --version`'s first line.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let first = text.lines().next().unwrap_or_default().trim().to_string();
            // rathole prints its name, then `Build Version: 0.5.0`.
            match text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Build Version:"))
            {
                Some(v) => format!("{first} {}", v.trim()),
                None => first,
            }
        })
        .unwrap_or_default()
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `GET /` on `addr` (with `Host: host`) answers 200: the
/// whole path to the app works.
pub async fn wait_http(addr: &str, host: Option<&str>, within: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < within {
        match get(addr, host).await {
            Ok(200) => return Ok(()),
            Ok(s) => last = format!("status {s}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "http://{addr}/ did not answer 200 within {} s (last: {last})",
        within.as_secs()
    )
}

/// One `GET /` on a connection of its own: the status.
pub async fn get(addr: &str, host: Option<&str>) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host.unwrap_or(addr)
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:?}"))?;
    Ok(status)
}

/// bore: server and client on loopback, in front of `app_port`.
pub async fn bore(bin: &Path, dir: &Path, app_port: u16) -> anyhow::Result<Tunnel> {
    if crate::port_in_use(7835) {
        bail!("bore's control port 7835 is taken (another bore server?)");
    }
    let server_log = dir.join("bore-server.log");
    let client_log = dir.join("bore-client.log");
    let server = spawn_logged(bin, &["server", "--bind-addr", "127.0.0.1"], &server_log)?;
    let t0 = Instant::now();
    while !crate::port_in_use(7835) {
        if t0.elapsed() > UP_TIMEOUT {
            bail!(
                "bore server did not listen on 7835:\n{}",
                tail(&server_log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The public port is chosen here, so that no log line is needed to
    // learn it (both run with warnings only, like the others).
    let port = free_port()?;
    let public = format!("127.0.0.1:{port}");
    let client = spawn_logged(
        bin,
        &[
            "local",
            &app_port.to_string(),
            "--local-host",
            "127.0.0.1",
            "--to",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
        &client_log,
    )?;
    if let Err(e) = wait_http(&public, None, UP_TIMEOUT).await {
        bail!(
            "{e:#}\nbore server:\n{}\nbore client:\n{}",
            tail(&server_log, 20),
            tail(&client_log, 20)
        );
    }
    Ok(Tunnel {
        name: "bore",
        version: version(bin),
        public,
        server,
        client,
    })
}

/// A Noise key pair from `rathole --genkey` (base64 private, public).
fn noise_keys(bin: &Path) -> anyhow::Result<(String, String)> {
    let out = Command::new(bin)
        .arg("--genkey")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --genkey", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "this rathole cannot encrypt (build it with the `noise` feature): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| l.contains("feature"))
                .unwrap_or("`rathole --genkey` failed")
        );
    }
    // "Private Key:\n<key>\n\nPublic Key:\n<key>"
    let after = |label: &str| {
        text.split(label)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    match (after("Private Key:"), after("Public Key:")) {
        (Some(private), Some(public)) => Ok((private, public)),
        _ => bail!("unexpected `rathole --genkey` output: {text}"),
    }
}

/// rathole: server and client on loopback, in front of `app_port`; with
/// `noise`, its encrypted transport (Noise_NK_25519_ChaChaPoly_BLAKE2s,
/// its default pattern) instead of plain TCP.
pub async fn rathole(bin: &Path, dir: &Path, app_port: u16, noise: bool) -> anyhow::Result<Tunnel> {
    let (server_transport, client_transport) = if noise {
        let (private, public) = noise_keys(bin)?;
        (
            format!("\n[server.transport]\ntype = \"noise\"\n\n[server.transport.noise]\nlocal_private_key = \"{private}\"\n"),
            format!("\n[client.transport]\ntype = \"noise\"\n\n[client.transport.noise]\nremote_public_key = \"{public}\"\n"),
        )
    } else {
        (String::new(), String::new())
    };
    let name = if noise { "rathole-noise" } else { "rathole" };
    let control = free_port()?;
    let public_port = free_port()?;
    let public = format!("127.0.0.1:{public_port}");
    let server_toml = dir.join(format!("{name}-server.toml"));
    let client_toml = dir.join(format!("{name}-client.toml"));
    std::fs::write(
        &server_toml,
        format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\n{server_transport}\n[server.services.app]\ntoken = \"url-bench\"\nbind_addr = \"{public}\"\n"
        ),
    )?;
    std::fs::write(
        &client_toml,
        format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\n{client_transport}\n[client.services.app]\ntoken = \"url-bench\"\nlocal_addr = \"127.0.0.1:{app_port}\"\n"
        ),
    )?;
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let server = spawn_logged(
        bin,
        &["--server", &path(&server_toml)],
        &dir.join(format!("{name}-server.log")),
    )?;
    let client = spawn_logged(
        bin,
        &["--client", &path(&client_toml)],
        &dir.join(format!("{name}-client.log")),
    )?;
    if let Err(e) = wait_http(&public, None, UP_TIMEOUT).await {
        bail!(
            "{e:#}\nrathole server:\n{}\nrathole client:\n{}",
            tail(&dir.join(format!("{name}-server.log")), 20),
            tail(&dir.join(format!("{name}-client.log")), 20)
        );
    }
    Ok(Tunnel {
        name,
        version: version(bin),
        public,
        server,
        client,
    })
}
