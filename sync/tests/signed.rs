//! Commits signed with git's SSH signatures (`git commit -S`,
//! `gpg.format=ssh`), checked against a source's signer keys.

use std::sync::atomic::AtomicBool;

use flotilla_sync::git;
use flotilla_sync::signed;
use flotilla_sync::transport::Access;
use flotilla_testbed::{GitServer, ssh_keypair};

#[test]
fn only_commits_signed_by_a_listed_key_verify() {
    let keys = tempfile::tempdir().unwrap();
    let alice = ssh_keypair(keys.path()).unwrap();
    let mallory = ssh_keypair(keys.path()).unwrap();
    let bob = ssh_keypair(keys.path()).unwrap();
    let server = GitServer::start("signed").unwrap();
    let unit = "[Service]\nExecStart=/bin/true\n";
    let by_alice = server
        .commit_signed(&[("a.service", Some(unit))], "alice", &alice)
        .unwrap();
    let by_mallory = server
        .commit_signed(&[("b.service", Some(unit))], "mallory", &mallory)
        .unwrap();
    let unsigned = server
        .commit(&[("c.service", Some(unit))], "nobody")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c.git");
    git::fetch(
        &cache,
        &server.url(),
        "main",
        &Access::anonymous(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let signers = format!("# ops\n{}\n{}\n", bob.public_line, alice.public_line);

    let who = signed::verify(&cache, &by_alice, &signers).unwrap();
    assert!(who.starts_with("key-2 SHA256:"), "{who}");
    let e = signed::verify(&cache, &by_mallory, &signers).unwrap_err();
    assert!(e.contains("not by a key the source lists"), "{e}");
    let e = signed::verify(&cache, &unsigned, &signers).unwrap_err();
    assert_eq!(e, "it is not signed");
    // The keys were on disk for the check only.
    assert!(!cache.join("flotilla-signers").exists());
}
