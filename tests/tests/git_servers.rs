//! The git servers of the kit work with the real `git` client: the
//! repository over HTTPS lets in exactly its user and password and only a
//! client that trusts its CA; over SSH exactly its key and only a client
//! that knows its host key; and each server ends when the `GitServer` is
//! dropped. Needs root (sshd's login user is root).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flotilla_testbed::GitServer;
use flotilla_testbed::git::ssh_keypair;

/// A directory for the client's clones and files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("flotilla-git-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the scratch directory is made");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `git [config] clone URL INTO` as a client that never prompts and trusts
/// only what it is told: none of the CA variables of this machine's
/// environment, which git and curl prefer over `http.sslCAInfo`.
fn clone(config: &[String], env: &[(&str, String)], url: &str, into: &Path) -> Output {
    let mut cmd = Command::new("git");
    for c in config {
        cmd.arg("-c").arg(c);
    }
    cmd.args(["clone", "-q", url])
        .arg(into)
        .stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0");
    for var in [
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("git runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn head(repo: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git runs");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The port of `scheme://[user@]127.0.0.1:PORT/...`.
fn port_of(url: &str) -> u16 {
    let rest = url.split("127.0.0.1:").nth(1).expect("a loopback URL");
    let port = rest.split('/').next().expect("split yields one part");
    port.parse().expect("a port")
}

#[test]
fn https_lets_in_the_user_with_the_password_and_a_client_trusting_the_ca() {
    let scratch = Scratch::new("https");
    let mut server = GitServer::start("https").unwrap();
    assert_eq!(server.https_url(), None);
    assert_eq!(server.https_ca_pem(), None);
    server.serve_https("alice", "s3cret").unwrap();
    let commit = server
        .commit(&[("app.service", Some("[Service]\n"))], "first")
        .unwrap();

    let url = server.https_url().unwrap();
    let port = port_of(&url);
    assert_eq!(url, format!("https://127.0.0.1:{port}/repo.git"));
    let ca_pem = server.https_ca_pem().unwrap();
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{ca_pem}"
    );
    let ca = scratch.path("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    // Strict RFC 5280 checks (key usages, IP subjectAltName), as TLS
    // stacks stricter than git's (rustls' webpki) make them.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
        ])
        .arg(&ca)
        .args([
            "-x509_strict",
            "-verify_ip",
            "127.0.0.1",
            "-verify_return_error",
            "-brief",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success() && stderr(&out).contains("Verification: OK"),
        "{}",
        stderr(&out)
    );
    let trust = [format!("http.sslCAInfo={}", ca.display())];
    let with =
        |user_password: &str| url.replacen("https://", &format!("https://{user_password}"), 1);

    let good = scratch.path("good");
    let out = clone(&trust, &[], &with("alice:s3cret@"), &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(head(&good), commit);
    assert_eq!(
        std::fs::read_to_string(good.join("app.service")).unwrap(),
        "[Service]\n"
    );

    let out = clone(&trust, &[], &with("alice:wrong@"), &scratch.path("wrong"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );

    let out = clone(&trust, &[], &with("bob:s3cret@"), &scratch.path("bob"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Authentication failed"),
        "{}",
        stderr(&out)
    );

    // No credentials: a 401, and git may not prompt for them.
    let out = clone(&trust, &[], &url, &scratch.path("anonymous"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("could not read Username"),
        "{}",
        stderr(&out)
    );

    let out = clone(&[], &[], &with("alice:s3cret@"), &scratch.path("untrusted"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));

    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "lighttpd left running on {port}"
    );
}

#[test]
fn ssh_lets_in_the_key_and_a_client_knowing_the_host_key() {
    let scratch = Scratch::new("ssh");
    let key = ssh_keypair(&scratch.0).unwrap();
    let other = ssh_keypair(&scratch.0).unwrap();
    assert!(
        key.private_pem
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "{}",
        key.private_pem
    );
    assert!(
        key.public_line.starts_with("ssh-ed25519 "),
        "{}",
        key.public_line
    );
    assert!(!key.public_line.contains('\n'));
    assert_ne!(key.public_line, other.public_line);
    assert_eq!(
        std::fs::read_to_string(&key.private_key_file).unwrap(),
        key.private_pem
    );

    let mut server = GitServer::start("ssh").unwrap();
    assert_eq!(server.ssh_url(), None);
    assert_eq!(server.ssh_known_hosts(), None);
    server.serve_ssh(&key.public_line).unwrap();
    let commit = server
        .commit(&[("app.service", Some("[Service]\n"))], "first")
        .unwrap();

    let url = server.ssh_url().unwrap();
    let port = port_of(&url);
    assert!(
        url.starts_with(&format!("ssh://root@127.0.0.1:{port}/")) && url.ends_with("/repo.git"),
        "{url}"
    );
    let known_hosts = server.ssh_known_hosts().unwrap();
    assert!(
        known_hosts.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 AAAA")),
        "{known_hosts}"
    );
    let known = scratch.path("known_hosts");
    std::fs::write(&known, &known_hosts).unwrap();
    let empty = scratch.path("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let ssh = |key: &Path, known: &Path| {
        [(
            "GIT_SSH_COMMAND",
            format!(
                "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -F /dev/null",
                key.display(),
                known.display()
            ),
        )]
    };

    let good = scratch.path("good");
    let out = clone(&[], &ssh(&key.private_key_file, &known), &url, &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(head(&good), commit);
    assert_eq!(
        std::fs::read_to_string(good.join("app.service")).unwrap(),
        "[Service]\n"
    );

    // The private key's text, written by the client, works as well.
    let written = scratch.path("written_key");
    std::fs::write(&written, &key.private_pem).unwrap();
    std::fs::set_permissions(
        &written,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = clone(&[], &ssh(&written, &known), &url, &scratch.path("written"));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = clone(
        &[],
        &ssh(&other.private_key_file, &known),
        &url,
        &scratch.path("other"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );

    let out = clone(
        &[],
        &ssh(&key.private_key_file, &empty),
        &url,
        &scratch.path("unknown_host"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );

    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "sshd left running on {port}"
    );
}
