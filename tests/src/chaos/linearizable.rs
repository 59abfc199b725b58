//! The linearizability checker for register histories: Wing and Gong's search with Lowe's
//! memoisation (the algorithm porcupine and Knossos use), over one key at a time (a history of
//! independent registers is linearizable iff each key's sub-history is).
//!
//! An operation is invoked at `call` and answered at `ret`; an operation whose outcome is
//! unknown (timeout, cut connection, `outcome_unknown`) has no `ret`: it may have taken effect at
//! any point after its call, or never, which is the same as taking effect after everything else.
//! Such operations stay pending to the end of the history, which makes the search branch on
//! where each one took effect. Two reductions keep that tractable: a pending write whose value
//! nobody read or compared against is rewritten to write one shared value that no operation
//! reads ([`UNSEEN`]; it can still explain a failed compare-and-set), and of several identical
//! pending operations only the earliest-invoked one not yet placed is ever tried (any order
//! that places a later twin first is the same order with the twins swapped).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// What a client asked of one register. Written values are unique across a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegOp {
    Read,
    Write(u64),
    /// Set to `.1` if the value is `.0`.
    Cas(u64, u64),
}

/// What the client heard back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegOut {
    /// The value read (`None`: the key was absent).
    Read(Option<u64>),
    /// A write or a compare-and-set that took effect.
    Ok,
    /// A compare-and-set whose expected value did not match: it changed nothing.
    CasFailed,
    /// No answer, or one that does not say whether the operation took effect.
    Unknown,
}

/// One operation of a history, with its times in nanoseconds since the history began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub op: RegOp,
    pub out: RegOut,
    pub call: u64,
    /// `None` when the outcome is unknown.
    pub ret: Option<u64>,
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history; the operations the search could not place past.
    Violation {
        key: String,
        stuck_at: Vec<Operation>,
    },
    /// The search hit its step budget before deciding.
    GaveUp {
        key: String,
    },
}

/// The result of checking a whole history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub keys: usize,
    pub operations: usize,
    /// Operations with unknown outcome whose value no one observed (rewritten to [`UNSEEN`]).
    pub unseen_unknown: usize,
    pub violations: Vec<Verdict>,
    pub gave_up: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.gave_up.is_empty()
    }
}

/// Checks every key's sub-history; `budget` bounds the search steps per key.
pub fn check(history: &[Operation], budget: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        // A read that was not answered tells nothing; a failed read never happened.
        if op.op == RegOp::Read && !matches!(op.out, RegOut::Read(_)) {
            continue;
        }
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut report = Report { keys: by_key.len(), ..Report::default() };
    for (key, ops) in by_key {
        let (ops, unseen) = merge_unobserved(ops);
        report.operations += ops.len();
        report.unseen_unknown += unseen;
        match check_key(key, &ops, budget) {
            Verdict::Linearizable => {}
            Verdict::GaveUp { key } => report.gave_up.push(key),
            v => report.violations.push(v),
        }
    }
    report
}

/// The value unknown writes nobody observed are rewritten to write (never a real value).
pub const UNSEEN: u64 = u64::MAX;

/// Rewrites operations of unknown outcome whose written value nobody read or compared against
/// to write [`UNSEEN`] instead; returns how many.
fn merge_unobserved(mut ops: Vec<Operation>) -> (Vec<Operation>, usize) {
    let mut observed = HashSet::new();
    for o in &ops {
        match (o.op, o.out) {
            (_, RegOut::Read(Some(v))) => {
                observed.insert(v);
            }
            (RegOp::Cas(expect, _), _) => {
                observed.insert(expect);
            }
            _ => {}
        }
    }
    let mut n = 0;
    for o in &mut ops {
        match (&mut o.op, o.out) {
            (RegOp::Write(v) | RegOp::Cas(_, v), RegOut::Unknown) if !observed.contains(v) => {
                *v = UNSEEN;
                n += 1;
            }
            _ => {}
        }
    }
    (ops, n)
}

type State = Option<u64>;

/// The register: what `op` answered `out` does to `state`, or `None` if it could not have.
fn step(state: State, op: RegOp, out: RegOut) -> Option<State> {
    match (op, out) {
        (RegOp::Read, RegOut::Read(v)) => (state == v).then_some(state),
        (RegOp::Write(v), RegOut::Ok | RegOut::Unknown) => Some(Some(v)),
        (RegOp::Cas(expect, new), RegOut::Ok) => (state == Some(expect)).then_some(Some(new)),
        (RegOp::Cas(expect, _), RegOut::CasFailed) => (state != Some(expect)).then_some(state),
        // Linearised at all, an unknown compare-and-set behaves as it would have.
        (RegOp::Cas(expect, new), RegOut::Unknown) => Some(if state == Some(expect) { Some(new) } else { state }),
        _ => None,
    }
}

/// The events of a history as a doubly linked list (index 0 is the head sentinel), so a call
/// and its return can be lifted out and put back in O(1) (Lowe's algorithm).
struct Events {
    /// For each event: the operation and whether it is the call.
    ev: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each operation: its call event and its return event.
    pos: Vec<(usize, usize)>,
}

impl Events {
    fn new(ops: &[Operation]) -> Self {
        let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            times.push((o.call, false, i));
            times.push((o.ret.unwrap_or(u64::MAX), true, i));
        }
        // At equal times calls come first: the most orders are allowed, never a false alarm.
        times.sort();
        let n = times.len();
        let mut ev = vec![(usize::MAX, false)];
        let mut pos = vec![(0, 0); ops.len()];
        for (i, (_, is_ret, op)) in times.into_iter().enumerate() {
            ev.push((op, !is_ret));
            if is_ret {
                pos[op].1 = i + 1;
            } else {
                pos[op].0 = i + 1;
            }
        }
        // Index n + 1 is the tail sentinel.
        let next = (1..=n + 2).collect();
        let prev = std::iter::once(0).chain(0..=n).collect();
        Self { ev, next, prev, pos }
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }

    fn lift(&mut self, op: usize) {
        let (c, r) = self.pos[op];
        self.unlink(c);
        self.unlink(r);
    }

    fn unlift(&mut self, op: usize) {
        let (c, r) = self.pos[op];
        self.relink(r);
        self.relink(c);
    }
}

fn check_key(key: &str, ops: &[Operation], budget: u64) -> Verdict {
    if ops.is_empty() {
        return Verdict::Linearizable;
    }
    let mut events = Events::new(ops);
    let tail = events.ev.len();
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut e = events.next[0];
    let mut steps = 0u64;
    let mut deepest: Vec<usize> = Vec::new();
    // For a pending operation, the identical pending one invoked just before it: it is tried
    // only once that twin has been placed.
    let mut twin_before: Vec<Option<usize>> = vec![None; ops.len()];
    let mut last_of: std::collections::HashMap<(RegOp, RegOut), usize> = Default::default();
    let mut by_call: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    by_call.sort_by_key(|&i| ops[i].call);
    for i in by_call {
        twin_before[i] = last_of.insert((ops[i].op, ops[i].out), i);
    }
    while events.next[0] != tail {
        steps += 1;
        if steps > budget {
            return Verdict::GaveUp { key: key.to_string() };
        }
        let (op, is_call) = events.ev[e];
        if is_call {
            let o = &ops[op];
            if twin_before[op].is_some_and(|t| linearized[t / 64] & (1 << (t % 64)) == 0) {
                e = events.next[e];
                continue;
            }
            if let Some(s2) = step(state, o.op, o.out) {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), s2)) {
                    calls.push((op, state));
                    state = s2;
                    events.lift(op);
                    e = events.next[0];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            e = events.next[e];
        } else {
            // The return of an operation not yet linearised: undo the last choice.
            if calls.len() >= deepest.len() {
                deepest = calls.iter().map(|c| c.0).collect();
                deepest.push(op);
            }
            let Some((last, s)) = calls.pop() else {
                let stuck_at = deepest.iter().rev().take(8).rev().map(|&i| ops[i].clone()).collect();
                return Verdict::Violation { key: key.to_string(), stuck_at };
            };
            state = s;
            linearized[last / 64] &= !(1 << (last % 64));
            events.unlift(last);
            e = events.next[events.pos[last].0];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, op: RegOp, out: RegOut, call: u64, ret: Option<u64>) -> Operation {
        Operation { client, key: "k".into(), op, out, call, ret }
    }

    fn ok(history: &[Operation]) -> bool {
        let r = check(history, 1_000_000);
        assert!(r.gave_up.is_empty());
        r.ok()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(0, RegOp::Read, RegOut::Read(None), 0, Some(1)),
            op(0, RegOp::Write(1), RegOut::Ok, 2, Some(3)),
            op(0, RegOp::Read, RegOut::Read(Some(1)), 4, Some(5)),
            op(0, RegOp::Cas(1, 2), RegOut::Ok, 6, Some(7)),
            op(0, RegOp::Cas(1, 3), RegOut::CasFailed, 8, Some(9)),
            op(0, RegOp::Read, RegOut::Read(Some(2)), 10, Some(11)),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn stale_read_after_a_completed_write_is_a_violation() {
        let h = [
            op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1)),
            op(0, RegOp::Write(2), RegOut::Ok, 2, Some(3)),
            // Begins after write 2 was acknowledged, yet sees 1: what a stale follower answers.
            op(1, RegOp::Read, RegOut::Read(Some(1)), 4, Some(5)),
        ];
        let r = check(&h, 1_000_000);
        assert_eq!(r.violations.len(), 1, "{r:?}");
        let Verdict::Violation { key, stuck_at } = &r.violations[0] else { panic!() };
        assert_eq!(key, "k");
        assert!(stuck_at.iter().any(|o| o.op == RegOp::Read), "{stuck_at:?}");
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = [
            op(0, RegOp::Write(1), RegOut::Ok, 0, Some(10)),
            op(1, RegOp::Read, RegOut::Read(Some(1)), 1, Some(2)),
            op(2, RegOp::Read, RegOut::Read(None), 3, Some(4)),
        ];
        // Read 1 saw the write, so the write took effect before 2; a later read seeing
        // nothing would contradict it.
        assert!(!ok(&h));
        let h = [
            op(0, RegOp::Write(1), RegOut::Ok, 0, Some(10)),
            op(2, RegOp::Read, RegOut::Read(None), 1, Some(2)),
            op(1, RegOp::Read, RegOut::Read(Some(1)), 3, Some(4)),
        ];
        assert!(ok(&h));
    }

    #[test]
    fn unknown_writes_may_or_may_not_have_happened() {
        // Observed: must be placed after its call.
        let h = [
            op(0, RegOp::Write(1), RegOut::Unknown, 0, None),
            op(1, RegOp::Read, RegOut::Read(None), 1, Some(2)),
            op(1, RegOp::Read, RegOut::Read(Some(1)), 3, Some(4)),
            op(1, RegOp::Read, RegOut::Read(Some(1)), 5, Some(6)),
        ];
        assert!(ok(&h));
        // Never observed: nothing contradicts it.
        let h = [op(0, RegOp::Write(1), RegOut::Unknown, 0, None), op(1, RegOp::Read, RegOut::Read(None), 1, Some(2))];
        let r = check(&h, 1000);
        assert!(r.ok());
        assert_eq!(r.unseen_unknown, 1);
        // Never read, yet it explains a compare-and-set that failed on the value before it
        // (found by the chaos suite: dropping such writes made a correct history fail).
        let h = [
            op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1)),
            op(1, RegOp::Read, RegOut::Read(Some(1)), 2, Some(3)),
            op(0, RegOp::Write(2), RegOut::Unknown, 4, None),
            op(1, RegOp::Cas(1, 3), RegOut::CasFailed, 5, Some(6)),
        ];
        assert!(ok(&h));
        // Without that write the same failure is a violation.
        assert!(!ok(&[h[0].clone(), h[1].clone(), h[3].clone()]));
        // But it cannot un-happen: seen, then gone without another write.
        let h = [
            op(0, RegOp::Write(1), RegOut::Unknown, 0, None),
            op(1, RegOp::Read, RegOut::Read(Some(1)), 1, Some(2)),
            op(1, RegOp::Read, RegOut::Read(None), 3, Some(4)),
        ];
        assert!(!ok(&h));
        // Nor happen before it was asked for.
        let h =
            [op(1, RegOp::Read, RegOut::Read(Some(1)), 0, Some(1)), op(0, RegOp::Write(1), RegOut::Unknown, 2, None)];
        assert!(!ok(&h));
    }

    #[test]
    fn compare_and_set_must_agree_with_the_value() {
        let h =
            [op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1)), op(0, RegOp::Cas(1, 2), RegOut::CasFailed, 2, Some(3))];
        assert!(!ok(&h), "a failed CAS on the expected value");
        let h = [op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1)), op(0, RegOp::Cas(5, 2), RegOut::Ok, 2, Some(3))];
        assert!(!ok(&h), "a CAS that succeeded on a value never there");
        let h = [
            op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1)),
            op(1, RegOp::Cas(1, 2), RegOut::Unknown, 2, None),
            op(0, RegOp::Read, RegOut::Read(Some(2)), 3, Some(4)),
        ];
        assert!(ok(&h), "an unknown CAS that took effect");
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut a = op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1));
        a.key = "a".into();
        let mut b = op(1, RegOp::Read, RegOut::Read(None), 2, Some(3));
        b.key = "b".into();
        let r = check(&[a, b], 1000);
        assert!(r.ok());
        assert_eq!(r.keys, 2);
    }

    #[test]
    fn many_pending_writes_stay_within_budget() {
        // 300 writes whose outcome is unknown, none read, interleaved with reads of a value
        // written before and failed compare-and-sets: twins are placed in call order only.
        let mut h = vec![op(0, RegOp::Write(1), RegOut::Ok, 0, Some(1))];
        for i in 0..300u64 {
            let t = 10 + i * 10;
            h.push(op(1 + (i % 7) as usize, RegOp::Write(100 + i), RegOut::Unknown, t, None));
            h.push(op(9, RegOp::Cas(1, 5000 + i), RegOut::CasFailed, t + 5, Some(t + 6)));
        }
        let r = check(&h, 5_000_000);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.unseen_unknown, 300);
    }

    #[test]
    fn many_concurrent_clients_stay_within_budget() {
        // 8 clients, 2,000 overlapping operations on one register, generated from a real
        // sequential order: must be found linearizable quickly.
        let mut h = Vec::new();
        let mut value = None;
        let mut next = 1;
        for i in 0..2000u64 {
            let client = (i % 8) as usize;
            let t = i * 10;
            let (o, out) = match i % 3 {
                0 => {
                    value = Some(next);
                    next += 1;
                    (RegOp::Write(value.unwrap_or(0)), RegOut::Ok)
                }
                1 => (RegOp::Read, RegOut::Read(value)),
                _ => match value {
                    Some(v) => {
                        value = Some(next);
                        next += 1;
                        (RegOp::Cas(v, value.unwrap_or(0)), RegOut::Ok)
                    }
                    None => (RegOp::Read, RegOut::Read(None)),
                },
            };
            // Each operation's effect is at t + 5; its interval spans neighbours.
            h.push(op(client, o, out, t.saturating_sub(20) + 5, Some(t + 25)));
        }
        let r = check(&h, 10_000_000);
        assert!(r.ok(), "{r:?}");
    }
}
