//! How a fetch reaches a source's repository: the credentials it sends
//! and the servers it trusts, for each transport.
//!
//! - `https://`: gitoxide's HTTP client (reqwest, rustls with ring, as the
//!   rest of flotilla). The server's certificate chains to the system's
//!   roots, or only to the source's own CA bundle when it gives one.
//!   Credentials, a `USER:PASSWORD` secret, are sent when the server asks
//!   for them (a 401), never over plain http, which sources refuse.
//! - `ssh://`: OpenSSH's `ssh` client, as git runs it. The deploy key is
//!   written to a private file in the source's cache repository for the
//!   length of the fetch; the server's host key must be one of the
//!   source's `knownHosts` (no trust on first use, no agent, no user or
//!   system ssh configuration).
//! - `git://` and `file://` take neither.
//!
//! A proxy named by the server's environment (`https_proxy`, `no_proxy`)
//! is used for `https://`, as git would.
//!
//! The cache repositories are opened isolated from the server's own git
//! configuration and environment, so that nothing on the leader's disk
//! (credential helpers, `url.*.insteadOf`, `GIT_SSH_COMMAND`) changes
//! where a fetch goes or what it sends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::sync::Source;
use gix::protocol::transport::client::blocking_io::http;

use crate::git::GitError;

/// How long a connection to the repository's server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How a source's repository is reached, from its address's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Ssh,
    Git,
    File,
}

impl Scheme {
    /// The scheme of `repo`, or why it cannot be followed.
    pub fn of(repo: &str) -> Result<Scheme, String> {
        let (scheme, rest) = repo.split_once("://").ok_or_else(|| {
            if repo.contains(':') && !repo.contains('/') || repo.contains("@") {
                format!(
                    "repo {repo:?}: write an ssh address as ssh://USER@HOST/PATH (the scp-like form is not accepted)"
                )
            } else {
                format!("repo {repo:?}: give an https://, ssh://, git:// or file:// address")
            }
        })?;
        let scheme = match scheme {
            "https" => Scheme::Https,
            "ssh" => Scheme::Ssh,
            "git" => Scheme::Git,
            "file" => Scheme::File,
            "http" => {
                return Err(format!(
                    "repo {repo:?}: plain http sends the units and any credentials in the clear: use https://"
                ));
            }
            other => {
                return Err(format!(
                    "repo {repo:?}: {other}:// is not a transport sources use (https://, ssh://, git://, file://)"
                ));
            }
        };
        let authority = rest.split('/').next().unwrap_or("");
        if scheme == Scheme::Https && authority.contains('@') {
            return Err(format!(
                "repo {repo:?}: put the user and password in a secret named by credentials, not in the address"
            ));
        }
        if scheme == Scheme::Ssh && authority.split('@').next_back().is_none_or(str::is_empty) {
            return Err(format!("repo {repo:?}: an ssh address needs a host"));
        }
        // Leading dashes would read as options to ssh.
        if authority.starts_with('-') || authority.contains("@-") {
            return Err(format!("repo {repo:?}: a user or host cannot start with -"));
        }
        Ok(scheme)
    }
}

/// What a fetch authenticates with.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Basic authentication, over `https://`.
    Password {
        user: String,
        password: String,
    },
    /// An OpenSSH private key, over `ssh://`.
    SshKey(Vec<u8>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        match self {
            Auth::None => f.write_str("None"),
            Auth::Password { user, .. } => write!(f, "Password {{ user: {user:?} }}"),
            Auth::SshKey(_) => f.write_str("SshKey"),
        }
    }
}

/// How a fetch reaches one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub auth: Auth,
    /// `https://`: the CA certificates (PEM) trusted instead of the
    /// system's.
    pub ca_pem: Option<String>,
    /// `ssh://`: the `known_hosts` lines the server's host key must match.
    pub known_hosts: Option<String>,
}

impl Access {
    /// No credentials, the system's trust.
    pub fn anonymous() -> Access {
        Access {
            auth: Auth::None,
            ca_pem: None,
            known_hosts: None,
        }
    }

    /// How `source` is reached, `secret` being the value of the secret
    /// its `credentials` names.
    pub fn of(source: &Source, secret: Option<&[u8]>) -> Result<Access, String> {
        let ssh = Scheme::of(&source.repo)? == Scheme::Ssh;
        let auth = match (secret, ssh) {
            (None, _) => Auth::None,
            (Some(key), true) => {
                let mut key = key.to_vec();
                // OpenSSH refuses a key file whose last line has no end.
                if key.last() != Some(&b'\n') {
                    key.push(b'\n');
                }
                Auth::SshKey(key)
            }
            (Some(value), false) => {
                let name = source.credentials.as_deref().unwrap_or_default();
                let text = std::str::from_utf8(value)
                    .map_err(|_| format!("secret {name} is not text: give USER:PASSWORD"))?
                    .trim_end_matches(['\r', '\n']);
                let (user, password) = text
                    .split_once(':')
                    .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                    .ok_or_else(|| {
                        format!("secret {name} is not USER:PASSWORD (for a token: USER:TOKEN)")
                    })?;
                Auth::Password {
                    user: user.to_owned(),
                    password: password.to_owned(),
                }
            }
        };
        Ok(Access {
            auth,
            ca_pem: source.ca.clone(),
            known_hosts: source.known_hosts.clone(),
        })
    }
}

/// Checks that `pem` holds one or more certificates.
pub fn check_ca(pem: &str) -> Result<(), String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in it".to_owned());
    }
    Ok(())
}

/// Checks `text` as `known_hosts` lines: `[MARKER] HOSTS KEYTYPE KEY`,
/// blank lines and `#` comments allowed.
pub fn check_known_hosts(text: &str) -> Result<(), String> {
    let keys = key_lines(
        text,
        |line| {
            let mut fields = line.split_whitespace().peekable();
            if fields.peek().is_some_and(|f| f.starts_with('@')) {
                fields.next();
            }
            fields.next()?;
            Some((fields.next()?, fields.next()?))
        },
        "HOSTS KEYTYPE KEY",
    )?;
    if keys.is_empty() {
        return Err("no host key in it".to_owned());
    }
    Ok(())
}

/// The public keys of `text`, a line each (`KEYTYPE KEY [COMMENT]`,
/// blank lines and `#` comments allowed), each as `KEYTYPE KEY`, or the
/// first line that is not one. `fields` finds the type and key of a
/// line; `form` says what a line should be.
pub(crate) fn key_lines<'a>(
    text: &'a str,
    fields: impl Fn(&'a str) -> Option<(&'a str, &'a str)>,
    form: &str,
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((kind, key)) = fields(line) else {
            return Err(format!("line {}: not {form}", n + 1));
        };
        let kind_ok = ["ssh-", "ecdsa-", "sk-", "rsa-"]
            .iter()
            .any(|p| kind.starts_with(p))
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.@".contains(&b));
        let key_ok = key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if !kind_ok || !key_ok {
            return Err(format!(
                "line {}: {kind} {key:.16}… is not an SSH public key",
                n + 1
            ));
        }
        keys.push((kind, key));
    }
    Ok(keys)
}

/// The HTTP options of a fetch over `https://`, trusting `ca_pem` alone
/// when given.
pub(crate) fn http_options(ca_pem: Option<&str>) -> Result<http::Options, GitError> {
    let roots = match ca_pem {
        Some(pem) => Some(
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| GitError::Git {
                what: "read the source's CA".to_owned(),
                message: e.to_string(),
            })?,
        ),
        None => None,
    };
    // Ring, as everywhere in flotilla; set once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            let builder = builder.user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")));
            Ok(match &roots {
                Some(roots) => builder.tls_certs_only(roots.iter().cloned()),
                None => builder,
            })
        })),
        configure_request: None,
    };
    Ok(http::Options {
        connect_timeout: Some(CONNECT_TIMEOUT),
        // Given up when under 1 KiB/s for a minute; the fetch timeout
        // bounds the whole.
        low_speed_limit_bytes_per_second: 1024,
        low_speed_time_seconds: 60,
        user_agent: Some(concat!("flotilla/", env!("CARGO_PKG_VERSION")).to_owned()),
        backend: Some(Arc::new(Mutex::new(backend))),
        ..http::Options::default()
    })
}

/// The credentials callback of a fetch with a password: given when the
/// server asks, nothing stored or erased.
pub(crate) fn password_helper(
    user: String,
    password: String,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| match action {
        gix::credentials::helper::Action::Get(context) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                credentials: gix::sec::identity::Credentials::UsernamePassword {
                    username: user.clone(),
                    password: password.clone(),
                    oauth_refresh_token: None,
                },
                next: context.into(),
            }))
        }
        _ => Ok(None),
    }
}

/// A directory only root can read, in a source's cache repository, for
/// files a fetch or a check needs for its length (a deploy key, host
/// keys, signer keys); removed when dropped.
pub(crate) struct PrivateDir {
    dir: PathBuf,
}

impl PrivateDir {
    /// Makes `dir` afresh (whatever a crash left there goes first).
    pub(crate) fn create(dir: PathBuf) -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PrivateDir { dir })
    }

    /// Writes file `name` (mode 0600) and returns its path.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Writes `key` and `known_hosts` for a fetch from the cache repository
/// `repo` at `cache`, and sets the repository's ssh command to use them
/// and nothing else; they stay on disk while the result lives.
pub(crate) fn prepare_ssh(
    repo: &mut gix::Repository,
    cache: &Path,
    key: &[u8],
    known_hosts: &str,
) -> Result<PrivateDir, GitError> {
    let io = |e: std::io::Error| GitError::Git {
        what: "write the deploy key".to_owned(),
        message: e.to_string(),
    };
    let files = PrivateDir::create(cache.join("flotilla-ssh")).map_err(io)?;
    let key_file = files.write("key", key).map_err(io)?;
    let hosts_file = files
        .write("known_hosts", known_hosts.as_bytes())
        .map_err(io)?;
    let quoted = |p: PathBuf| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let command = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
         -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} \
         -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout={} \
         -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
        quoted(key_file),
        quoted(hosts_file),
        CONNECT_TIMEOUT.as_secs()
    );
    let mut config = repo.config_snapshot_mut();
    let set = |config: &mut gix::config::SnapshotMut<'_>,
               key: &'static dyn gix::config::tree::Key,
               value: &str| {
        config
            .set_value(key, value)
            .map(|_| ())
            .map_err(|e| GitError::Git {
                what: "set the ssh command".to_owned(),
                message: e.to_string(),
            })
    };
    set(&mut config, &gix::config::tree::Core::SSH_COMMAND, &command)?;
    set(&mut config, &gix::config::tree::Ssh::VARIANT, "ssh")?;
    config.commit().map_err(|e| GitError::Git {
        what: "set the ssh command".to_owned(),
        message: e.to_string(),
    })?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(repo: &str, credentials: Option<&str>) -> Source {
        Source {
            name: "s".into(),
            repo: repo.into(),
            branch: "main".into(),
            path: String::new(),
            interval: Duration::from_secs(60),
            prune: false,
            drift: flotilla_proto::sync::DriftMode::Revert,
            paused: false,
            credentials: credentials.map(str::to_owned),
            ca: None,
            known_hosts: None,
            signers: None,
        }
    }

    #[test]
    fn a_password_secret_is_user_colon_password() {
        let s = source("https://h/r.git", Some("pw"));
        let a = Access::of(&s, Some(b"x-access-token:ghp_abc:def\n")).unwrap();
        assert_eq!(
            a.auth,
            Auth::Password {
                user: "x-access-token".into(),
                password: "ghp_abc:def".into()
            }
        );
        for bad in [&b"token-only"[..], b":pw", b"user:", b"\xff:x"] {
            let e = Access::of(&s, Some(bad)).unwrap_err();
            assert!(e.contains("secret pw"), "{e}");
        }
        // Its Debug form leaves the password out.
        assert!(!format!("{a:?}").contains("ghp_abc"));
    }

    #[test]
    fn an_ssh_secret_is_the_key_with_a_final_newline() {
        let s = source("ssh://git@h/r.git", Some("key"));
        let a = Access::of(&s, Some(b"-----BEGIN OPENSSH PRIVATE KEY-----")).unwrap();
        assert_eq!(
            a.auth,
            Auth::SshKey(b"-----BEGIN OPENSSH PRIVATE KEY-----\n".to_vec())
        );
    }

    #[test]
    fn known_hosts_lines_are_checked() {
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        check_known_hosts(&format!("# h\n\nh,1.2.3.4 ssh-ed25519 {key}\n")).unwrap();
        check_known_hosts(&format!("@cert-authority *.h ssh-ed25519 {key} c\n")).unwrap();
        for (bad, why) in [
            ("", "no host key"),
            ("# only\n", "no host key"),
            ("h ssh-ed25519\n", "line 1"),
            (&format!("h\nh nope {key}\n"), "line 1"),
            (&format!("h ssh-ed25519;x {key}\n"), "line 1"),
            (
                &format!("h ssh-ed25519 {key}\nh ssh-ed25519 k;ey\n"),
                "line 2",
            ),
        ] {
            let e = check_known_hosts(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_ca_must_hold_certificates() {
        assert!(check_ca("not pem").is_err());
        assert!(check_ca("").is_err());
    }
}
