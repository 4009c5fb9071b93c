//! A real git repository served by `git daemon` on a free loopback port,
//! with a work tree that commits and pushes to it: what git sources
//! follow in tests. Everything ends, and the directory goes, on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HostError;
use crate::port::free_port;

/// `git daemon` serving one bare repository, `repo.git`, and a clone of it
/// to commit in.
pub struct GitServer {
    dir: PathBuf,
    port: u16,
    daemon: Child,
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
        let server = GitServer { dir, port, daemon };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(HostError::Setup("git daemon did not listen".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Writes (`Some`) or removes (`None`) files of the work tree, commits
    /// them on `main` and pushes over `git://`; returns the commit (hex).
    pub fn commit(
        &self,
        files: &[(&str, Option<&str>)],
        message: &str,
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
        git(&work, &["commit", "-q", "--allow-empty", "-m", message])?;
        git(&work, &["push", "-q", "origin", "main"])?;
        git(&work, &["rev-parse", "HEAD"])
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
