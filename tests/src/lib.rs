//! Real test hosts on one machine, for flotilla's integration and
//! end-to-end tests (`../shared/TESTING.md` describes the method).
//!
//! A [`Host`] is a systemd-nspawn container that boots this machine's own
//! systemd from its `/usr` as PID 1, with a private, throw-away `/etc` and
//! `/var` (so its own `/etc/machine-id`), its own system D-Bus and its own
//! cgroup v2 tree. [`Host::start_docker`] runs a Docker engine inside it as a
//! unit of the host's systemd, with either cgroup driver. Everything a
//! `Host` starts ends when it is dropped, pass or fail.
//!
//! Beside hosts: a real etcd ([`Etcd`]) and a real container registry
//! ([`Registry`]) on loopback, which the hosts reach since they share this
//! machine's network.
//! A real git repository ([`GitServer`]) served on loopback over:
//! - `git://` by `git daemon`;
//! - HTTPS with basic auth by `lighttpd` running `git http-backend`
//!   ([`GitServer::serve_https`]);
//! - SSH with a key and a pinned host key by `sshd`
//!   ([`GitServer::serve_ssh`]).
//!
//! Needs root, `systemd-nspawn` (Debian's `systemd-container`) and, for
//! Docker, `docker.io`; `scripts/test` installs them.
//!
//! A limit of these hosts: on a machine whose own cgroup controllers are
//! bound to cgroup v1 hierarchies (as on the CI machines), a host's cgroup
//! v2 tree has no controllers, so resource limits (`MemoryMax=`,
//! `CPUQuota=`, `TasksMax=`) are accepted by its systemd but not enforced.
//! Tests check where processes are (their cgroup), which is what makes the
//! limits apply on a real machine.

pub mod data;
mod etcd;
pub mod fleet;
pub mod git;
pub mod linearizability;
pub mod poll;
pub mod port;
mod process;
pub mod promtool;
mod registry;
pub mod rng;
mod tls;

pub use etcd::Etcd;
pub use git::{GitServer, SshKey, ssh_keypair};
pub use poll::{eventually, eventually_or};
pub use port::free_port;
pub use registry::{Registry, RegistryOptions};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why a host could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("host {host} did not {what} within {seconds}s{details}")]
    Timeout {
        host: String,
        what: String,
        seconds: u64,
        details: String,
    },
    #[error("on host {host}, `{command}` failed ({status}): {stderr}")]
    Command {
        host: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// How long a host may take to boot or a daemon in it to start.
pub const BOOT_DEADLINE: Duration = Duration::from_secs(60);

/// Units of the booted image that have no business in a test host.
const MASKED: [&str; 5] = [
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
];

/// Docker's two cgroup drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

/// What to give a host when it boots.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Paths of this machine made visible in the host, read-only:
    /// `(path here, path in the host)`.
    pub binds_ro: Vec<(PathBuf, PathBuf)>,
    /// Read-write binds.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Writable overlays on this machine's directories: `(path, upper
    /// directory here)`; what the host writes under `path` lands in the
    /// upper directory and this machine's `path` is unchanged (to install
    /// packages in a host, TESTING.md).
    pub overlays: Vec<(PathBuf, PathBuf)>,
}

/// A booted systemd host.
#[derive(Debug)]
pub struct Host {
    name: String,
    nspawn: Child,
    /// The host's PID 1 (systemd), as seen from this machine.
    leader: u32,
    /// The cgroup (v2) the host's tree lives in, its own.
    cgroup: PathBuf,
}

/// A new cgroup v2 directory for one host. systemd-nspawn puts the host's
/// tree under its own cgroup (`<own>/payload`): hosts started from the same
/// cgroup would share one tree, and each host's systemd would manage (and
/// kill) the others' `system.slice` units of the same name.
fn host_cgroup(name: &str) -> Result<PathBuf, HostError> {
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root
        .join("flotilla-testbed")
        .join(format!("{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        HostError::Setup(format!("cannot create the cgroup {}: {e}", dir.display()))
    })?;
    Ok(dir)
}

/// Removes a cgroup tree, leaves first (what is still in use stays).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Host {
    /// Boots a host named `name` (its hostname) and waits until its
    /// systemd has finished starting up.
    pub fn boot(name: &str, options: &HostOptions) -> Result<Host, HostError> {
        let cgroup = host_cgroup(name)?;
        // nspawn starts in the host's own cgroup.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo $$ > "$0/cgroup.procs" && exec systemd-nspawn "$@""#,
        ])
        .arg(&cgroup);
        cmd.env("SYSTEMD_SECCOMP", "0")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args([
                "-D",
                "/",
                "--volatile=yes",
                "-b",
                "--register=no",
                "--keep-unit",
            ])
            .args(["-M", name, "--capability=all", "--console=passive"]);
        for (from, to) in &options.binds_ro {
            cmd.arg(format!("--bind-ro={}:{}", from.display(), to.display()));
        }
        for (from, to) in &options.binds {
            cmd.arg(format!("--bind={}:{}", from.display(), to.display()));
        }
        for (path, upper) in &options.overlays {
            cmd.arg(format!(
                "--overlay={}:{}:{}",
                path.display(),
                upper.display(),
                path.display()
            ));
        }
        // The hosts share this machine's network unless given their own:
        // their own network daemons must not touch it (nor wait for it).
        cmd.args(["--", "systemd.firstboot=off"])
            .args(MASKED.iter().map(|u| format!("systemd.mask={u}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let nspawn = cmd.spawn().map_err(|source| HostError::Spawn {
            program: "systemd-nspawn".into(),
            source,
        })?;
        let mut host = Host {
            name: name.to_owned(),
            leader: 0,
            nspawn,
            cgroup,
        };
        host.leader = host.find_leader()?;
        host.wait_until_running()?;
        Ok(host)
    }

    /// The host's name (and hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID of the host's systemd, as this machine sees it.
    pub fn leader_pid(&self) -> u32 {
        self.leader
    }

    /// The host's machine id, from its `/etc/machine-id`.
    pub fn machine_id(&self) -> Result<String, HostError> {
        Ok(self.sh("cat /etc/machine-id")?.trim().to_owned())
    }

    fn find_leader(&mut self) -> Result<u32, HostError> {
        let nspawn = self.nspawn.id();
        let deadline = Instant::now() + BOOT_DEADLINE;
        // nspawn's first child only forks the container's init (in a new
        // PID namespace) and exits: the leader is the child in another PID
        // namespace than ours.
        let ours = std::fs::read_link("/proc/self/ns/pid").ok();
        loop {
            let leader = children(nspawn).into_iter().find(|pid| {
                let theirs = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
                theirs.is_some() && theirs != ours
            });
            if let Some(pid) = leader {
                return Ok(pid);
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = self.nspawn.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(HostError::Setup(format!(
                    "systemd-nspawn for {} exited ({status}): {stderr}",
                    self.name
                )));
            }
            if Instant::now() > deadline {
                return Err(self.timeout("start its systemd", String::new()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until_running(&self) -> Result<(), HostError> {
        let deadline = Instant::now() + BOOT_DEADLINE;
        let mut last = String::new();
        loop {
            if let Ok(out) = self.output(&["systemctl", "is-system-running"]) {
                last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                // "degraded" means some unit of the booted image failed,
                // which does not matter to the tests.
                if last == "running" || last == "degraded" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.timeout("finish booting", format!(" (system state {last:?})")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn timeout(&self, what: &str, details: String) -> HostError {
        HostError::Timeout {
            host: self.name.clone(),
            what: what.into(),
            seconds: BOOT_DEADLINE.as_secs(),
            details,
        }
    }

    /// Runs a command inside the host (all its namespaces) and returns its
    /// output, whatever its exit status.
    pub fn output(&self, argv: &[&str]) -> Result<Output, HostError> {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HostError::Spawn {
                program: "nsenter".into(),
                source,
            })
    }

    /// Runs a command inside the host; an error unless it exits 0.
    pub fn run(&self, argv: &[&str]) -> Result<String, HostError> {
        let out = self.output(argv)?;
        if !out.status.success() {
            return Err(HostError::Command {
                host: self.name.clone(),
                command: argv.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a shell script inside the host; an error unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<String, HostError> {
        self.run(&["sh", "-c", script])
    }

    /// Starts a long-running command inside the host as a transient unit
    /// of its systemd (`systemd-run --unit=NAME`), so it lives in its own
    /// cgroup there and dies with the host.
    pub fn spawn_unit(&self, unit: &str, argv: &[&str]) -> Result<(), HostError> {
        let mut cmd = vec!["systemd-run", "--unit", unit, "--collect", "--quiet"];
        cmd.extend_from_slice(argv);
        self.run(&cmd).map(|_| ())
    }

    /// Waits until `check` passes, up to `deadline`.
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut() -> bool,
    ) -> Result<(), HostError> {
        let until = Instant::now() + deadline;
        while !check() {
            if Instant::now() > until {
                return Err(HostError::Timeout {
                    host: self.name.clone(),
                    what: what.into(),
                    seconds: deadline.as_secs(),
                    details: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts a Docker engine in the host as the unit `docker-engine`, with
    /// the given cgroup driver, and waits until it answers.
    pub fn start_docker(&self, driver: CgroupDriver) -> Result<(), HostError> {
        let exec_opt = format!("native.cgroupdriver={}", driver.as_str());
        self.spawn_unit(
            "docker-engine",
            &[
                "dockerd",
                "--storage-driver=vfs",
                "--iptables=false",
                // A test host's /proc/sys is read-only.
                "--ip-forward=false",
                "--bridge=none",
                "--exec-opt",
                &exec_opt,
            ],
        )?;
        self.wait_for("start Docker", BOOT_DEADLINE, || {
            self.output(&["docker", "info", "--format", "{{.CgroupDriver}}"])
                .is_ok_and(|o| o.status.success())
        })
    }

    /// Imports a static busybox as the image `local/busybox:latest` (no
    /// registry is reachable; see TESTING.md).
    pub fn load_busybox(&self) -> Result<(), HostError> {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| HostError::Setup("busybox is not installed (busybox-static)".into()))?;
        self.sh(&format!(
            "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp {busybox} $d/bin/busybox; \
             for c in sh sleep echo cat httpd nc wget true false kill ps; do ln -sf busybox $d/bin/$c; done; \
             tar -C $d -c . | docker import - local/busybox:latest >/dev/null; rm -rf $d"
        ))
        .map(|_| ())
    }

    /// Crashes the host: SIGKILL to its systemd ends every process in it.
    pub fn crash(&mut self) {
        kill(self.leader);
        let _ = self.nspawn.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(None) = self.nspawn.try_wait() {
            kill(self.leader);
            // nspawn exits once its container's init is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut exited = false;
            while !exited && Instant::now() < deadline {
                exited = matches!(self.nspawn.try_wait(), Ok(Some(_)));
                if !exited {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if !exited {
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
            }
        }
        // Whatever is left of the host (its init, if nspawn died first).
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        let populated = || {
            std::fs::read_to_string(self.cgroup.join("cgroup.events"))
                .is_ok_and(|e| e.lines().any(|l| l == "populated 1"))
        };
        while populated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_cgroup(&self.cgroup);
    }
}

fn kill(pid: u32) {
    if pid > 1 {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// The child processes of `pid`, from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}
