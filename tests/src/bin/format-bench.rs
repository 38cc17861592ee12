//! `format-bench`: what the node's record formats cost (issue 14). Format 1
//! (CBOR with field names, `cairn_node::raft::format`) against format 0
//! (release 0.1.0's bincode), side by side in one run, on:
//!
//! 1. one log entry of each common kind (encode + decode, µs per entry, bytes);
//! 2. the whole state as a snapshot, at several sizes (encode and decode
//!    time, bytes).
//!
//! Figures are medians of repetitions, interleaved (the machine is shared).
//!
//!   cargo run --release -p cairn-tests --bin format-bench

use std::time::Instant;

use cairn_node::raft::format;
use cairn_node::state::{v0, Command, Request, State};
use cairn_protocol::types::{ConfigScope, ConfigVar, JobSpec};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `f` repeated `n` times, `reps` times: the median µs per call.
fn time_per_call(reps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut out = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        out.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    median(out)
}

fn requests() -> Vec<(&'static str, Request)> {
    let req = |command| Request {
        now_ms: 1_796_000_000_000,
        command,
    };
    vec![
        (
            "Put (register)",
            req(Command::Put {
                key: "chaos-reg/k3".into(),
                value: "c2-000123".into(),
            }),
        ),
        (
            "SetConfig",
            req(Command::SetConfig {
                var: ConfigVar {
                    scope: ConfigScope::App {
                        project: "shop".into(),
                        app: "web".into(),
                    },
                    name: "DATABASE_URL".into(),
                    value: "postgres://db.internal:5432/shop".into(),
                    secret: true,
                },
            }),
        ),
        (
            "CreateJob",
            req(Command::CreateJob {
                spec: JobSpec::example(),
                requested_by: "user:admin".into(),
            }),
        ),
        (
            "Idempotent(Put)",
            req(Command::Idempotent {
                client: 0x1234_5678_9abc,
                request: 42,
                command: Box::new(Command::Put {
                    key: "k".into(),
                    value: "v".into(),
                }),
            }),
        ),
    ]
}

/// A state with `n` records of the common kinds (registers, config, jobs).
fn state(n: usize) -> State {
    let mut st = State::default();
    for (i, (_, r)) in requests().into_iter().cycle().take(n).enumerate() {
        let r = match r.command {
            Command::Put { key, value } => Request {
                command: Command::Put {
                    key: format!("{key}-{i}"),
                    value,
                },
                ..r
            },
            Command::SetConfig { mut var } => {
                var.name = format!("{}_{i}", var.name);
                Request {
                    command: Command::SetConfig { var },
                    ..r
                }
            }
            Command::CreateJob {
                mut spec,
                requested_by,
            } => {
                spec.app = format!("app{}", i % 200);
                Request {
                    command: Command::CreateJob { spec, requested_by },
                    ..r
                }
            }
            Command::Idempotent {
                client, command, ..
            } => Request {
                command: Command::Idempotent {
                    client,
                    request: i as u64,
                    command,
                },
                ..r
            },
            other => Request {
                command: other,
                ..r
            },
        };
        st.apply(&r);
    }
    st
}

fn main() {
    println!("Log entries (µs per entry, median of 9 × 2,000; bytes):");
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "command", "enc f0", "enc f1", "dec f0", "dec f1", "B f0", "B f1"
    );
    for (name, r) in requests() {
        let b0 = format::encode_legacy(&r).expect("encode");
        let b1 = format::encode(&r).expect("encode");
        let mut e0 = Vec::new();
        let mut e1 = Vec::new();
        let mut d0 = Vec::new();
        let mut d1 = Vec::new();
        for _ in 0..9 {
            e0.push(time_per_call(1, 2000, || {
                std::hint::black_box(format::encode_legacy(&r).expect("encode"));
            }));
            e1.push(time_per_call(1, 2000, || {
                std::hint::black_box(format::encode(&r).expect("encode"));
            }));
            d0.push(time_per_call(1, 2000, || {
                std::hint::black_box(format::decode::<Request>(&b0).expect("decode"));
            }));
            d1.push(time_per_call(1, 2000, || {
                std::hint::black_box(format::decode::<Request>(&b1).expect("decode"));
            }));
        }
        println!(
            "{:<18} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8} {:>8}",
            name,
            median(e0),
            median(e1),
            median(d0),
            median(d1),
            b0.len(),
            b1.len()
        );
    }
    println!();
    println!("Whole state (ms, median of 5; bytes):");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}",
        "records", "enc f0", "enc f1", "dec f0", "dec f1", "B f0", "B f1"
    );
    for n in [1_000, 10_000, 50_000] {
        let st = state(n);
        let old = v0::State::from(&st);
        let b0 = format::encode_legacy(&old).expect("encode");
        let b1 = format::encode(&st).expect("encode");
        let (mut e0, mut e1, mut d0, mut d1) = (vec![], vec![], vec![], vec![]);
        for _ in 0..5 {
            e0.push(
                time_per_call(1, 1, || {
                    std::hint::black_box(format::encode_legacy(&old).expect("encode"));
                }) / 1000.0,
            );
            e1.push(
                time_per_call(1, 1, || {
                    std::hint::black_box(format::encode(&st).expect("encode"));
                }) / 1000.0,
            );
            d0.push(
                time_per_call(1, 1, || {
                    std::hint::black_box(
                        format::decode_or_legacy::<State, v0::State>(&b0).expect("decode"),
                    );
                }) / 1000.0,
            );
            d1.push(
                time_per_call(1, 1, || {
                    std::hint::black_box(format::decode::<State>(&b1).expect("decode"));
                }) / 1000.0,
            );
        }
        println!(
            "{:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>11} {:>11}",
            st.record_count(),
            median(e0),
            median(e1),
            median(d0),
            median(d1),
            b0.len(),
            b1.len()
        );
    }
}
