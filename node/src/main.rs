//! `cairn-node`: run a Cairn server node.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-node",
    version,
    about = "A Cairn server node: Raft member, catalog, job queue"
)]
struct Args {
    #[command(flatten)]
    node: cairn_node::NodeConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Everything the node writes (Raft log and state, keys, logs) is its
    // owner's alone.
    cairn_protocol::private::restrict_umask();
    init_tracing();
    let args = Args::parse();
    match run(args.node).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,cairn_node=info,openraft=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cfg: cairn_node::NodeConfig) -> Result<(), cairn_node::NodeError> {
    let node = cairn_node::start(cfg.clone()).await?;
    let leave = node.leaves_on_shutdown(&cfg);
    println!("cairn-node listening on {} (QUIC)", node.addr);
    println!("CA fingerprint: {}", node.ca_fingerprint);
    if let Some(tok) = &node.bootstrap_token {
        println!("Bootstrap token (shown once; exchange it with `cairn context create --bootstrap-token`):");
        println!("  {tok}");
    }
    node.run_until(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    }, leave)
    .await;
    Ok(())
}
