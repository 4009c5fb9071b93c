//! A real etcd process on loopback, for tests that need one: Debian's
//! `etcd-server` (or `$FLOTILLA_ETCD`), with its v2 API enabled beside v3.
//! Dropping it kills etcd and removes its data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::port::free_port;
use crate::{BOOT_DEADLINE, HostError};

/// One etcd member with its own data directory and ports.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Where etcd is: `$FLOTILLA_ETCD`, or Debian's `/usr/bin/etcd`.
    pub fn binary() -> Result<PathBuf, HostError> {
        let path = std::env::var_os("FLOTILLA_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        if path.is_file() {
            Ok(path)
        } else {
            Err(HostError::Setup(format!(
                "etcd not found at {}: install Debian's etcd-server (scripts/test does), or set FLOTILLA_ETCD",
                path.display()
            )))
        }
    }

    /// Starts a fresh etcd and waits until it is healthy.
    pub fn start() -> Result<Etcd, HostError> {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.run()?;
        Ok(etcd)
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd with SIGKILL (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data and ports, and waits until it is
    /// healthy.
    pub fn restart(&mut self) -> Result<(), HostError> {
        self.stop();
        self.run()
    }

    fn run(&mut self) -> Result<(), HostError> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        std::fs::create_dir_all(&self.dir).map_err(|e| HostError::Setup(e.to_string()))?;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_err(|e| HostError::Setup(e.to_string()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HostError::Setup(e.to_string()))?;
        let child = Command::new(Self::binary()?)
            .arg("--name=flotilla-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=flotilla-test={peer}"))
            .args(["--log-level=warn"])
            // fleet's registry speaks etcd's v2 API: the fleet tests write
            // a fleet cluster's units into it with fleetctl.
            .arg("--enable-v2")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| HostError::Spawn {
                program: "etcd".into(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + BOOT_DEADLINE;
        loop {
            if self.healthy() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                return Err(HostError::Setup(format!("etcd exited ({status}): {log}")));
            }
            if Instant::now() > deadline {
                return Err(HostError::Timeout {
                    host: "etcd".into(),
                    what: "become healthy".into(),
                    seconds: BOOT_DEADLINE.as_secs(),
                    details: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether etcd answers `GET /health` with `"health":"true"`.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
