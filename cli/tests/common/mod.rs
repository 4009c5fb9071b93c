//! Running `flotilla` as a user runs it: the real binary, a real server
//! process, temporary directories removed whatever happens.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flotilla_api::client::{Client, ClientOptions};
use flotilla_api::tls::ServerTrust;
use flotilla_proto::trust::{Role, TokenCreate};
use flotilla_proto::wire::StateReport;
use flotilla_proto::{Capacity, Health, Machine, MachineId, UnitName, UnitState};

pub mod containers;
pub mod hosts;

pub const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// A temporary directory removed when the test ends, pass or fail.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "flotilla-cli-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `flotilla server` process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub endpoint: String,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts a server on a free loopback port and waits (with a deadline)
    /// until it says where it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        Self::start_with_ttl(data_dir, "1s", extra)
    }

    /// As [`ServerProcess::start`], with machines' leases of `ttl` (real
    /// agents on test hosts need seconds, not one).
    pub fn start_with_ttl(data_dir: &Path, ttl: &str, extra: &[&str]) -> ServerProcess {
        let data = data_dir.to_str().unwrap();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--machine-ttl",
            ttl,
            "--data-dir",
            data,
        ];
        args.extend_from_slice(extra);
        Self::start_args(data_dir, &args)
    }

    /// Starts `flotilla server ARGS` and waits until it listens.
    pub fn start_args(data_dir: &Path, args: &[&str]) -> ServerProcess {
        let mut child = Command::new(BIN)
            .arg("server")
            .args(args)
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_TOKEN_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let endpoint = wait_for_listening(&mut child);
        ServerProcess::adopt(child, endpoint, data_dir.to_owned())
    }

    /// A server process started otherwise (its stderr already taken by
    /// [`wait_for_listening`]).
    pub fn adopt(child: Child, endpoint: String, data_dir: PathBuf) -> ServerProcess {
        ServerProcess {
            child,
            endpoint,
            data_dir,
        }
    }

    /// Sends the server a signal (`STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The cluster CA's certificate (the file, and PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls/ca.crt")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).unwrap()
    }

    /// The file of the cluster's first admin token (in the data directory
    /// of the server that made it).
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.admin_token_file())
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A client of this server with `token`.
    pub fn client_with(&self, token: &str) -> Client {
        client_of(&[self], &self.ca_pem(), token)
    }

    /// A client of this server with the admin token.
    pub fn client(&self) -> Client {
        self.client_with(&self.admin_token())
    }

    /// A join string (one use, an hour), made with the admin token: the
    /// join token and the CA's fingerprint.
    pub fn join_string(&self) -> String {
        self.make_join().join.unwrap()
    }

    /// A join token (one use, an hour), made with the admin token.
    pub fn join_token(&self) -> String {
        self.make_join().token
    }

    fn make_join(&self) -> flotilla_proto::trust::TokenCreated {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.client().create_token(&TokenCreate {
            role: Role::Join,
            name: "test".into(),
            ttl_ms: None,
            uses: Some(1),
        }))
        .unwrap()
    }

    /// A `flotilla` command as a user runs it against this server: its
    /// endpoint, CA and admin token from the environment, and no client
    /// configuration file of the user's.
    pub fn command(&self, cwd: &Path) -> Command {
        let mut command = Command::new(BIN);
        command
            .current_dir(cwd)
            .env("FLOTILLA_ENDPOINT", &self.endpoint)
            .env("FLOTILLA_CA", self.ca_file())
            .env("FLOTILLA_TOKEN_FILE", self.admin_token_file())
            .env("FLOTILLA_CLIENT_CONFIG", cwd.join(".no-client-config.yaml"))
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_CLUSTER")
            .stdin(Stdio::null());
        command
    }

    /// Runs `flotilla ARGS` against this server in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd).args(args).output().unwrap()
    }
}

/// Waits (with a deadline) until a `flotilla server` child says where it
/// listens, and keeps draining its stderr; kills it on timeout.
pub fn wait_for_listening(child: &mut Child) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let seen = seen.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                }
                // Keep draining, so the server never blocks on a full pipe;
                // the first lines tell why a server did not start.
                let mut seen = seen.lock().unwrap();
                if seen.len() < 50 {
                    seen.push(line);
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(e) => e,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not start listening within 30s:\n{}",
                seen.lock().unwrap().join("\n")
            );
        }
    }
}

/// A client of `servers` with `token`, trusting `ca_pem`.
pub fn client_of(servers: &[&ServerProcess], ca_pem: &[u8], token: &str) -> Client {
    Client::with_options(
        servers.iter().map(|s| s.endpoint.clone()),
        ClientOptions {
            token: Some(token.to_owned()),
            trust: ServerTrust::CaPem(ca_pem.to_vec()),
            identity: None,
        },
    )
    .unwrap()
}

/// Copies the cluster CA of `from`'s data directory into `to` (a data
/// directory), as an operator does for each server sharing an etcd.
pub fn share_ca(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("tls")).unwrap();
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(from.join("tls").join(file), to.join("tls").join(file)).unwrap();
    }
    // The key that seals the cluster's secrets is shared the same way.
    std::fs::copy(from.join("secrets.key"), to.join("secrets.key")).unwrap();
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the command succeeded, showing its output when it did not.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// A simulated agent on its own thread: registers a machine, keeps its
/// lease alive, and reports every unit in its feed as active, started with
/// its contents (`startedHash`), unless told otherwise ([`SimControl`]).
pub struct Agent {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub id: MachineId,
    control: std::sync::Arc<std::sync::Mutex<SimControl>>,
}

/// How the simulated agent behaves; changed while it runs.
#[derive(Debug, Clone, Default)]
pub struct SimControl {
    /// Units with new contents are not restarted: their new file is
    /// reported, with the contents they were started with before.
    pub hold: bool,
    /// Units started with new contents fail, with this reason.
    pub fail: Option<String>,
    /// Reports without `startedHash`, as an agent from before it.
    pub old_agent: bool,
    /// How many state reports it has sent.
    pub reports: u64,
}

impl Agent {
    /// Changes how the agent behaves from its next report on.
    pub fn control(&self, change: impl FnOnce(&mut SimControl)) {
        change(&mut self.control.lock().unwrap());
    }

    /// How many state reports it has sent.
    pub fn reports(&self) -> u64 {
        self.control.lock().unwrap().reports
    }
}

impl Agent {
    /// Starts machine number `n` talking to `servers`: it joins with a join
    /// token made with the first server's admin token.
    pub fn start(servers: &[&ServerProcess], n: u8) -> Agent {
        let id = MachineId::parse(&format!("{:032x}", u128::from(n))).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let control = std::sync::Arc::new(std::sync::Mutex::new(SimControl::default()));
        let ca = servers[0].ca_pem();
        let join = servers[0].join_token();
        let joined = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client_of(servers, &ca, &join).join(&id))
            .unwrap();
        let client = client_of(servers, &ca, &joined.token).with_timeout(Duration::from_secs(2));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let id = id.clone();
            let control = control.clone();
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let machine = Machine {
                        id: id.clone(),
                        hostname: format!("sim{n}"),
                        addresses: vec![format!("10.9.9.{n}")],
                        metadata: Default::default(),
                        capacity: Capacity {
                            cpu_millis: 2000,
                            memory_bytes: 1 << 30,
                        },
                        agent_version: "simulated".into(),
                    };
                    let mut lease = None;
                    let mut index = None;
                    // The contents each unit was last started with.
                    let mut started = std::collections::HashMap::<String, String>::new();
                    // Units started while told to fail them, and why.
                    let mut failing = std::collections::HashMap::<String, String>::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // Register (again, when the lease is gone), then
                        // keep the lease alive.
                        match lease {
                            None => match client.register_machine(&machine).await {
                                Ok(reg) => lease = Some(reg.lease),
                                Err(_) => continue,
                            },
                            Some(l) => {
                                if let Err(e) = client.heartbeat(&id, l).await
                                    && e.is_not_found()
                                {
                                    lease = None;
                                }
                            }
                        }
                        let Ok(feed) = client
                            .machine_units(&id, index, Duration::from_millis(200))
                            .await
                        else {
                            continue;
                        };
                        index = Some(feed.index);
                        let now = control.lock().unwrap().clone();
                        let states = feed
                            .units
                            .iter()
                            .map(|u| {
                                let launched =
                                    u.desired_state == flotilla_proto::DesiredState::Launched;
                                let ran = started.get(&u.name);
                                let start = ran != Some(&u.hash)
                                    && launched
                                    && (!now.hold || ran.is_none());
                                if start {
                                    started.insert(u.name.clone(), u.hash.clone());
                                    match &now.fail {
                                        Some(why) => failing.insert(u.name.clone(), why.clone()),
                                        None => failing.remove(&u.name),
                                    };
                                }
                                let ran = started.get(&u.name).cloned();
                                let error = failing.get(&u.name).cloned();
                                let failed = launched && error.is_some();
                                let active_state = if failed {
                                    "failed"
                                } else if launched {
                                    "active"
                                } else {
                                    "inactive"
                                };
                                UnitState {
                                    unit: UnitName::parse(&u.name).unwrap(),
                                    machine: id.clone(),
                                    load_state: "loaded".into(),
                                    active_state: active_state.into(),
                                    sub_state: "running".into(),
                                    hash: Some(u.hash.clone()),
                                    started_hash: if now.old_agent { None } else { ran },
                                    main_pid: Some(100),
                                    n_restarts: 0,
                                    container_id: None,
                                    health: Health::None,
                                    since_ms: 0,
                                    last_error: if failed { error } else { None },
                                }
                            })
                            .collect();
                        let _ = client
                            .report_states(
                                &id,
                                &StateReport {
                                    states,
                                    removed: vec![],
                                },
                            )
                            .await;
                        control.lock().unwrap().reports += 1;
                    }
                });
            }
        });
        Agent {
            stop,
            thread: Some(thread),
            id,
            control,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
