//! A real container registry on loopback, for tests that pull: Debian's
//! `docker-registry` (the distribution registry 2.8), on 127.0.0.1 and a
//! free port, plain HTTP or TLS with htpasswd users. Test hosts share this
//! machine's network, so their Docker reaches it at [`Registry::address`].
//! Dropping it kills the registry and removes its data.
//!
//! Docker treats registries on loopback addresses as insecure: it speaks
//! plain HTTP to them, or TLS without checking the certificate, and falls
//! back from one to the other. [`Registry::trust_on`] still installs the
//! CA where Docker looks for it (`/etc/docker/certs.d/HOST:PORT/ca.crt`),
//! as on a real host.
//!
//! Needs `docker-registry`, `openssl` (the TLS certificates) and
//! `htpasswd` (Debian's `apache2-utils`, bcrypt lines for the users);
//! `scripts/test` installs them.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::port::free_port;
use crate::process::run;
use crate::{BOOT_DEADLINE, Host, HostError};

/// Where Debian installs the registry.
const BINARY: &str = "/usr/bin/docker-registry";

/// A registry process with its own storage.
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    tls: bool,
}

/// How a registry is served.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// TLS with a certificate for 127.0.0.1 from a CA of its own
    /// ([`Registry::ca_cert`]).
    pub tls: bool,
    /// htpasswd users (`user`, `password`); none: no authentication.
    pub users: Vec<(String, String)>,
}

impl Registry {
    /// A plain HTTP registry without authentication.
    pub fn plain() -> Result<Registry, HostError> {
        Registry::start(&RegistryOptions::default())
    }

    /// A TLS registry that wants `user`'s `password`.
    pub fn with_auth(user: &str, password: &str) -> Result<Registry, HostError> {
        Registry::start(&RegistryOptions {
            tls: true,
            users: vec![(user.to_owned(), password.to_owned())],
        })
    }

    /// Starts a registry and waits until it accepts connections.
    pub fn start(options: &RegistryOptions) -> Result<Registry, HostError> {
        if !Path::new(BINARY).is_file() {
            return Err(HostError::Setup(format!(
                "{BINARY} not found: install Debian's docker-registry (scripts/test does)"
            )));
        }
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("flotilla-registry-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| HostError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let mut registry = Registry {
            child: None,
            dir,
            port,
            tls: options.tls,
        };
        // From here on, a failure removes the directory (Drop).
        registry.configure(options)?;
        registry.run()?;
        Ok(registry)
    }

    fn configure(&self, options: &RegistryOptions) -> Result<(), HostError> {
        let dir = &self.dir;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: flotilla-test\n",
            dir.join("data").display(),
            self.port
        );
        if options.tls {
            crate::tls::loopback_certificate(dir, "flotilla test registry CA")?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            ));
        }
        if !options.users.is_empty() {
            let mut lines = String::new();
            for (user, password) in &options.users {
                lines.push_str(run("htpasswd", &["-Bbn", user, password], dir)?.trim_end());
                lines.push('\n');
            }
            std::fs::write(dir.join("htpasswd"), lines)
                .map_err(|e| HostError::Setup(format!("cannot write htpasswd: {e}")))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: flotilla-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config)
            .map_err(|e| HostError::Setup(format!("cannot write config.yml: {e}")))
    }

    fn run(&mut self) -> Result<(), HostError> {
        let log = std::fs::File::create(self.dir.join("registry.log"))
            .map_err(|e| HostError::Setup(format!("cannot create the registry's log: {e}")))?;
        let err = log
            .try_clone()
            .map_err(|e| HostError::Setup(format!("cannot create the registry's log: {e}")))?;
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| HostError::Spawn {
                program: BINARY.to_owned(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + BOOT_DEADLINE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(HostError::Setup(format!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(HostError::Setup(format!(
                    "docker-registry did not listen on 127.0.0.1:{} within {}s",
                    self.port,
                    BOOT_DEADLINE.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `127.0.0.1:PORT`, the registry part of its image references.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA that signed its certificate, for a TLS registry.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("ca.crt"))
    }

    /// Makes `host`'s Docker trust the registry's CA.
    pub fn trust_on(&self, host: &Host) -> Result<(), HostError> {
        let Some(ca) = self.ca_cert() else {
            return Ok(());
        };
        let pem = std::fs::read_to_string(&ca)
            .map_err(|e| HostError::Setup(format!("cannot read {}: {e}", ca.display())))?;
        host.sh(&format!(
            "mkdir -p /etc/docker/certs.d/{addr} && cat > /etc/docker/certs.d/{addr}/ca.crt <<'EOF'\n{pem}EOF",
            addr = self.address()
        ))
        .map(|_| ())
    }

    /// Pushes the image `local` of `host`'s Docker as `NAME:TAG` of this
    /// registry (logging in as `user` first when given, and out again),
    /// then removes it from the host, so that a unit has to pull it.
    /// Returns the full reference.
    pub fn push(
        &self,
        host: &Host,
        local: &str,
        name_tag: &str,
        user: Option<(&str, &str)>,
    ) -> Result<String, HostError> {
        let reference = format!("{}/{name_tag}", self.address());
        let (login, logout) = match user {
            Some((user, password)) => (
                format!(
                    "printf %s '{password}' | docker login -u '{user}' --password-stdin {} >/dev/null && ",
                    self.address()
                ),
                format!("docker logout {} >/dev/null || true; ", self.address()),
            ),
            None => (String::new(), String::new()),
        };
        host.sh(&format!(
            "set -e; docker tag {local} {reference}; rc=0; {login}docker push {reference} >/dev/null || rc=$?; {logout}[ $rc = 0 ]; docker rmi {reference} >/dev/null"
        ))?;
        Ok(reference)
    }

    /// Kills the registry (its data stays until it is dropped).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
