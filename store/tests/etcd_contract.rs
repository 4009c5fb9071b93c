#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The store contract (`contract/mod.rs`) run against a real etcd, plus what
//! only a real server can show: a watch that resumes across a restart, a
//! compacted resume, and requests failing fast while etcd is down.
//!
//! Each case starts its own etcd (fresh data directory, free loopback ports),
//! since the contract checks revisions exactly. etcd is found at
//! `/usr/bin/etcd` (Debian's `etcd-server` package, which `scripts/test`
//! installs) or at `$FLOTILLA_ETCD`; without it these tests fail, they do not
//! skip. The TLS test makes its certificates with the `openssl` command
//! (Debian's `openssl`, which `scripts/test` installs too). Every etcd
//! started is killed and its directory removed when its guard drops, whether
//! the test passed or not.

#[macro_use]
mod contract;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{
    EtcdConfig, EtcdStore, EtcdTls, RangeOptions, Store, StoreError, WatchEvent, Watcher,
};
use tokio::time::Instant;

use contract::Fixture;

/// How long etcd may take to start and elect itself (it takes well under a
/// second; the machines are noisy).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A bound on waiting for a watch event.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// One etcd process on loopback with its own data directory. Dropping it
/// kills the process and removes the directory.
struct Etcd {
    child: Option<Child>,
    /// Holds the data directory and etcd's log.
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Whether clients speak TLS to it, with client certificates (made by
    /// [`make_certificates`] in `dir`).
    tls: bool,
}

impl Etcd {
    /// Where etcd is: `$FLOTILLA_ETCD`, or Debian's `/usr/bin/etcd`.
    fn binary() -> PathBuf {
        let path = std::env::var_os("FLOTILLA_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        assert!(
            path.is_file(),
            "etcd not found at {}: install Debian's etcd-server package \
             (scripts/test does), or set FLOTILLA_ETCD to an etcd binary",
            path.display()
        );
        path
    }

    /// Starts a fresh etcd and waits until it serves requests. Ports are
    /// picked free, but another process may take one before etcd binds it:
    /// then it starts again on others.
    async fn start() -> Etcd {
        Self::start_with(false).await
    }

    /// Starts a fresh etcd that serves clients over TLS only, and asks them
    /// for a certificate signed by its CA.
    #[cfg(feature = "etcd-tls")]
    async fn start_tls() -> Etcd {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Etcd {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut etcd = Etcd {
                child: None,
                dir: tempfile::tempdir().unwrap(),
                client_port: flotilla_testbed::free_port(),
                peer_port: flotilla_testbed::free_port(),
                tls,
            };
            if tls {
                make_certificates(etcd.dir.path());
            }
            match etcd.run().await {
                Ok(()) => return etcd,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("etcd did not start:\n{}", failures.join("\n---\n"));
    }

    fn client_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Runs etcd on this guard's directory and ports (again, after
    /// [`Etcd::stop`]: same data) and waits until it answers.
    async fn run(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "etcd is already running");
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new(Self::binary());
        if self.tls {
            let file = |name: &str| self.dir.path().join(name).display().to_string();
            command
                .arg(format!("--cert-file={}", file("server.pem")))
                .arg(format!("--key-file={}", file("server.key")))
                .arg(format!("--trusted-ca-file={}", file("ca.pem")))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=flotilla-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.client_url()))
            .arg(format!("--advertise-client-urls={}", self.client_url()))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=flotilla-test={peer_url}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", Self::binary().display()));
        self.child = Some(child);
        let probe = self.store(Duration::from_millis(500)).await;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("etcd exited with {status}:\n{}", self.log()));
            }
            match probe.get("/ready").await {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    self.stop();
                    return Err(format!(
                        "etcd did not answer within {START_DEADLINE:?} ({err}):\n{}",
                        self.log()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// etcd's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills etcd (SIGKILL: it must survive a crash) and waits for it to go.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How to reach this etcd (with the client certificate, over TLS).
    fn config(&self, request_timeout: Duration) -> EtcdConfig {
        let mut config = EtcdConfig::new([self.client_url()]);
        config.request_timeout = request_timeout;
        config.connect_timeout = request_timeout;
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            config.tls = Some(EtcdTls {
                ca: file("ca.pem"),
                cert: Some(file("client.pem")),
                key: Some(file("client.key")),
            });
        }
        config
    }

    /// A store on this etcd.
    async fn store(&self, request_timeout: Duration) -> EtcdStore {
        EtcdStore::connect(self.config(request_timeout))
            .await
            .unwrap()
    }
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate
/// in `dir` (P-256 keys: quick to make), with the `openssl` command.
fn make_certificates(dir: &std::path::Path) {
    std::fs::write(
        dir.join("openssl.cnf"),
        "[req]\n\
         distinguished_name = dn\n\
         [dn]\n\
         [ca]\n\
         basicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1\n\
         [client]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical,digitalSignature\n\
         extendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    // No argument has a space in it: each command is one line of words.
    let openssl = |command: &str| {
        let args: Vec<&str> = command.split_whitespace().collect();
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running openssl ({e}): install Debian's openssl package (scripts/test does)"
                )
            });
        assert!(
            output.status.success(),
            "openssl {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -config openssl.cnf -x509 -extensions ca {new_key} \
         -keyout ca.key -out ca.pem -days 2 -subj /CN=flotilla-test-ca"
    ));
    for (name, subject) in [("server", "/CN=etcd"), ("client", "/CN=flotilla")] {
        openssl(&format!(
            "req -config openssl.cnf {new_key} -keyout {name}.key -out {name}.csr -subj {subject}"
        ));
        openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -out {name}.pem -days 2 -extfile openssl.cnf -extensions {name}"
        ));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        // The temporary directory removes itself after this.
    }
}

async fn etcd() -> Fixture {
    let etcd = Etcd::start().await;
    let store = etcd.store(Duration::from_secs(5)).await;
    Fixture {
        store: Arc::new(store),
        guard: Box::new(etcd),
    }
}

contract_tests!(
    #[tokio::test]
    etcd
);

/// Reads events until one for `key` arrives; returns them all.
async fn events_until(watcher: &mut Watcher, key: &str) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    loop {
        let batch = tokio::time::timeout(EVENT_DEADLINE, watcher.next())
            .await
            .expect("watch event within the deadline")
            .expect("watch event");
        let done = batch.iter().any(|e| e.key() == key);
        events.extend(batch);
        if done {
            return events;
        }
    }
}

fn summary(events: &[WatchEvent]) -> Vec<(u64, &str)> {
    events.iter().map(|e| (e.revision(), e.key())).collect()
}

#[tokio::test]
async fn a_watch_of_changes_does_not_ask_etcd_for_previous_values() {
    let fixture = etcd().await;
    let store = &fixture.store;
    store.put("/pv/a", b"1", None).await.unwrap();
    let mut changes = store.watch_changes("/pv/", 0).await.unwrap();
    let mut full = store.watch("/pv/", 0).await.unwrap();
    store.put("/pv/a", b"2", None).await.unwrap();
    store.delete("/pv/a").await.unwrap();
    let prev_of = |e: &WatchEvent| match e {
        WatchEvent::Put { prev, .. } | WatchEvent::Delete { prev, .. } => prev.is_some(),
    };
    let without = events_until(&mut changes, "/pv/a").await;
    let without = [without, events_until(&mut changes, "/pv/a").await].concat();
    assert_eq!(without.len(), 2);
    assert!(!without.iter().any(prev_of), "{without:?}");
    let with = events_until(&mut full, "/pv/a").await;
    let with = [with, events_until(&mut full, "/pv/a").await].concat();
    assert!(with.iter().all(prev_of), "{with:?}");
}

#[tokio::test]
async fn a_watch_resumes_across_an_etcd_restart_without_losing_or_repeating_events() {
    let mut etcd = Etcd::start().await;
    let store = etcd.store(Duration::from_secs(2)).await;
    let mut watcher = store.watch("/w/", 0).await.unwrap();
    let a = store.put("/w/a", b"1", None).await.unwrap().revision;
    assert_eq!(
        summary(&events_until(&mut watcher, "/w/a").await),
        [(a, "/w/a")]
    );
    let b = store.put("/w/b", b"1", None).await.unwrap().revision;

    // The watcher waits while etcd goes down and comes back.
    let reader = tokio::spawn(async move {
        let events = events_until(&mut watcher, "/w/d").await;
        (events, watcher)
    });
    etcd.stop();
    etcd.run().await.unwrap();
    let c = store.put("/w/c", b"1", None).await.unwrap().revision;
    let d = store.put("/w/d", b"1", None).await.unwrap().revision;
    let (events, mut watcher) = reader.await.unwrap();
    assert_eq!(
        summary(&events),
        [(b, "/w/b"), (c, "/w/c"), (d, "/w/d")],
        "every change once, in order"
    );
    assert_eq!(watcher.next_revision(), d + 1);

    // And it goes on after that.
    let e = store.put("/w/e", b"1", None).await.unwrap().revision;
    assert_eq!(
        summary(&events_until(&mut watcher, "/w/e").await),
        [(e, "/w/e")]
    );
}

#[tokio::test]
async fn a_watch_resumed_past_a_compaction_ends_with_compacted() {
    let mut etcd = Etcd::start().await;
    let store = etcd.store(Duration::from_secs(2)).await;
    let mut watcher = store.watch("/cw/", 0).await.unwrap();
    let a = store.put("/cw/a", b"1", None).await.unwrap().revision;
    events_until(&mut watcher, "/cw/a").await;
    // While nobody reads the watcher, its stream breaks and the history it
    // needs goes.
    etcd.stop();
    etcd.run().await.unwrap();
    store.put("/cw/b", b"1", None).await.unwrap();
    let c = store.put("/cw/c", b"1", None).await.unwrap().revision;
    store.compact(c).await.unwrap();
    let err = tokio::time::timeout(EVENT_DEADLINE, watcher.next())
        .await
        .unwrap()
        .unwrap_err();
    match err {
        StoreError::Compacted {
            requested,
            compact_revision,
        } => assert_eq!((requested, compact_revision), (a + 1, c)),
        other => panic!("{other:?}"),
    }
    // The watch is over: it says so again.
    assert!(matches!(
        watcher.next().await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn requests_fail_unavailable_within_the_request_timeout_while_etcd_is_down() {
    let mut etcd = Etcd::start().await;
    let timeout = Duration::from_secs(2);
    let store = etcd.store(timeout).await;
    let lease = store.grant(Duration::from_secs(30)).await.unwrap().id;
    store.put("/u/a", b"1", None).await.unwrap();
    etcd.stop();

    // Slack for a loaded machine, well under a second timeout.
    let bound = timeout + Duration::from_millis(900);
    let started = Instant::now();
    let err = store.put("/u/b", b"1", None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "a write while etcd is down: {err:?}"
    );
    assert!(err.is_temporary());
    assert!(started.elapsed() <= bound, "took {:?}", started.elapsed());
    for (what, result) in [
        ("get", store.get("/u/a").await.map(|_| ())),
        (
            "range",
            store
                .range("/u/", RangeOptions::default())
                .await
                .map(|_| ()),
        ),
        ("watch", store.watch("/u/", 0).await.map(|_| ())),
        ("keepalive", store.keepalive(lease).await.map(|_| ())),
        (
            "grant",
            store.grant(Duration::from_secs(5)).await.map(|_| ()),
        ),
    ] {
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "{what}: {result:?}"
        );
    }

    // The same store works again once etcd is back, with what it had.
    etcd.run().await.unwrap();
    assert_eq!(
        &store.get("/u/a").await.unwrap().kv.unwrap().value[..],
        b"1"
    );
    store.put("/u/b", b"2", None).await.unwrap();
    store.keepalive(lease).await.unwrap();
}

#[tokio::test]
async fn a_watch_ends_unavailable_when_etcd_stays_down() {
    let mut etcd = Etcd::start().await;
    let mut config = EtcdConfig::new([etcd.client_url()]);
    config.request_timeout = Duration::from_millis(500);
    config.watch_resume_timeout = Duration::from_secs(2);
    let store = EtcdStore::connect(config).await.unwrap();
    let mut watcher = store.watch("/gone/", 0).await.unwrap();
    let a = store.put("/gone/a", b"1", None).await.unwrap().revision;
    events_until(&mut watcher, "/gone/a").await;
    etcd.stop();
    let started = Instant::now();
    let err = tokio::time::timeout(EVENT_DEADLINE, watcher.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // It tried for about the resume timeout, no longer.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(5),
        "{took:?}"
    );
    // Where to watch again from.
    assert_eq!(watcher.next_revision(), a + 1);
}

#[tokio::test]
async fn lease_ttls_are_whole_seconds_rounded_up_to_what_etcd_grants() {
    let etcd = Etcd::start().await;
    let store = etcd.store(Duration::from_secs(5)).await;
    for (asked, at_least) in [
        (Duration::from_millis(1), 1),
        (Duration::from_millis(2500), 3),
        (Duration::from_secs(7), 7),
    ] {
        let grant = store.grant(asked).await.unwrap();
        assert!(
            grant.ttl >= Duration::from_secs(at_least),
            "{asked:?}: {grant:?}"
        );
        assert_eq!(grant.ttl.subsec_nanos(), 0, "{grant:?}");
        assert_eq!(store.keepalive(grant.id).await.unwrap(), grant.ttl);
        let left = store.time_to_live(grant.id).await.unwrap();
        assert!(left <= grant.ttl, "{left:?}");
    }
}

#[cfg(feature = "etcd-tls")]
#[tokio::test]
async fn tls_with_a_client_certificate_carries_every_kind_of_call() {
    // Starting it already read through TLS with the client certificate.
    let etcd = Etcd::start_tls().await;
    let store = etcd.store(Duration::from_secs(5)).await;
    let lease = store.grant(Duration::from_secs(30)).await.unwrap();
    let mut watcher = store.watch("/tls/", 0).await.unwrap();
    let put = store
        .put("/tls/a", b"1", Some(lease.id))
        .await
        .unwrap()
        .revision;
    assert_eq!(
        summary(&events_until(&mut watcher, "/tls/a").await),
        [(put, "/tls/a")]
    );
    assert_eq!(store.keepalive(lease.id).await.unwrap(), lease.ttl);
    let revoked = store.revoke(lease.id).await.unwrap();
    assert_eq!(revoked, put + 1);
    assert!(store.get("/tls/a").await.unwrap().kv.is_none());

    // etcd asks for a client certificate: without one, nothing gets through.
    let mut config = etcd.config(Duration::from_secs(1));
    if let Some(tls) = &mut config.tls {
        tls.cert = None;
        tls.key = None;
    }
    let anonymous = EtcdStore::connect(config).await.unwrap();
    let err = anonymous.get("/tls/a").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

fn keys_of(kvs: &[flotilla_store::KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

#[tokio::test]
async fn prefixes_map_to_etcd_key_ranges_at_the_edges() {
    let etcd = Etcd::start().await;
    let store = etcd.store(Duration::from_secs(5)).await;
    for key in ["/p/a", "/p/b", "/pz", "/q", "/é/1", "/éa"] {
        store.put(key, b"1", None).await.unwrap();
    }
    // A start past the prefix's keys: nothing, and no more.
    let past = store
        .range("/p/", RangeOptions::default().start_after("/q"))
        .await
        .unwrap();
    assert!(past.kvs.is_empty() && !past.more, "{past:?}");
    // Every key after one.
    let after = store
        .range("", RangeOptions::default().start_after("/p/b"))
        .await
        .unwrap();
    assert_eq!(keys_of(&after.kvs), ["/pz", "/q", "/é/1", "/éa"]);
    // A prefix that ends in a multi-byte character.
    let mut watcher = store.watch("/é/", 0).await.unwrap();
    let all = store.range("/é/", RangeOptions::default()).await.unwrap();
    assert_eq!(keys_of(&all.kvs), ["/é/1"]);
    let deleted = store.delete_prefix("/é/").await.unwrap();
    assert_eq!(keys_of(&deleted.deleted), ["/é/1"]);
    store.put("/éb", b"1", None).await.unwrap();
    store.put("/é/2", b"1", None).await.unwrap();
    assert_eq!(
        summary(&events_until(&mut watcher, "/é/2").await),
        [(deleted.revision, "/é/1"), (deleted.revision + 2, "/é/2")]
    );
    assert!(store.get("/éa").await.unwrap().kv.is_some());
}
