//! Load generation shared by the benches: a closed-loop driver and the
//! payload values it writes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::Barrier;

/// Printable pseudo-random bytes (so nothing downstream compresses them away).
pub fn value_of(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Run `total` operations spread over `conns` (operation i on connection
/// i mod n), each connection sequential (closed loop), all starting together
/// behind a barrier. `op(conn, c, i)` performs operation `i` on connection
/// `c` and returns its latency in microseconds. Returns the wall time (from
/// the barrier to the last task's end) and every latency, or the first error.
pub async fn closed_loop<C, F, Fut>(
    conns: &[C],
    total: usize,
    op: F,
) -> anyhow::Result<(Duration, Vec<u64>)>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    let n = conns.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for (c, conn) in conns.iter().enumerate() {
        let conn = conn.clone();
        let barrier = barrier.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / n + 1);
            barrier.wait().await;
            let mut i = c;
            while i < total {
                lat.push(op(conn.clone(), c, i).await?);
                i += n;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let mut all = Vec::with_capacity(total);
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow!("client task: {e}"));
            }
        }
    }
    let wall = t0.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok((wall, all)),
    }
}
