//! Reading the `[X-Fleet]` section of a unit file into [`FleetOptions`]:
//! key spellings, value syntax, specifiers, and the combinations fleet
//! rejects.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use super::{
    FleetOptions, MACHINE_ID_LEN, MAX_PATTERN_LEN, MAX_PEER_PATTERN_PAIRS, MAX_VALUES, SECTION,
    SHORT_MACHINE_ID_LEN, glob_match, validate_glob,
};
use crate::diagnostic::Diagnostics;
use crate::name::{MAX_NAME_LEN, UnitName, UnitType};
use crate::rollout::RolloutOptions;
use crate::suggest;
use crate::unit_file::{UnitFile, ValueRef};
use crate::value::{parse_bool, split_words_keeping_backslashes};
use crate::work;

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
}

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
    rollout: RolloutOptions,
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
            rollout: RolloutOptions::default(),
        }
    }

    fn entry(&mut self, v: ValueRef<'a>, diags: &mut Diagnostics) {
        work::charge(v.key.len() + v.value.len() + 1);
        if super::rollout_keys::entry(&mut self.rollout, v, diags) {
            return;
        }
        let Some(key) = lookup(v.key) else {
            let message = if v.key == BOOT_ID_KEY {
                "not supported, because a boot ID changes every time the machine boots and so \
                 cannot name a machine; use MachineID with the ID in the machine's /etc/machine-id"
                    .to_owned()
            } else {
                suggest::unknown_key_message(
                    SECTION,
                    v.key,
                    KNOWN_KEYS.into_iter().chain(super::rollout_keys::KEYS),
                )
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
            rollout: self.rollout,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
