//! Running `flotilla` as a user runs it: the real binary, a real server
//! process, temporary directories removed whatever happens.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flotilla_api::client::Client;
use flotilla_proto::wire::StateReport;
use flotilla_proto::{Capacity, Health, Machine, MachineId, UnitName, UnitState};

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
        let data = data_dir.to_str().unwrap();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--machine-ttl",
            "1s",
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
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let _ = tx.send(line[at + "listening on ".len()..].trim().to_owned());
                }
                // Keep draining, so the server never blocks on a full pipe.
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(e) => e,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start listening within 30s");
            }
        };
        ServerProcess {
            child,
            endpoint,
            data_dir: data_dir.to_owned(),
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

    /// Runs `flotilla ARGS` against this server in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env("FLOTILLA_ENDPOINT", &self.endpoint)
            .env_remove("FLOTILLA_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
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
/// lease alive, and reports every unit in its feed as active.
pub struct Agent {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub id: MachineId,
}

impl Agent {
    /// Starts machine number `n` talking to `endpoints`.
    pub fn start(endpoints: &[&str], n: u8) -> Agent {
        let id = MachineId::parse(&format!("{:032x}", u128::from(n))).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = Client::new(endpoints.iter().map(|e| e.to_string()), None)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let id = id.clone();
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
                        let states = feed
                            .units
                            .iter()
                            .map(|u| UnitState {
                                unit: UnitName::parse(&u.name).unwrap(),
                                machine: id.clone(),
                                load_state: "loaded".into(),
                                active_state: if u.desired_state
                                    == flotilla_proto::DesiredState::Launched
                                {
                                    "active".into()
                                } else {
                                    "inactive".into()
                                },
                                sub_state: "running".into(),
                                hash: Some(u.hash.clone()),
                                main_pid: Some(100),
                                n_restarts: 0,
                                container_id: None,
                                health: Health::None,
                                since_ms: 0,
                                last_error: None,
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
                    }
                });
            }
        });
        Agent {
            stop,
            thread: Some(thread),
            id,
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
