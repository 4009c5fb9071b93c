//! CoreOS fleet 1.0's `fleetctl` and `fleetd`, built from the source kept
//! beside the project (`../shared/peers`, or `$FLOTILLA_FLEET_PEERS`) with
//! Debian's `golang-go`, once per build tree, for the compatibility tests.
//!
//! Nothing is downloaded: fleet's tarball vendors its dependencies. The
//! binaries land in `target/fleet-peers/` (or `$FLOTILLA_FLEET_BIN`); a
//! lock file keeps concurrent tests from building twice. fleet's Python
//! client comes from PyPI into a virtual environment beside them.

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
    let workspace = workspace();
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
    let peers = peers_dir();
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

/// The workspace's root (this crate is `tests/` in it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where fleet's source is: `$FLOTILLA_FLEET_PEERS`, or `../shared/peers`
/// beside the workspace.
fn peers_dir() -> PathBuf {
    std::env::var_os("FLOTILLA_FLEET_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/peers"))
}

fn setup(path: &Path, e: std::io::Error) -> HostError {
    HostError::Setup(format!("{}: {e}", path.display()))
}

/// The version of fleet's Python client the tests run.
pub const PYTHON_CLIENT: &str = "fleet==0.1.3";

/// A Python interpreter with fleet's Python client installed (from PyPI,
/// into a virtual environment in `target/fleet-python/`, once per build
/// tree): needs `python3` with its `venv` module and PyPI.
pub fn python_client() -> Result<PathBuf, HostError> {
    let workspace = workspace();
    let venv = workspace.join("target/fleet-python");
    std::fs::create_dir_all(&venv).map_err(|e| setup(&venv, e))?;
    let lock_path = workspace.join("target/fleet-python.lock");
    let lock = File::create(&lock_path).map_err(|e| setup(&lock_path, e))?;
    lock.lock().map_err(|e| setup(&lock_path, e))?;
    let python = venv.join("bin/python");
    let done = venv.join(".installed");
    if python.is_file() && std::fs::read_to_string(&done).is_ok_and(|v| v == PYTHON_CLIENT) {
        return Ok(python);
    }
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PYTHON_CLIENT,
    ]))?;
    std::fs::write(&done, PYTHON_CLIENT).map_err(|e| setup(&done, e))?;
    Ok(python)
}

fn run(command: &mut Command) -> Result<(), HostError> {
    let what = format!("{command:?}");
    let output = command.output().map_err(|source| HostError::Spawn {
        program: what.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HostError::Setup(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// A Go program that reads unit files with fleet's own reader (the
/// go-systemd `unit` package fleet 1.0 vendors): given a JSON array of
/// texts on stdin, it prints a JSON array with, for each, `{"options":
/// [{"section", "name", "value"}], "serialized", "hash"}` or `{"error"}`.
const READER_SOURCE: &str = r#"package main

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"strings"

	"github.com/coreos/go-systemd/unit"
)

type option struct {
	Section string `json:"section"`
	Name    string `json:"name"`
	Value   string `json:"value"`
}

type result struct {
	Options    []option `json:"options"`
	Serialized string   `json:"serialized"`
	Hash       string   `json:"hash"`
	Error      string   `json:"error,omitempty"`
}

func main() {
	in, err := ioutil.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	var texts []string
	if err := json.Unmarshal(in, &texts); err != nil {
		panic(err)
	}
	out := make([]result, 0, len(texts))
	for _, t := range texts {
		opts, err := unit.Deserialize(strings.NewReader(t))
		if err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		r := result{Options: []option{}}
		for _, o := range opts {
			r.Options = append(r.Options, option{o.Section, o.Name, o.Value})
		}
		b, _ := ioutil.ReadAll(unit.Serialize(opts))
		r.Serialized = string(b)
		r.Hash = fmt.Sprintf("%x", sha1.Sum(b))
		out = append(out, r)
	}
	enc, _ := json.Marshal(out)
	os.Stdout.Write(enc)
}
"#;

/// fleet's unit-file reader as a program (see `READER_SOURCE`), built
/// once per build tree from fleet's source. `None` only when [`SKIP_VAR`]
/// is set.
pub fn unit_reader() -> Result<Option<PathBuf>, HostError> {
    let Some(bins) = binaries()? else {
        return Ok(None);
    };
    let out = bins
        .fleetctl
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let reader = out.join("fleet-unit-reader");
    let lock_path = out.join(".reader-lock");
    let lock = File::create(&lock_path).map_err(|e| setup(&lock_path, e))?;
    lock.lock().map_err(|e| setup(&lock_path, e))?;
    if reader.is_file() {
        return Ok(Some(reader));
    }
    let tarball = peers_dir().join("fleet-4522498.tar.gz");
    let gopath = out.join("reader-gopath");
    let _ = std::fs::remove_dir_all(&gopath);
    let src = gopath.join("src/github.com/coreos");
    std::fs::create_dir_all(&src).map_err(|e| setup(&src, e))?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-xzf")
        .arg(&tarball))?;
    let main_dir = src.join("fleet/unitreader");
    std::fs::create_dir_all(&main_dir).map_err(|e| setup(&main_dir, e))?;
    std::fs::write(main_dir.join("main.go"), READER_SOURCE).map_err(|e| setup(&main_dir, e))?;
    let built = run(Command::new("go")
        .args(["build", "-o"])
        .arg(&reader)
        .arg("./unitreader")
        .current_dir(src.join("fleet"))
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOCACHE", gopath.join("cache"))
        .env("CGO_ENABLED", "0"));
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&gopath)
        .status();
    let _ = std::fs::remove_dir_all(&gopath);
    built.map(|()| Some(reader))
}
