//! The unit files flotilla writes, in the runtime unit directory
//! (`/run/systemd/system`), and how it recognises its own.
//!
//! Every file the agent writes starts with a marker line naming the unit's
//! content hash (the hash the cluster gives the unit, see
//! `UnitFile::content_hash`):
//!
//! ```text
//! # flotilla: managed unit; content hash 3f2a...
//! # Written by the flotilla agent: changes here are overwritten.
//! [Unit]
//! ...
//! ```
//!
//! A file without that first line was not written by flotilla: the agent
//! never overwrites or removes it. After a restart the agent reads the
//! markers to learn what it wrote, and `.flotilla-started` beside them to
//! learn which content each unit it started runs: a unit whose new file was
//! written just before the agent crashed still runs the old content.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The start of the first line of every unit file flotilla writes; the
/// content hash follows.
pub const MARKER_PREFIX: &str = "# flotilla: managed unit; content hash ";

/// The second line: for a person who finds the file.
/// The record of the hash each unit was last started with: a leading dot
/// and no unit suffix, so systemd ignores it.
const STARTED_FILE: &str = ".flotilla-started";

const NOTE: &str = "# Written by the flotilla agent: changes here are overwritten.";

/// Why the unit directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UnitDirError {
    #[error("cannot read unit directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read unit file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write unit file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove unit file {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file flotilla wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFile {
    /// The content hash in its marker.
    pub hash: String,
    /// The whole file, marker included.
    pub content: String,
}

/// What sits at a unit's path in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDisk {
    Absent,
    Managed(ManagedFile),
    /// A file flotilla did not write.
    Foreign,
}

/// The whole file flotilla writes for a unit: the marker, a note, and
/// `body` (the unit as systemd should read it).
pub fn managed_content(hash: &str, body: &str) -> String {
    let mut out = format!("{MARKER_PREFIX}{hash}\n{NOTE}\n{body}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The content hash of a file flotilla wrote, or `None` for any other
/// file.
pub fn marker_hash(content: &str) -> Option<&str> {
    let first = content.lines().next()?;
    let hash = first.strip_prefix(MARKER_PREFIX)?.trim();
    (!hash.is_empty() && !hash.contains(char::is_whitespace)).then_some(hash)
}

/// Whether the file at `path` starts with the marker, reading no more than
/// the marker's length.
fn starts_with_marker(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(MARKER_PREFIX.len());
    match file.take(MARKER_PREFIX.len() as u64).read_to_end(&mut head) {
        Ok(_) => head == MARKER_PREFIX.as_bytes(),
        Err(_) => false,
    }
}

/// The directory the agent writes unit files to.
#[derive(Debug, Clone)]
pub struct UnitDir {
    path: PathBuf,
}

impl UnitDir {
    pub fn new(path: impl Into<PathBuf>) -> UnitDir {
        UnitDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the file of `unit` is.
    pub fn file(&self, unit: &str) -> PathBuf {
        self.path.join(unit)
    }

    /// What is at the path of `unit`.
    pub fn read(&self, unit: &str) -> Result<OnDisk, UnitDirError> {
        let path = self.file(unit);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                Ok(match marker_hash(&text) {
                    Some(hash) => OnDisk::Managed(ManagedFile {
                        hash: hash.to_owned(),
                        content: text.into_owned(),
                    }),
                    None => OnDisk::Foreign,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OnDisk::Absent),
            // A directory or something unreadable at that path is not ours.
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Ok(OnDisk::Foreign),
            Err(source) => Err(UnitDirError::Read { path, source }),
        }
    }

    /// Every file in the directory that flotilla wrote, by unit name. A
    /// missing directory has none.
    pub fn managed(&self) -> Result<BTreeMap<String, ManagedFile>, UnitDirError> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(UnitDirError::ReadDir {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut out = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| UnitDirError::ReadDir {
                path: self.path.clone(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Temporary files of an interrupted write, and anything that
            // is not a plain file, are not units.
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            // Only files that start with the marker are read whole.
            if !starts_with_marker(&entry.path()) {
                continue;
            }
            if let OnDisk::Managed(file) = self.read(&name)? {
                out.insert(name, file);
            }
        }
        Ok(out)
    }

    /// Writes the file of `unit` whole: to a temporary file beside it, then
    /// renamed over it, so systemd never reads half a file.
    pub fn write(&self, unit: &str, content: &str) -> Result<(), UnitDirError> {
        let path = self.file(unit);
        let err = |source| UnitDirError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.path).map_err(err)?;
        // A leading dot and no unit suffix: systemd ignores it.
        let temp = self.path.join(format!(".{unit}.flotilla-tmp"));
        let result = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(content.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map_err(err)
    }

    /// The hash each unit was last started with, as [`UnitDir::save_started`]
    /// left it: empty when there is no record (or it cannot be read, which
    /// is logged).
    pub fn load_started(&self) -> HashMap<String, String> {
        let path = self.path.join(STARTED_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(unit, hash)| (unit.to_owned(), hash.to_owned()))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                HashMap::new()
            }
        }
    }

    /// Records the hash each unit was last started with, whole (as
    /// [`UnitDir::write`] writes), in a file beside the units that systemd
    /// ignores and that lives as long as they do.
    pub fn save_started(&self, started: &HashMap<String, String>) -> Result<(), UnitDirError> {
        let mut lines: Vec<String> = started.iter().map(|(u, h)| format!("{u} {h}\n")).collect();
        lines.sort();
        self.write(STARTED_FILE, &lines.concat())
    }

    /// Removes the file of `unit`, which must be one flotilla wrote (see
    /// [`UnitDir::read`]); a file already gone is fine.
    pub fn remove(&self, unit: &str) -> Result<(), UnitDirError> {
        let path = self.file(unit);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(UnitDirError::Remove { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        let content = managed_content("abc123", "[Service]\nExecStart=/bin/true");
        assert!(content.starts_with("# flotilla: managed unit; content hash abc123\n"));
        assert!(content.ends_with("ExecStart=/bin/true\n"));
        assert_eq!(marker_hash(&content), Some("abc123"));
        assert_eq!(marker_hash("[Service]\nExecStart=/bin/true\n"), None);
        assert_eq!(
            marker_hash("# flotilla: managed unit; content hash \n"),
            None
        );
        assert_eq!(marker_hash(""), None);
        // The marker must be the first line.
        assert_eq!(marker_hash(&format!("\n{content}")), None);
    }

    #[test]
    fn reads_writes_and_recognises_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let units = UnitDir::new(dir.path().join("system"));
        assert!(units.managed().unwrap().is_empty());
        assert_eq!(units.read("a.service").unwrap(), OnDisk::Absent);
        let content = managed_content("h1", "[Service]\nExecStart=/bin/true\n");
        units.write("a.service", &content).unwrap();
        std::fs::write(
            units.file("host.service"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        assert_eq!(units.read("host.service").unwrap(), OnDisk::Foreign);
        let managed = units.managed().unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed["a.service"].hash, "h1");
        assert_eq!(managed["a.service"].content, content);
        units.remove("a.service").unwrap();
        units.remove("a.service").unwrap();
        assert!(units.managed().unwrap().is_empty());
        // Nothing else was left behind.
        let left: Vec<_> = std::fs::read_dir(units.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["host.service"]);
    }
}
