//! How the benchmarks reach the servers they start, as an operator and
//! the agents do: over HTTPS, trusting the cluster CA the first server
//! made (`DATA_DIR/tls/ca.crt`), with the cluster's first admin token
//! (`DATA_DIR/admin.token`); simulated machines join with a join token
//! and then act with their own machine credential (docs/security.md).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use flotilla_api::client::{Client, ClientOptions};
use flotilla_api::tls::ServerTrust;
use flotilla_proto::MachineId;
use flotilla_proto::backoff::Backoff;
use flotilla_proto::trust::{Role, TokenCreate};

/// The cluster CA's certificate, in a server's data directory.
pub const CA_CERT: &str = "tls/ca.crt";
/// The cluster CA's key, beside it.
pub const CA_KEY: &str = "tls/ca.key";
/// The key that seals the cluster's secrets, in a data directory.
pub const SECRETS_KEY: &str = "secrets.key";
/// The cluster's first admin token, in the data directory of the server
/// that made the cluster.
pub const ADMIN_TOKEN: &str = "admin.token";

/// How long a benchmark waits for a new server's CA and admin token, and
/// then for it to answer with them.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// How long one machine keeps trying to join while the servers say "try
/// again".
const JOIN_LIMIT: Duration = Duration::from_secs(300);

/// What a client of one cluster needs: the CA to check the servers
/// against, and an admin token.
#[derive(Clone)]
pub struct Access {
    ca_pem: Vec<u8>,
    admin_token: String,
}

impl Access {
    /// The CA and the admin token of `data_dir`, or `None` while either
    /// is missing. A server writes both at its cluster's first start, each
    /// through a rename: a file that exists is whole.
    pub fn read(data_dir: &Path) -> anyhow::Result<Option<Access>> {
        let read = |name: &str| match std::fs::read(data_dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {}", data_dir.join(name).display()))
            }
        };
        let (Some(ca_pem), Some(token)) = (read(CA_CERT)?, read(ADMIN_TOKEN)?) else {
            return Ok(None);
        };
        let admin_token = String::from_utf8(token)
            .with_context(|| format!("{} is not text", data_dir.join(ADMIN_TOKEN).display()))?
            .trim()
            .to_owned();
        Ok(Some(Access {
            ca_pem,
            admin_token,
        }))
    }

    /// A client of `endpoints` with `token`, trusting the cluster CA.
    pub fn client<S: AsRef<str>>(&self, endpoints: &[S], token: &str) -> anyhow::Result<Client> {
        Client::with_options(
            endpoints.iter().map(AsRef::as_ref),
            ClientOptions {
                token: Some(token.to_owned()),
                trust: ServerTrust::CaPem(self.ca_pem.clone()),
                identity: None,
            },
        )
        .context("cannot make a client")
    }

    /// A client of `endpoints` with the admin token.
    pub fn admin<S: AsRef<str>>(&self, endpoints: &[S]) -> anyhow::Result<Client> {
        self.client(endpoints, &self.admin_token)
    }

    /// A join token (valid for an hour) for `uses` machines, made with the
    /// admin token: the token, and the join string (the token and the
    /// CA's fingerprint) that `flotilla agent --join-token` takes.
    pub async fn join_token<S: AsRef<str>>(
        &self,
        endpoints: &[S],
        name: &str,
        uses: u32,
    ) -> anyhow::Result<JoinToken> {
        let created = self
            .admin(endpoints)?
            .create_token(&TokenCreate {
                role: Role::Join,
                name: name.to_owned(),
                ttl_ms: None,
                uses: Some(uses),
            })
            .await
            .context("cannot make a join token")?;
        let join = created
            .join
            .context("the server made a join token without a join string")?;
        Ok(JoinToken {
            token: created.token,
            join,
        })
    }

    /// What machines need to join `endpoints`: a join token for `uses` of
    /// them, and a client holding it (its connections shared by every
    /// join).
    pub async fn joiner<S: AsRef<str>>(
        &self,
        endpoints: &[S],
        uses: u32,
    ) -> anyhow::Result<Joiner> {
        let token = self.join_token(endpoints, "bench", uses).await?;
        Ok(Joiner {
            access: self.clone(),
            endpoints: endpoints.iter().map(|e| e.as_ref().to_owned()).collect(),
            client: self.client(endpoints, &token.token)?,
            retries: AtomicU64::new(0),
        })
    }
}

/// A join token as an admin hands it out.
pub struct JoinToken {
    /// `flt1.<id>.<secret>`.
    pub token: String,
    /// The token with the cluster CA's fingerprint.
    pub join: String,
}

/// Joins machines with one join token.
pub struct Joiner {
    access: Access,
    endpoints: Vec<String>,
    client: Client,
    /// Joins answered "try again" (503, or no server reachable).
    retries: AtomicU64,
}

impl Joiner {
    /// Joins machine `id` (once per machine id, ever) and returns a client
    /// acting as that machine, with its own connections. As the agent
    /// does, it tries again, after a growing delay, while the servers say
    /// to (machines joining at once with one token contend for it).
    pub async fn join(&self, id: &MachineId) -> anyhow::Result<Client> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let deadline = Instant::now() + JOIN_LIMIT;
        let joined = loop {
            match self.client.join(id).await {
                Ok(joined) => break joined,
                Err(e) if e.is_temporary() && Instant::now() < deadline => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e).with_context(|| format!("machine {id} cannot join")),
            }
        };
        self.access.client(&self.endpoints, &joined.token)
    }

    /// How many joins the servers asked to try again, so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Copies the cluster CA (certificate and key) and secrets key from one server's data
/// directory into another's, as an operator does for every server that
/// shares an etcd with the first. The directories it makes are the
/// server's user's only, as the server makes them (the key is a secret).
pub fn share_ca(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to.join("tls"))
        .with_context(|| format!("cannot create {}", to.join("tls").display()))?;
    // The key that seals the cluster's secrets is shared the same way (a
    // data directory has none when its server was given one).
    let secrets_key = Some(SECRETS_KEY).filter(|f| from.join(f).exists());
    for file in [CA_CERT, CA_KEY].into_iter().chain(secrets_key) {
        std::fs::copy(from.join(file), to.join(file)).with_context(|| {
            format!(
                "cannot copy {} to {}",
                from.join(file).display(),
                to.join(file).display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed when the test ends, pass or fail.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "flotilla-bench-access-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn access_is_read_once_both_files_exist() {
        let dir = Scratch::new("read");
        assert!(Access::read(&dir.0).unwrap().is_none());
        std::fs::create_dir_all(dir.0.join("tls")).unwrap();
        std::fs::write(dir.0.join(CA_CERT), "PEM").unwrap();
        assert!(
            Access::read(&dir.0).unwrap().is_none(),
            "no admin token yet"
        );
        std::fs::write(dir.0.join(ADMIN_TOKEN), "flt1.0123.abcd\n").unwrap();
        let access = Access::read(&dir.0).unwrap().unwrap();
        assert_eq!(access.ca_pem, b"PEM");
        assert_eq!(access.admin_token, "flt1.0123.abcd");
    }

    #[test]
    fn the_ca_is_shared_with_its_key_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let from = Scratch::new("from");
        let to = Scratch::new("to");
        std::fs::create_dir_all(from.0.join("tls")).unwrap();
        std::fs::write(from.0.join(CA_CERT), "cert").unwrap();
        std::fs::write(from.0.join(CA_KEY), "key").unwrap();
        std::fs::set_permissions(from.0.join(CA_KEY), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let server = to.0.join("server-1");
        share_ca(&from.0, &server).unwrap();
        assert_eq!(
            std::fs::read_to_string(server.join(CA_CERT)).unwrap(),
            "cert"
        );
        assert_eq!(std::fs::read_to_string(server.join(CA_KEY)).unwrap(), "key");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&server.join(CA_KEY)), 0o600);
        assert_eq!(mode(&server.join("tls")), 0o700);
        // No admin token there: only the first server has it.
        assert!(Access::read(&server).unwrap().is_none());
    }

    #[test]
    fn sharing_a_ca_that_is_not_there_says_which_file() {
        let from = Scratch::new("none");
        let err = share_ca(&from.0, &from.0.join("other")).unwrap_err();
        assert!(format!("{err:#}").contains("tls/ca.crt"), "{err:#}");
    }
}
