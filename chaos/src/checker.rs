//! Linearizability of one read/write register: the Wing–Gong search with
//! Lowe's memoisation (the algorithm Porcupine and Knossos use).
//!
//! Invariant: the checker never reports a violation for a history that has a
//! linearization. Ties are read leniently (an operation that returned at the
//! same microsecond another was invoked counts as concurrent with it), and an
//! operation whose outcome is unknown (`ret == None`) may take effect at any
//! point after its invoke, or never.

use std::collections::HashSet;
use std::fmt;

/// A value id (the harness interns the unique strings it writes).
pub type Value = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegKind {
    Write(Value),
    /// What the read saw; `None` = the key was absent.
    Read(Option<Value>),
}

/// One operation on the register, timed on one monotonic clock (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegOp {
    pub kind: RegKind,
    pub invoke: u64,
    /// `None`: the outcome is unknown (timed out, or the connection died).
    pub ret: Option<u64>,
    /// Which client ran it (only for reports).
    pub client: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `stuck` lists the operations that were
    /// pending where the longest linearizable prefix ended.
    Violation {
        linearized: usize,
        total: usize,
        state: Option<Value>,
        stuck: Vec<RegOp>,
    },
    /// The search exceeded its step budget.
    GaveUp {
        steps: u64,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::GaveUp { steps } => write!(f, "checker gave up after {steps} steps"),
            Verdict::Violation {
                linearized,
                total,
                state,
                stuck,
            } => {
                write!(
                    f,
                    "NOT linearizable: at most {linearized} of {total} operations linearize; \
                     register then holds {state:?}; none of these can go next:"
                )?;
                for op in stuck {
                    write!(
                        f,
                        "\n    client {} {:?} invoked {} µs, returned {}",
                        op.client,
                        op.kind,
                        op.invoke,
                        match op.ret {
                            Some(r) => format!("{r} µs"),
                            None => "never (unknown outcome)".into(),
                        }
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Default budget: enough for minutes of history from a dozen clients.
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Check a register history starting from `initial`.
pub fn check(ops: &[RegOp], initial: Option<Value>, budget: u64) -> Verdict {
    let ops = prune(ops);
    Search::new(&ops, initial).run(budget)
}

/// Drop what cannot matter: an unknown-outcome write whose value nobody read
/// may be taken never to have happened (nothing observed it, so removing it
/// from any linearization leaves every read's value unchanged).
fn prune(ops: &[RegOp]) -> Vec<RegOp> {
    let read: HashSet<Value> = ops
        .iter()
        .filter_map(|o| match o.kind {
            RegKind::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    ops.iter()
        .filter(|o| match (o.kind, o.ret) {
            (RegKind::Write(v), None) => read.contains(&v),
            _ => true,
        })
        .copied()
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// The matching entry (call ↔ return).
    mate: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

struct Search<'a> {
    ops: &'a [RegOp],
    initial: Option<Value>,
    /// Index 0 is a sentinel head; entries follow in time order.
    e: Vec<Entry>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [RegOp], initial: Option<Value>) -> Search<'a> {
        // (time, is_return, op): calls sort before returns at equal times,
        // which makes touching operations concurrent (the lenient reading).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, i));
            events.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        events.sort();
        let mut e = Vec::with_capacity(events.len() + 1);
        e.push(Entry {
            op: NIL,
            is_call: false,
            mate: NIL,
            prev: NIL,
            next: NIL,
        });
        let mut call_at = vec![NIL; ops.len()];
        for (t, is_ret, op) in events {
            let _ = t;
            let idx = e.len();
            let mut entry = Entry {
                op,
                is_call: !is_ret,
                mate: NIL,
                prev: idx - 1,
                next: NIL,
            };
            if is_ret {
                entry.mate = call_at[op];
                let c = call_at[op];
                e[c].mate = idx;
            } else {
                call_at[op] = idx;
            }
            e.push(entry);
            e[idx - 1].next = idx;
        }
        Search { ops, initial, e }
    }

    /// Take a call entry and its return out of the list.
    fn lift(&mut self, call: usize) {
        let Entry {
            prev, next, mate, ..
        } = self.e[call];
        self.e[prev].next = next;
        if next != NIL {
            self.e[next].prev = prev;
        }
        let Entry { prev, next, .. } = self.e[mate];
        self.e[prev].next = next;
        if next != NIL {
            self.e[next].prev = prev;
        }
    }

    /// Put them back (in the reverse order of `lift`).
    fn unlift(&mut self, call: usize) {
        let mate = self.e[call].mate;
        let Entry { prev, next, .. } = self.e[mate];
        self.e[prev].next = mate;
        if next != NIL {
            self.e[next].prev = mate;
        }
        let Entry { prev, next, .. } = self.e[call];
        self.e[prev].next = call;
        if next != NIL {
            self.e[next].prev = call;
        }
    }

    fn step(&self, state: Option<Value>, op: usize) -> Option<Option<Value>> {
        match self.ops[op].kind {
            RegKind::Write(v) => Some(Some(v)),
            RegKind::Read(seen) => (seen == state).then_some(state),
        }
    }

    fn run(mut self, budget: u64) -> Verdict {
        let n = self.ops.len();
        let words = n.div_ceil(64).max(1);
        let mut linearized = vec![0u64; words];
        let mut count = 0usize;
        let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
        let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
        let mut state = self.initial;
        let mut best = (0usize, self.initial, Vec::new());
        let mut steps = 0u64;
        let mut entry = self.e[0].next;
        loop {
            steps += 1;
            if steps > budget {
                return Verdict::GaveUp { steps };
            }
            if entry == NIL {
                // Every entry was lifted: all operations linearized.
                return Verdict::Linearizable;
            }
            let cur = self.e[entry];
            if cur.is_call {
                if let Some(next_state) = self.step(state, cur.op) {
                    let (w, b) = (cur.op / 64, 1u64 << (cur.op % 64));
                    linearized[w] |= b;
                    if cache.insert((linearized.clone(), next_state)) {
                        stack.push((entry, state));
                        state = next_state;
                        count += 1;
                        self.lift(entry);
                        entry = self.e[0].next;
                        continue;
                    }
                    linearized[w] &= !b;
                }
                entry = cur.next;
            } else {
                // A return: its operation must have taken effect by now.
                if self.ops[cur.op].ret.is_none() {
                    // Only unknown-outcome operations remain (their returns
                    // sort last): the rest may never have happened.
                    return Verdict::Linearizable;
                }
                if count >= best.0 && (count > best.0 || best.2.is_empty()) {
                    best = (count, state, self.pending());
                }
                let Some((call, prev_state)) = stack.pop() else {
                    return Verdict::Violation {
                        linearized: best.0,
                        total: n,
                        state: best.1,
                        stuck: best.2,
                    };
                };
                let op = self.e[call].op;
                linearized[op / 64] &= !(1u64 << (op % 64));
                count -= 1;
                state = prev_state;
                self.unlift(call);
                entry = self.e[call].next;
            }
        }
    }

    /// The operations invoked and not linearized, up to the first return
    /// still in the list (the ones that could have gone next), at most 8.
    fn pending(&self) -> Vec<RegOp> {
        let mut out = Vec::new();
        let mut i = self.e[0].next;
        while i != NIL && out.len() < 8 {
            let en = self.e[i];
            if !en.is_call {
                break;
            }
            out.push(self.ops[en.op]);
            i = en.next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: Value, invoke: u64, ret: u64) -> RegOp {
        RegOp {
            kind: RegKind::Write(v),
            invoke,
            ret: Some(ret),
            client: 0,
        }
    }
    fn w_unknown(v: Value, invoke: u64) -> RegOp {
        RegOp {
            kind: RegKind::Write(v),
            invoke,
            ret: None,
            client: 0,
        }
    }
    fn r(seen: Option<Value>, invoke: u64, ret: u64) -> RegOp {
        RegOp {
            kind: RegKind::Read(seen),
            invoke,
            ret: Some(ret),
            client: 1,
        }
    }
    fn ok(ops: &[RegOp]) -> bool {
        check(ops, None, DEFAULT_BUDGET).is_ok()
    }

    #[test]
    fn empty_and_sequential_histories() {
        assert!(ok(&[]));
        assert!(ok(&[r(None, 0, 1)]));
        assert!(ok(&[
            w(1, 0, 1),
            r(Some(1), 2, 3),
            w(2, 4, 5),
            r(Some(2), 6, 7)
        ]));
        assert!(!ok(&[
            w(1, 0, 1),
            r(Some(1), 2, 3),
            w(2, 4, 5),
            r(Some(1), 6, 7)
        ]));
        assert!(!ok(&[r(Some(1), 0, 1)]), "a value nobody wrote");
        assert!(
            !ok(&[w(1, 0, 1), r(None, 2, 3)]),
            "a lost acknowledged write"
        );
    }

    #[test]
    fn concurrent_write_may_be_seen_either_way() {
        // The write overlaps both reads: old-then-new is fine…
        assert!(ok(&[w(1, 0, 100), r(None, 10, 20), r(Some(1), 30, 40)]));
        // …but new-then-old is not, once a read has seen the new value.
        assert!(!ok(&[w(1, 0, 100), r(Some(1), 10, 20), r(None, 30, 40)]));
    }

    #[test]
    fn stale_read_after_completed_write() {
        // w1 then w2 both complete; a later read sees 1: stale.
        assert!(!ok(&[w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)]));
        // Concurrent writes may take effect in either order.
        assert!(ok(&[w(1, 0, 30), w(2, 5, 25), r(Some(1), 40, 50)]));
        assert!(ok(&[w(1, 0, 30), w(2, 5, 25), r(Some(2), 40, 50)]));
    }

    #[test]
    fn unknown_outcome_may_apply_late_or_never() {
        // Never: a later read sees nothing.
        assert!(ok(&[w_unknown(1, 0), r(None, 100, 110)]));
        // Late: long after its invoke, even after other operations.
        assert!(ok(&[
            w_unknown(1, 0),
            w(2, 50, 60),
            r(Some(2), 70, 80),
            r(Some(1), 90, 95),
        ]));
        // But never before its invoke.
        assert!(!ok(&[r(Some(1), 0, 10), w_unknown(1, 20)]));
        // And once seen and then overwritten, it cannot come back.
        assert!(!ok(&[
            w_unknown(1, 0),
            r(Some(1), 10, 20),
            w(2, 30, 40),
            r(Some(2), 50, 60),
            r(Some(1), 70, 80),
        ]));
    }

    #[test]
    fn touching_operations_count_as_concurrent() {
        // The read is invoked at the very microsecond the write returned.
        assert!(ok(&[w(1, 0, 10), w(2, 10, 20), r(Some(1), 20, 30)]));
    }

    #[test]
    fn knossos_style_bad_history() {
        // Two readers disagree on the order of two sequential writes.
        let h = [
            w(1, 0, 10),
            w(2, 15, 100),
            r(Some(2), 20, 30),
            r(Some(1), 40, 50),
        ];
        let v = check(&h, None, DEFAULT_BUDGET);
        match &v {
            Verdict::Violation { total, .. } => assert_eq!(*total, 4),
            other => panic!("expected a violation, got {other:?}"),
        }
        assert!(v.to_string().contains("NOT linearizable"));
    }

    #[test]
    fn many_concurrent_clients_stay_fast() {
        // 8 clients, each writing then reading its own value in rounds that
        // overlap with every other client: linearizable by construction.
        let mut h = Vec::new();
        let mut v = 1;
        for round in 0..200u64 {
            let base = round * 1000;
            for c in 0..8u64 {
                h.push(RegOp {
                    kind: RegKind::Write(v),
                    invoke: base + c,
                    ret: Some(base + 100 + c),
                    client: c as usize,
                });
                v += 1;
            }
            // A read after all writes of the round sees the last one
            // linearized; all 8 were concurrent, so any of them is fine.
            h.push(r(Some(v - 1 - (round % 8) as u32), base + 200, base + 300));
        }
        assert!(check(&h, None, DEFAULT_BUDGET).is_ok());
    }

    #[test]
    fn budget_exhaustion_is_reported() {
        let h = [
            w(1, 0, 10),
            w(2, 15, 100),
            r(Some(2), 20, 30),
            r(Some(1), 40, 50),
        ];
        assert!(matches!(check(&h, None, 2), Verdict::GaveUp { .. }));
    }

    #[test]
    fn pruning_keeps_observed_unknown_writes() {
        let h = [w_unknown(1, 0), w_unknown(2, 0), r(Some(2), 5, 6)];
        assert_eq!(prune(&h).len(), 2);
        assert!(ok(&h));
    }
}
