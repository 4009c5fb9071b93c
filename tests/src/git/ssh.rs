//! The repository over SSH with a key: Debian's `sshd` in the foreground
//! (`sshd -D -e -f CONF`, run as root) with a configuration of its own,
//! a fresh ed25519 host key and one authorized key, no passwords; and
//! [`ssh_keypair`] to make client keys.
//!
//! The login user is root (tests run as root), and git runs
//! `git-upload-pack '/abs/path/repo.git'` through root's shell.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};

use super::wait_listening;
use crate::HostError;
use crate::port::free_port;
use crate::process::{run, spawn_logged};

/// Where Debian installs sshd.
const SSHD: &str = "/usr/sbin/sshd";

/// sshd's privilege-separation directory, which it wants to exist.
const PRIVSEP_DIR: &str = "/run/sshd";

/// An ed25519 key pair made by [`ssh_keypair`].
#[derive(Debug, Clone)]
pub struct SshKey {
    /// The OpenSSH private key file's text
    /// (`-----BEGIN OPENSSH PRIVATE KEY-----` ...).
    pub private_pem: String,
    /// The public key as one line, `ssh-ed25519 AAAA... COMMENT`, as an
    /// `authorized_keys` file holds it (without the newline).
    pub public_line: String,
    /// The private key's file, mode 0600 as `ssh -i` wants it.
    pub private_key_file: PathBuf,
}

/// Makes a fresh ed25519 key pair without a passphrase with
/// `ssh-keygen`, its files in `dir` (under a new name each call).
pub fn ssh_keypair(dir: &Path) -> Result<SshKey, HostError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "id_ed25519-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let file = dir.join(&name);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(dir.join(format!("{name}.pub")));
    keygen(dir, &name, "flotilla-test")?;
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|e| HostError::Setup(format!("cannot read {}: {e}", path.display())))
    };
    Ok(SshKey {
        private_pem: read(&file)?,
        public_line: read(&dir.join(format!("{name}.pub")))?.trim().to_owned(),
        private_key_file: file,
    })
}

/// `ssh-keygen -t ed25519` into `dir/name` and `dir/name.pub`.
fn keygen(dir: &Path, name: &str, comment: &str) -> Result<(), HostError> {
    run(
        "ssh-keygen",
        &["-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", name],
        dir,
    )
    .map(|_| ())
}

/// A running sshd; killed on drop (its files stay with the
/// [`GitServer`](super::GitServer)'s directory).
pub(super) struct Ssh {
    child: Child,
    port: u16,
    known_hosts: String,
}

impl Ssh {
    /// Configures and starts sshd with its files in `dir` (made here),
    /// letting in `authorized_key`, and waits until it accepts
    /// connections.
    pub(super) fn start(dir: &Path, authorized_key: &str) -> Result<Ssh, HostError> {
        let authorized_key = authorized_key.trim();
        if authorized_key.is_empty() || authorized_key.contains('\n') {
            return Err(HostError::Setup(format!(
                "the authorized key must be one OpenSSH public key line, not {authorized_key:?}"
            )));
        }
        if !Path::new(SSHD).is_file() {
            return Err(HostError::Setup(format!(
                "{SSHD} not found: install Debian's openssh-server (scripts/test does)"
            )));
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| HostError::Setup(format!("cannot make {}: {e}", dir.display())))?;
        std::fs::create_dir_all(PRIVSEP_DIR)
            .map_err(|e| HostError::Setup(format!("cannot make {PRIVSEP_DIR}: {e}")))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| HostError::Setup(format!("cannot write {name}: {e}")))
        };
        keygen(dir, "host_key", "flotilla-test-host")?;
        write("authorized_keys", &format!("{authorized_key}\n"))?;
        let port = free_port();
        let host_key = std::fs::read_to_string(dir.join("host_key.pub"))
            .map_err(|e| HostError::Setup(format!("cannot read host_key.pub: {e}")))?;
        // `ssh-ed25519 AAAA... COMMENT`: the type and the key.
        let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        let known_hosts = format!("[127.0.0.1]:{port} {}\n", key.join(" "));
        let path = |name: &str| dir.join(name).display().to_string();
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             UsePAM no\n\
             StrictModes no\n\
             PidFile {pid}\n",
            host_key = path("host_key"),
            authorized_keys = path("authorized_keys"),
            pid = path("sshd.pid"),
        );
        write("sshd_config", &config)?;
        let config = dir.join("sshd_config");
        let child = spawn_logged(
            SSHD,
            &[
                OsStr::new("-D"),
                OsStr::new("-e"),
                OsStr::new("-f"),
                config.as_os_str(),
            ],
            dir,
            "sshd.log",
        )?;
        // From here on, a failure kills it (Drop).
        let mut ssh = Ssh {
            child,
            port,
            known_hosts,
        };
        wait_listening(&mut ssh.child, port, "sshd", Some(&dir.join("sshd.log")))?;
        Ok(ssh)
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn known_hosts(&self) -> &str {
        &self.known_hosts
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
