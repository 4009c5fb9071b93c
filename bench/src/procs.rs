//! Processes the benchmarks start: etcd and `flotilla server`. Each is
//! killed when its handle is dropped (pass or fail), and its pid is appended
//! to `$FLOTILLA_BENCH_PIDS` so that `scripts/bench` can stop it even if
//! this process is killed first (so is the PID 1 of B5's test host).
//! Everything listens on 127.0.0.1 only. The servers serve HTTPS and ask
//! for credentials: [`ServerProc::admin`] and [`ServerProc::joiner`] make
//! clients as an operator and the agents would ([`crate::access`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use flotilla_api::client::Client;
use flotilla_testbed::free_port;

use crate::access::{Access, Joiner, START_LIMIT};

/// Where logs of the processes started are copied when they end, if set.
static KEEP_LOGS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Keeps a copy of every log in `dir` (`--keep-logs`).
pub fn keep_logs(dir: PathBuf) {
    let _ = std::fs::create_dir_all(&dir);
    let _ = KEEP_LOGS.set(dir);
}

/// Where logs are kept (`--keep-logs`), if anywhere.
pub fn kept_logs() -> Option<&'static Path> {
    KEEP_LOGS.get().map(PathBuf::as_path)
}

fn keep_log(path: &Path) {
    if let (Some(dir), Some(name)) = (KEEP_LOGS.get(), path.file_name()) {
        let _ = std::fs::copy(path, dir.join(name));
    }
}

/// Notes a pid for `scripts/bench`'s cleanup.
pub fn record_pid(pid: u32) {
    if let Some(path) = std::env::var_os("FLOTILLA_BENCH_PIDS")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{pid}");
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL.
fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One etcd member on loopback, with its data in a directory of its own.
pub struct EtcdProc {
    child: Option<Child>,
    dir: PathBuf,
    pub endpoint: String,
}

impl EtcdProc {
    /// Starts etcd with its data under `parent` (a real disk or a tmpfs) and
    /// waits until it is healthy.
    pub fn start(parent: &Path, tag: &str) -> anyhow::Result<EtcdProc> {
        EtcdProc::start_with(parent, tag, &[])
    }

    /// The same, with more flags (`--enable-v2` for fleet's registry).
    pub fn start_with(parent: &Path, tag: &str, extra: &[&str]) -> anyhow::Result<EtcdProc> {
        let binary = std::env::var_os("FLOTILLA_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        if !binary.is_file() {
            bail!(
                "etcd not found at {} (Debian's etcd-server; scripts/bench installs it, or set FLOTILLA_ETCD)",
                binary.display()
            );
        }
        let dir = parent.join(format!("etcd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let client_port = free_port();
        let peer_port = free_port();
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new(&binary)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"))
            // A million units with their assignments and history outgrow
            // the default 2 GiB quota; 8 GiB is etcd's suggested maximum.
            .arg("--quota-backend-bytes=8589934592")
            .arg("--log-level=warn")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        record_pid(child.id());
        let mut etcd = EtcdProc {
            child: Some(child),
            dir,
            endpoint,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if healthy(client_port) {
                return Ok(etcd);
            }
            if let Some(Ok(Some(status))) = etcd.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default();
                bail!("etcd exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The data directory's size in bytes (`du`-like, files only).
    pub fn data_bytes(&self) -> u64 {
        dir_bytes(&self.dir.join("data"))
    }

    /// etcd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for EtcdProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
        keep_log(&self.dir.join("etcd.log"));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// The total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A leader decision the server logged: `assign unit=U machine=M`, with
/// the log line's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignLine {
    pub at: SystemTime,
    pub unit: String,
    pub machine: String,
}

/// A `flotilla server` process.
pub struct ServerProc {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`, as the server names itself (in its leader
    /// record too).
    pub endpoint: String,
    pub pid: u32,
    /// Its `--data-dir`, where it keeps its TLS files and, if it made the
    /// cluster, the first admin token.
    pub data_dir: PathBuf,
    /// The server's `WARN` and `ERROR` lines so far (the first 20).
    pub warnings: std::sync::Arc<std::sync::Mutex<(usize, Vec<String>)>>,
    /// Set when its stderr closed: the process ended.
    ended: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    log_path: PathBuf,
}

impl ServerProc {
    /// Starts `flotilla server --listen 127.0.0.1:<free port> ARGS` with
    /// `FLOTILLA_LOG=log_level`; `args` must hold `--data-dir`. Its log
    /// goes to `log_path`; when `assigns` is given, every `assign` line is
    /// parsed and sent there.
    pub fn start(
        binary: &Path,
        args: &[String],
        log_level: &str,
        log_path: &Path,
        assigns: Option<mpsc::Sender<AssignLine>>,
    ) -> anyhow::Result<ServerProc> {
        let data_dir = data_dir_of(args)
            .context("a benchmark's server needs --data-dir (its CA and admin token go there)")?;
        let port = free_port();
        let endpoint = format!("https://127.0.0.1:{port}");
        let mut child = Command::new(binary)
            .arg("server")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("FLOTILLA_LOG", log_level)
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_CONFIG")
            // Without it the log lines carry their timestamps.
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {} server", binary.display()))?;
        let pid = child.id();
        record_pid(pid);
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let mut log = std::fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        // Drains the pipe (a full pipe would stall the server), keeps the
        // log, and picks out the decisions and the warnings.
        let warnings = std::sync::Arc::new(std::sync::Mutex::new((0, Vec::new())));
        let noted = warnings.clone();
        let ended = Arc::new(AtomicBool::new(false));
        let ends = ended.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if (line.contains(" WARN ") || line.contains(" ERROR "))
                    && let Ok(mut w) = noted.lock()
                {
                    w.0 += 1;
                    if w.1.len() < 20 {
                        w.1.push(line.clone());
                    }
                }
                if let Some(tx) = &assigns
                    && let Some(a) = parse_assign(&line)
                {
                    let _ = tx.send(a);
                }
            }
            ends.store(true, Ordering::Relaxed);
        });
        Ok(ServerProc {
            child: Some(child),
            endpoint,
            pid,
            data_dir,
            warnings,
            ended,
            reader: Some(reader),
            log_path: log_path.to_owned(),
        })
    }

    /// The cluster CA and the first admin token from this server's data
    /// directory, once it has written them (within [`START_LIMIT`]). Only
    /// the server that made the cluster has the admin token: on a server
    /// started later with a copy of the CA, this times out.
    pub async fn access(&self) -> anyhow::Result<Access> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(access) = Access::read(&self.data_dir)? {
                return Ok(access);
            }
            self.check_running("writing its CA and admin token")?;
            if Instant::now() > deadline {
                bail!(
                    "the server wrote no CA and admin token in {} within {} s (its log: {})",
                    self.data_dir.display(),
                    START_LIMIT.as_secs(),
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of this server with the cluster's first admin token, once
    /// the server answers it (within [`START_LIMIT`]).
    pub async fn admin(&self) -> anyhow::Result<Client> {
        let client = self.access().await?.admin(&[&self.endpoint])?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let answer = client.whoami().await;
            if answer.is_ok() {
                return Ok(client);
            }
            self.check_running("serving")?;
            if Instant::now() > deadline {
                bail!(
                    "the server at {} did not take its admin token within {} s: {} (its log: {})",
                    self.endpoint,
                    START_LIMIT.as_secs(),
                    answer.err().map_or_else(String::new, |e| e.to_string()),
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Joins machines to this server's cluster: a join token for `uses`
    /// machines, made with the admin token (see [`Joiner::join`]).
    pub async fn joiner(&self, uses: u32) -> anyhow::Result<Joiner> {
        self.access().await?.joiner(&[&self.endpoint], uses).await
    }

    /// An error naming what the server said if it has ended.
    fn check_running(&self, doing: &str) -> anyhow::Result<()> {
        if !self.ended.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (_, said) = self.warnings();
        bail!(
            "the server ended before {doing}: {} (its log: {})",
            if said.is_empty() {
                "no warning or error logged".to_owned()
            } else {
                said.join("; ")
            },
            self.log_path.display()
        )
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
    }

    /// The server's resident memory (`VmRSS`) and its peak (`VmHWM`), in
    /// bytes.
    pub fn rss(&self) -> Option<(u64, u64)> {
        rss_of(self.pid)
    }

    /// How many warnings the server logged, and the distinct messages of
    /// the first ones (timestamps cut off).
    pub fn warnings(&self) -> (usize, Vec<String>) {
        let Ok(w) = self.warnings.lock() else {
            return (0, Vec::new());
        };
        let mut kinds: Vec<String> = Vec::new();
        for line in &w.1 {
            let text = line
                .split_once(' ')
                .map_or(line.as_str(), |(_, t)| t)
                .trim();
            if !kinds.iter().any(|k| k == text) {
                kinds.push(text.to_owned());
            }
        }
        (w.0, kinds)
    }

    /// CPU time the server has used so far (user + system).
    pub fn cpu(&self) -> Option<Duration> {
        cpu_of(&format!("/proc/{}/stat", self.pid))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        keep_log(&self.log_path);
    }
}

/// The value of `--data-dir` in a server's arguments.
fn data_dir_of(args: &[String]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(a) = args.next() {
        if a == "--data-dir" {
            return args.next().map(PathBuf::from);
        }
        if let Some(dir) = a.strip_prefix("--data-dir=") {
            return Some(PathBuf::from(dir));
        }
    }
    None
}

/// A process's resident memory (`VmRSS`) and its peak (`VmHWM`), in
/// bytes, from its `/proc/PID/status`.
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    rss_in(&status)
}

/// `VmRSS` and `VmHWM` in bytes, from the text of a `/proc/PID/status`.
pub fn rss_in(status: &str) -> Option<(u64, u64)> {
    Some((kb_field(status, "VmRSS:")?, kb_field(status, "VmHWM:")?))
}

/// How `VmRSS` splits, in bytes, from the text of a `/proc/PID/status`:
/// pages mapped from files (`RssFile`: the binary's code and data, shared
/// libraries) and anonymous ones (`RssAnon`: heap and stacks).
pub fn rss_split_in(status: &str) -> Option<(u64, u64)> {
    Some((kb_field(status, "RssFile:")?, kb_field(status, "RssAnon:")?))
}

/// A `NAME:   N kB` line of `/proc/PID/status`, in bytes.
fn kb_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// CPU time (user + system) of a process, from its `/proc/PID/stat`,
/// assuming the usual 100 clock ticks a second.
pub fn cpu_of(stat_path: &str) -> Option<Duration> {
    cpu_in(&std::fs::read_to_string(stat_path).ok()?)
}

/// CPU time (user + system) from the text of a `/proc/PID/stat`.
pub fn cpu_in(stat: &str) -> Option<Duration> {
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13
    // after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Parses a log line `2026-03-21T10:00:00.123456Z  INFO assign unit=U
/// machine=M` (tracing-subscriber's default format without target).
pub fn parse_assign(line: &str) -> Option<AssignLine> {
    let mut words = line.split_whitespace();
    let at = parse_utc(words.next()?)?;
    let mut seen_assign = false;
    let mut unit = None;
    let mut machine = None;
    for w in words {
        if w == "assign" {
            seen_assign = true;
        } else if let Some(u) = w.strip_prefix("unit=") {
            unit = Some(u.to_owned());
        } else if let Some(m) = w.strip_prefix("machine=") {
            machine = Some(m.to_owned());
        }
    }
    if !seen_assign {
        return None;
    }
    Some(AssignLine {
        at,
        unit: unit?,
        machine: machine?,
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC).
pub fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let n: u32 = digits.parse().ok()?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps() {
        let t = parse_utc("2024-03-01T00:00:01.5Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(secs, Duration::from_millis(1_709_251_201_500));
        let epoch = parse_utc("1970-01-01T00:00:00Z").unwrap();
        assert_eq!(epoch, SystemTime::UNIX_EPOCH);
        assert!(parse_utc("yesterday").is_none());
    }

    #[test]
    fn assign_lines_and_not_unassign_lines() {
        let line = "2024-03-01T00:00:01.000123Z  INFO assign unit=a.service machine=0123";
        let a = parse_assign(line).unwrap();
        assert_eq!(a.unit, "a.service");
        assert_eq!(a.machine, "0123");
        let un = "2024-03-01T00:00:01.000123Z  INFO unassign unit=a.service machine=0123 reason=x";
        assert!(parse_assign(un).is_none());
        assert!(parse_assign("garbage").is_none());
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        assert!(cpu_of("/proc/self/stat").is_some());
    }

    #[test]
    fn memory_and_cpu_are_read_from_procfs_text() {
        let status = "Name:\tfleetd\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(rss_in(status), Some((10 << 20, 20 << 20)));
        assert_eq!(rss_in("Name:\tx\n"), None);
        let status = "VmRSS:\t   30 kB\nRssAnon:\t   10 kB\nRssFile:\t   20 kB\n";
        assert_eq!(rss_split_in(status), Some((20 << 10, 10 << 10)));
        assert_eq!(rss_split_in("VmRSS:\t   30 kB\n"), None);
        // utime 150 and stime 50 ticks; the name holds a space and a ')'.
        let stat = "84 (fleet d)) S 1 84 84 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(cpu_in(stat), Some(Duration::from_secs(2)));
        assert!(rss_of(std::process::id()).is_some_and(|(rss, _)| rss > 0));
    }

    #[test]
    fn the_data_dir_is_found_in_either_spelling() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            data_dir_of(&args(&["--etcd", "x", "--data-dir", "/d"])),
            Some(PathBuf::from("/d"))
        );
        assert_eq!(
            data_dir_of(&args(&["--data-dir=/e"])),
            Some(PathBuf::from("/e"))
        );
        assert_eq!(data_dir_of(&args(&["--machine-ttl", "10s"])), None);
        assert_eq!(data_dir_of(&args(&["--data-dir"])), None);
    }
}
