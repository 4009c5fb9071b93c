//! The trust boundary as a user meets it, with the real binary over real
//! HTTPS: credentials made, used and revoked with the CLI, client
//! certificates, the client configuration file, the audit log, the errors
//! of a wrong CA, a wrong name, plain HTTP and TLS to a plain server,
//! servers that refuse an empty token or insecure HTTP off loopback, and a
//! server with a low file limit that keeps serving through floods of idle
//! and half-sent connections.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, ServerProcess, TempDir, ok, stderr};

fn server(tag: &str, extra: &[&str]) -> (TempDir, ServerProcess) {
    let dir = TempDir::new(tag);
    let server = ServerProcess::start(&dir.path().join("data"), extra);
    (dir, server)
}

/// `flotilla ARGS` with only what `env` gives: no endpoint, CA or token
/// from the harness, and the client configuration file `config`.
fn bare(dir: &TempDir, config: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir.path())
        .env("FLOTILLA_CLIENT_CONFIG", dir.path().join(config))
        .env_remove("FLOTILLA_ENDPOINT")
        .env_remove("FLOTILLA_TOKEN")
        .env_remove("FLOTILLA_TOKEN_FILE")
        .env_remove("FLOTILLA_CA")
        .env_remove("FLOTILLA_CLUSTER")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn fails_with(out: &std::process::Output, text: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(text), "{}", stderr(out));
}

#[test]
fn tokens_are_made_used_and_revoked_with_the_cli() {
    let (dir, s) = server("trust-tokens", &[]);
    let made = ok(&s.run(
        dir.path(),
        &[
            "token", "create", "--role", "viewer", "--name", "grafana", "-o", "json",
        ],
    ));
    let made: serde_json::Value = serde_json::from_str(&made).unwrap();
    let token = made["token"].as_str().unwrap();
    let id = made["credential"]["id"].as_str().unwrap();
    let as_viewer = |args: &[&str]| {
        s.command(dir.path())
            .env_remove("FLOTILLA_TOKEN_FILE")
            .env("FLOTILLA_TOKEN", token)
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(
        ok(&as_viewer(&["whoami"])).trim(),
        format!("grafana ({id}), role viewer")
    );
    ok(&as_viewer(&["list-units"]));
    dir.write("web.service", "[Service]\nExecStart=/bin/sleep 1000\n");
    fails_with(&as_viewer(&["submit", "web.service"]), "403 forbidden");
    fails_with(&as_viewer(&["token", "list"]), "403 forbidden");

    let listing = ok(&s.run(dir.path(), &["token", "list"]));
    assert!(listing.contains("grafana"), "{listing}");
    assert!(!listing.contains(token), "a listing shows no secret");
    ok(&s.run(dir.path(), &["token", "revoke", id]));
    fails_with(&as_viewer(&["whoami"]), "revoked");

    // A join token prints its join line, which pins the CA.
    let join = ok(&s.run(
        dir.path(),
        &["token", "create", "--role", "join", "--uses", "2"],
    ));
    let fingerprint = s
        .run(
            dir.path(),
            &["token", "create", "--role", "join", "-o", "json"],
        )
        .stdout;
    let fingerprint: serde_json::Value = serde_json::from_slice(&fingerprint).unwrap();
    let join_line = join.lines().find(|l| l.starts_with("join:")).unwrap();
    let ca_fp = fingerprint["join"]
        .as_str()
        .unwrap()
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    assert!(join_line.ends_with(&ca_fp), "{join}");

    // Every change is in the audit log, with who made it.
    let audit = ok(&s.run(dir.path(), &["audit", "--since", "1h"]));
    assert!(audit.contains("POST /v1/tokens"), "{audit}");
    assert!(audit.contains("DELETE /v1/tokens/"), "{audit}");
    assert!(
        audit.contains("grafana"),
        "the refused submit is audited: {audit}"
    );
    assert!(audit.contains("403"), "{audit}");
}

#[test]
fn a_client_certificate_is_a_credential() {
    let (dir, s) = server("trust-cert", &[]);
    let out = dir.path().join("alice");
    ok(&s.run(
        dir.path(),
        &[
            "cert",
            "create",
            "--role",
            "operator",
            "--name",
            "alice",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let who = ok(&s
        .command(dir.path())
        .env_remove("FLOTILLA_TOKEN_FILE")
        .env("FLOTILLA_CA", out.join("ca.crt"))
        .env("FLOTILLA_CERT", out.join("client.crt"))
        .env("FLOTILLA_KEY", out.join("client.key"))
        .arg("whoami")
        .output()
        .unwrap());
    assert!(who.starts_with("alice ("), "{who}");
    assert!(who.trim().ends_with("role operator"), "{who}");
}

#[test]
fn the_client_configuration_file_points_the_cli_at_a_cluster() {
    let (dir, s) = server("trust-config", &[]);
    let endpoint = s.endpoint.clone();
    let ca = s.ca_file();
    let token = s.admin_token_file();
    // Nothing given: the default endpoint, and a clear error.
    let out = bare(&dir, "client.yaml", &[], &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    ok(&bare(
        &dir,
        "client.yaml",
        &[],
        &[
            "config",
            "set-cluster",
            "test",
            "--endpoint",
            &endpoint,
            "--ca",
            ca.to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
        ],
    ));
    let who = ok(&bare(&dir, "client.yaml", &[], &["whoami"]));
    assert!(who.starts_with("admin ("), "{who}");
    // A cluster that is not in the file is an error naming those that are.
    let out = bare(&dir, "client.yaml", &[], &["--cluster", "prod", "whoami"]);
    fails_with(&out, "no cluster \"prod\"");
    assert!(stderr(&out).contains("test"), "{}", stderr(&out));
    // Flags win over the file.
    let out = bare(
        &dir,
        "client.yaml",
        &[(
            "FLOTILLA_TOKEN",
            "flt1.0123456789abcdef.0000000000000000000000000000000000000000000000000000000000000000",
        )],
        &["whoami"],
    );
    fails_with(&out, "401 unauthorized");
    let view = ok(&bare(&dir, "client.yaml", &[], &["config", "view"]));
    assert!(view.contains("current: test"), "{view}");
}

#[test]
fn wrong_ca_wrong_name_and_wrong_scheme_are_clear_errors() {
    let dir = TempDir::new("trust-tls");
    let data = dir.path().join("data");
    let s = ServerProcess::start_args(
        &data,
        &[
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let port = s.endpoint.rsplit(':').next().unwrap().to_owned();
    let (_other_dir, other) = server("trust-tls-other", &[]);
    let run = |endpoint: &str, ca: &std::path::Path| {
        s.command(dir.path())
            .env("FLOTILLA_ENDPOINT", endpoint)
            .env("FLOTILLA_CA", ca)
            .arg("list-units")
            .output()
            .unwrap()
    };
    // The server's certificate names its addresses and loopback.
    ok(&run(&format!("https://127.0.0.1:{port}"), &s.ca_file()));
    ok(&run(&format!("https://localhost:{port}"), &s.ca_file()));
    // Another cluster's CA.
    fails_with(
        &run(&format!("https://127.0.0.1:{port}"), &other.ca_file()),
        "not signed by a CA this client trusts",
    );
    // An address the certificate does not name.
    fails_with(
        &run(&format!("https://127.0.0.2:{port}"), &s.ca_file()),
        "does not name the host",
    );
    // Plain HTTP to the TLS port.
    fails_with(
        &run(&format!("http://127.0.0.1:{port}"), &s.ca_file()),
        "this server speaks https only",
    );
    // TLS to a plain server.
    let (plain_dir, plain) = server("trust-plain", &["--insecure-http"]);
    assert!(plain.endpoint.starts_with("http://"), "{}", plain.endpoint);
    let https = plain.endpoint.replace("http://", "https://");
    let out = plain
        .command(plain_dir.path())
        .env("FLOTILLA_ENDPOINT", &https)
        .env("FLOTILLA_CA", s.ca_file())
        .arg("list-units")
        .output()
        .unwrap();
    fails_with(&out, "does not speak TLS");
}

#[test]
fn a_server_refuses_an_empty_token_and_insecure_http_off_loopback() {
    let dir = TempDir::new("trust-refuse");
    let data = dir.path().join("data");
    let server = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(BIN);
        command
            .arg("server")
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env_remove("FLOTILLA_TOKEN");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let out = server(&[], &[("FLOTILLA_TOKEN", "")]);
    fails_with(&out, "FLOTILLA_TOKEN is set but empty");
    let empty = dir.write("empty.token", "\n");
    fails_with(
        &server(&["--token-file", empty.to_str().unwrap()], &[]),
        "is empty",
    );
    fails_with(&server(&["--token", "short"], &[]), "at least 32");
    let out = Command::new(BIN)
        .args([
            "server",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
            "--insecure-http",
        ])
        .output()
        .unwrap();
    fails_with(&out, "--allow-insecure-remote");
    assert!(
        !data.join("wal-0000000000000000").exists(),
        "nothing was started"
    );
}

/// Opens `n` connections from `source` to `to`, sending `hello` on each.
fn flood(source: &str, to: SocketAddr, n: usize, hello: &[u8]) -> Vec<TcpStream> {
    // std cannot bind a socket before connecting it: tokio's can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let connected = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(source).ok()?;
            socket.connect(to).await.ok()?.into_std().ok()
        });
        if let Some(mut stream) = connected {
            stream.set_nonblocking(false).unwrap();
            let _ = stream.write_all(hello);
            out.push(stream);
        }
    }
    out
}

/// Whether the server closed `stream` (end of file or a reset) within
/// `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_server_with_a_low_file_limit_serves_through_floods() {
    let dir = TempDir::new("trust-flood");
    let data = dir.path().join("data");
    // 1024 files: the cap is 768 connections, 256 from one address.
    let mut child = Command::new("prlimit")
        .args([
            "--nofile=1024:1024",
            "--",
            BIN,
            "server",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--data-dir", data.to_str().unwrap(), "--machine-ttl", "3s"])
        .args(["--header-read-timeout", "2s"])
        .env_remove("FLOTILLA_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let endpoint = common::wait_for_listening(&mut child);
    let server = common::ServerProcess::adopt(child, endpoint, data.clone());
    let to: SocketAddr = server
        .endpoint
        .trim_start_matches("https://")
        .parse()
        .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = common::Agent::start(&[&server], 1);
    let admin = server.client().with_timeout(Duration::from_secs(5));

    // 1100 connections that send nothing, from 127.0.0.2, and 500 that
    // send half a TLS handshake, from 127.0.0.3.
    let mut idle = flood("127.0.0.2", to, 1100, b"");
    let mut half = flood("127.0.0.3", to, 500, &[0x16, 0x03, 0x01, 0x02, 0x00]);
    // Others are served meanwhile (each call gives up after 5 s).
    rt.block_on(async {
        admin.health().await.unwrap();
        admin.all_units().await.unwrap();
        admin.all_machines().await.unwrap();
    });
    // The machine stays alive: its heartbeats get through.
    let machines = rt.block_on(admin.all_machines()).unwrap();
    assert!(machines.iter().any(|m| m.machine.id == agent.id));
    // The flood's connections are closed after the header timeout.
    let deadline = Duration::from_secs(10);
    assert!(closed_within(&mut idle[0], deadline));
    assert!(closed_within(idle.last_mut().unwrap(), deadline));
    assert!(closed_within(&mut half[0], deadline));
    assert!(closed_within(half.last_mut().unwrap(), deadline));
    // And the server still answers.
    rt.block_on(admin.health()).unwrap();
}
