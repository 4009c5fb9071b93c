//! A real git repository served by `git daemon` on a free loopback port,
//! with a work tree that commits and pushes to it: what git sources
//! follow in tests. The same repository can also be served over HTTPS
//! with basic auth ([`GitServer::serve_https`], `lighttpd` running
//! `git http-backend`) and over SSH with a key ([`GitServer::serve_ssh`],
//! `sshd`). Everything ends, and the directory goes, on drop.
//!
//! Needs `git`; for HTTPS `lighttpd`, `lighttpd-mod-openssl` and
//! `openssl`; for SSH `openssh-server` and `openssh-client`
//! (`ssh-keygen`), and root (the SSH login user is root).
//! `scripts/test` installs them.
//!
//! A git client in a test must trust the server's CA through
//! `http.sslCAInfo` only: git prefers the `GIT_SSL_CAINFO` environment
//! variable (and curl `CURL_CA_BUNDLE`, `SSL_CERT_FILE`) over it, so a
//! test removes those from the client's environment.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HostError;
use crate::port::free_port;

mod https;
mod ssh;

pub use ssh::{SshKey, ssh_keypair};

/// How long a server started here may take to accept connections.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// `git daemon` serving one bare repository, `repo.git`, and a clone of it
/// to commit in; on demand also a web server and an SSH server for the
/// same repository.
pub struct GitServer {
    dir: PathBuf,
    port: u16,
    daemon: Child,
    https: Option<https::Https>,
    ssh: Option<ssh::Ssh>,
}

/// Waits until `child`, a server on `port`, accepts connections; fails
/// with its log (`log`, when it has one) when it exits first or the
/// deadline passes.
fn wait_listening(
    child: &mut Child,
    port: u16,
    what: &str,
    log: Option<&Path>,
) -> Result<(), HostError> {
    let log_text = || {
        log.and_then(|log| std::fs::read_to_string(log).ok())
            .map(|text| format!(": {}", text.trim()))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + LISTEN_DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HostError::Setup(format!(
                "{what} exited ({status}){}",
                log_text()
            )));
        }
        if Instant::now() > deadline {
            return Err(HostError::Setup(format!(
                "{what} did not listen on 127.0.0.1:{port} within {}s{}",
                LISTEN_DEADLINE.as_secs(),
                log_text()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String, HostError> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .map_err(|e| HostError::Setup(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(HostError::Setup(format!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl GitServer {
    /// Makes an empty repository (branch `main`) and serves it over
    /// `git://` (pushes allowed), waiting until the daemon accepts.
    pub fn start(name: &str) -> Result<GitServer, HostError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("flotilla-git-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work"))
            .map_err(|e| HostError::Setup(format!("cannot make {}: {e}", dir.display())))?;
        git(&dir, &["init", "-q", "--bare", "-b", "main", "repo.git"])?;
        git(&dir.join("work"), &["init", "-q", "-b", "main"])?;
        let port = free_port();
        // `git-daemon` itself, not `git daemon`: git would run it as a
        // child of its own, which killing git leaves running.
        let exec_path = git(&dir, &["--exec-path"])?;
        let daemon = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", dir.display()),
                &dir.display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HostError::Setup(format!("cannot start git daemon: {e}")))?;
        let mut server = GitServer {
            dir,
            port,
            daemon,
            https: None,
            ssh: None,
        };
        wait_listening(&mut server.daemon, port, "git daemon", None)?;
        let url = server.url();
        git(&server.dir.join("work"), &["remote", "add", "origin", &url])?;
        Ok(server)
    }

    /// The repository's `git://` address.
    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/repo.git", self.port)
    }

    /// The repository's `file://` address.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.join("repo.git").display())
    }

    /// Serves the repository over HTTPS too, with git's smart HTTP
    /// protocol (fetches and pushes): `lighttpd` runs `git http-backend`
    /// on 127.0.0.1 and a free port, with a certificate for 127.0.0.1
    /// from a CA made for it ([`GitServer::https_ca_pem`]), and answers
    /// 401 unless a request carries basic auth with exactly `user` and
    /// `password`. Waits until it accepts connections; a second call
    /// replaces the first server.
    pub fn serve_https(&mut self, user: &str, password: &str) -> Result<(), HostError> {
        self.https = None;
        self.https = Some(https::Https::start(
            &self.dir.join("https"),
            &self.dir,
            user,
            password,
        )?);
        Ok(())
    }

    /// `https://127.0.0.1:PORT/repo.git`, once served over HTTPS.
    pub fn https_url(&self) -> Option<String> {
        self.https
            .as_ref()
            .map(|h| format!("https://127.0.0.1:{}/repo.git", h.port()))
    }

    /// The PEM certificate of the CA that signed the HTTPS server's
    /// certificate, once served over HTTPS.
    pub fn https_ca_pem(&self) -> Option<String> {
        self.https.as_ref().map(|h| h.ca_pem().to_owned())
    }

    /// Serves the repository over SSH too: `sshd` on 127.0.0.1 and a free
    /// port, with a fresh ed25519 host key ([`GitServer::ssh_known_hosts`]),
    /// letting in root with the key `authorized_key` (one OpenSSH public
    /// key line, as [`SshKey::public_line`]) and no other key or password.
    /// Git runs `git-upload-pack` (or `git-receive-pack`) through root's
    /// shell. Needs root. Waits until it accepts connections; a second
    /// call replaces the first server.
    pub fn serve_ssh(&mut self, authorized_key: &str) -> Result<(), HostError> {
        self.ssh = None;
        self.ssh = Some(ssh::Ssh::start(&self.dir.join("ssh"), authorized_key)?);
        Ok(())
    }

    /// `ssh://root@127.0.0.1:PORT/ABS/PATH/repo.git`, once served over SSH.
    pub fn ssh_url(&self) -> Option<String> {
        self.ssh.as_ref().map(|s| {
            format!(
                "ssh://root@127.0.0.1:{}{}",
                s.port(),
                self.dir.join("repo.git").display()
            )
        })
    }

    /// The known_hosts line of the SSH server's host key,
    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...` (with a newline), as
    /// OpenSSH's `UserKnownHostsFile` takes it; once served over SSH.
    pub fn ssh_known_hosts(&self) -> Option<String> {
        self.ssh.as_ref().map(|s| s.known_hosts().to_owned())
    }

    /// Writes (`Some`) or removes (`None`) files of the work tree, commits
    /// them on `main` and pushes over `git://`; returns the commit (hex).
    pub fn commit(
        &self,
        files: &[(&str, Option<&str>)],
        message: &str,
    ) -> Result<String, HostError> {
        self.commit_as(files, message, None)
    }

    /// As [`GitServer::commit`], the commit signed with `key` (git's SSH
    /// signatures: `gpg.format=ssh`).
    pub fn commit_signed(
        &self,
        files: &[(&str, Option<&str>)],
        message: &str,
        key: &SshKey,
    ) -> Result<String, HostError> {
        self.commit_as(files, message, Some(key))
    }

    fn commit_as(
        &self,
        files: &[(&str, Option<&str>)],
        message: &str,
        key: Option<&SshKey>,
    ) -> Result<String, HostError> {
        let work = self.dir.join("work");
        for (path, text) in files {
            let full = work.join(path);
            match text {
                Some(text) => {
                    if let Some(parent) = full.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| HostError::Setup(format!("cannot write {path}: {e}")))?;
                    }
                    std::fs::write(&full, text)
                        .map_err(|e| HostError::Setup(format!("cannot write {path}: {e}")))?;
                }
                None => {
                    std::fs::remove_file(&full)
                        .map_err(|e| HostError::Setup(format!("cannot remove {path}: {e}")))?;
                }
            }
        }
        git(&work, &["add", "-A"])?;
        match key {
            None => git(&work, &["commit", "-q", "--allow-empty", "-m", message])?,
            Some(key) => {
                let signing_key = format!("user.signingkey={}", key.private_key_file.display());
                git(
                    &work,
                    &[
                        "-c",
                        "gpg.format=ssh",
                        "-c",
                        &signing_key,
                        "commit",
                        "-q",
                        "-S",
                        "--allow-empty",
                        "-m",
                        message,
                    ],
                )?
            }
        };
        git(&work, &["push", "-q", "origin", "main"])?;
        git(&work, &["rev-parse", "HEAD"])
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        // The servers end before their files go.
        self.https = None;
        self.ssh = None;
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
