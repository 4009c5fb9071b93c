//! The repository over HTTPS with basic auth: Debian's `lighttpd` in the
//! foreground, running `git http-backend` as a CGI program for every
//! request (`mod_alias` maps every path to it, `mod_setenv` gives it
//! `GIT_PROJECT_ROOT` and `GIT_HTTP_EXPORT_ALL`), `mod_auth` with a plain
//! user file in front, and TLS from `mod_openssl` with a certificate for
//! 127.0.0.1 signed by a CA made for this server
//! ([`loopback_certificate`](crate::tls::loopback_certificate)).
//!
//! `git http-backend` allows pushes from an authenticated user, so a
//! client with the password may push as well as fetch.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Child;

use super::wait_listening;
use crate::HostError;
use crate::port::free_port;
use crate::process::spawn_logged;

/// Where Debian installs lighttpd.
const LIGHTTPD: &str = "/usr/sbin/lighttpd";

/// Where Debian installs git's CGI program.
const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// A running lighttpd; killed on drop (its files stay with the
/// [`GitServer`](super::GitServer)'s directory).
pub(super) struct Https {
    child: Child,
    port: u16,
    ca_pem: String,
}

/// `text` as a lighttpd configuration string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Https {
    /// Configures and starts lighttpd with its files in `dir` (made
    /// here), serving the repositories under `project_root`, and waits
    /// until it accepts connections.
    pub(super) fn start(
        dir: &Path,
        project_root: &Path,
        user: &str,
        password: &str,
    ) -> Result<Https, HostError> {
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            return Err(HostError::Setup(format!(
                "user {user:?} cannot be a basic-auth user: it must be non-empty, without ':' or control characters"
            )));
        }
        if password.chars().any(char::is_control) {
            return Err(HostError::Setup(
                "the password cannot hold control characters (the user file has one user a line)"
                    .into(),
            ));
        }
        for program in [LIGHTTPD, HTTP_BACKEND] {
            if !Path::new(program).is_file() {
                return Err(HostError::Setup(format!(
                    "{program} not found: install Debian's lighttpd, lighttpd-mod-openssl and git (scripts/test does)"
                )));
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("www"))
            .map_err(|e| HostError::Setup(format!("cannot make {}: {e}", dir.display())))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| HostError::Setup(format!("cannot write {name}: {e}")))
        };
        crate::tls::loopback_certificate(dir, "flotilla test git CA")?;
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt"))
            .map_err(|e| HostError::Setup(format!("cannot read ca.crt: {e}")))?;
        write("users", &format!("{user}:{password}\n"))?;
        let port = free_port();
        let path = |name: &str| quoted(&dir.join(name).display().to_string());
        // mod_auth comes before mod_cgi, so that it answers first. Without
        // `server.errorlog`, lighttpd logs to its standard error, the log
        // file that a failure to start quotes.
        let config = format!(
            r#"server.modules = ("mod_auth", "mod_authn_file", "mod_alias", "mod_setenv", "mod_cgi", "mod_openssl")
server.document-root = {www}
server.bind = "127.0.0.1"
server.port = {port}
ssl.engine = "enable"
ssl.pemfile = {cert}
ssl.privkey = {key}
alias.url = ("/" => {backend})
cgi.assign = ("" => "")
setenv.set-environment = ("GIT_PROJECT_ROOT" => {root}, "GIT_HTTP_EXPORT_ALL" => "1")
auth.backend = "plain"
auth.backend.plain.userfile = {users}
auth.require = ("/" => ("method" => "basic", "realm" => "flotilla-test", "require" => "valid-user"))
"#,
            www = path("www"),
            cert = path("server.crt"),
            key = path("server.key"),
            backend = quoted(&format!("{HTTP_BACKEND}/")),
            root = quoted(&project_root.display().to_string()),
            users = path("users"),
        );
        write("lighttpd.conf", &config)?;
        let conf = dir.join("lighttpd.conf");
        let child = spawn_logged(
            LIGHTTPD,
            &[OsStr::new("-D"), OsStr::new("-f"), conf.as_os_str()],
            dir,
            "lighttpd.log",
        )?;
        // From here on, a failure kills it (Drop).
        let mut https = Https {
            child,
            port,
            ca_pem,
        };
        wait_listening(
            &mut https.child,
            port,
            "lighttpd",
            Some(&dir.join("lighttpd.log")),
        )?;
        Ok(https)
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    pub(super) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
