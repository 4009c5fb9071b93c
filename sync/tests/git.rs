//! Fetching over `git://` from a real `git daemon`, and reading trees.

use std::sync::atomic::AtomicBool;

use flotilla_sync::git::{self, GitError, TreeLimits};
use flotilla_sync::transport::Access;
use flotilla_testbed::GitServer;

#[test]
fn fetches_new_commits_and_reads_their_files() {
    let server = GitServer::start("fetch").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("cache.git");
    let never = AtomicBool::new(false);
    let first = server
        .commit(
            &[
                ("web.service", Some("[Service]\nExecStart=/bin/sleep 1\n")),
                (
                    "units/db.service",
                    Some("[Service]\nExecStart=/bin/sleep 2\n"),
                ),
                ("README.md", Some("notes\n")),
            ],
            "first",
        )
        .unwrap();
    assert_eq!(
        git::fetch(&cache, &server.url(), "main", &Access::anonymous(), &never).unwrap(),
        first
    );
    let files = git::read_tree(&cache, &first, "", &TreeLimits::default()).unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["web.service", "units/db.service"]);
    assert_eq!(files[0].bytes, b"[Service]\nExecStart=/bin/sleep 1\n");

    let second = server.commit(&[("web.service", None)], "second").unwrap();
    assert_eq!(
        git::fetch(&cache, &server.url(), "main", &Access::anonymous(), &never).unwrap(),
        second
    );
    let files = git::read_tree(&cache, &second, "units", &TreeLimits::default()).unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["db.service"]);
    // The first commit is still in the cache.
    assert_eq!(
        git::read_tree(&cache, &first, "", &TreeLimits::default())
            .unwrap()
            .len(),
        2
    );

    // file:// too.
    let other = tempfile::tempdir().unwrap();
    let got = git::fetch(
        &other.path().join("c.git"),
        &server.file_url(),
        "main",
        &Access::anonymous(),
        &never,
    )
    .unwrap();
    assert_eq!(got, second);
}

#[test]
fn limits_and_missing_things_are_errors() {
    let server = GitServer::start("limits").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().join("cache.git");
    let never = AtomicBool::new(false);
    let big = "[Service]\nExecStart=/bin/true\n".repeat(100);
    let commit = server
        .commit(
            &[("a.service", Some(&big)), ("b.service", Some(&big))],
            "big",
        )
        .unwrap();
    git::fetch(&cache, &server.url(), "main", &Access::anonymous(), &never).unwrap();
    let one_file = TreeLimits {
        max_files: 1,
        ..TreeLimits::default()
    };
    assert!(matches!(
        git::read_tree(&cache, &commit, "", &one_file),
        Err(GitError::TooMany {
            what: "unit files",
            limit: 1
        })
    ));
    let small = TreeLimits {
        max_file_bytes: 100,
        ..TreeLimits::default()
    };
    let e = git::read_tree(&cache, &commit, "", &small).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("a.service: 3000 bytes, over the limit of 100 bytes"),
        "{e}"
    );
    let e = git::fetch(&cache, &server.url(), "nope", &Access::anonymous(), &never).unwrap_err();
    assert!(matches!(e, GitError::NoBranch(_)), "{e}");
    assert!(matches!(
        git::read_tree(&cache, &commit, "missing", &TreeLimits::default()),
        Err(GitError::NoPath(_))
    ));
}
