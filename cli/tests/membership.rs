//! `flotilla server add|remove` and `flotilla list-servers` as a user runs
//! them, against three real `flotilla server` processes replicating their
//! store with raft on free loopback ports, and a fourth added, started with
//! `--join`, and removed.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, ServerProcess, TempDir, ok, share_ca, stdout, wait_for_listening};
use flotilla_testbed::free_port;

const DEADLINE: Duration = Duration::from_secs(60);

/// `flotilla server --raft-id ID --peers PEERS [EXTRA]` on a free API port,
/// not waited for (a raft server listens once the cluster has a quorum).
fn spawn(data: &Path, id: u64, peers: &str, extra: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .arg("server")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--raft-id", &id.to_string(), "--peers", peers])
        .args(extra)
        .env_remove("FLOTILLA_TOKEN")
        .env_remove("FLOTILLA_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits, with [`DEADLINE`], until `check` passes.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("not within {DEADLINE:?}: {what}; last seen:\n{last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The rows of `flotilla list-servers`, as the header's columns.
fn rows(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split_whitespace().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// Children killed when dropped, until each is adopted as a
/// [`ServerProcess`].
struct Starting(Vec<(u64, std::process::Child)>);

impl Starting {
    /// Waits until each child listens, then hands it over.
    fn listening(mut self, data: impl Fn(u64) -> std::path::PathBuf) -> Vec<ServerProcess> {
        let mut out = Vec::new();
        while !self.0.is_empty() {
            let (id, mut child) = self.0.remove(0);
            // Kills the child itself when it does not listen in time.
            let endpoint = wait_for_listening(&mut child);
            out.push(ServerProcess::adopt(child, endpoint, data(id)));
        }
        out
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn servers_are_added_listed_and_removed() {
    let dir = TempDir::new("membership");
    let addresses: Vec<String> = (0..4)
        .map(|_| format!("https://127.0.0.1:{}", free_port()))
        .collect();
    let peers = (1..=3)
        .map(|id| format!("{id}={}", addresses[id - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let data = |id: u64| dir.path().join(format!("d{id}"));

    // The first server makes the CA and the secrets key; the others get
    // copies before they start, as an operator does.
    let mut starting = Starting(vec![(1, spawn(&data(1), 1, &peers, &[]))]);
    let deadline = Instant::now() + DEADLINE;
    while !(data(1).join("tls/ca.key").exists() && data(1).join("secrets.key").exists()) {
        assert!(Instant::now() < deadline, "server 1 made no CA");
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in [2, 3] {
        eventually("the CA copied whole", || {
            std::panic::catch_unwind(|| share_ca(&data(1), &data(id)))
                .map_err(|_| "cannot copy yet".to_owned())
        });
        starting.0.push((id, spawn(&data(id), id, &peers, &[])));
    }
    let mut servers = starting.listening(data);
    // One of them made the admin token: every command runs as that admin.
    let admin = servers
        .iter()
        .position(|s| s.admin_token_file().exists())
        .expect("a server made the admin token");
    let cwd = dir.path().to_owned();
    let (endpoint, ca, token) = (
        servers[admin].endpoint.clone(),
        servers[admin].ca_file(),
        servers[admin].admin_token_file(),
    );
    let run = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(&cwd)
            .env("FLOTILLA_ENDPOINT", &endpoint)
            .env("FLOTILLA_CA", &ca)
            .env("FLOTILLA_TOKEN_FILE", &token)
            .env("FLOTILLA_CLIENT_CONFIG", cwd.join(".no-client-config.yaml"))
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_CLUSTER")
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap()
    };

    // Three members, one leader, with the raft columns.
    let table = eventually("three members, one leader", || {
        let out = run(&["list-servers"]);
        let text = stdout(&out);
        let rows = rows(&text);
        let roles: Vec<&str> = rows.iter().map(|r| r["ROLE"].as_str()).collect();
        let ok = out.status.success()
            && rows.len() == 3
            && roles.iter().filter(|r| **r == "leader").count() == 1
            && roles.iter().all(|r| ["leader", "follower"].contains(r));
        if ok { Ok(text) } else { Err(text) }
    });
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVER", "ADDRESS", "VERSION", "LEADER", "RAFT-ID", "PEER", "ROLE", "TERM", "APPLIED",
            "LAG"
        ]
    );
    let ids: Vec<String> = rows(&table).iter().map(|r| r["RAFT-ID"].clone()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(rows(&table)[1]["PEER"], addresses[1]);

    // A bad address is refused by the CLI, naming the form.
    let out = run(&["server", "add", "5=http://127.0.0.1:7"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("https://HOST:PORT"),
        "{}",
        common::stderr(&out)
    );

    // Add server 4: the CLI says how to start it.
    let added = ok(&run(&["server", "add", &format!("4={}", addresses[3])]));
    let all_peers = format!("{peers},4={}", addresses[3]);
    assert!(
        added.contains(&format!("--raft-id 4 --join --peers {all_peers}")),
        "{added}"
    );
    assert!(
        added.contains("tls/") && added.contains("secrets.key"),
        "{added}"
    );
    // A member added twice: refused.
    let out = run(&["server", "add", &format!("4={}", addresses[3])]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("409"),
        "{}",
        common::stderr(&out)
    );
    // Until it runs, it is unreachable.
    let text = ok(&run(&["list-servers"]));
    let row4 = rows(&text)
        .into_iter()
        .find(|r| r["SERVER"] == "-")
        .unwrap();
    assert_eq!(row4["ROLE"], "unreachable", "{text}");

    // Start it as told: it catches up.
    share_ca(&data(1), &data(4));
    let four = Starting(vec![(4, spawn(&data(4), 4, &all_peers, &["--join"]))]);
    servers.extend(four.listening(data));
    eventually("server 4 caught up", || {
        let out = run(&["-o", "json", "list-servers"]);
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let four = list
            .as_array()
            .and_then(|l| l.iter().find(|s| s["raftId"] == 4))
            .cloned()
            .unwrap_or_default();
        let ok = four["raftRole"] == "follower" && four["applied"].as_u64().unwrap_or(0) > 0;
        if ok { Ok(()) } else { Err(list.to_string()) }
    });

    // Remove it, then stop it: three members again.
    let removed = ok(&run(&["server", "remove", "4"]));
    assert!(removed.contains("removed server 4"), "{removed}");
    servers.pop().unwrap().kill();
    eventually("server 4 gone", || {
        let text = stdout(&run(&["list-servers"]));
        let ids: Vec<String> = rows(&text).iter().map(|r| r["RAFT-ID"].clone()).collect();
        if ids == ["1", "2", "3"] {
            Ok(())
        } else {
            Err(text)
        }
    });
    // Not a member any more: removing it again is refused.
    let out = run(&["server", "remove", "4"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("not a member"),
        "{}",
        common::stderr(&out)
    );
}
