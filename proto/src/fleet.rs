//! The `[X-Fleet]` placement options, with CoreOS fleet's semantics.
//!
//! A unit file may say where it should run in an `[X-Fleet]` section:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `MachineID` | a machine ID | run only on that machine |
//! | `MachineOf` | unit names | run on the machine that runs each of these units |
//! | `MachineMetadata` | `key=value` pairs | run only on machines with this metadata |
//! | `Conflicts` | unit name globs | never share a machine with a matching unit |
//! | `Global` | a boolean | run on every machine (that matches `MachineMetadata`) |
//! | `Replaces` | unit name globs | take the machine of a matching unit, which moves elsewhere |
//! | `StopAfterCutOff` | a time span | flotilla's own: stop the unit once its machine has been cut off from the servers this long |
//!
//! Values:
//!
//! - `MachineID` is the machine's full ID, the 32 hexadecimal digits of
//!   `/etc/machine-id`, or its short form, the first 8 of them.
//! - `MachineOf`, `MachineMetadata`, `Conflicts` and `Replaces` take several
//!   values, separated by whitespace on one line (quoted as in systemd, so
//!   `MachineMetadata="rack=a 1" disk=ssd` is two pairs), or on repeated
//!   lines. An empty assignment (`Conflicts=`) drops the values assigned
//!   before it, as systemd does for its list settings.
//! - `MachineID`, `Global` and `StopAfterCutOff` take one value; the last
//!   assignment wins, and an empty assignment resets the option.
//! - `StopAfterCutOff` is a systemd time span (`45s`, `1min 30s`; a bare
//!   number is seconds), or `infinity`, the default: the unit keeps running
//!   however long its machine is cut off. The agent counts from the last
//!   time it renewed its machine's lease; see docs/architecture.md.
//! - `MachineOf` names units as `systemctl` does: `db` means `db.service`.
//! - `MachineMetadata`: every key named must be present on the machine; when
//!   a key is given several values, the machine needs one of them. So
//!   `MachineMetadata=region=eu disk=ssd` and `MachineMetadata=region=us`
//!   together mean "disk is ssd, and region is eu or us".
//! - `Conflicts` and `Replaces` are glob patterns matched against whole unit
//!   names with the rules of Go's `path.Match`, as fleet matches them (see
//!   [`glob_match`]). A conflict works both ways: two units may not share a
//!   machine when either one's `Conflicts` matches the other's name. A unit
//!   never conflicts with itself, so a template may say
//!   `Conflicts=web@*.service` to spread its instances.
//! - The specifiers `%n` (full name), `%N` (name without suffix), `%p`
//!   (prefix), `%i` (instance) and `%%` are expanded in every value, so an
//!   instance `web@8080.service` of a template with `MachineOf=db@%i.service`
//!   follows `db@8080.service`. In a template itself `%i` is empty, and a
//!   value that uses `%i` is checked in each instance rather than in the
//!   template.
//! - fleet's deprecated spellings `X-ConditionMachineID`,
//!   `X-ConditionMachineOf`, `X-ConditionMachineMetadata` and `X-Conflicts`
//!   are read as the new keys, with a warning.
//!
//! Combinations that fleet rejects are errors here too (fleet's
//! `ValidateOptions` in `api/units.go`):
//!
//! - `MachineID` with `MachineOf`, `Conflicts`, `Global` or `Replaces`;
//! - `Global` with `MachineOf` or `Replaces` (`Global` with `Conflicts` is
//!   allowed, as in fleet since 0.13: the unit skips machines that run a
//!   conflicting unit);
//! - `Conflicts` with `Replaces`;
//! - a `MachineOf` unit that matches one of the unit's own `Conflicts` or
//!   `Replaces` patterns: the unit could never be placed.
//!
//! Unknown keys in `[X-Fleet]` are errors, as in fleet.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::name::{MAX_NAME_LEN, UnitName, UnitType};
use crate::suggest;
use crate::unit_file::{UnitFile, ValueRef};
use crate::value::{parse_bool, split_words_keeping_backslashes};
use crate::work;

/// The section these options live in.
pub const SECTION: &str = "X-Fleet";

/// Length of a full machine ID: the hexadecimal digits of `/etc/machine-id`.
pub const MACHINE_ID_LEN: usize = 32;

/// Length of a short machine ID: the first digits of a full one (fleet's
/// `ShortID`).
pub const SHORT_MACHINE_ID_LEN: usize = 8;

/// The most values one list option (`MachineOf`, `MachineMetadata`,
/// `Conflicts`, `Replaces`) may hold, repeats counted once. fleet had no
/// limit; real units give one or a few, and the scheduler looks at each
/// pattern of a unit whenever it places it.
pub const MAX_VALUES: usize = 256;

/// The longest `Conflicts` or `Replaces` pattern, in bytes: a unit name is
/// at most 255 bytes, and matching a pattern against a name costs up to the
/// product of their lengths.
pub const MAX_PATTERN_LEN: usize = 256;

/// The most (unit, pattern) pairs that checking `MachineOf` against
/// `Conflicts` and `Replaces` may compare: each unit the unit must run
/// beside is matched against each pattern, to refuse a unit that could
/// never be placed.
pub const MAX_PEER_PATTERN_PAIRS: usize = 64;

/// Where a unit may be placed, read from its `[X-Fleet]` section with
/// specifiers expanded for the unit's name. The default places anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetOptions {
    /// `MachineID`: the only machine the unit may run on, a full machine ID
    /// (32 hexadecimal digits) or a short one (its first 8), lowercase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// `MachineOf`: units the unit must run next to, on the same machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machine_of: Vec<UnitName>,
    /// `MachineMetadata`: for each key, the values a machine may have for it.
    /// Every key must match; any one of a key's values does.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_metadata: BTreeMap<String, Vec<String>>,
    /// `Conflicts`: globs of units that may not share the unit's machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// `Global`: the unit runs on every machine that matches
    /// `machine_metadata` and runs no conflicting unit.
    #[serde(skip_serializing_if = "is_false")]
    pub global: bool,
    /// `Replaces`: globs of units this unit displaces from its machine; they
    /// are moved to another machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    /// `StopAfterCutOff` (flotilla's own): once the agent has not renewed
    /// its machine's lease for this long, it stops the unit, and starts it
    /// again when the servers say it is still the machine's.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_timespan_option"
    )]
    pub stop_after_cut_off: Option<Duration>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FleetOptions {
    /// Reads the `[X-Fleet]` options of unit `name` from its file, reporting
    /// every problem to `diags`.
    pub fn from_unit_file(name: &UnitName, file: &UnitFile, diags: &mut Diagnostics) -> Self {
        let mut reader = Reader::new(name);
        for v in file.entries(SECTION) {
            reader.entry(v, diags);
        }
        reader.finish(diags)
    }

    /// Whether no option is set: the unit may run anywhere.
    pub fn is_empty(&self) -> bool {
        *self == FleetOptions::default()
    }

    /// Whether the machine with this ID may run the unit as far as
    /// `MachineID` goes: always when it is not set; otherwise when `id` is
    /// the full ID given, or starts with the short ID given (fleet's
    /// `MachineState.MatchID` in `machine/state.go`). Case is ignored.
    pub fn machine_id_matches(&self, id: &str) -> bool {
        let Some(want) = &self.machine_id else {
            return true;
        };
        if id.eq_ignore_ascii_case(want) {
            return true;
        }
        want.len() == SHORT_MACHINE_ID_LEN
            && id
                .get(..SHORT_MACHINE_ID_LEN)
                .is_some_and(|short| short.eq_ignore_ascii_case(want))
    }

    /// Whether a machine with this metadata may run the unit as far as
    /// `MachineMetadata` goes: every key required is present on the machine
    /// with one of the values allowed for it (fleet's `HasMetadata` in
    /// `machine/machine.go`). A machine has one value per key, as in fleet.
    pub fn metadata_matches(&self, machine_metadata: &BTreeMap<String, String>) -> bool {
        self.machine_metadata.iter().all(|(key, allowed)| {
            machine_metadata
                .get(key)
                .is_some_and(|value| allowed.contains(value))
        })
    }

    /// Whether one of this unit's `Conflicts` patterns matches `other`. This
    /// is one direction only; the scheduler wants [`units_conflict`], which
    /// checks both and never reports a unit as conflicting with itself.
    pub fn conflicts_with(&self, other: &str) -> bool {
        self.conflicts.iter().any(|p| glob_match(p, other))
    }

    /// Whether one of this unit's `Replaces` patterns matches `other`. See
    /// [`unit_displaces`] for the rule the scheduler applies.
    pub fn replaces(&self, other: &str) -> bool {
        self.replaces.iter().any(|p| glob_match(p, other))
    }
}

/// Whether units `a` and `b` may not share a machine: either one's
/// `Conflicts` matches the other's name. A unit never conflicts with itself.
/// fleet: `AgentState.hasConflict` in `agent/state.go`.
pub fn units_conflict(
    a: &str,
    a_options: &FleetOptions,
    b: &str,
    b_options: &FleetOptions,
) -> bool {
    a != b && (a_options.conflicts_with(b) || b_options.conflicts_with(a))
}

/// Whether placing unit `a` on the machine of unit `b` moves `b` elsewhere:
/// `a`'s `Replaces` matches `b`, and `b`'s does not match `a`. When two units
/// replace each other, neither displaces the other, so that they cannot
/// chase each other around the cluster. fleet: `AgentState.hasReplace` in
/// `agent/state.go`.
pub fn unit_displaces(
    a: &str,
    a_options: &FleetOptions,
    b: &str,
    b_options: &FleetOptions,
) -> bool {
    a != b && a_options.replaces(b) && !b_options.replaces(a)
}

// ---------------------------------------------------------------------------
// Reading the section.

/// The options, whatever key spelling set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    MachineId,
    MachineOf,
    MachineMetadata,
    Conflicts,
    Global,
    Replaces,
    StopAfterCutOff,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::MachineId => "MachineID",
            Key::MachineOf => "MachineOf",
            Key::MachineMetadata => "MachineMetadata",
            Key::Conflicts => "Conflicts",
            Key::Global => "Global",
            Key::Replaces => "Replaces",
            Key::StopAfterCutOff => "StopAfterCutOff",
        }
    }
}

/// The keys to suggest for a misspelt one.
const KNOWN_KEYS: [&str; 7] = [
    "MachineID",
    "MachineOf",
    "MachineMetadata",
    "Conflicts",
    "Global",
    "Replaces",
    "StopAfterCutOff",
];

/// Every accepted spelling, with fleet's deprecated ones (job/job.go:
/// `validRequirements`; deprecated in fleet 0.8.0).
const SPELLINGS: [(&str, Key); 11] = [
    ("MachineID", Key::MachineId),
    ("StopAfterCutOff", Key::StopAfterCutOff),
    ("MachineOf", Key::MachineOf),
    ("MachineMetadata", Key::MachineMetadata),
    ("Conflicts", Key::Conflicts),
    ("Global", Key::Global),
    ("Replaces", Key::Replaces),
    ("X-ConditionMachineID", Key::MachineId),
    ("X-ConditionMachineOf", Key::MachineOf),
    ("X-ConditionMachineMetadata", Key::MachineMetadata),
    ("X-Conflicts", Key::Conflicts),
];

/// fleet's legacy key, which it read as a machine ID although a boot ID is
/// not one (job/job.go: `RequiredTarget`).
const BOOT_ID_KEY: &str = "X-ConditionMachineBootID";

fn lookup(key: &str) -> Option<Key> {
    SPELLINGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, key)| *key)
}

/// A single-valued option: its value, and where it was last assigned.
struct Single<'a, T> {
    value: Option<T>,
    at: Option<ValueRef<'a>>,
}

impl<T> Single<'_, T> {
    fn new() -> Self {
        Single {
            value: None,
            at: None,
        }
    }

    fn reset(&mut self) {
        self.value = None;
        self.at = None;
    }
}

/// A list option: its values with where each came from, and the first
/// assignment since the last reset.
struct List<'a, T> {
    items: Vec<(T, ValueRef<'a>)>,
    /// The items, to drop repeats in one lookup rather than a scan.
    seen: HashSet<T>,
    at: Option<ValueRef<'a>>,
    /// Whether going past [`MAX_VALUES`] was reported.
    full: bool,
}

impl<'a, T: Clone + Eq + Hash> List<'a, T> {
    fn new() -> Self {
        List {
            items: Vec::new(),
            seen: HashSet::new(),
            at: None,
            full: false,
        }
    }

    fn reset(&mut self) {
        self.items.clear();
        self.seen.clear();
        self.at = None;
    }

    fn mark(&mut self, v: ValueRef<'a>) {
        self.at.get_or_insert(v);
    }

    fn push(&mut self, item: T, v: ValueRef<'a>, diags: &mut Diagnostics) {
        work::charge(1);
        if self.seen.contains(&item) {
            return;
        }
        if self.items.len() == MAX_VALUES {
            if !self.full {
                self.full = true;
                diags.push(v.error(format!(
                    "more than {MAX_VALUES} values, the most flotilla accepts for one option"
                )));
            }
            return;
        }
        self.seen.insert(item.clone());
        self.items.push((item, v));
    }

    fn values(self) -> impl Iterator<Item = T> {
        self.items.into_iter().map(|(item, _)| item)
    }
}

struct Reader<'a> {
    name: &'a UnitName,
    machine_id: Single<'a, String>,
    global: Single<'a, bool>,
    stop_after_cut_off: Single<'a, Duration>,
    machine_of: List<'a, UnitName>,
    metadata: List<'a, (String, String)>,
    conflicts: List<'a, String>,
    replaces: List<'a, String>,
}

/// One value after specifier expansion, and whether problems with it are
/// left to the unit's instances (it is a template value that uses `%i`).
struct Word {
    text: String,
    deferred: bool,
}

impl<'a> Reader<'a> {
    fn new(name: &'a UnitName) -> Self {
        Reader {
            name,
            machine_id: Single::new(),
            global: Single::new(),
            stop_after_cut_off: Single::new(),
            machine_of: List::new(),
            metadata: List::new(),
            conflicts: List::new(),
            replaces: List::new(),
        }
    }

    fn entry(&mut self, v: ValueRef<'a>, diags: &mut Diagnostics) {
        work::charge(v.key.len() + v.value.len() + 1);
        let Some(key) = lookup(v.key) else {
            let message = if v.key == BOOT_ID_KEY {
                "not supported, because a boot ID changes every time the machine boots and so \
                 cannot name a machine; use MachineID with the ID in the machine's /etc/machine-id"
                    .to_owned()
            } else {
                suggest::unknown_key_message(SECTION, v.key, KNOWN_KEYS)
            };
            diags.push(v.error(message));
            return;
        };
        if v.key != key.name() {
            diags.push(v.warning(format!(
                "deprecated since fleet 0.8.0; use {} instead",
                key.name()
            )));
        }
        let raw = v.value.trim();
        if raw.is_empty() {
            self.reset(key);
            return;
        }
        let unsupported = unsupported_specifiers(raw);
        if !unsupported.is_empty() {
            let list: Vec<String> = unsupported.iter().map(|c| format!("%{c}")).collect();
            diags.push(v.warning(format!(
                "{} {} left as written: [X-Fleet] values expand only %n, %N, %p, %i and %%",
                list.join(", "),
                if list.len() == 1 { "is" } else { "are" }
            )));
        }
        self.mark(key, v);
        let words = match split_words_keeping_backslashes(raw) {
            Ok(words) => words,
            Err(e) => {
                diags.push(v.error(e.to_string()));
                self.invalidate(key);
                return;
            }
        };
        let words: Vec<Word> = words
            .iter()
            .map(|w| Word {
                text: self.name.expand_specifiers(w),
                deferred: self.name.is_template() && uses_instance(w),
            })
            .collect();
        match key {
            Key::MachineId => self.machine_id(v, &words, diags),
            Key::Global => self.global(v, &words, diags),
            Key::StopAfterCutOff => self.stop_after_cut_off(v, raw, diags),
            Key::MachineOf => {
                for w in &words {
                    self.machine_of_word(v, w, diags);
                }
            }
            Key::MachineMetadata => {
                for w in &words {
                    match parse_metadata(&w.text) {
                        Ok(pair) => self.metadata.push(pair, v, diags),
                        Err(message) => report(diags, w, v, message),
                    }
                }
            }
            Key::Conflicts => {
                for w in &words {
                    if let Some(pattern) = check_pattern(diags, w, v) {
                        self.conflicts.push(pattern, v, diags);
                    }
                }
            }
            Key::Replaces => {
                for w in &words {
                    if let Some(pattern) = check_pattern(diags, w, v) {
                        self.replaces.push(pattern, v, diags);
                    }
                }
            }
        }
    }

    /// An empty assignment: the option goes back to its default.
    fn reset(&mut self, key: Key) {
        match key {
            Key::MachineId => self.machine_id.reset(),
            Key::Global => self.global.reset(),
            Key::StopAfterCutOff => self.stop_after_cut_off.reset(),
            Key::MachineOf => self.machine_of.reset(),
            Key::MachineMetadata => self.metadata.reset(),
            Key::Conflicts => self.conflicts.reset(),
            Key::Replaces => self.replaces.reset(),
        }
    }

    /// Records that the option was assigned here, valid or not, so that
    /// invalid combinations are reported even when a value is wrong too.
    fn mark(&mut self, key: Key, v: ValueRef<'a>) {
        match key {
            Key::MachineId => self.machine_id.at = Some(v),
            Key::Global => self.global.at = Some(v),
            Key::StopAfterCutOff => self.stop_after_cut_off.at = Some(v),
            Key::MachineOf => self.machine_of.mark(v),
            Key::MachineMetadata => self.metadata.mark(v),
            Key::Conflicts => self.conflicts.mark(v),
            Key::Replaces => self.replaces.mark(v),
        }
    }

    /// A single-valued option whose last assignment could not be read.
    fn invalidate(&mut self, key: Key) {
        match key {
            Key::MachineId => self.machine_id.value = None,
            Key::Global => self.global.value = None,
            Key::StopAfterCutOff => self.stop_after_cut_off.value = None,
            _ => {}
        }
    }

    fn machine_id(&mut self, v: ValueRef<'a>, words: &[Word], diags: &mut Diagnostics) {
        self.machine_id.value = None;
        let Some(w) = single_word(diags, v, words, "one machine ID") else {
            return;
        };
        match parse_machine_id(&w.text) {
            Ok(id) => self.machine_id.value = Some(id),
            Err(message) => report(diags, w, v, message),
        }
    }

    fn global(&mut self, v: ValueRef<'a>, words: &[Word], diags: &mut Diagnostics) {
        self.global.value = None;
        let Some(w) = single_word(diags, v, words, "one boolean") else {
            return;
        };
        match parse_bool(&w.text) {
            Some(b) => self.global.value = Some(b),
            None => report(
                diags,
                w,
                v,
                format!(
                    "expected a boolean (yes or no, true or false, on or off, 1 or 0), found {:?}",
                    w.text
                ),
            ),
        }
    }

    /// A time span, read as systemd reads one (`90s`, `1min 30s`, a bare
    /// number is seconds); the whole value, since a span may hold spaces.
    fn stop_after_cut_off(&mut self, v: ValueRef<'a>, raw: &str, diags: &mut Diagnostics) {
        self.stop_after_cut_off.value = None;
        use crate::duration::{Timespan, parse_timespan_or_infinity};
        match parse_timespan_or_infinity(raw) {
            Ok(Timespan::Finite(d)) if d.is_zero() => diags.push(
                v.error(
                    "a unit cannot be stopped the moment its machine is cut off: give a time span \
                 longer than zero, or infinity (the default) to keep it running"
                        .to_owned(),
                ),
            ),
            Ok(Timespan::Finite(d)) => self.stop_after_cut_off.value = Some(d),
            Ok(Timespan::Infinity) => {}
            Err(e) => diags.push(v.error(format!("{e}, or infinity"))),
        }
    }

    fn machine_of_word(&mut self, v: ValueRef<'a>, w: &Word, diags: &mut Diagnostics) {
        let peer = match UnitName::parse(&w.text) {
            Ok(peer) => peer,
            Err(e) => return report(diags, w, v, e.to_string()),
        };
        if peer == *self.name {
            return report(
                diags,
                w,
                v,
                "a unit cannot follow itself: it would have to run before it could be placed"
                    .to_owned(),
            );
        }
        if peer.is_template() {
            return report(
                diags,
                w,
                v,
                format!(
                    "{peer} is a template, which never runs itself; name one of its instances, such as {}@1.{}",
                    peer.prefix(),
                    peer.unit_type()
                ),
            );
        }
        self.machine_of.push(peer, v, diags);
    }

    /// Checks the combinations fleet rejects and builds the options.
    fn finish(self, diags: &mut Diagnostics) -> FleetOptions {
        let pinned = self.machine_id.at;
        let global = if self.global.value == Some(true) {
            self.global.at
        } else {
            None
        };
        let peers = self.machine_of.at;
        let conflicts = self.conflicts.at;
        let replaces = self.replaces.at;
        // fleet: api/units.go, ValidateOptions (fleet 0.13, with Replaces
        // from coreos/fleet#1572 and Global with Conflicts allowed since
        // coreos/fleet#1571).
        let rules = [
            (
                pinned,
                peers,
                Key::MachineOf,
                "MachineID already names the machine, so the unit cannot also follow other units",
            ),
            (
                pinned,
                conflicts,
                Key::Conflicts,
                "a unit pinned to one machine cannot move away from the units it conflicts with",
            ),
            (
                pinned,
                global,
                Key::Global,
                "a global unit runs on every machine, not on one",
            ),
            (
                pinned,
                replaces,
                Key::Replaces,
                "a unit pinned to one machine takes no part in the rescheduling that Replaces asks for",
            ),
            (
                global,
                peers,
                Key::MachineOf,
                "a global unit runs on every machine, so it cannot follow other units to theirs",
            ),
            (
                global,
                replaces,
                Key::Replaces,
                "a global unit runs on every machine, so the units it replaces would have nowhere to go",
            ),
            (
                conflicts,
                replaces,
                Key::Replaces,
                "both keep other units off this unit's machine, Conflicts by keeping this unit away and \
                 Replaces by moving them; use one",
            ),
        ];
        for (at, other_at, other, reason) in rules {
            if let (Some(at), Some(other_at)) = (at, other_at) {
                diags.push(at.error(format!(
                    "cannot be used with {}{}: {reason}",
                    other.name(),
                    line_note(other_at)
                )));
            }
        }
        // fleet: api/units.go, ValidateOptions ("unresolvable requirements").
        let pairs =
            self.machine_of.items.len() * (self.conflicts.items.len() + self.replaces.items.len());
        let peers = if pairs > MAX_PEER_PATTERN_PAIRS {
            if let Some(at) = self.machine_of.at {
                diags.push(at.error(format!(
                    "{} units to run beside and {} Conflicts and Replaces patterns make {pairs} pairs to \
                     check against each other, more than the {MAX_PEER_PATTERN_PAIRS} flotilla checks; \
                     use fewer",
                    self.machine_of.items.len(),
                    self.conflicts.items.len() + self.replaces.items.len(),
                )));
            }
            &[][..]
        } else {
            &self.machine_of.items[..]
        };
        for (peer, at) in peers {
            for (pattern, pattern_at) in &self.conflicts.items {
                if glob_match(pattern, peer.as_str()) {
                    diags.push(at.error(format!(
                        "{peer} matches the Conflicts pattern {pattern:?}{}: the unit would have to run \
                         next to a unit it conflicts with, so it could never be placed",
                        line_note(*pattern_at)
                    )));
                }
            }
            for (pattern, pattern_at) in &self.replaces.items {
                if glob_match(pattern, peer.as_str()) {
                    diags.push(at.error(format!(
                        "{peer} matches the Replaces pattern {pattern:?}{}: the unit would have to run \
                         next to a unit it moves away, so it could never be placed",
                        line_note(*pattern_at)
                    )));
                }
            }
        }
        let mut machine_metadata: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in self.metadata.values() {
            machine_metadata.entry(key).or_default().push(value);
        }
        FleetOptions {
            machine_id: self.machine_id.value,
            machine_of: self.machine_of.values().collect(),
            machine_metadata,
            conflicts: self.conflicts.values().collect(),
            global: self.global.value.unwrap_or(false),
            replaces: self.replaces.values().collect(),
            stop_after_cut_off: self.stop_after_cut_off.value,
        }
    }
}

/// Reports a problem with one value, unless the value is a template's that
/// uses `%i`: it only means something in an instance, where it is checked.
fn report(diags: &mut Diagnostics, w: &Word, v: ValueRef<'_>, message: String) {
    if !w.deferred {
        diags.push(v.error(message));
    }
}

/// The one word a single-valued option takes.
fn single_word<'w>(
    diags: &mut Diagnostics,
    v: ValueRef<'_>,
    words: &'w [Word],
    what: &str,
) -> Option<&'w Word> {
    match words {
        [w] => Some(w),
        _ => {
            diags.push(v.error(format!("expected {what}, found {} words", words.len())));
            None
        }
    }
}

/// ` (line N)`, or nothing for an entry built in code.
fn line_note(v: ValueRef<'_>) -> String {
    if v.line > 0 {
        format!(" (line {})", v.line)
    } else {
        String::new()
    }
}

/// `MachineID`: a full or short machine ID, returned lowercase.
fn parse_machine_id(text: &str) -> Result<String, String> {
    let hex = text.chars().all(|c| c.is_ascii_hexdigit());
    if hex && (text.len() == MACHINE_ID_LEN || text.len() == SHORT_MACHINE_ID_LEN) {
        return Ok(text.to_ascii_lowercase());
    }
    Err(format!(
        "expected a machine ID, the {MACHINE_ID_LEN} hexadecimal digits of the machine's /etc/machine-id \
         or the first {SHORT_MACHINE_ID_LEN} of them, found {text:?}"
    ))
}

/// One `MachineMetadata` pair, `key=value`, both non-empty. fleet ignored
/// pairs of any other form without a word (job/job.go:
/// `RequiredTargetMetadata`); here they are errors.
fn parse_metadata(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected key=value, found {text:?}"));
    };
    if key.is_empty() || value.is_empty() {
        return Err(format!(
            "expected key=value with a non-empty key and value, found {text:?}"
        ));
    }
    if value.contains('=') {
        return Err(format!(
            "expected key=value, found {text:?}: machine metadata values cannot contain '='"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A `Conflicts` or `Replaces` pattern: an error when it is malformed, a
/// warning when it is a plain name that no unit can have.
fn check_pattern(diags: &mut Diagnostics, w: &Word, v: ValueRef<'_>) -> Option<String> {
    let pattern = &w.text;
    if pattern.is_empty() {
        report(diags, w, v, "an empty pattern matches no unit".to_owned());
        return None;
    }
    if pattern.len() > MAX_PATTERN_LEN {
        report(
            diags,
            w,
            v,
            format!(
                "a pattern may be at most {MAX_PATTERN_LEN} bytes long (a unit name is at most {MAX_NAME_LEN})"
            ),
        );
        return None;
    }
    if let Err(e) = validate_glob(pattern) {
        report(diags, w, v, format!("bad pattern {pattern:?}: {e}"));
        return None;
    }
    let literal = !pattern.contains(['*', '?', '[', '\\']);
    if literal && !w.deferred {
        match UnitName::parse(pattern) {
            Ok(name) if name.as_str() != pattern => {
                let hint = match suffix_suggestion(pattern) {
                    Some(near) => format!("; did you mean {near}?"),
                    None => String::new(),
                };
                diags.push(v.warning(format!(
                    "{pattern:?} matches only a unit named exactly that, and unit names end in a \
                     type suffix such as .service{hint}"
                )));
            }
            Ok(_) => {}
            Err(e) => diags.push(v.warning(format!(
                "{pattern:?} matches no unit, because no unit can have that name: {e}"
            ))),
        }
    }
    Some(pattern.clone())
}

/// For a name without a known type suffix: the name as a service when it
/// has no dot, or with its misspelt suffix corrected.
fn suffix_suggestion(name: &str) -> Option<String> {
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return Some(format!("{name}.service"));
    };
    let near = suggest::nearest(suffix, UnitType::ALL.map(UnitType::suffix))?;
    Some(format!("{stem}.{near}"))
}

/// Whether a value uses `%i`, which is empty in a template.
fn uses_instance(raw: &str) -> bool {
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() == Some('i') {
            return true;
        }
    }
    false
}

/// The specifiers in a value that [`UnitName::expand_specifiers`] leaves as
/// written, in order of appearance, each once.
fn unsupported_specifiers(raw: &str) -> Vec<char> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('n' | 'N' | 'p' | 'i' | '%') | None => {}
            Some(other) => {
                work::charge(1);
                if seen.insert(other) {
                    found.push(other);
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Globs, as Go's path.Match reads them.

/// Why a glob pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("'\\' at the end of the pattern escapes nothing")]
    TrailingBackslash,
    #[error("'[' opens a character class that is not closed with ']'")]
    UnclosedClass,
    #[error(
        "a character class needs at least one character, and a '-' or ']' in it must be escaped \
         with '\\' unless the '-' joins the two ends of a range"
    )]
    BadClass,
}

/// Checks that `pattern` is a well-formed glob for [`glob_match`].
pub fn validate_glob(pattern: &str) -> Result<(), GlobError> {
    let mut rest = pattern;
    while !rest.is_empty() {
        let (_, chunk, after) = scan_chunk(rest);
        rest = after;
        match_chunk(chunk, "")?;
    }
    Ok(())
}

/// Whether `name` matches the glob `pattern`, with the rules of Go's
/// `path.Match`, which fleet uses for `Conflicts` and `Replaces`:
///
/// - `*` matches any run of characters other than `/`, including none;
/// - `?` matches any one character other than `/`;
/// - `[abc]`, `[a-z]` match one character of the class; `[^...]` negates
///   the class (`!` is not special: `[!a]` matches `!` or `a`);
/// - `\` makes the next character match itself, also inside a class;
/// - any other character matches itself.
///
/// The whole name must match. A malformed pattern (see [`validate_glob`])
/// matches nothing, as in fleet.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    go_match(pattern, name).unwrap_or(false)
}

/// Go's `path.Match`, returning its `ErrBadPattern` as a [`GlobError`].
fn go_match(pattern: &str, name: &str) -> Result<bool, GlobError> {
    let mut pattern = pattern;
    let mut name = name;
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing '*' matches the rest of the name unless it has a '/'.
            return Ok(!name.contains('/'));
        }
        // The chunk at the current position; when it is the last one, it
        // must take the rest of the name, or a '*' before it may still
        // match by skipping more.
        if let Some(left) = match_chunk(chunk, name)?
            && (left.is_empty() || !pattern.is_empty())
        {
            name = left;
            continue;
        }
        if star {
            // Let the '*' take one more character at a time, never a '/'.
            let current = name;
            for (i, c) in current.char_indices() {
                if c == '/' {
                    break;
                }
                if let Some(left) = match_chunk(chunk, &current[i + c.len_utf8()..])? {
                    if pattern.is_empty() && !left.is_empty() {
                        continue;
                    }
                    name = left;
                    continue 'pattern;
                }
            }
        }
        // No match; the rest of the pattern must still be well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, "")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the leading stars and the chunk up to the next star outside
/// a class: `(star, chunk, rest)`.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let stars = pattern.len() - pattern.trim_start_matches('*').len();
    work::charge(stars + 1);
    let pattern = &pattern[stars..];
    let bytes = pattern.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    work::charge(i);
    // `i` stops at an ASCII '*' or at the end, so it is a char boundary;
    // `get` keeps that from panicking even if it were not.
    let (chunk, rest) = match (pattern.get(..i), pattern.get(i..)) {
        (Some(chunk), Some(rest)) => (chunk, rest),
        _ => (pattern, ""),
    };
    (stars > 0, chunk, rest)
}

/// Matches a chunk (no unescaped `*` outside a class) at the start of `s`;
/// returns what is left of `s` on a match. The whole chunk is always read,
/// so a malformed one is reported even when it cannot match.
fn match_chunk<'s>(chunk: &str, s: &'s str) -> Result<Option<&'s str>, GlobError> {
    work::charge(chunk.len() + 1);
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while let Some(c) = next_char(&mut chunk) {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let r = if failed { None } else { next_char(&mut s) };
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0 && chunk.starts_with(']') {
                        chunk = &chunk[1..];
                        break;
                    }
                    let lo = class_char(&mut chunk)?;
                    let hi = if chunk.starts_with('-') {
                        chunk = &chunk[1..];
                        class_char(&mut chunk)?
                    } else {
                        lo
                    };
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed && next_char(&mut s) == Some('/') {
                    failed = true;
                }
            }
            _ => {
                let literal = if c == '\\' {
                    next_char(&mut chunk).ok_or(GlobError::TrailingBackslash)?
                } else {
                    c
                };
                if !failed && next_char(&mut s) != Some(literal) {
                    failed = true;
                }
            }
        }
    }
    Ok((!failed).then_some(s))
}

/// One end of a class range, unescaped (Go's `getEsc`). The class must go
/// on after it.
fn class_char(chunk: &mut &str) -> Result<char, GlobError> {
    let mut rest = *chunk;
    let c = match next_char(&mut rest) {
        None => return Err(GlobError::UnclosedClass),
        Some('-' | ']') => return Err(GlobError::BadClass),
        Some('\\') => next_char(&mut rest).ok_or(GlobError::UnclosedClass)?,
        Some(c) => c,
    };
    if rest.is_empty() {
        return Err(GlobError::UnclosedClass);
    }
    *chunk = rest;
    Ok(c)
}

fn next_char(s: &mut &str) -> Option<char> {
    let c = s.chars().next()?;
    *s = &s[c.len_utf8()..];
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own table for `path.Match` (src/path/match_test.go): pattern,
    /// name, whether it matches, whether the pattern is malformed.
    const GO_CASES: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", false, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("a[", "x", false, true),
        ("a/b[", "x", false, true),
        ("*x", "xxx", true, false),
    ];

    #[test]
    fn glob_matches_like_go_path_match() {
        for &(pattern, name, matches, bad) in GO_CASES {
            assert_eq!(
                glob_match(pattern, name),
                matches,
                "{pattern:?} vs {name:?}"
            );
            assert_eq!(
                go_match(pattern, name).is_err(),
                bad,
                "{pattern:?} vs {name:?}: malformed?"
            );
            assert_eq!(
                validate_glob(pattern).is_err(),
                bad,
                "{pattern:?}: malformed?"
            );
        }
    }

    #[test]
    fn glob_on_unit_names() {
        assert!(glob_match("web@*.service", "web@8080.service"));
        assert!(glob_match("web@*.service", "web@.service"));
        assert!(!glob_match("web@*.service", "web.service"));
        assert!(glob_match("monitor*", "monitor-disk.timer"));
        assert!(glob_match("db-?.service", "db-1.service"));
        assert!(!glob_match("db-?.service", "db-10.service"));
        assert!(glob_match("db-[0-9][0-9].service", "db-10.service"));
        // '!' does not negate a class in Go, unlike in a shell.
        assert!(!glob_match("[!a]*", "b.service"));
        assert!(glob_match("[!a]*", "!x.service"));
        assert!(glob_match("[^a]*", "b.service"));
        // The whole name must match.
        assert!(!glob_match("web", "web.service"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("**", "abc"));
        assert!(glob_match("a**c", "abbc"));
        // A malformed pattern matches nothing.
        assert!(!glob_match("web[", "web["));
        assert_eq!(validate_glob("web["), Err(GlobError::UnclosedClass));
        assert_eq!(validate_glob("web\\"), Err(GlobError::TrailingBackslash));
        assert_eq!(validate_glob("[]"), Err(GlobError::BadClass));
        assert_eq!(validate_glob("a*[z-"), Err(GlobError::UnclosedClass));
    }

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn metadata_ands_keys_and_ors_values() {
        let mut options = FleetOptions::default();
        assert!(options.metadata_matches(&metadata(&[])));
        options
            .machine_metadata
            .insert("region".into(), vec!["eu".into(), "us".into()]);
        options
            .machine_metadata
            .insert("disk".into(), vec!["ssd".into()]);
        assert!(options.metadata_matches(&metadata(&[("region", "eu"), ("disk", "ssd")])));
        assert!(options.metadata_matches(&metadata(&[
            ("region", "us"),
            ("disk", "ssd"),
            ("rack", "4")
        ])));
        // Every key must be there...
        assert!(!options.metadata_matches(&metadata(&[("region", "eu")])));
        assert!(!options.metadata_matches(&metadata(&[])));
        // ...with one of its values.
        assert!(!options.metadata_matches(&metadata(&[("region", "ap"), ("disk", "ssd")])));
        assert!(!options.metadata_matches(&metadata(&[("region", "eu"), ("disk", "hdd")])));
        // Values compare exactly.
        assert!(!options.metadata_matches(&metadata(&[("region", "EU"), ("disk", "ssd")])));
    }

    #[test]
    fn machine_ids_full_and_short() {
        let full = "0123456789abcdef0123456789abcdef";
        let other = "fedcba9876543210fedcba9876543210";
        let anywhere = FleetOptions::default();
        assert!(anywhere.machine_id_matches(full));

        let pinned = FleetOptions {
            machine_id: Some(full.to_owned()),
            ..FleetOptions::default()
        };
        assert!(pinned.machine_id_matches(full));
        assert!(pinned.machine_id_matches(&full.to_ascii_uppercase()));
        assert!(!pinned.machine_id_matches(other));
        // A full ID is not a prefix.
        assert!(!pinned.machine_id_matches("01234567"));

        let short = FleetOptions {
            machine_id: Some("01234567".to_owned()),
            ..FleetOptions::default()
        };
        assert!(short.machine_id_matches(full));
        assert!(short.machine_id_matches("01234567"));
        assert!(!short.machine_id_matches(other));
        assert!(!short.machine_id_matches("0123456"));
    }

    #[test]
    fn conflicts_work_both_ways() {
        let web = FleetOptions {
            conflicts: vec!["web@*.service".to_owned(), "cache*".to_owned()],
            ..FleetOptions::default()
        };
        let plain = FleetOptions::default();
        // Either side's patterns suffice.
        assert!(units_conflict("web@1.service", &web, "web@2.service", &web));
        assert!(units_conflict(
            "web@1.service",
            &web,
            "cache.service",
            &plain
        ));
        assert!(units_conflict(
            "cache.service",
            &plain,
            "web@1.service",
            &web
        ));
        assert!(!units_conflict("db.service", &plain, "web@1.service", &web));
        // A unit does not conflict with itself, though its pattern matches it.
        assert!(web.conflicts_with("web@1.service"));
        assert!(!units_conflict(
            "web@1.service",
            &web,
            "web@1.service",
            &web
        ));
    }

    #[test]
    fn replacing_is_one_way() {
        let master = FleetOptions {
            replaces: vec!["shadow*".to_owned()],
            ..FleetOptions::default()
        };
        let shadow = FleetOptions::default();
        assert!(master.replaces("shadow.service"));
        assert!(unit_displaces(
            "master.service",
            &master,
            "shadow.service",
            &shadow
        ));
        assert!(!unit_displaces(
            "shadow.service",
            &shadow,
            "master.service",
            &master
        ));
        // Two units that replace each other displace neither.
        let shadow_too = FleetOptions {
            replaces: vec!["master.service".to_owned()],
            ..FleetOptions::default()
        };
        assert!(!unit_displaces(
            "master.service",
            &master,
            "shadow.service",
            &shadow_too
        ));
        assert!(!unit_displaces(
            "shadow.service",
            &shadow_too,
            "master.service",
            &master
        ));
    }

    #[test]
    fn specifier_scans() {
        assert!(uses_instance("db@%i.service"));
        assert!(!uses_instance("db@%%i.service"));
        assert!(!uses_instance("%n"));
        assert_eq!(
            unsupported_specifiers("%m %H %m %n %% %i %"),
            vec!['m', 'H']
        );
    }

    #[test]
    fn serialises_only_what_is_set() {
        let options = FleetOptions {
            global: true,
            ..FleetOptions::default()
        };
        let json = serde_json::to_string(&options).unwrap();
        assert_eq!(json, r#"{"global":true}"#);
        let back: FleetOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, options);
        assert_eq!(
            serde_json::to_string(&FleetOptions::default()).unwrap(),
            "{}"
        );
        assert!(FleetOptions::default().is_empty());
    }
}
