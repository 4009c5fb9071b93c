//! Fetching over https:// (git's smart HTTP behind a real web server, with
//! basic authentication and a CA of its own) and ssh:// (a real sshd
//! that takes one key), as sources do, and what each refuses.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use flotilla_sync::git::{self, GitError};
use flotilla_sync::transport::{Access, Auth};
use flotilla_testbed::GitServer;
use flotilla_testbed::git::ssh_keypair;

const UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

fn fetch(cache: &Path, url: &str, access: &Access) -> Result<String, GitError> {
    git::fetch(cache, url, "main", access, &AtomicBool::new(false))
}

#[test]
fn https_with_a_password_and_the_sources_own_ca() {
    let mut server = GitServer::start("https").unwrap();
    server.serve_https("deploy", "s3cret:with:colons").unwrap();
    let commit = server.commit(&[("a.service", Some(UNIT))], "one").unwrap();
    let url = server.https_url().unwrap();
    let ca = server.https_ca_pem().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c.git");
    let access = |password: &str, ca: Option<&str>| Access {
        auth: Auth::Password {
            user: "deploy".into(),
            password: password.into(),
        },
        ca_pem: ca.map(str::to_owned),
        known_hosts: None,
    };

    assert_eq!(
        fetch(&cache, &url, &access("s3cret:with:colons", Some(&ca))).unwrap(),
        commit
    );
    let files = git::read_tree(&cache, &commit, "", &Default::default()).unwrap();
    assert_eq!(files[0].path, "a.service");

    // A wrong password, no password: refused by the server.
    let other = dir.path().join("other.git");
    let e = fetch(&other, &url, &access("wrong", Some(&ca))).unwrap_err();
    assert!(
        !e.to_string().contains("wrong"),
        "the password is not shown: {e}"
    );
    let anonymous = Access {
        ca_pem: Some(ca.clone()),
        ..Access::anonymous()
    };
    fetch(&other, &url, &anonymous).unwrap_err();
    // The system's roots do not know the server's CA.
    let e = fetch(&other, &url, &access("s3cret:with:colons", None)).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Nor does another CA.
    let mut stranger = GitServer::start("https-other").unwrap();
    stranger.serve_https("x", "y").unwrap();
    let wrong_ca = stranger.https_ca_pem().unwrap();
    let e = fetch(&other, &url, &access("s3cret:with:colons", Some(&wrong_ca))).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn ssh_with_a_deploy_key_and_pinned_host_keys() {
    let keys = tempfile::tempdir().unwrap();
    let key = ssh_keypair(keys.path()).unwrap();
    let stranger = ssh_keypair(keys.path()).unwrap();
    let mut server = GitServer::start("ssh").unwrap();
    server.serve_ssh(&key.public_line).unwrap();
    let commit = server.commit(&[("a.service", Some(UNIT))], "one").unwrap();
    let url = server.ssh_url().unwrap();
    let known_hosts = server.ssh_known_hosts().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c.git");
    let access = |private: &str, hosts: &str| Access {
        auth: Auth::SshKey(private.as_bytes().to_vec()),
        ca_pem: None,
        known_hosts: Some(hosts.to_owned()),
    };

    assert_eq!(
        fetch(&cache, &url, &access(&key.private_pem, &known_hosts)).unwrap(),
        commit
    );
    // The key was on disk for the fetch only.
    assert!(!cache.join("flotilla-ssh").exists());
    let second = server.commit(&[("b.service", Some(UNIT))], "two").unwrap();
    assert_eq!(
        fetch(&cache, &url, &access(&key.private_pem, &known_hosts)).unwrap(),
        second
    );

    let other = dir.path().join("other.git");
    // Another key is not let in.
    fetch(&other, &url, &access(&stranger.private_pem, &known_hosts)).unwrap_err();
    // A host key that is not the server's: not trusted, nothing fetched.
    let port = url
        .trim_start_matches("ssh://root@127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let stranger_key: Vec<&str> = stranger.public_line.split_whitespace().collect();
    let wrong_hosts = format!(
        "[127.0.0.1]:{port} {} {}\n",
        stranger_key[0], stranger_key[1]
    );
    fetch(&other, &url, &access(&key.private_pem, &wrong_hosts)).unwrap_err();
    assert!(!other.join("flotilla-ssh").exists());
    // Nothing of the server's own ssh keys, agent or known hosts is
    // used: without the source's, no connection.
    let no_key = Access {
        auth: Auth::None,
        ca_pem: None,
        known_hosts: Some(known_hosts),
    };
    let e = fetch(&other, &url, &no_key).unwrap_err();
    assert!(e.to_string().contains("needs a deploy key"), "{e}");
}
