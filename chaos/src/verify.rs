//! After healing: turn the recorded history into per-key register
//! histories and check them, and check that every acknowledged write-once
//! key is present in the final read.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::checker::{self, RegKind, RegOp, Value, Verdict};
use crate::workload::{Op, OpKind, Outcome};

/// The final linearizable read, after every client operation completed.
#[derive(Debug, Clone, Serialize)]
pub struct FinalRead {
    pub invoke_us: u64,
    pub complete_us: u64,
    pub registers: BTreeMap<String, String>,
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ops: usize,
    pub acked_writes: usize,
    pub unknown_writes: usize,
    pub ok_reads: usize,
    /// Acknowledged write-once keys missing (or changed) in the final read.
    pub lost: Vec<String>,
    /// Per register key: the verdict's text.
    pub keys: BTreeMap<String, String>,
    pub linearizable: bool,
    pub gave_up: bool,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.linearizable && !self.gave_up
    }
}

pub fn verify(history: &[Op], fin: &FinalRead, keys: &[String], budget: u64) -> Report {
    let mut report = Report {
        ops: history.len(),
        acked_writes: 0,
        unknown_writes: 0,
        ok_reads: 0,
        lost: Vec::new(),
        keys: BTreeMap::new(),
        linearizable: true,
        gave_up: false,
    };
    for op in history {
        match (&op.kind, op.outcome) {
            (OpKind::Write { .. } | OpKind::Add { .. }, Outcome::Ok) => report.acked_writes += 1,
            (OpKind::Write { .. } | OpKind::Add { .. }, Outcome::Unknown) => {
                report.unknown_writes += 1
            }
            (OpKind::Read { .. }, Outcome::Ok) => report.ok_reads += 1,
            _ => {}
        }
    }

    // Durability: every acknowledged write-once key, with its value.
    for op in history {
        if let (OpKind::Add { key, value }, Outcome::Ok) = (&op.kind, op.outcome) {
            if fin.set.get(key) != Some(value) {
                report.lost.push(format!(
                    "{key}={value} (client {}, acked at {} µs via n{}) final: {:?}",
                    op.client,
                    op.complete_us,
                    op.node + 1,
                    fin.set.get(key)
                ));
            }
        }
    }

    // Linearizability, one register at a time.
    for key in keys {
        let (ops, names) = register_history(history, fin, key);
        let verdict = checker::check(&ops, None, budget);
        match &verdict {
            Verdict::Linearizable => {}
            Verdict::GaveUp { .. } => report.gave_up = true,
            Verdict::Violation { .. } => report.linearizable = false,
        }
        let mut text = verdict.to_string();
        for (id, name) in names.iter().enumerate() {
            // Translate value ids in the report back into the written strings.
            text = text.replace(&format!("({id})"), &format!("({name:?})"));
        }
        report.keys.insert(key.clone(), text);
    }
    report
}

/// The register history of `key`: writes (acknowledged or unknown), the
/// successful reads projected on `key`, and the final read. Value ids index
/// the returned names.
pub fn register_history(history: &[Op], fin: &FinalRead, key: &str) -> (Vec<RegOp>, Vec<String>) {
    let mut ids: HashMap<String, Value> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut id = |v: &str| -> Value {
        if let Some(i) = ids.get(v) {
            return *i;
        }
        let i = names.len() as Value;
        names.push(v.to_string());
        ids.insert(v.to_string(), i);
        i
    };
    let mut ops = Vec::new();
    for op in history {
        match (&op.kind, op.outcome) {
            (OpKind::Write { key: k, value }, Outcome::Ok | Outcome::Unknown) if k == key => ops
                .push(RegOp {
                    kind: RegKind::Write(id(value)),
                    invoke: op.invoke_us,
                    ret: (op.outcome == Outcome::Ok).then_some(op.complete_us),
                    client: op.client,
                }),
            (OpKind::Read { seen: Some(seen) }, Outcome::Ok) => ops.push(RegOp {
                kind: RegKind::Read(seen.get(key).map(|v| id(v))),
                invoke: op.invoke_us,
                ret: Some(op.complete_us),
                client: op.client,
            }),
            _ => {}
        }
    }
    ops.push(RegOp {
        kind: RegKind::Read(fin.registers.get(key).map(|v| id(v))),
        invoke: fin.invoke_us,
        ret: Some(fin.complete_us),
        client: usize::MAX,
    });
    (ops, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, kind: OpKind, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            client,
            node: 0,
            kind,
            invoke_us: t.0,
            complete_us: t.1,
            outcome,
            error: None,
        }
    }
    fn write(k: &str, v: &str) -> OpKind {
        OpKind::Write {
            key: k.into(),
            value: v.into(),
        }
    }
    fn read(pairs: &[(&str, &str)]) -> OpKind {
        OpKind::Read {
            seen: Some(
                pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            ),
        }
    }
    fn fin(regs: &[(&str, &str)], set: &[(&str, &str)]) -> FinalRead {
        let m = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        FinalRead {
            invoke_us: 1_000,
            complete_us: 1_010,
            registers: m(regs),
            set: m(set),
        }
    }

    #[test]
    fn good_run_passes() {
        let h = vec![
            op(0, write("k0", "a"), (0, 10), Outcome::Ok),
            op(1, read(&[("k0", "a")]), (20, 30), Outcome::Ok),
            op(
                1,
                OpKind::Add {
                    key: "u1".into(),
                    value: "x".into(),
                },
                (40, 50),
                Outcome::Ok,
            ),
            op(0, write("k0", "b"), (60, 70), Outcome::Unknown),
        ];
        // The unknown write may or may not have happened.
        for regs in [&[("k0", "a")][..], &[("k0", "b")][..]] {
            let r = verify(&h, &fin(regs, &[("u1", "x")]), &["k0".into()], 1_000_000);
            assert!(r.passed(), "{r:?}");
            assert_eq!((r.acked_writes, r.unknown_writes, r.ok_reads), (2, 1, 1));
        }
    }

    #[test]
    fn lost_write_once_key_is_reported() {
        let h = vec![op(
            1,
            OpKind::Add {
                key: "u1".into(),
                value: "x".into(),
            },
            (40, 50),
            Outcome::Ok,
        )];
        let r = verify(&h, &fin(&[], &[]), &["k0".into()], 1_000_000);
        assert!(!r.passed());
        assert_eq!(r.lost.len(), 1);
    }

    #[test]
    fn lost_register_write_breaks_linearizability() {
        // Acknowledged, never overwritten, yet the final read misses it.
        let h = vec![op(0, write("k0", "a"), (0, 10), Outcome::Ok)];
        let r = verify(&h, &fin(&[], &[]), &["k0".into()], 1_000_000);
        assert!(!r.linearizable);
        assert!(r.keys["k0"].contains("NOT linearizable"), "{:?}", r.keys);
    }

    #[test]
    fn stale_read_is_caught() {
        let h = vec![
            op(0, write("k0", "a"), (0, 10), Outcome::Ok),
            op(0, write("k0", "b"), (20, 30), Outcome::Ok),
            op(1, read(&[("k0", "a")]), (40, 50), Outcome::Ok),
        ];
        let r = verify(&h, &fin(&[("k0", "b")], &[]), &["k0".into()], 1_000_000);
        assert!(!r.linearizable);
        assert!(r.keys["k0"].contains("\"a\""), "{}", r.keys["k0"]);
    }
}
