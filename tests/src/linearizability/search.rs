//! The search for a linearization of one key's operations: Wing and Gong's
//! backtracking over the list of calls and returns, with Lowe's cache of
//! the configurations already explored.

use std::collections::HashMap;

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

/// A set of operations, as words of bits.
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
}

/// The configurations explored: for each set of linearized operations,
/// the register values reached with it.
#[derive(Default)]
struct Seen(HashMap<Vec<u64>, Vec<Option<Value>>>);

impl Seen {
    /// Records a configuration; false if it was seen before.
    fn insert(&mut self, linearized: &Bits, value: Option<Value>) -> bool {
        match self.0.get_mut(linearized.0.as_slice()) {
            Some(values) if values.contains(&value) => false,
            Some(values) => {
                values.push(value);
                true
            }
            None => {
                self.0.insert(linearized.0.clone(), vec![value]);
                true
            }
        }
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

/// Searches a linearization of `ops` from an absent value, exploring at
/// most `max_states` configurations; returns what it found and the
/// configurations explored.
pub(super) fn search(ops: &[KeyOp], max_states: u64) -> (Found, u64) {
    let mut list = List::new(ops);
    let mut linearized = Bits::new(ops.len());
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
            if let Some(next) = ops[op].step.apply(value) {
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
