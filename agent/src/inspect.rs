//! Answering what the servers ask about this machine's units on a
//! client's behalf: a unit's status (`flotilla status`) and its journal
//! (`flotilla journal`), read with systemd's D-Bus API and `journalctl`.
//!
//! The agent long-polls every server it knows for requests
//! (`GET /v1/agent/machines/{id}/requests`), so that any server can reach
//! it with no connection to the host, and streams each answer back to the
//! server that asked, as newline-delimited JSON. Only units flotilla wrote
//! on this machine are answered for. At most [`MAX_AT_ONCE`] answers run at
//! once; an answer whose asker went away stops (its `journalctl` killed).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::Client;
use flotilla_api::wire::reply_bytes;
use flotilla_proto::MachineId;
use flotilla_proto::backoff::Backoff;
use flotilla_proto::inspect::{
    AgentRequest, JournalEntry, MAX_MESSAGE_BYTES, ReplyLine, RequestKind, UnitStatus,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::runtime::AgentError;
use crate::systemd::SystemdManager;
use crate::unit_dir::{OnDisk, UnitDir};

/// How long one poll for requests waits.
pub const POLL_WAIT: Duration = Duration::from_secs(30);

/// Answers running at once on this machine.
pub const MAX_AT_ONCE: usize = 8;

/// How often a followed journal with nothing new says it is alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The longest line read from journalctl; longer ones are cut.
const MAX_JOURNAL_LINE: usize = 256 * 1024;

/// Lines buffered between journalctl and the upload.
const BUFFER: usize = 64;

/// What answers the requests.
pub struct Inspector<S> {
    systemd: Arc<S>,
    unit_dir: UnitDir,
    journalctl: PathBuf,
    slots: Arc<Semaphore>,
}

impl<S: SystemdManager> Inspector<S> {
    pub fn new(systemd: Arc<S>, unit_dir: UnitDir) -> Inspector<S> {
        Inspector {
            systemd,
            unit_dir,
            journalctl: PathBuf::from("journalctl"),
            slots: Arc::new(Semaphore::new(MAX_AT_ONCE)),
        }
    }

    /// Takes requests from the one server of `client` until `stop`,
    /// answering each in a task of its own.
    pub async fn serve(
        self: Arc<Self>,
        client: Client,
        machine: MachineId,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let polled = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                polled = client.agent_requests(&machine, POLL_WAIT) => polled,
            };
            match polled {
                Ok(batch) => {
                    backoff.reset();
                    for request in batch.requests {
                        let me = Arc::clone(&self);
                        let client = client.clone();
                        let machine = machine.clone();
                        tokio::spawn(async move { me.answer(client, machine, request).await });
                    }
                }
                Err(e) => {
                    tracing::debug!(server = %client.endpoint(), error = %e, "polling for requests failed");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
    }

    /// Answers one request, streaming the answer to the server that asked.
    async fn answer(&self, client: Client, machine: MachineId, request: AgentRequest) {
        // Lines are encoded here only, as the upload takes them.
        let (tx, rx) = mpsc::channel::<ReplyLine>(BUFFER);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|line| (Ok::<_, std::io::Error>(reply_bytes(&line)), rx))
        });
        let permit = Arc::clone(&self.slots).try_acquire_owned();
        let unit = request.unit.to_string();
        let id = request.id.clone();
        let produce = async move {
            let Ok(_permit) = permit else {
                let message =
                    format!("this machine answers {MAX_AT_ONCE} requests at once already");
                let _ = tx.send(ReplyLine::Error { message }).await;
                return;
            };
            let unit = request.unit.to_string();
            match self.unit_dir.read(&unit) {
                Ok(OnDisk::Managed(_)) => {}
                _ => {
                    let message = format!("unit {unit} is not one of flotilla's on this machine");
                    let _ = tx.send(ReplyLine::Error { message }).await;
                    return;
                }
            }
            match request.kind {
                RequestKind::Status { lines } => self.status(&unit, lines, &tx).await,
                RequestKind::Journal {
                    lines,
                    follow,
                    since,
                } => {
                    self.journal(&unit, lines, follow, since.as_deref(), &tx)
                        .await
                }
            }
        };
        let upload = client.agent_reply(&machine, &id, body);
        // The answer ends when the producer ends and the upload has sent
        // everything, or at once when the upload ends (the asker went away):
        // the producer is then dropped, and journalctl with it.
        tokio::pin!(produce);
        tokio::pin!(upload);
        let mut produced = false;
        let uploaded = loop {
            tokio::select! {
                () = &mut produce, if !produced => {
                    produced = true;
                }
                result = &mut upload => break result,
            }
        };
        if let Err(e) = uploaded {
            tracing::debug!(unit = %unit, error = %e, "an answer could not be sent");
        }
    }

    async fn status(&self, unit: &str, lines: u32, tx: &mpsc::Sender<ReplyLine>) {
        let props = match self.systemd.unit(unit).await {
            Ok(p) => p,
            Err(e) => {
                let message = format!("cannot read unit {unit} from systemd: {e}");
                let _ = tx.send(ReplyLine::Error { message }).await;
                return;
            }
        };
        let mut log = Vec::new();
        if lines > 0 {
            let (entries_tx, mut entries_rx) = mpsc::channel::<ReplyLine>(BUFFER);
            let read = async move {
                self.journal(unit, lines, false, None, &entries_tx).await;
            };
            let gather = async {
                while let Some(line) = entries_rx.recv().await {
                    if let ReplyLine::Entry(e) = line {
                        log.push(e);
                    }
                }
            };
            let ((), ()) = tokio::join!(read, gather);
        }
        // A container unit's image, from the file flotilla wrote.
        let image = flotilla_proto::UnitName::parse(unit).ok().and_then(|name| {
            let text = std::fs::read_to_string(self.unit_dir.file(unit)).ok()?;
            text.contains("[X-Container]")
                .then(|| {
                    crate::container::config::parse_spec(&name, &self.unit_dir.file(unit), &text)
                        .ok()
                })
                .flatten()
                .map(|spec| spec.image)
        });
        let last_probe = match (&image, crate::report::parse_status(&props.status_text).0) {
            (Some(_), Some(container)) => last_probe(&container).await,
            _ => None,
        };
        let status = UnitStatus {
            unit: unit.to_owned(),
            image,
            last_probe,
            description: props.description.clone(),
            load_state: props.load_state.clone(),
            active_state: props.active_state.clone(),
            sub_state: props.sub_state.clone(),
            since_us: props.state_change_usec,
            main_pid: (props.main_pid != 0).then_some(props.main_pid),
            tasks: props.tasks,
            memory_bytes: props.memory_bytes,
            cpu_nsec: props.cpu_nsec,
            restarts: props.n_restarts,
            exit_status: (!props.result.is_empty()).then_some(props.exec_main_status),
            result: props.result.clone(),
            status_text: props.status_text.clone(),
            control_group: props.control_group.clone(),
            log,
            ..UnitStatus::default()
        };
        if tx.send(ReplyLine::Status(Box::new(status))).await.is_ok() {
            let _ = tx
                .send(ReplyLine::End {
                    reason: "done".into(),
                })
                .await;
        }
    }

    /// The unit's journal, as `journalctl -u UNIT -o json` gives it.
    async fn journal(
        &self,
        unit: &str,
        lines: u32,
        follow: bool,
        since: Option<&str>,
        tx: &mpsc::Sender<ReplyLine>,
    ) {
        let mut command = Command::new(&self.journalctl);
        command
            .args(["--no-pager", "--quiet", "-o", "json", "-u", unit])
            .arg(format!("--lines={lines}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if follow {
            command.arg("--follow");
        }
        if let Some(since) = since {
            command.arg(format!("--since={since}"));
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let message = format!("cannot run {}: {e}", self.journalctl.display());
                let _ = tx.send(ReplyLine::Error { message }).await;
                return;
            }
        };
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return;
        };
        let mut reader = BufReader::new(stdout);
        let keep_alive = follow.then(|| {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(KEEP_ALIVE).await;
                    if tx.send(ReplyLine::KeepAlive).await.is_err() {
                        return;
                    }
                }
            })
        });
        let mut line = Vec::new();
        let outcome = loop {
            line.clear();
            match read_capped_line(&mut reader, &mut line, MAX_JOURNAL_LINE).await {
                Ok(0) => break Ok(()),
                Ok(_) => {
                    let Some(entry) = entry_of(&line) else {
                        continue;
                    };
                    if tx.send(ReplyLine::Entry(entry)).await.is_err() {
                        break Err(None);
                    }
                }
                Err(e) => break Err(Some(format!("reading journalctl: {e}"))),
            }
        };
        if let Some(task) = keep_alive {
            task.abort();
        }
        match outcome {
            Err(None) => {}
            Err(Some(message)) => {
                let _ = tx.send(ReplyLine::Error { message }).await;
            }
            Ok(()) => {
                let status = child.wait().await;
                let mut said = Vec::new();
                let _ = (&mut stderr).take(4096).read_to_end(&mut said).await;
                let last = match status {
                    Ok(s) if s.success() => ReplyLine::End {
                        reason: "done".into(),
                    },
                    Ok(s) => ReplyLine::Error {
                        message: format!(
                            "journalctl ended ({s}): {}",
                            String::from_utf8_lossy(&said).trim()
                        ),
                    },
                    Err(e) => ReplyLine::Error {
                        message: format!("journalctl: {e}"),
                    },
                };
                let _ = tx.send(last).await;
            }
        }
    }
}

/// What the last health probe of `container` printed, asked of the
/// engine; `None` when it cannot tell.
async fn last_probe(container: &str) -> Option<String> {
    use crate::container::runtime::ContainerRuntime;
    let socket = crate::container::docker::Docker::socket_from_env();
    let docker = crate::container::docker::Docker::connect(&socket, Duration::from_secs(2))
        .await
        .ok()?;
    docker.inspect(container).await.ok()??.last_probe
}

/// Reads one line into `line` (without its `\n`), keeping at most `cap`
/// bytes of it; returns the bytes read, 0 at the end.
async fn read_capped_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read);
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = cap.saturating_sub(line.len());
        let keep = if done { take - 1 } else { take };
        line.extend_from_slice(&available[..keep.min(room)]);
        reader.consume(take);
        read += take;
        if done {
            return Ok(read);
        }
    }
}

/// A journal entry from one line of `journalctl -o json`; `None` for a
/// line that is not one.
fn entry_of(line: &[u8]) -> Option<JournalEntry> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let text = |key: &str| v.get(key).and_then(serde_json::Value::as_str);
    let at_us = text("__REALTIME_TIMESTAMP")?.parse().ok()?;
    // journald gives a message that is not UTF-8 as an array of bytes.
    let message = match v.get("MESSAGE") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(bytes)) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    let (message, truncated) = cut(message, MAX_MESSAGE_BYTES);
    Some(JournalEntry {
        at_us,
        identifier: text("SYSLOG_IDENTIFIER").unwrap_or_default().to_owned(),
        pid: text("_PID").and_then(|p| p.parse().ok()),
        priority: text("PRIORITY").and_then(|p| p.parse().ok()),
        message,
        truncated,
    })
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    (s, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_as_journalctl_writes_them() {
        let line = br#"{"__REALTIME_TIMESTAMP":"1733400000000000","MESSAGE":"hello","_PID":"42","PRIORITY":"6","SYSLOG_IDENTIFIER":"sh"}"#;
        let e = entry_of(line).unwrap_or_else(|| panic!("not read"));
        assert_eq!(e.at_us, 1_733_400_000_000_000);
        assert_eq!(e.message, "hello");
        assert_eq!(e.pid, Some(42));
        assert_eq!(e.priority, Some(6));
        assert_eq!(e.identifier, "sh");
        let binary = br#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":[104,105,255]}"#;
        assert_eq!(
            entry_of(binary).map(|e| e.message),
            Some("hi\u{fffd}".into())
        );
        assert!(entry_of(b"not json").is_none());
        let long = format!(
            r#"{{"__REALTIME_TIMESTAMP":"1","MESSAGE":"{}"}}"#,
            "é".repeat(MAX_MESSAGE_BYTES)
        );
        let e = entry_of(long.as_bytes()).unwrap_or_else(|| panic!("not read"));
        assert!(e.truncated && e.message.len() <= MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_next_read_whole() {
        let data = format!("{}\nshort\n", "x".repeat(100));
        let mut reader = BufReader::with_capacity(8, data.as_bytes());
        let mut line = Vec::new();
        assert_eq!(
            read_capped_line(&mut reader, &mut line, 10)
                .await
                .unwrap_or(0),
            101
        );
        assert_eq!(line, b"xxxxxxxxxx");
        line.clear();
        assert_eq!(
            read_capped_line(&mut reader, &mut line, 10)
                .await
                .unwrap_or(0),
            6
        );
        assert_eq!(line, b"short");
        line.clear();
        assert_eq!(
            read_capped_line(&mut reader, &mut line, 10)
                .await
                .unwrap_or(9),
            0
        );
    }
}
