//! CoreOS fleet 1.0's `fleetctl` and `fleetd`, built from the source kept
//! beside the project (`../shared/peers`, or `$FLOTILLA_FLEET_PEERS`) with
//! Debian's `golang-go`, once per build tree, for the compatibility tests.
//!
//! Nothing is downloaded: fleet's tarball vendors its dependencies. The
//! binaries land in `target/fleet-peers/` (or `$FLOTILLA_FLEET_BIN`); a
//! lock file keeps concurrent tests from building twice.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::HostError;

/// The two programs of fleet 1.0.
#[derive(Debug, Clone)]
pub struct FleetBinaries {
    pub fleetctl: PathBuf,
    pub fleetd: PathBuf,
}

/// Set (by `scripts/test`, loudly) only on a machine that has no copy of
/// fleet's source: the tests that need fleet then say they were skipped.
pub const SKIP_VAR: &str = "FLOTILLA_SKIP_FLEET_PEERS";

/// fleet's binaries, built on first use. `None` only when [`SKIP_VAR`] is
/// set; a missing Go or a failed build is an error.
pub fn binaries() -> Result<Option<FleetBinaries>, HostError> {
    if std::env::var_os(SKIP_VAR).is_some() {
        eprintln!("SKIPPED: {SKIP_VAR} is set: fleet's source is not on this machine");
        return Ok(None);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let out = std::env::var_os("FLOTILLA_FLEET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/fleet-peers"));
    let bins = FleetBinaries {
        fleetctl: out.join("fleetctl"),
        fleetd: out.join("fleetd"),
    };
    std::fs::create_dir_all(&out).map_err(|e| setup(&out, e))?;
    let lock_path = out.join(".lock");
    let lock = File::create(&lock_path).map_err(|e| setup(&lock_path, e))?;
    lock.lock().map_err(|e| setup(&lock_path, e))?;
    if bins.fleetctl.is_file() && bins.fleetd.is_file() {
        return Ok(Some(bins));
    }
    let peers = std::env::var_os("FLOTILLA_FLEET_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/peers"));
    let script = peers.join("build-fleet");
    if !script.is_file() {
        return Err(HostError::Setup(format!(
            "fleet's source is not at {} (set FLOTILLA_FLEET_PEERS to the directory holding build-fleet)",
            peers.display()
        )));
    }
    let output = Command::new(&script)
        .arg(&out)
        .output()
        .map_err(|source| HostError::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(HostError::Setup(format!(
            "building fleet with {} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(Some(bins))
}

fn setup(path: &Path, e: std::io::Error) -> HostError {
    HostError::Setup(format!("{}: {e}", path.display()))
}
