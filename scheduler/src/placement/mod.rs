//! Placement: which machine each unit runs on.
//!
//! Pure, synchronous logic with no I/O. The leader keeps a
//! [`PlacementView`] of the cluster up to date from its watch events
//! (machines come and go, units are put and removed, assignments are
//! written) and asks it to [`plan`](PlacementView::plan); the plan is a list
//! of [`Decision`]s for the leader to commit, in batches, to the store. The
//! view is told nothing about why it runs, so planning twice in a row gives
//! nothing the second time (STYLE.md, item 2).
//!
//! # What the plan does
//!
//! A plan looks only at *dirty* units: those that changed, and those a
//! change may affect (see [Incremental](#incremental) below). For each:
//!
//! 1. A placed unit stays where it is while that machine is alive and still
//!    eligible for it (no churn: a new machine or a change of strategy moves
//!    nothing). Otherwise it is unassigned ([`Decision::Unassign`], with an
//!    [`UnassignReason`]) and placed again in the same plan.
//! 2. An unplaced unit that wants a machine (desired state `loaded` or
//!    `launched`, not a template, not `Global`) is placed on the best
//!    eligible machine ([`Decision::Assign`]), or reported
//!    [`Decision::Unschedulable`] with a reason written for people.
//!
//! The plan applies its decisions to the view as it goes, so that later
//! decisions in the same plan see earlier ones (two conflicting units
//! submitted together never land together), and so that the next plan
//! starts from them, as the kube scheduler's "assume" does. When the
//! decisions could not be committed (the leader lost its lease, say),
//! rebuild the view from the store. Watch events that echo committed
//! decisions ([`set_assignment`](PlacementView::set_assignment) of the same
//! machine, [`clear_assignment`](PlacementView::clear_assignment) of a
//! machine the unit has left) change nothing.
//!
//! Decisions are net: a unit that moves twice within a plan gets one
//! `Unassign` (from where the store has it) and one `Assign` (to where it
//! ends up). A unit's `Unassign` comes just before its `Assign`, so both can
//! go in one transaction; leaders come before their followers.
//! `Unschedulable` is reported when a unit becomes unschedulable or its
//! reason changes, not at every plan. (A retry that cannot succeed because
//! the unit asks for more than any machine has free keeps its old reason
//! rather than pay for working out a new one.)
//!
//! Within a plan, units pinned by `MachineID` are looked at first (they have
//! one machine; the others can go around them), then the others by name, so
//! that every leader decides the same from the same state.
//!
//! The view models one assignment per unit. Assignments the store holds
//! that no unit accounts for become `Unassign`s at the start of the next
//! plan: that of a unit removed while assigned ([`UnassignReason::Removed`]),
//! and the older of two assignments of one unit, which only another writer
//! (an old leader) can cause ([`UnassignReason::Duplicate`]). When the store
//! deletes such an assignment first, the `Unassign` is dropped.
//!
//! # Semantics of the `[X-Fleet]` options
//!
//! fleet's (see `flotilla_proto::fleet`), checked in this order:
//!
//! - **`MachineID`**: only the machine with that id, full or short
//!   ([`FleetOptions::machine_id_matches`]).
//! - **`MachineMetadata`**: only machines whose metadata matches: every key,
//!   any one of its values.
//! - **`MachineOf`**: only the machine where every named unit is placed. A
//!   follower whose leader is missing, inactive or not placed waits
//!   (`Unschedulable`: "waiting for db.service, which it must run beside, to
//!   be placed"), and is retried when the leader changes or is placed.
//!   Within a plan leaders are handled before their followers, so a pair
//!   submitted together lands in one plan, and a follower whose leader moved
//!   (its machine died and it was placed again) moves with it in the same
//!   plan. Placing a leader does not look at its followers' needs (fleet
//!   did not either): a follower that does not fit beside its leader is
//!   unschedulable with a reason naming the leader's machine. `MachineOf` a
//!   `Global` unit means "a machine where that global unit runs". A unit
//!   whose `Replaces` matches a unit it must run beside can never be placed
//!   (proto rejects such files; the engine reports it unschedulable rather
//!   than chase the leader it keeps moving away).
//! - **`Conflicts`**: never on a machine that holds, or is given earlier in
//!   the same plan, a unit that conflicts with it in either direction
//!   ([`units_conflict`](flotilla_proto::fleet::units_conflict)).
//! - **`Replaces`** (fleet 0.13, `AgentState.hasReplace`): when unit A
//!   replaces unit B ([`unit_displaces`](flotilla_proto::fleet::unit_displaces):
//!   A's pattern matches B and B's does not match A), B may not run on a
//!   machine that runs A. When A is placed it *prefers* a machine that runs
//!   a unit it replaces (the best such machine by the strategy), and the
//!   units it replaces there are unassigned and placed elsewhere in the
//!   same plan (`UnassignReason::Replaced`). If B can go nowhere else (it is
//!   pinned by `MachineID`, say), it becomes unschedulable: A wins. A unit
//!   already placed is not moved onto its replacees' machine by a later
//!   change; only placing it does that. To stop chains of displacement
//!   from cycling, a unit displaced in this plan neither displaces others
//!   when it is placed again nor lands where it would; and a unit placed
//!   three times within one plan (which only units that `Replaces` and
//!   `MachineOf` chase around come near) waits for the next change. A
//!   `Conflicts` match between A and B wins over `Replaces`: A then avoids
//!   B's machine.
//! - **`Global`**: not placed by the engine; every agent runs a global unit
//!   when its metadata matches and the machine runs no unit that conflicts
//!   with it (the agents' feed delivers it by that rule, and placement
//!   decides "where a global unit runs" by the same one, in the view's
//!   `global_runs_on`). The engine does three things with
//!   them:
//!   - *Conflicts*: a unit is not placed on a machine where a `Global` unit
//!     it conflicts with (either direction) runs: the global unit holds
//!     that machine. A unit already placed is not moved when a conflicting
//!     global unit appears (no churn); on that machine the global unit
//!     does not run, as fleet's agent skipped it, and so later units that
//!     conflict with it may go there too. So the rule is "global units win
//!     new placements where they run, placed units keep their machine",
//!     and the result never runs two conflicting units together.
//!   - *Resources*: a global unit's requests are reserved on every machine
//!     where it runs, and only there. When the unit that kept it off a
//!     machine leaves, it runs there again and is reserved again, even if
//!     that leaves the machine short (nothing is moved for it, as for a
//!     capacity that shrinks).
//!   - *Followers*: `MachineOf` a global unit means a machine where it
//!     runs, so not one where a conflicting unit keeps it off (its
//!     followers there are checked again whenever that changes).
//!
//!   A unit that becomes `Global` is unassigned (`UnassignReason::Global`).
//!
//! Beyond fleet:
//!
//! - **Resources**: on every machine, the requests of the placed units plus
//!   the reservations of the global units it runs may not exceed its
//!   capacity, for CPU and for memory separately. A unit without requests
//!   fits anywhere; a request of 0 is no request; a machine whose capacity
//!   for a resource is 0 hosts no unit that requests it. A unit that asks
//!   more than every eligible machine has at all is unschedulable with a
//!   reason that says so ("needs 7E memory, more than any eligible machine
//!   has (at most 8G)"), apart from one that only lacks free room. The sums
//!   of requests on a machine are kept in `u128`, exact however large the
//!   requests (`MemoryMax=7E` three times is more than a `u64` holds). A change of
//!   capacity never moves placed units (an overcommitted machine stays so
//!   until units leave); a unit whose own request grows beyond what its
//!   machine has free moves (`UnassignReason::NoRoom`).
//! - **Strategies** ([`Strategy`]): `Spread`, the default, is fleet's
//!   least-loaded: the eligible machine with the fewest placed units, ties
//!   broken by machine id. `BinPack` is best fit: among the eligible
//!   machines with room, the one with the least free of the unit's
//!   dominant resource (the one it asks the larger share of the cluster's
//!   total of), then the least of the other, then by machine id. A unit
//!   that requests nothing takes no room, so `BinPack` spreads it.
//! - **Metadata changes**: when a machine's metadata changes so that a unit
//!   placed on it no longer matches, the unit is unassigned
//!   (`UnassignReason::Metadata`) and placed again, as fleet's reconciler
//!   unscheduled units whose agent could no longer run them.
//! - A unit inactive (desired state `inactive`) is unassigned
//!   (`UnassignReason::Inactive`); a unit removed while assigned gets an
//!   `Unassign` (`UnassignReason::Removed`) so that its assignment key is
//!   deleted.
//!
//! # Incremental
//!
//! Each change marks what it may affect dirty, and nothing else:
//!
//! | change | dirty |
//! |---|---|
//! | unit put | the unit; its followers |
//! | assignment seen or deleted (not an echo) | the unit |
//! | unit placed, moved or unplaced | its followers; when placed, the units it replaces on that machine |
//! | unit removed | its followers; units blocked for room |
//! | machine added | units blocked for want of a machine or of room |
//! | machine metadata changed | its units; every blocked unit |
//! | machine capacity grew | units blocked for room |
//! | machine removed | its units |
//! | global unit put or removed | every blocked unit |
//!
//! Units blocked "for room" (conflicts, resources, replacement) are retried
//! after a change that frees room anywhere; units blocked for want of a
//! machine (no machine has the id or metadata) after a machine joins or
//! changes; followers when their leader changes. Nothing polls.
//!
//! # Cost
//!
//! With M machines, c distinct `MachineMetadata` combinations asked for
//! that a machine matches, p patterns in the unit's `Conflicts`/`Replaces`
//! and q distinct patterns that match its name (both usually 0 or 1), and
//! G global units, placing one unit costs:
//!
//! - the global units it conflicts with: a glob match against each of the
//!   G global units (there are few);
//! - the first candidate: O(log M) in an ordered index: the whole
//!   cluster's, or that of the unit's combination (every key it asks for,
//!   any of its values: see `combos`), whose machines all match its
//!   metadata; the first unit to walk a combination finds its machines,
//!   O(M) once;
//! - each candidate checked: O(p + q) hash lookups for conflicts and
//!   replacement (never a scan of the machine's units), O(1) for
//!   resources; candidates that fail are skipped, so the worst case
//!   (nearly every machine conflicts or is full) is O(M) checks, and the
//!   usual case one or two;
//! - committing the placement: O((1 + c) log M) to move the machine in the
//!   cluster's orderings and in those of its combinations that units walk
//!   (with `spread`, their load ordering only), plus O(p + q) counter
//!   updates.
//!
//! A unit with `MachineOf` checks one machine, with `MachineID` one (a short
//! id may match a few). A unit that cannot be placed costs one pass over
//! the machines that match its id and metadata, to explain why (a retry of
//! a unit that asks for more than any machine has free costs O(log M)); a
//! unit already placed and still eligible costs one check. Putting a unit
//! costs one hash lookup per prefix of its name, to find the patterns that
//! match it; a new pattern (the first unit that uses it) costs a pass over
//! the units whose names start with its literal prefix, once. A change of
//! a global unit costs O(M x G), to recompute the reservations.
//!
//! Measured (`tests/placement_scale.rs`, release build, one core of the
//! 2-core build machine, noisy): 10,000 machines and 1,000,000 units, a
//! twentieth of them spread by `Conflicts`, a twentieth following another
//! and a fifth needing a region, are placed at about 150,000 units/s with
//! `Spread` and 240,000/s with `BinPack`. After that, a machine that dies
//! with 100 units is planned in a few milliseconds, and one new unit in
//! about 30 microseconds.

mod combos;
mod consistency;
mod explain;
mod globals;
mod index;
mod plan;
mod units;
mod view;

use std::fmt;
use std::str::FromStr;

use flotilla_proto::fleet::FleetOptions;
use flotilla_proto::resources::Resources;
use flotilla_proto::{DesiredState, MachineId, UnitName, UnitSpec};

pub use view::PlacementView;

/// How the engine chooses among the machines eligible for a unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// fleet's least-loaded: the machine with the fewest placed units.
    #[default]
    Spread,
    /// Best fit: the machine with the least free room that still fits.
    BinPack,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::BinPack => "binpack",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement strategy {0:?}: expected spread or binpack")]
pub struct StrategyError(pub String);

impl FromStr for Strategy {
    type Err = StrategyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spread" => Ok(Strategy::Spread),
            "binpack" => Ok(Strategy::BinPack),
            other => Err(StrategyError(other.to_owned())),
        }
    }
}

/// What placement needs to know of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInput {
    /// Its `[X-Fleet]` options, specifiers expanded for its name.
    pub fleet: FleetOptions,
    /// What it asks of its machine.
    pub resources: Resources,
    /// What the user wants of it: every state but `inactive` needs a
    /// machine.
    pub desired: DesiredState,
}

impl UnitInput {
    /// The placement view of a checked unit in a desired state.
    pub fn from_spec(spec: &UnitSpec, desired: DesiredState) -> UnitInput {
        UnitInput {
            fleet: spec.fleet.clone(),
            resources: spec.resources,
            desired,
        }
    }
}

/// One thing for the leader to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the unit's assignment to the machine.
    Assign { unit: UnitName, machine: MachineId },
    /// Delete the unit's assignment to the machine.
    Unassign {
        unit: UnitName,
        machine: MachineId,
        reason: UnassignReason,
    },
    /// The unit needs a machine and none can take it now; `reason` says
    /// why, for people (`flotilla status`). It is retried when something
    /// that could change that happens.
    Unschedulable { unit: UnitName, reason: String },
}

impl Decision {
    /// The unit the decision is about.
    pub fn unit(&self) -> &UnitName {
        match self {
            Decision::Assign { unit, .. }
            | Decision::Unassign { unit, .. }
            | Decision::Unschedulable { unit, .. } => unit,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Assign { unit, machine } => write!(f, "assign {unit} to {machine}"),
            Decision::Unassign {
                unit,
                machine,
                reason,
            } => write!(f, "unassign {unit} from {machine}: {reason}"),
            Decision::Unschedulable { unit, reason } => {
                write!(f, "{unit} is unschedulable: {reason}")
            }
        }
    }
}

/// Why a unit leaves the machine it was assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnassignReason {
    /// The machine left the cluster (its lease expired) or was never known.
    MachineGone,
    /// The unit's desired state is `inactive`.
    Inactive,
    /// The unit was removed.
    Removed,
    /// The unit became `Global`: every agent whose metadata matches runs it.
    Global,
    /// The unit's `MachineID` no longer names the machine.
    MachineId,
    /// The machine's metadata no longer matches the unit's
    /// `MachineMetadata` (or the unit's changed).
    Metadata,
    /// A unit it must run beside (`MachineOf`) is on another machine now.
    LeaderMoved { leader: UnitName },
    /// A unit it must run beside is no longer placed, or no longer exists.
    LeaderUnplaced { leader: UnitName },
    /// It now conflicts with a unit on the same machine (its options or the
    /// other's changed).
    Conflict { with: UnitName },
    /// A unit that replaces it (`Replaces`) took the machine.
    Replaced { by: UnitName },
    /// Its resource request grew beyond what the machine has free.
    NoRoom,
    /// The store assigns it to another machine as well (a second assignment
    /// written by someone else, or an old leader): this one goes.
    Duplicate,
}

impl UnassignReason {
    /// A short name of the reason without the units it names, for the
    /// `reason` label of `flotilla_unassignments_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UnassignReason::MachineGone => "machine_gone",
            UnassignReason::Inactive => "inactive",
            UnassignReason::Removed => "removed",
            UnassignReason::Global => "global",
            UnassignReason::MachineId => "machine_id",
            UnassignReason::Metadata => "metadata",
            UnassignReason::LeaderMoved { .. } => "leader_moved",
            UnassignReason::LeaderUnplaced { .. } => "leader_unplaced",
            UnassignReason::Conflict { .. } => "conflict",
            UnassignReason::Replaced { .. } => "replaced",
            UnassignReason::NoRoom => "no_room",
            UnassignReason::Duplicate => "duplicate",
        }
    }
}

impl fmt::Display for UnassignReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnassignReason::MachineGone => f.write_str("its machine left the cluster"),
            UnassignReason::Inactive => f.write_str("its desired state is inactive"),
            UnassignReason::Removed => f.write_str("it was removed"),
            UnassignReason::Global => {
                f.write_str("it is global now, so every agent whose metadata matches runs it")
            }
            UnassignReason::MachineId => f.write_str("its MachineID no longer names the machine"),
            UnassignReason::Metadata => {
                f.write_str("the machine's metadata no longer matches its MachineMetadata")
            }
            UnassignReason::LeaderMoved { leader } => {
                write!(
                    f,
                    "{leader}, which it must run beside, is on another machine now"
                )
            }
            UnassignReason::LeaderUnplaced { leader } => {
                write!(f, "{leader}, which it must run beside, is no longer placed")
            }
            UnassignReason::Conflict { with } => {
                write!(f, "it conflicts with {with} on the same machine")
            }
            UnassignReason::Replaced { by } => write!(f, "{by} replaces it there"),
            UnassignReason::NoRoom => {
                f.write_str("its resource request grew beyond what the machine has free")
            }
            UnassignReason::Duplicate => f.write_str("it is assigned to another machine as well"),
        }
    }
}

/// A request the view cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// An assignment names a unit the view does not hold: put the unit
    /// first.
    #[error("unit {0} is not in the placement view")]
    UnknownUnit(UnitName),
}
