//! `conn-flood ADDR N`: an attacker for the ingress soak
//! (`tests/tests/e2e_ingress_soak.rs`). Opens N TCP connections to ADDR
//! that never send a byte, and holds them. Prints `opened K` once every
//! connect returned (K succeeded), then `closed C` each time the count of
//! connections the server closed changes (at most every 200 ms). Exits when
//! its stdin closes (or it is killed). A separate process so that the
//! attack's descriptors count against its own limit, not the test's.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: conn-flood ADDR N");
        std::process::exit(2);
    };
    let addr = addr.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let closed = Arc::new(AtomicU64::new(0));
        let mut opened = 0u64;
        let mut held = Vec::new();
        // Connect in batches: the listen backlog is finite.
        let mut remaining = n;
        while remaining > 0 {
            let k = remaining.min(256);
            remaining -= k;
            let mut batch = Vec::new();
            for _ in 0..k {
                let addr = addr.clone();
                batch.push(tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
                }));
            }
            for b in batch {
                if let Ok(Ok(Ok(s))) = b.await {
                    opened += 1;
                    let closed = closed.clone();
                    held.push(tokio::spawn(async move {
                        let mut s = s;
                        let mut buf = [0u8; 64];
                        // Until the server closes it (EOF or reset).
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {}
                            }
                        }
                        closed.fetch_add(1, Ordering::Relaxed);
                    }));
                }
            }
        }
        println!("opened {opened}");
        let _ = std::io::stdout().flush();
        let mut stdin = tokio::io::stdin();
        let mut last = u64::MAX;
        let mut buf = [0u8; 16];
        loop {
            tokio::select! {
                r = stdin.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let c = closed.load(Ordering::Relaxed);
                    if c != last {
                        println!("closed {c}");
                        let _ = std::io::stdout().flush();
                        last = c;
                    }
                }
            }
        }
    });
}
