//! Stored unit files, parsed off the async threads and kept for reuse.
//!
//! Parsing and validating a unit file is CPU work proportional to the
//! file, and a hostile file makes it slow. The API's async threads also
//! answer heartbeats and long polls, so the control plane never parses on
//! them: [`ParsedUnits`] runs every parse on tokio's blocking threads,
//! at most [`ParsedUnits::permits`] at a time, so that a slow request
//! delays only the requests that wait for a parse, never a heartbeat.
//!
//! What listings, machine views and agents' feeds need from a file (its
//! options, whether it is Global, its placement options and resource
//! requests) depends only on its name and contents, so it is kept in a
//! cache keyed by name and content hash and bounded in bytes: a unit is
//! parsed when it is written, and again only when the cache dropped it.
//! Concurrent requests for the same unit wait for one parse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flotilla_proto::fleet::{self, FleetOptions};
use flotilla_proto::resources::Resources;
use flotilla_proto::wire::{self, UnitOption};
use flotilla_proto::{Checked, UnitFile, UnitFileError, UnitName, UnitSpec, value};
use tokio::sync::{OnceCell, Semaphore};

use crate::control::ControlError;

/// The bytes of parsed units the cache holds, roughly (two generations of
/// half this each).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What the control plane reads from a stored unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// The file's options, in file order, as listings show them.
    pub options: Vec<UnitOption>,
    /// `[X-Fleet] Global=`, read as listings read it (also from a file
    /// that no longer validates).
    pub global: bool,
    /// Placement options and resource requests, when the file validates.
    pub checked: Option<(FleetOptions, Resources)>,
    /// The secrets its `[Container] Secret=` names.
    pub secrets: Vec<String>,
}

impl Parsed {
    fn of_spec(spec: &UnitSpec) -> Parsed {
        Parsed {
            options: wire::options_of(&spec.file),
            global: global(&spec.file),
            checked: Some((spec.fleet.clone(), spec.resources)),
            secrets: spec
                .container
                .as_ref()
                .map(|c| c.secrets.names().into_iter().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }

    fn read(name: &UnitName, text: &str) -> Parsed {
        match UnitSpec::read(name, text) {
            (Some(spec), _) => Parsed::of_spec(&spec),
            (None, _) => {
                let (file, _) = UnitFile::parse(text);
                Parsed {
                    options: wire::options_of(&file),
                    global: global(&file),
                    checked: None,
                    secrets: Vec::new(),
                }
            }
        }
    }
}

fn global(file: &UnitFile) -> bool {
    file.last_value(fleet::SECTION, "Global")
        .and_then(|v| value::parse_bool(v.value))
        .unwrap_or(false)
}

/// A unit's name and contents, as the cache knows them: the content hash
/// and the length of the text (so that records written with a wrong hash
/// cannot share an entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: UnitName,
    hash: String,
    len: usize,
}

type Cell = Arc<OnceCell<Arc<Parsed>>>;

/// The cache: two generations, each holding up to half of
/// [`CACHE_BYTES`]; when the young one is full it becomes the old one,
/// and what the old one held and nobody asked for since is dropped.
#[derive(Default)]
struct Generations {
    young: HashMap<Key, (Cell, usize)>,
    young_bytes: usize,
    old: HashMap<Key, (Cell, usize)>,
}

impl Generations {
    fn cell(&mut self, key: &Key, weight: usize) -> Cell {
        if let Some((cell, _)) = self.young.get(key) {
            return Arc::clone(cell);
        }
        let entry = self
            .old
            .remove(key)
            .unwrap_or_else(|| (Arc::new(OnceCell::new()), weight));
        let cell = Arc::clone(&entry.0);
        self.insert(key.clone(), entry);
        cell
    }

    fn insert(&mut self, key: Key, entry: (Cell, usize)) {
        if self.young_bytes + entry.1 > CACHE_BYTES / 2 {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += entry.1;
        if let Some((_, replaced)) = self.young.insert(key, entry) {
            self.young_bytes -= replaced;
        }
    }
}

/// Parses unit files on the blocking threads and keeps the results (see
/// the [module documentation](self)).
pub(crate) struct ParsedUnits {
    permits: Semaphore,
    cache: Mutex<Generations>,
}

impl std::fmt::Debug for ParsedUnits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedUnits")
            .field("permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Default for ParsedUnits {
    fn default() -> Self {
        ParsedUnits::new(ParsedUnits::permits())
    }
}

impl ParsedUnits {
    /// Parses at a time by default: twice the CPUs, so that a few slow
    /// files do not hold up every other parse, while the threads that
    /// answer heartbeats still get their share of the CPUs.
    pub(crate) fn permits() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(2)
            * 2
    }

    pub(crate) fn new(permits: usize) -> ParsedUnits {
        ParsedUnits {
            permits: Semaphore::new(permits.max(1)),
            cache: Mutex::new(Generations::default()),
        }
    }

    /// Parses and validates `text` as unit `name` (what a write must do),
    /// and keeps what listings will want of it.
    pub(crate) async fn check(
        &self,
        name: &UnitName,
        text: &str,
    ) -> Result<Result<Checked, UnitFileError>, ControlError> {
        let checked = {
            let name = name.clone();
            let text = text.to_owned();
            self.blocking(move || UnitSpec::check_named(name.as_str(), &name, &text))
                .await?
        };
        if let Ok(checked) = &checked {
            let key = Key {
                name: name.clone(),
                hash: checked.spec.hash.clone(),
                len: text.len(),
            };
            let cell = lock(&self.cache).cell(&key, weight(text));
            // Already set means another request parsed the same file.
            let _ = cell.set(Arc::new(Parsed::of_spec(&checked.spec)));
        }
        Ok(checked)
    }

    /// What the stored unit `name` with contents `text` (of content hash
    /// `hash`) says, from the cache or parsed now.
    pub(crate) async fn get(
        &self,
        name: &UnitName,
        hash: &str,
        text: &str,
    ) -> Result<Arc<Parsed>, ControlError> {
        let key = Key {
            name: name.clone(),
            hash: hash.to_owned(),
            len: text.len(),
        };
        let cell = lock(&self.cache).cell(&key, weight(text));
        let parsed = cell
            .get_or_try_init(|| {
                let name = name.clone();
                let text = text.to_owned();
                async move {
                    self.blocking(move || Arc::new(Parsed::read(&name, &text)))
                        .await
                }
            })
            .await?;
        Ok(Arc::clone(parsed))
    }

    /// Runs `work` on a blocking thread once a permit is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ControlError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ControlError::Internal(format!("the parse pool is closed: {e}")))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ControlError::Internal(format!("parsing a unit file failed: {e}")))
    }
}

/// The bytes an entry is taken to hold: its options repeat the text, with
/// a few hundred bytes of bookkeeping.
fn weight(text: &str) -> usize {
    2 * text.len() + 512
}

/// Locks the cache; a panic while it was held left maps of cells behind,
/// which are as good as before it.
fn lock(cache: &Mutex<Generations>) -> MutexGuard<'_, Generations> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    fn name(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_checked_unit_is_not_parsed_again() {
        let units = ParsedUnits::new(2);
        let text = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n";
        let checked = units
            .check(&name("g.service"), text)
            .await
            .unwrap()
            .unwrap();
        let hash = checked.spec.hash.clone();
        let key = Key {
            name: name("g.service"),
            hash: hash.clone(),
            len: text.len(),
        };
        let cell = lock(&units.cache).cell(&key, 0);
        assert!(cell.initialized(), "the check did not fill the cache");
        let parsed = units.get(&name("g.service"), &hash, text).await.unwrap();
        assert!(parsed.global);
        assert_eq!(parsed.options.len(), 2);
        assert!(parsed.checked.as_ref().unwrap().0.global);
    }

    #[tokio::test]
    async fn an_invalid_stored_file_still_lists() {
        let units = ParsedUnits::new(2);
        let text = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=yes\nMachineOf=a.service\n";
        let parsed = units.get(&name("bad.service"), "h", text).await.unwrap();
        assert!(parsed.global);
        assert_eq!(parsed.options.len(), 3);
        assert_eq!(parsed.checked, None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut g = Generations::default();
        let big = CACHE_BYTES / 8;
        for i in 0..100 {
            let key = Key {
                name: name("a.service"),
                hash: i.to_string(),
                len: 0,
            };
            g.cell(&key, big);
            assert!(g.young_bytes <= CACHE_BYTES / 2);
            let held: usize = g.young.values().chain(g.old.values()).map(|e| e.1).sum();
            assert!(held <= CACHE_BYTES, "{held}");
        }
        // What is asked for again moves to the young generation.
        let key = |i: usize| Key {
            name: name("a.service"),
            hash: i.to_string(),
            len: 0,
        };
        let in_old = g.old.keys().next().cloned().unwrap();
        g.cell(&in_old, big);
        assert!(g.young.contains_key(&in_old));
        assert!(!g.young.contains_key(&key(0)) && !g.old.contains_key(&key(0)));
    }
}
