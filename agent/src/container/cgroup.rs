//! The unit's cgroup (v2) as the shim sees and arranges it.
//!
//! A container unit has `Delegate=yes`, so the shim owns the subtree under
//! the unit's cgroup `/system.slice/NAME`:
//!
//! ```text
//! /system.slice/NAME            the unit (systemd's), no process of its own
//! ├── shim                      the shim ([`SHIM_LEAF`])
//! ├── <container id>            the container, with Docker's cgroupfs driver
//! └── payload                   the container, with the systemd driver ([`PAYLOAD_LEAF`])
//! ```
//!
//! The shim moves itself into `shim` first: cgroup v2 lets only leaves hold
//! processes once controllers are enabled below a cgroup, and the
//! container's cgroup is a sibling of the shim's, not a child.
//!
//! [`Cgroups`] reads `/proc` and writes `/sys/fs/cgroup`; both roots can be
//! moved for tests.

use std::path::{Path, PathBuf};

/// The leaf the shim moves itself into.
pub const SHIM_LEAF: &str = "shim";
/// The leaf the container's processes are attached to under Docker's
/// systemd driver.
pub const PAYLOAD_LEAF: &str = "payload";

/// Why the shim could not find or arrange its cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{pid} is not in a cgroup v2 hierarchy ({path} has no 0:: line): flotilla's container units need the unified cgroup hierarchy"
    )]
    NotUnified { pid: String, path: PathBuf },
    #[error(
        "the shim runs in the cgroup {cgroup}, not in the one of {unit}: it must run as the ExecStart= of its unit"
    )]
    NotInUnit { unit: String, cgroup: String },
}

/// Where to read processes' cgroups and where the cgroup tree is mounted.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// `/proc`.
    pub proc_root: PathBuf,
    /// `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups {
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

impl Cgroups {
    /// The cgroup v2 path of a process (`self` or a PID), such as
    /// `/system.slice/web.service`.
    pub fn of(&self, pid: &str) -> Result<String, CgroupError> {
        let path = self.proc_root.join(pid).join("cgroup");
        let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
            path: path.clone(),
            source,
        })?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| p.trim().to_owned())
            .ok_or(CgroupError::NotUnified {
                pid: pid.to_owned(),
                path,
            })
    }

    /// The cgroup of `unit` as seen from a process in it or in one of its
    /// sub-cgroups (`shim`, `.control`, ...): the path up to the component
    /// named after the unit.
    pub fn unit_path(cgroup: &str, unit: &str) -> Result<String, CgroupError> {
        let mut path = String::new();
        for component in cgroup.split('/').filter(|c| !c.is_empty()) {
            path.push('/');
            path.push_str(component);
            if component == unit {
                return Ok(path);
            }
        }
        Err(CgroupError::NotInUnit {
            unit: unit.to_owned(),
            cgroup: cgroup.to_owned(),
        })
    }

    /// The slice a unit's cgroup is in (its parent, as systemd names it),
    /// for Docker's systemd driver; `system.slice` when it is not in one.
    pub fn slice_of(unit_path: &str) -> String {
        let parent = unit_path.rsplit_once('/').map_or("", |(p, _)| p);
        match parent.rsplit('/').next() {
            Some(slice) if slice.ends_with(".slice") => slice.to_owned(),
            _ => "system.slice".to_owned(),
        }
    }

    /// The directory of a cgroup path.
    pub fn dir(&self, path: &str) -> PathBuf {
        self.cgroup_root.join(path.trim_start_matches('/'))
    }

    /// Creates the cgroup `path` if it does not exist.
    pub fn create(&self, path: &str) -> Result<(), CgroupError> {
        let dir = self.dir(path);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(CgroupError::Write { path: dir, source }),
        }
    }

    /// Moves process `pid` (with all its threads) into the cgroup `path`,
    /// creating it first.
    pub fn enter(&self, path: &str, pid: u32) -> Result<(), CgroupError> {
        self.create(path)?;
        let procs = self.dir(path).join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|source| CgroupError::Write {
            path: procs,
            source,
        })
    }

    /// The processes in the cgroup `path`; none if it does not exist, or
    /// is being removed (a cgroup that systemd removes once it is empty
    /// answers a read with ENODEV until its directory is gone).
    pub fn procs(&self, path: &str) -> Result<Vec<u32>, CgroupError> {
        let file = self.dir(path).join("cgroup.procs");
        match std::fs::read_to_string(&file) {
            Ok(text) => Ok(text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) => {
                Ok(Vec::new())
            }
            Err(source) => Err(CgroupError::Read { path: file, source }),
        }
    }

    /// Whether process `pid` exists.
    pub fn alive(&self, pid: u32) -> bool {
        Path::new(&self.proc_root).join(pid.to_string()).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_cgroup_is_found_from_any_of_its_leaves() {
        for own in [
            "/system.slice/web.service",
            "/system.slice/web.service/shim",
            "/system.slice/web.service/.control",
        ] {
            assert_eq!(
                Cgroups::unit_path(own, "web.service").unwrap(),
                "/system.slice/web.service"
            );
        }
        assert!(Cgroups::unit_path("/user.slice/session-1.scope", "web.service").is_err());
        assert_eq!(
            Cgroups::unit_path("/a.slice/a-b.slice/web@1.service", "web@1.service").unwrap(),
            "/a.slice/a-b.slice/web@1.service"
        );
    }

    #[test]
    fn the_slice_is_the_units_parent() {
        assert_eq!(
            Cgroups::slice_of("/system.slice/web.service"),
            "system.slice"
        );
        assert_eq!(
            Cgroups::slice_of("/a.slice/a-b.slice/web.service"),
            "a-b.slice"
        );
        assert_eq!(Cgroups::slice_of("/web.service"), "system.slice");
    }

    #[test]
    fn processes_are_read_and_moved_through_the_files() {
        let root = tempfile::tempdir().unwrap();
        let cg = Cgroups {
            proc_root: root.path().join("proc"),
            cgroup_root: root.path().join("cgroup"),
        };
        std::fs::create_dir_all(cg.proc_root.join("self")).unwrap();
        std::fs::write(
            cg.proc_root.join("self/cgroup"),
            "1:name=systemd:/\n0::/system.slice/web.service\n",
        )
        .unwrap();
        assert_eq!(cg.of("self").unwrap(), "/system.slice/web.service");
        std::fs::create_dir_all(cg.dir("/system.slice/web.service")).unwrap();
        assert_eq!(
            cg.procs("/system.slice/web.service/shim").unwrap(),
            Vec::<u32>::new()
        );
        cg.enter("/system.slice/web.service/shim", 42).unwrap();
        assert_eq!(cg.procs("/system.slice/web.service/shim").unwrap(), [42]);
        std::fs::write(cg.proc_root.join("self/cgroup"), "1:cpu:/\n").unwrap();
        assert!(matches!(cg.of("self"), Err(CgroupError::NotUnified { .. })));
    }
}
