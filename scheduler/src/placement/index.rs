//! The indexes behind [`PlacementView`](super::PlacementView): machines in
//! the orders the strategies want them, and the `Conflicts`/`Replaces`
//! patterns with the machines they touch.
//!
//! Nothing here knows about units or machines as such: machines and units
//! are small integer slots ([`Mx`], [`UnitId`]) that the view hands out, so
//! that every index entry is a few words and cheap to compare.

use std::collections::btree_set::{self, BTreeSet};
use std::collections::{HashMap, hash_map};

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
slot!(
    /// A `MachineMetadata` combination's slot in the
    /// [`ComboTable`](super::combos::ComboTable).
    ComboId
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
    /// The id's high and low 64 bits, which compare as the id does (two
    /// `u64`s rather than a `u128`, which would align the key to 16 bytes
    /// and make it 48 bytes long instead of 40: the orderings move keys
    /// within their nodes on every placement).
    pub id: (u64, u64),
    pub mx: Mx,
}

/// A machine id's number as [`OrderKey::id`] holds it.
pub(crate) fn id_halves(id: u128) -> (u64, u64) {
    // Truncations on purpose: the high half, then the low one.
    ((id >> 64) as u64, id as u64)
}

impl OrderKey {
    /// The smallest key whose primary field is `primary`.
    fn from_primary(primary: u64) -> OrderKey {
        OrderKey {
            primary,
            secondary: 0,
            id: (0, 0),
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
        let id = id_halves(id);
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
        keys.get(self.kind())
    }

    /// Which of the three orderings this walks.
    pub fn kind(self) -> OrderKind {
        match self {
            Order::Load => OrderKind::Load,
            Order::FreeCpu(_) => OrderKind::FreeCpu,
            Order::FreeMem(_) => OrderKind::FreeMem,
        }
    }
}

/// One of the three orderings of machines, whatever the starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderKind {
    Load,
    FreeCpu,
    FreeMem,
}

impl OrderKind {
    pub const ALL: [OrderKind; 3] = [OrderKind::Load, OrderKind::FreeCpu, OrderKind::FreeMem];

    fn slot(self) -> usize {
        match self {
            OrderKind::Load => 0,
            OrderKind::FreeCpu => 1,
            OrderKind::FreeMem => 2,
        }
    }
}

impl MachineKeys {
    /// The machine's key in one ordering.
    pub fn get(&self, kind: OrderKind) -> OrderKey {
        match kind {
            OrderKind::Load => self.load,
            OrderKind::FreeCpu => self.cpu,
            OrderKind::FreeMem => self.mem,
        }
    }
}

/// A set of machines kept in some of the three orderings at once (the
/// whole cluster, or the machines that match a `MachineMetadata`
/// combination: see `super::combos`), in those that have been asked for so
/// far. An ordering nobody walks costs nothing to keep: with `spread`, a
/// placement moves its machine in load orderings only. The default set is
/// kept in no ordering (see [`keep`](OrderSets::keep)).
#[derive(Debug, Default)]
pub(crate) struct OrderSets {
    /// By [`OrderKind::slot`]; `None` while the ordering is not kept.
    sets: [Option<BTreeSet<OrderKey>>; 3],
}

impl OrderSets {
    /// Whether the set is kept in `kind`.
    pub fn keeps(&self, kind: OrderKind) -> bool {
        self.sets[kind.slot()].is_some()
    }

    /// Whether the set is kept in any ordering.
    pub fn keeps_any(&self) -> bool {
        self.sets.iter().any(Option::is_some)
    }

    /// Starts keeping `kind`, with these machines' keys (those the set
    /// holds: see [`members`](OrderSets::members)).
    pub fn keep(&mut self, kind: OrderKind, keys: impl IntoIterator<Item = OrderKey>) {
        self.sets[kind.slot()] = Some(keys.into_iter().collect());
    }

    pub fn insert(&mut self, keys: &MachineKeys) {
        for kind in OrderKind::ALL {
            if let Some(set) = self.sets[kind.slot()].as_mut() {
                set.insert(keys.get(kind));
            }
        }
    }

    pub fn remove(&mut self, keys: &MachineKeys) {
        for kind in OrderKind::ALL {
            if let Some(set) = self.sets[kind.slot()].as_mut() {
                set.remove(&keys.get(kind));
            }
        }
    }

    /// Moves a machine from its old keys to its new ones, touching only the
    /// kept orderings whose key changed.
    pub fn update(&mut self, old: &MachineKeys, new: &MachineKeys) {
        for kind in OrderKind::ALL {
            let (old, new) = (old.get(kind), new.get(kind));
            if old != new
                && let Some(set) = self.sets[kind.slot()].as_mut()
            {
                set.remove(&old);
                set.insert(new);
            }
        }
    }

    /// The first ordering kept, if any.
    fn any(&self) -> Option<&BTreeSet<OrderKey>> {
        self.sets.iter().flatten().next()
    }

    /// How many machines the set holds (0 while no ordering is kept).
    pub fn len(&self) -> usize {
        self.any().map_or(0, BTreeSet::len)
    }

    /// The machines the set holds, in the order of some kept ordering.
    pub fn members(&self) -> impl Iterator<Item = Mx> + '_ {
        self.any().into_iter().flatten().map(|k| k.mx)
    }

    /// The machines in `order`, from its starting point on; `None` when
    /// that ordering is not kept.
    pub fn walk(&self, order: Order) -> Option<btree_set::Range<'_, OrderKey>> {
        let set = self.sets[order.kind().slot()].as_ref()?;
        Some(match order {
            Order::Load => set.range(..),
            Order::FreeCpu(from) | Order::FreeMem(from) => {
                set.range(OrderKey::from_primary(from)..)
            }
        })
    }

    /// The most free CPU and the most free memory any machine in the set
    /// has (not necessarily the same machine); 0 for an ordering not kept.
    pub fn max_free(&self) -> (u64, u64) {
        let most = |kind: OrderKind| {
            self.sets[kind.slot()]
                .as_ref()
                .and_then(BTreeSet::last)
                .map_or(0, |k| k.primary)
        };
        (most(OrderKind::FreeCpu), most(OrderKind::FreeMem))
    }

    /// Whether every kept ordering holds exactly these keys, and holds as
    /// many machines as the others (for consistency checks).
    pub fn holds(&self, keys: &MachineKeys) -> bool {
        OrderKind::ALL.iter().all(|&kind| {
            self.sets[kind.slot()]
                .as_ref()
                .is_none_or(|set| set.contains(&keys.get(kind)))
        })
    }

    /// Whether every kept ordering holds the same number of machines (for
    /// consistency checks).
    pub fn lengths_agree(&self) -> bool {
        let len = self.len();
        self.sets.iter().flatten().all(|set| set.len() == len)
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
        for kind in OrderKind::ALL {
            sets.keep(kind, []);
        }
        let a = keys(0, 3, 1000, 10);
        let b = keys(1, 1, 3000, 5);
        let c = keys(2, 1, 2000, 20);
        for k in [&a, &b, &c] {
            sets.insert(k);
        }
        fn mxs(sets: &OrderSets, order: Order) -> Vec<u32> {
            sets.walk(order)
                .into_iter()
                .flatten()
                .map(|k| k.mx.0)
                .collect()
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
    fn order_sets_keep_only_the_orderings_asked_for() {
        let a = keys(0, 3, 1000, 10);
        let b = keys(1, 1, 3000, 5);
        let mut sets = OrderSets::default();
        assert!(!sets.keeps_any());
        sets.keep(OrderKind::Load, [a.load]);
        sets.insert(&b);
        assert!(sets.keeps(OrderKind::Load) && !sets.keeps(OrderKind::FreeCpu));
        assert_eq!(sets.len(), 2);
        assert!(sets.walk(Order::FreeCpu(0)).is_none());
        let loads: Vec<u32> = sets.walk(Order::Load).unwrap().map(|k| k.mx.0).collect();
        assert_eq!(loads, vec![1, 0]);
        // Changes to orderings not kept cost nothing and are not held.
        let b2 = keys(1, 1, 2000, 5);
        sets.update(&b, &b2);
        assert!(sets.holds(&b2) && sets.holds(&b));
        assert_eq!(sets.max_free(), (0, 0));
        // An ordering kept later starts from the members.
        let members: Vec<Mx> = sets.members().collect();
        let from = [a.cpu, b2.cpu];
        assert_eq!(members, vec![Mx(1), Mx(0)]);
        sets.keep(OrderKind::FreeCpu, from);
        assert!(sets.holds(&b2) && !sets.holds(&b) && sets.lengths_agree());
        let cpus: Vec<u32> = sets
            .walk(Order::FreeCpu(1500))
            .unwrap()
            .map(|k| k.mx.0)
            .collect();
        assert_eq!(cpus, vec![1]);
        sets.remove(&a);
        sets.remove(&b2);
        assert!(sets.len() == 0 && sets.keeps_any());
    }

    #[test]
    fn machine_ids_order_as_numbers() {
        let a = id_key("00000000000000000000000000000002");
        let b = id_key("0000000000000000000000000000000a");
        let c = id_key("f0000000000000000000000000000000");
        assert!(a < b && b < c);
        // Halves compare as the whole, across the 64-bit boundary too.
        let d = id_key("0000000000000001000000000000000a");
        let e = id_key("00000000000000010000000000000000");
        let halves = [a, b, e, d, c].map(id_halves);
        assert!(halves.windows(2).all(|w| w[0] < w[1]));
        assert!(e < d && d < c && b < e);
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
