//! The indexes behind [`PlacementView`](super::PlacementView): machines in
//! the orders the strategies want them, and the `Conflicts`/`Replaces`
//! patterns with the machines they touch.
//!
//! Nothing here knows about units or machines as such: machines and units
//! are small integer slots ([`Mx`], [`UnitId`]) that the view hands out, so
//! that every index entry is a few words and cheap to compare.

use std::collections::btree_set::{self, BTreeSet};
use std::collections::{HashMap, hash_map};
use std::iter::Peekable;

use flotilla_proto::fleet::glob_match;

/// A slot number in one of the view's tables: a type of its own for each
/// table, so that a unit's slot cannot index the machines.
macro_rules! slot {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) struct $name(pub u32);

        impl $name {
            /// The slot for position `i` of its table (tables stay far
            /// below 2^32 entries: the view holds at most that many).
            pub fn at(i: usize) -> $name {
                $name(u32::try_from(i).unwrap_or(u32::MAX))
            }

            /// The slot's position in its table.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

slot!(
    /// A machine's slot in the view.
    Mx
);
slot!(
    /// A unit's slot in the view.
    UnitId
);
slot!(
    /// A pattern's slot in the [`PatternTable`].
    PatternId
);

// ---------------------------------------------------------------------------
// Machines in order.

/// A machine's place in one ordering: compared field by field, so the
/// machine id (as a number: 32 lowercase hex digits compare as the number
/// they spell) breaks ties deterministically, and the slot makes keys of
/// distinct machines distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OrderKey {
    pub primary: u64,
    pub secondary: u64,
    pub id: u128,
    pub mx: Mx,
}

impl OrderKey {
    /// The smallest key whose primary field is `primary`.
    fn from_primary(primary: u64) -> OrderKey {
        OrderKey {
            primary,
            secondary: 0,
            id: 0,
            mx: Mx(0),
        }
    }
}

/// Where a machine sits in each of the three orderings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MachineKeys {
    /// Placed units, fewest first (spread).
    pub load: OrderKey,
    /// Free CPU, then free memory, least first (bin-packing on CPU).
    pub cpu: OrderKey,
    /// Free memory, then free CPU, least first (bin-packing on memory).
    pub mem: OrderKey,
}

impl MachineKeys {
    pub fn new(mx: Mx, id: u128, load: u32, free_cpu: u64, free_mem: u64) -> MachineKeys {
        MachineKeys {
            load: OrderKey {
                primary: u64::from(load),
                secondary: 0,
                id,
                mx,
            },
            cpu: OrderKey {
                primary: free_cpu,
                secondary: free_mem,
                id,
                mx,
            },
            mem: OrderKey {
                primary: free_mem,
                secondary: free_cpu,
                id,
                mx,
            },
        }
    }
}

/// Which ordering to walk, and from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Fewest placed units first.
    Load,
    /// Least free CPU first, starting at machines with at least this much.
    FreeCpu(u64),
    /// Least free memory first, starting at machines with at least this much.
    FreeMem(u64),
}

impl Order {
    /// The key of a machine in this ordering.
    pub fn key(self, keys: &MachineKeys) -> OrderKey {
        match self {
            Order::Load => keys.load,
            Order::FreeCpu(_) => keys.cpu,
            Order::FreeMem(_) => keys.mem,
        }
    }
}

/// A set of machines kept in the three orderings at once: one for the whole
/// cluster, and one per metadata `key=value`.
#[derive(Debug, Default)]
pub(crate) struct OrderSets {
    by_load: BTreeSet<OrderKey>,
    by_free_cpu: BTreeSet<OrderKey>,
    by_free_mem: BTreeSet<OrderKey>,
}

impl OrderSets {
    pub fn insert(&mut self, keys: &MachineKeys) {
        self.by_load.insert(keys.load);
        self.by_free_cpu.insert(keys.cpu);
        self.by_free_mem.insert(keys.mem);
    }

    pub fn remove(&mut self, keys: &MachineKeys) {
        self.by_load.remove(&keys.load);
        self.by_free_cpu.remove(&keys.cpu);
        self.by_free_mem.remove(&keys.mem);
    }

    /// Moves a machine from its old keys to its new ones, touching only the
    /// orderings whose key changed.
    pub fn update(&mut self, old: &MachineKeys, new: &MachineKeys) {
        if old.load != new.load {
            self.by_load.remove(&old.load);
            self.by_load.insert(new.load);
        }
        if old.cpu != new.cpu {
            self.by_free_cpu.remove(&old.cpu);
            self.by_free_cpu.insert(new.cpu);
        }
        if old.mem != new.mem {
            self.by_free_mem.remove(&old.mem);
            self.by_free_mem.insert(new.mem);
        }
    }

    /// How many machines the set holds.
    pub fn len(&self) -> usize {
        self.by_load.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_load.is_empty()
    }

    /// The machines in `order`, from its starting point on.
    pub fn walk(&self, order: Order) -> btree_set::Range<'_, OrderKey> {
        match order {
            Order::Load => self.by_load.range(..),
            Order::FreeCpu(from) => self.by_free_cpu.range(OrderKey::from_primary(from)..),
            Order::FreeMem(from) => self.by_free_mem.range(OrderKey::from_primary(from)..),
        }
    }

    /// The most free CPU and the most free memory any machine in the set
    /// has (not necessarily the same machine).
    pub fn max_free(&self) -> (u64, u64) {
        let cpu = self.by_free_cpu.last().map_or(0, |k| k.primary);
        let mem = self.by_free_mem.last().map_or(0, |k| k.primary);
        (cpu, mem)
    }

    /// Whether the set holds exactly these keys (for consistency checks).
    pub fn holds(&self, keys: &MachineKeys) -> bool {
        self.by_load.contains(&keys.load)
            && self.by_free_cpu.contains(&keys.cpu)
            && self.by_free_mem.contains(&keys.mem)
    }
}

/// Walks several orderings of disjoint machine sets as one, in key order:
/// how the machines with `region=eu` or `region=us` are visited least
/// loaded first when each value has its own [`OrderSets`].
pub(crate) struct Merge<'a> {
    heads: Vec<Peekable<btree_set::Range<'a, OrderKey>>>,
}

impl<'a> Merge<'a> {
    pub fn new(sets: &[&'a OrderSets], order: Order) -> Merge<'a> {
        Merge {
            heads: sets.iter().map(|s| s.walk(order).peekable()).collect(),
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = OrderKey;

    fn next(&mut self) -> Option<OrderKey> {
        let mut best: Option<(usize, OrderKey)> = None;
        for (i, head) in self.heads.iter_mut().enumerate() {
            if let Some(&&key) = head.peek()
                && best.is_none_or(|(_, b)| key < b)
            {
                best = Some((i, key));
            }
        }
        let (i, key) = best?;
        self.heads[i].next();
        Some(key)
    }
}

/// A machine id as the number its hexadecimal digits spell, which orders
/// machines as their ids do. Ids that are not hexadecimal (never: a
/// `MachineId` is validated as 32 lowercase hex digits) count as 0.
pub(crate) fn id_key(id: &str) -> u128 {
    u128::from_str_radix(id, 16).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Counting maps.

/// Adds one to `map[mx]`.
pub(crate) fn count_up(map: &mut HashMap<Mx, u32>, mx: Mx) {
    *map.entry(mx).or_insert(0) += 1;
}

/// Takes one from `map[mx]`, dropping the entry at zero.
pub(crate) fn count_down(map: &mut HashMap<Mx, u32>, mx: Mx) {
    if let hash_map::Entry::Occupied(mut e) = map.entry(mx) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// `map[mx]`, or 0.
pub(crate) fn count_of(map: &HashMap<Mx, u32>, mx: Mx) -> u32 {
    map.get(&mx).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Patterns.

/// The part of a glob before its first special character: every name the
/// pattern matches starts with it.
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    &pattern[..end]
}

/// One distinct `Conflicts` or `Replaces` pattern, shared by every unit that
/// uses it (the instances of a template share theirs), with the machines it
/// touches. All three maps count placed units per machine.
#[derive(Debug, Default)]
pub(crate) struct Pattern {
    pub text: String,
    prefix: String,
    /// How many (unit, option) pairs use the pattern.
    refs: u32,
    /// Placed units that have the pattern in `Conflicts`, per machine.
    pub conflict_holders: HashMap<Mx, u32>,
    /// Placed units that have the pattern in `Replaces`, per machine.
    pub replace_holders: HashMap<Mx, u32>,
    /// Placed units whose name the pattern matches, per machine.
    pub matches: HashMap<Mx, u32>,
}

/// Every distinct pattern of the units in the view, indexed by literal
/// prefix so that the patterns matching a name are found with one lookup
/// per prefix of the name instead of a match against every pattern.
#[derive(Debug, Default)]
pub(crate) struct PatternTable {
    slots: Vec<Option<Pattern>>,
    free: Vec<PatternId>,
    by_text: HashMap<String, PatternId>,
    by_prefix: HashMap<String, Vec<PatternId>>,
}

impl PatternTable {
    /// Takes a reference to `text`, adding it when it is new; says whether
    /// it is.
    pub fn intern(&mut self, text: &str) -> (PatternId, bool) {
        if let Some(&id) = self.by_text.get(text) {
            if let Some(p) = self.slots[id.index()].as_mut() {
                p.refs += 1;
            }
            return (id, false);
        }
        let prefix = literal_prefix(text).to_owned();
        let pattern = Pattern {
            text: text.to_owned(),
            prefix: prefix.clone(),
            refs: 1,
            ..Pattern::default()
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id.index()] = Some(pattern);
                id
            }
            None => {
                self.slots.push(Some(pattern));
                PatternId::at(self.slots.len() - 1)
            }
        };
        self.by_text.insert(text.to_owned(), id);
        self.by_prefix.entry(prefix).or_default().push(id);
        (id, true)
    }

    /// Drops a reference; returns the pattern's text and literal prefix when
    /// that was the last one and the pattern is gone.
    pub fn release(&mut self, id: PatternId) -> Option<(String, String)> {
        let slot = self.slots.get_mut(id.index())?;
        let p = slot.as_mut()?;
        p.refs -= 1;
        if p.refs > 0 {
            return None;
        }
        let p = slot.take()?;
        self.by_text.remove(&p.text);
        if let hash_map::Entry::Occupied(mut e) = self.by_prefix.entry(p.prefix.clone()) {
            e.get_mut().retain(|&x| x != id);
            if e.get().is_empty() {
                e.remove();
            }
        }
        self.free.push(id);
        Some((p.text, p.prefix))
    }

    pub fn get(&self, id: PatternId) -> Option<&Pattern> {
        self.slots.get(id.index())?.as_ref()
    }

    pub fn get_mut(&mut self, id: PatternId) -> Option<&mut Pattern> {
        self.slots.get_mut(id.index())?.as_mut()
    }

    /// The patterns that match `name`, in slot order: one hash lookup per
    /// prefix of the name, then a glob match per pattern found.
    pub fn matching(&self, name: &str) -> Vec<PatternId> {
        let mut out = Vec::new();
        if self.by_prefix.is_empty() {
            return out;
        }
        let ends = name
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(name.len()));
        for end in ends {
            let Some(ids) = self.by_prefix.get(&name[..end]) else {
                continue;
            };
            for &id in ids {
                if self.get(id).is_some_and(|p| glob_match(&p.text, name)) {
                    out.push(id);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Every live pattern (for consistency checks).
    pub fn iter(&self) -> impl Iterator<Item = (PatternId, &Pattern)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((PatternId::at(i), p.as_ref()?)))
    }

    /// The number of references to a pattern (for consistency checks).
    pub fn refs(&self, id: PatternId) -> u32 {
        self.get(id).map_or(0, |p| p.refs)
    }

    /// The slot of a pattern by its text.
    pub fn lookup(&self, text: &str) -> Option<PatternId> {
        self.by_text.get(text).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(mx: u32, load: u32, cpu: u64, mem: u64) -> MachineKeys {
        MachineKeys::new(Mx(mx), u128::from(mx) + 100, load, cpu, mem)
    }

    #[test]
    fn order_sets_walk_each_ordering() {
        let mut sets = OrderSets::default();
        let a = keys(0, 3, 1000, 10);
        let b = keys(1, 1, 3000, 5);
        let c = keys(2, 1, 2000, 20);
        for k in [&a, &b, &c] {
            sets.insert(k);
        }
        fn mxs(sets: &OrderSets, order: Order) -> Vec<u32> {
            sets.walk(order).map(|k| k.mx.0).collect()
        }
        // Fewest units first, ties by id.
        assert_eq!(mxs(&sets, Order::Load), vec![1, 2, 0]);
        // Least free first, from the amount asked for.
        assert_eq!(mxs(&sets, Order::FreeCpu(0)), vec![0, 2, 1]);
        assert_eq!(mxs(&sets, Order::FreeCpu(1500)), vec![2, 1]);
        assert_eq!(mxs(&sets, Order::FreeCpu(3001)), Vec::<u32>::new());
        assert_eq!(mxs(&sets, Order::FreeMem(6)), vec![0, 2]);
        assert_eq!(sets.max_free(), (3000, 20));

        // Moving one machine touches only what changed.
        let b2 = keys(1, 4, 3000, 5);
        sets.update(&b, &b2);
        assert_eq!(mxs(&sets, Order::Load), vec![2, 0, 1]);
        assert!(sets.holds(&b2));
        assert!(!sets.holds(&b));
        sets.remove(&a);
        assert_eq!(sets.len(), 2);
        assert_eq!(mxs(&sets, Order::FreeCpu(0)), vec![2, 1]);
    }

    #[test]
    fn merge_interleaves_disjoint_sets_in_key_order() {
        let mut eu = OrderSets::default();
        let mut us = OrderSets::default();
        eu.insert(&keys(0, 5, 0, 0));
        eu.insert(&keys(1, 1, 0, 0));
        us.insert(&keys(2, 3, 0, 0));
        us.insert(&keys(3, 0, 0, 0));
        let empty = OrderSets::default();
        let order: Vec<u32> = Merge::new(&[&eu, &empty, &us], Order::Load)
            .map(|k| k.mx.0)
            .collect();
        assert_eq!(order, vec![3, 1, 2, 0]);
        assert_eq!(Merge::new(&[], Order::Load).count(), 0);
    }

    #[test]
    fn machine_ids_order_as_numbers() {
        let a = id_key("00000000000000000000000000000002");
        let b = id_key("0000000000000000000000000000000a");
        let c = id_key("f0000000000000000000000000000000");
        assert!(a < b && b < c);
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("web@*.service"), "web@");
        assert_eq!(literal_prefix("db.service"), "db.service");
        assert_eq!(literal_prefix("*"), "");
        assert_eq!(literal_prefix("db-?.service"), "db-");
        assert_eq!(literal_prefix("a[bc]"), "a");
        assert_eq!(literal_prefix("a\\*b"), "a");
    }

    #[test]
    fn pattern_table_finds_patterns_by_name() {
        let mut t = PatternTable::default();
        let (web, new) = t.intern("web@*.service");
        assert!(new);
        let (web_again, new) = t.intern("web@*.service");
        assert_eq!((web_again, new), (web, false));
        let (all, _) = t.intern("*");
        let (db, _) = t.intern("db.service");
        let (q, _) = t.intern("db-?.service");

        assert_eq!(t.matching("web@1.service"), vec![web, all]);
        assert_eq!(t.matching("db.service"), vec![all, db]);
        assert_eq!(t.matching("db-1.service"), vec![all, q]);
        assert_eq!(t.matching("db-10.service"), vec![all]);
        assert_eq!(t.refs(web), 2);

        // The last reference frees the slot, and the slot is reused.
        assert_eq!(t.release(web), None);
        assert_eq!(
            t.release(web),
            Some(("web@*.service".to_owned(), "web@".to_owned()))
        );
        assert_eq!(t.matching("web@1.service"), vec![all]);
        assert!(t.get(web).is_none());
        assert_eq!(t.lookup("web@*.service"), None);
        let (cache, _) = t.intern("cache*");
        assert_eq!(cache, web);
        // In slot order: cache took the freed slot 0.
        assert_eq!(t.matching("cache.service"), vec![cache, all]);
        assert_eq!(t.iter().count(), 4);
    }

    #[test]
    fn counting_maps_drop_zeros() {
        let mut m = HashMap::new();
        count_up(&mut m, Mx(3));
        count_up(&mut m, Mx(3));
        assert_eq!(count_of(&m, Mx(3)), 2);
        count_down(&mut m, Mx(3));
        count_down(&mut m, Mx(3));
        assert!(m.is_empty());
        count_down(&mut m, Mx(3));
        assert_eq!(count_of(&m, Mx(3)), 0);
    }
}
