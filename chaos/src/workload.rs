//! Concurrent clients from the root namespace: writes of unique values to a
//! few register keys, linearizable reads of their scope, and writes of
//! write-once keys (the durability set). Every operation is recorded with
//! its invoke and complete times on one monotonic clock and its outcome.
//!
//! Outcome rule: a write that was not answered `Ok` is `Unknown` (it may have
//! been committed: an error from the cluster or a lost connection says
//! nothing about whether the leader applied it) unless it certainly never
//! left this process (no connection), in which case it is not recorded at
//! all. A read that fails has no effect and is recorded as `Failed`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc::{self, Session};
use cairn_protocol::types::{ConfigScope, ConfigVar};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::dial;

/// Scope of the register keys.
pub const REG_PROJECT: &str = "chaos-reg";
/// Scope of the write-once keys.
pub const SET_PROJECT: &str = "chaos-set";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Set register `key` to a value no other operation writes.
    Write { key: String, value: String },
    /// List the register scope; `None` unless the read succeeded.
    Read {
        seen: Option<BTreeMap<String, String>>,
    },
    /// Create write-once key `key` (in the durability set).
    Add { key: String, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    /// Which node the client sent it to (index).
    pub node: usize,
    pub kind: OpKind,
    /// µs since the run's start, on the monotonic clock.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub clients: usize,
    pub keys: usize,
    pub op_timeout: Duration,
    pub nodes: Vec<SocketAddr>,
    pub ca: String,
    pub token: String,
    pub seed: u64,
}

pub fn reg_scope() -> ConfigScope {
    ConfigScope::Project(REG_PROJECT.into())
}

pub fn set_scope() -> ConfigScope {
    ConfigScope::Project(SET_PROJECT.into())
}

pub fn key_name(k: usize) -> String {
    format!("k{k}")
}

/// Run the clients until `stop` is set; every operation in flight then
/// completes (or times out) before this returns.
pub async fn run(cfg: Config, start: Instant, stop: Arc<AtomicBool>) -> Vec<Op> {
    let mut tasks = Vec::new();
    for c in 0..cfg.clients {
        tasks.push(tokio::spawn(client(cfg.clone(), c, start, stop.clone())));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(ops) => all.extend(ops),
            // A client bug must fail the run, not shrink the history.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    all.sort_by_key(|o| o.invoke_us);
    all
}

fn us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn client(cfg: Config, c: usize, start: Instant, stop: Arc<AtomicBool>) -> Vec<Op> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(c as u64 + 1));
    let mut ops = Vec::new();
    let mut session: Option<(usize, Session)> = None;
    let mut seq = 0u64;
    let mut node = rng.gen_range(0..cfg.nodes.len());
    let client_id: u64 = rng.gen();
    while !stop.load(Ordering::Relaxed) {
        if session.is_none() {
            let d = dial(cfg.nodes[node], &cfg.ca, &cfg.token);
            match rpc::connect(&d).await {
                Ok(s) => session = Some((node, s)),
                Err(_) => {
                    node = other_node(&mut rng, node, cfg.nodes.len());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some((at, s)) = session.as_ref() else {
            continue;
        };
        let at = *at;
        seq += 1;
        let roll = rng.gen_range(0..100);
        let (kind, req) = if roll < 45 {
            let key = key_name(rng.gen_range(0..cfg.keys));
            let value = format!("c{c}-{seq}");
            let req = ClientRequest::SetConfig {
                var: ConfigVar {
                    scope: reg_scope(),
                    name: key.clone(),
                    value: value.clone(),
                    secret: false,
                },
            };
            (OpKind::Write { key, value }, req)
        } else if roll < 85 {
            (
                OpKind::Read { seen: None },
                ClientRequest::ListConfig {
                    scope: Some(reg_scope()),
                },
            )
        } else {
            let key = format!("u-c{c}-{seq}");
            let value = format!("v{seq}");
            let req = ClientRequest::SetConfig {
                var: ConfigVar {
                    scope: set_scope(),
                    name: key.clone(),
                    value: value.clone(),
                    secret: false,
                },
            };
            (OpKind::Add { key, value }, req)
        };
        let is_read = matches!(kind, OpKind::Read { .. });
        // Every write carries an idempotency id; even clients retry a
        // failed write (same id) through other nodes, as the CLI does, so
        // a retry applied twice would show as a register going back.
        let (req, retries) = if is_read {
            (req, 0)
        } else {
            (
                req.idempotent(client_id, seq),
                if c.is_multiple_of(2) { 2 } else { 0 },
            )
        };
        let invoke_us = us(start);
        let mut r = tokio::time::timeout(cfg.op_timeout, rpc::call(&s.conn, &req)).await;
        for _ in 0..retries {
            if matches!(r, Ok(Ok(_))) {
                break;
            }
            if let Some((_, s)) = session.take() {
                s.conn.close(0u32.into(), b"retrying elsewhere");
            }
            node = other_node(&mut rng, node, cfg.nodes.len());
            let d = dial(cfg.nodes[node], &cfg.ca, &cfg.token);
            let Ok(s2) = rpc::connect(&d).await else {
                continue;
            };
            r = tokio::time::timeout(cfg.op_timeout, rpc::call(&s2.conn, &req)).await;
            session = Some((node, s2));
        }
        let complete_us = us(start);
        let (kind, outcome, error, drop_session) = match r {
            Ok(Ok(ClientResponse::Ok)) if !is_read => (kind, Outcome::Ok, None, false),
            Ok(Ok(ClientResponse::Config(vars))) if is_read => {
                let seen = vars.into_iter().map(|v| (v.name, v.value)).collect();
                (OpKind::Read { seen: Some(seen) }, Outcome::Ok, None, false)
            }
            Ok(Ok(other)) => (
                kind,
                if is_read {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                },
                Some(format!("unexpected answer {other:?}")),
                false,
            ),
            Ok(Err(rpc::RpcError::Remote(msg))) => (
                kind,
                if is_read {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                },
                Some(msg),
                false,
            ),
            Ok(Err(e)) => (
                kind,
                if is_read {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                },
                Some(e.to_string()),
                true,
            ),
            Err(_) => (
                kind,
                if is_read {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                },
                Some(format!("timed out after {:?}", cfg.op_timeout)),
                true,
            ),
        };
        let failed = outcome != Outcome::Ok;
        ops.push(Op {
            client: c,
            node: at,
            kind,
            invoke_us,
            complete_us,
            outcome,
            error,
        });
        if drop_session || (failed && rng.gen_bool(0.5)) {
            if let Some((_, s)) = session.take() {
                s.conn.close(0u32.into(), b"moving on");
            }
            node = other_node(&mut rng, at, cfg.nodes.len());
        }
    }
    if let Some((_, s)) = session.take() {
        s.conn.close(0u32.into(), b"done");
    }
    ops
}

fn other_node(rng: &mut ChaCha8Rng, not: usize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let k = rng.gen_range(0..n - 1);
    if k >= not {
        k + 1
    } else {
        k
    }
}

/// One final read of both scopes through any node that answers, retried
/// until `deadline`.
pub async fn final_read(
    cfg: &Config,
    start: Instant,
    deadline: Instant,
) -> Option<crate::verify::FinalRead> {
    let mut i = 0usize;
    while Instant::now() < deadline {
        let node = cfg.nodes[i % cfg.nodes.len()];
        i += 1;
        let Ok(s) = rpc::connect(&dial(node, &cfg.ca, &cfg.token)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let invoke = us(start);
        let list = |scope: ConfigScope| {
            let conn = s.conn.clone();
            async move {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    rpc::call(&conn, &ClientRequest::ListConfig { scope: Some(scope) }),
                )
                .await
                {
                    Ok(Ok(ClientResponse::Config(vars))) => Some(
                        vars.into_iter()
                            .map(|v| (v.name, v.value))
                            .collect::<BTreeMap<_, _>>(),
                    ),
                    _ => None,
                }
            }
        };
        let regs = list(reg_scope()).await;
        let set = list(set_scope()).await;
        let complete = us(start);
        s.conn.close(0u32.into(), b"done");
        if let (Some(regs), Some(set)) = (regs, set) {
            return Some(crate::verify::FinalRead {
                invoke_us: invoke,
                complete_us: complete,
                registers: regs,
                set,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
