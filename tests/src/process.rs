//! Programs the test kit runs to set things up (`openssl`, `ssh-keygen`,
//! `htpasswd`) and servers it starts in the background with their output
//! in a log file.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::HostError;

/// Runs `program ARGS` in `dir`; its standard output, or an error with
/// its standard error.
pub(crate) fn run(program: &str, args: &[&str], dir: &Path) -> Result<String, HostError> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(HostError::Setup(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `program ARGS` in `dir`, its standard error in `dir/LOG`.
pub(crate) fn spawn_logged<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    dir: &Path,
    log: &str,
) -> Result<Child, HostError> {
    let log_file = std::fs::File::create(dir.join(log))
        .map_err(|e| HostError::Setup(format!("cannot create {log}: {e}")))?;
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|source| HostError::Spawn {
            program: program.to_owned(),
            source,
        })
}
