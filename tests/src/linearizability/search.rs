//! The search for a linearization of one key's operations: Wing and Gong's
//! backtracking over the list of calls and returns, with Lowe's cache of
//! the configurations already explored.

use std::collections::{HashMap, HashSet};

use super::{KeyOp, Value};

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    Linearizable,
    /// No linearization; `prefix` is the longest linearizable prefix seen
    /// (indices into the operations, in the order linearized).
    Stuck {
        prefix: Vec<usize>,
    },
    /// The budget of configurations ran out first.
    OverBudget,
}

/// The start and the end of the list (sentinels, no operation).
const HEAD: usize = 0;
const TAIL: usize = 1;

/// A call or a return in the doubly linked list of a key's history.
#[derive(Debug, Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    is_call: bool,
}

/// The calls and returns in time order, from which linearized operations
/// are taken out and put back (in the reverse order) as the search goes.
struct List {
    nodes: Vec<Node>,
    /// The node of each operation's call, and of its return (none for an
    /// unknown outcome, which returns at infinity).
    call: Vec<usize>,
    ret: Vec<Option<usize>>,
}

impl List {
    fn new(ops: &[KeyOp]) -> List {
        // (time, calls before returns at the same time, operation)
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, false, i));
            if let Some(ret) = op.ret {
                order.push((ret, true, i));
            }
        }
        order.sort_unstable();
        let sentinel = Node {
            prev: HEAD,
            next: TAIL,
            op: usize::MAX,
            is_call: false,
        };
        let mut list = List {
            nodes: vec![sentinel, sentinel],
            call: vec![0; ops.len()],
            ret: vec![None; ops.len()],
        };
        let mut last = HEAD;
        for (_, is_return, op) in order {
            let n = list.nodes.len();
            list.nodes.push(Node {
                prev: last,
                next: TAIL,
                op,
                is_call: !is_return,
            });
            list.nodes[last].next = n;
            list.nodes[TAIL].prev = n;
            if is_return {
                list.ret[op] = Some(n);
            } else {
                list.call[op] = n;
            }
            last = n;
        }
        list
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    /// Puts back a node taken out last (dancing links).
    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        self.nodes[next].prev = n;
    }

    /// Takes an operation's call and return out of the list.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call[op]);
        if let Some(r) = self.ret[op] {
            self.unlink(r);
        }
    }

    /// Undoes the last [`List::lift`], of `op`.
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.ret[op] {
            self.relink(r);
        }
        self.relink(self.call[op]);
    }
}

/// A set, as words of bits.
#[derive(Debug, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn is_subset(&self, of: &Bits) -> bool {
        self.0.iter().zip(&of.0).all(|(a, b)| a & !b == 0)
    }
}

/// The operations linearized: those of known outcome and those of unknown
/// outcome apart, each numbered among its kind.
struct Linearized {
    known: Bits,
    unknown: Bits,
    /// Each operation's kind (known: true) and number in it.
    slot: Vec<(bool, usize)>,
}

impl Linearized {
    fn new(ops: &[KeyOp]) -> Linearized {
        let mut counts = [0, 0];
        let slot = ops
            .iter()
            .map(|op| {
                let known = op.ret.is_some();
                let n = counts[usize::from(known)];
                counts[usize::from(known)] += 1;
                (known, n)
            })
            .collect();
        Linearized {
            known: Bits::new(counts[1]),
            unknown: Bits::new(counts[0]),
            slot,
        }
    }
    fn bits(&mut self, op: usize) -> (&mut Bits, usize) {
        match self.slot[op] {
            (true, n) => (&mut self.known, n),
            (false, n) => (&mut self.unknown, n),
        }
    }
    fn set(&mut self, op: usize) {
        let (bits, n) = self.bits(op);
        bits.set(n);
    }
    fn clear(&mut self, op: usize) {
        let (bits, n) = self.bits(op);
        bits.clear(n);
    }
    fn get(&self, op: usize) -> bool {
        match self.slot[op] {
            (true, n) => self.known.get(n),
            (false, n) => self.unknown.get(n),
        }
    }
}

/// The configurations explored: for each set of linearized operations of
/// known outcome and each register value reached with it, the sets of
/// operations of unknown outcome linearized.
///
/// A configuration is not explored again (Lowe's cache), nor one that
/// differs from one explored only by more operations of unknown outcome
/// linearized: every way on from it is a way on from the other, with
/// those operations last. That subsumption is checked against the
/// [`SUBSUMING`] smallest sets of each bucket only, to bound the work per
/// configuration (pruning less is only slower, never wrong).
#[derive(Default)]
struct Seen(HashMap<Vec<u64>, HashMap<Option<Value>, Bucket>>);

/// How many sets of unknown operations of a bucket are checked for
/// subsumption.
const SUBSUMING: usize = 16;

#[derive(Default)]
struct Bucket {
    all: HashSet<Vec<u64>>,
    /// The smallest of `all` (fewest operations), the fewest first.
    smallest: Vec<(u32, Bits)>,
}

impl Seen {
    /// Records a configuration; false if it, or one that subsumes it,
    /// was seen before.
    fn insert(&mut self, linearized: &Linearized, value: Option<Value>) -> bool {
        let unknown = &linearized.unknown;
        let bucket = match self.0.get_mut(linearized.known.0.as_slice()) {
            Some(values) => values.entry(value).or_default(),
            None => self
                .0
                .entry(linearized.known.0.clone())
                .or_default()
                .entry(value)
                .or_default(),
        };
        if bucket.all.contains(unknown.0.as_slice())
            || bucket.smallest.iter().any(|(_, u)| u.is_subset(unknown))
        {
            return false;
        }
        bucket.all.insert(unknown.0.clone());
        let count = unknown.0.iter().map(|w| w.count_ones()).sum();
        let at = bucket.smallest.partition_point(|&(c, _)| c <= count);
        if at < SUBSUMING {
            bucket.smallest.insert(at, (count, unknown.clone()));
            bucket.smallest.truncate(SUBSUMING);
        }
        true
    }
}

/// The longest prefix linearized so far, kept up to date without copying
/// the whole stack at each step: the stack's first `low` entries have not
/// changed since the copy.
struct Longest {
    prefix: Vec<usize>,
    low: usize,
}

impl Longest {
    fn pushed(&mut self, stack: &[(usize, Option<Value>)]) {
        if stack.len() > self.prefix.len() {
            self.prefix.truncate(self.low);
            self.prefix
                .extend(stack[self.low..].iter().map(|&(op, _)| op));
            self.low = stack.len();
        }
    }
    fn popped(&mut self, len: usize) {
        self.low = self.low.min(len);
    }
}

/// The value after linearizing `op` now, from `value`, if the search
/// should try it. Two reductions spare the search configurations that
/// cannot lead anywhere new, for operations of unknown outcome (which may
/// come last, the same as never):
/// - one that would not change the value is not tried: if a linearization
///   has it there, the same order with it last is one too;
/// - of those with the same step, the earliest called is tried first: if
///   a linearization uses some of them, the same order with the earliest
///   called ones in their places is one too (each place comes after that
///   many of their calls).
fn next_value(
    ops: &[KeyOp],
    op: usize,
    linearized: &Linearized,
    value: Option<Value>,
) -> Option<Option<Value>> {
    let o = &ops[op];
    let next = o.step.apply(value)?;
    if o.ret.is_none() && (next == value || o.twin.is_some_and(|t| !linearized.get(t))) {
        return None;
    }
    Some(next)
}

/// Searches a linearization of `ops` from an absent value, exploring at
/// most `max_states` configurations; returns what it found and the
/// configurations explored.
pub(super) fn search(ops: &[KeyOp], max_states: u64) -> (Found, u64) {
    let mut list = List::new(ops);
    let mut linearized = Linearized::new(ops);
    let mut seen = Seen::default();
    // The operations linearized, each with the value before it.
    let mut stack: Vec<(usize, Option<Value>)> = Vec::with_capacity(ops.len());
    let mut longest = Longest {
        prefix: Vec::new(),
        low: 0,
    };
    let mut value: Option<Value> = None;
    // Operations with an unknown outcome may all be linearized last, which
    // is the same as never: the search is done when the others are.
    let mut known_left = ops.iter().filter(|op| op.ret.is_some()).count();
    let mut states = 0;
    let mut entry = list.nodes[HEAD].next;
    while known_left > 0 {
        let node = list.nodes[entry];
        if node.is_call {
            let op = node.op;
            if let Some(next) = next_value(ops, op, &linearized, value) {
                linearized.set(op);
                if seen.insert(&linearized, next) {
                    states += 1;
                    if states > max_states {
                        return (Found::OverBudget, states);
                    }
                    stack.push((op, value));
                    longest.pushed(&stack);
                    value = next;
                    list.lift(op);
                    if ops[op].ret.is_some() {
                        known_left -= 1;
                    }
                    entry = list.nodes[HEAD].next;
                    continue;
                }
                linearized.clear(op);
            }
            entry = node.next;
        } else {
            // The return of an operation not linearized yet (the tail
            // cannot be reached while a known operation is left, as its
            // return comes first; it would count as one too): undo the
            // last choice and try the next candidate after it.
            let Some((op, before)) = stack.pop() else {
                return (
                    Found::Stuck {
                        prefix: longest.prefix,
                    },
                    states,
                );
            };
            longest.popped(stack.len());
            linearized.clear(op);
            value = before;
            list.unlift(op);
            if ops[op].ret.is_some() {
                known_left += 1;
            }
            entry = list.nodes[list.call[op]].next;
        }
    }
    (Found::Linearizable, states)
}
