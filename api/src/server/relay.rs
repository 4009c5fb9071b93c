//! The rendezvous between clients asking about a unit on its host and the
//! host's agent, on one server: requests wait in the machine's mailbox
//! until the agent's long poll takes them, and each request's reply is
//! passed from the agent's upload to the client's download as it comes.
//!
//! Every agent long-polls every server it knows, so any server can reach
//! any live agent without a connection to the host. Everything is
//! bounded: requests waiting per machine, replies open in all, and the
//! buffer between an agent and a client (a slow client slows only its
//! own reply, which slows only the agent's upload of it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use flotilla_proto::MachineId;
use flotilla_proto::inspect::{AgentRequest, RequestKind};
use flotilla_proto::name::UnitName;
use tokio::sync::{Notify, mpsc};

/// Requests waiting for, or being answered by, one machine's agent.
pub const MAX_OPEN_PER_MACHINE: usize = 16;

/// Requests open on one server, all machines together.
pub const MAX_OPEN: usize = 1024;

/// Chunks buffered between an agent's upload and the client's download.
const BUFFER_CHUNKS: usize = 16;

/// An agent that polled within this long counts as connected.
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(5);

/// Most requests handed to an agent in one answer to its poll.
const MAX_BATCH: usize = 16;

/// Why a request could not be passed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the agent of machine {0} is not connected to this server")]
    NotConnected(MachineId),
    #[error("machine {machine} has {open} requests open already, the most it may")]
    MachineBusy { machine: MachineId, open: usize },
    #[error("this server has {0} requests to agents open already, the most it may")]
    ServerBusy(usize),
    #[error("no open request {0} for this machine")]
    UnknownRequest(String),
}

#[derive(Default)]
struct Mailbox {
    queue: VecDeque<AgentRequest>,
    notify: Arc<Notify>,
    /// Polls waiting now.
    polling: usize,
    polled_at: Option<Instant>,
}

struct Open {
    machine: MachineId,
    /// Taken by the agent's reply (once).
    tx: Option<mpsc::Sender<Bytes>>,
}

#[derive(Default)]
struct Inner {
    mailboxes: HashMap<MachineId, Mailbox>,
    open: HashMap<String, Open>,
}

/// The relay of one server.
#[derive(Default)]
pub struct Relay {
    inner: Mutex<Inner>,
    next: AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

/// A request asked: its reply comes on `reply`; dropping it withdraws the
/// request (the agent's upload then ends).
pub struct Asked {
    pub reply: mpsc::Receiver<Bytes>,
    _open: OpenGuard,
}

struct OpenGuard {
    relay: Arc<Relay>,
    id: String,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut inner = self.relay.lock();
        if let Some(open) = inner.open.remove(&self.id)
            && let Some(mailbox) = inner.mailboxes.get_mut(&open.machine)
        {
            mailbox.queue.retain(|r| r.id != self.id);
        }
    }
}

impl Relay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks `machine`'s agent about `unit`.
    pub fn ask(
        self: &Arc<Self>,
        machine: &MachineId,
        unit: &UnitName,
        kind: RequestKind,
    ) -> Result<Asked, RelayError> {
        let mut inner = self.lock();
        let connected = inner.mailboxes.get(machine).is_some_and(|m| {
            m.polling > 0 || m.polled_at.is_some_and(|t| t.elapsed() < CONNECTED_WITHIN)
        });
        if !connected {
            return Err(RelayError::NotConnected(machine.clone()));
        }
        if inner.open.len() >= MAX_OPEN {
            return Err(RelayError::ServerBusy(inner.open.len()));
        }
        let open_here = inner
            .open
            .values()
            .filter(|o| &o.machine == machine)
            .count();
        if open_here >= MAX_OPEN_PER_MACHINE {
            return Err(RelayError::MachineBusy {
                machine: machine.clone(),
                open: open_here,
            });
        }
        let id = format!("r{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(BUFFER_CHUNKS);
        inner.open.insert(
            id.clone(),
            Open {
                machine: machine.clone(),
                tx: Some(tx),
            },
        );
        let mailbox = inner.mailboxes.entry(machine.clone()).or_default();
        mailbox.queue.push_back(AgentRequest {
            id: id.clone(),
            unit: unit.clone(),
            kind,
        });
        mailbox.notify.notify_waiters();
        Ok(Asked {
            reply: rx,
            _open: OpenGuard {
                relay: Arc::clone(self),
                id,
            },
        })
    }

    /// An agent's poll: the requests waiting for `machine`, at once if
    /// there are any, else once one comes or `wait` passes (or `stop`
    /// resolves).
    pub async fn poll(
        &self,
        machine: &MachineId,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Vec<AgentRequest> {
        let notify = {
            let mut inner = self.lock();
            let mailbox = inner.mailboxes.entry(machine.clone()).or_default();
            mailbox.polling += 1;
            mailbox.polled_at = Some(Instant::now());
            Arc::clone(&mailbox.notify)
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut taken = self.take(machine);
        if taken.is_empty() {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(wait) => {}
                () = stop => {}
            }
            taken = self.take(machine);
        }
        let mut inner = self.lock();
        if let Some(mailbox) = inner.mailboxes.get_mut(machine) {
            mailbox.polling = mailbox.polling.saturating_sub(1);
            mailbox.polled_at = Some(Instant::now());
        }
        taken
    }

    fn take(&self, machine: &MachineId) -> Vec<AgentRequest> {
        let mut inner = self.lock();
        let Some(mailbox) = inner.mailboxes.get_mut(machine) else {
            return Vec::new();
        };
        let n = mailbox.queue.len().min(MAX_BATCH);
        mailbox.queue.drain(..n).collect()
    }

    /// The channel an agent's reply to request `id` goes into; once per
    /// request, and only for the machine it was asked of.
    pub fn reply(&self, machine: &MachineId, id: &str) -> Result<mpsc::Sender<Bytes>, RelayError> {
        let mut inner = self.lock();
        match inner.open.get_mut(id) {
            Some(open) if &open.machine == machine => open
                .tx
                .take()
                .ok_or_else(|| RelayError::UnknownRequest(id.to_owned())),
            _ => Err(RelayError::UnknownRequest(id.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(n: u8) -> MachineId {
        MachineId::parse(&format!("{n:02x}").repeat(16)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn unit() -> UnitName {
        UnitName::parse("a.service").unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_request_reaches_a_polling_agent_and_its_reply_the_client() {
        let relay = Arc::new(Relay::default());
        let m = machine(1);
        assert_eq!(
            relay
                .ask(&m, &unit(), RequestKind::Status { lines: 0 })
                .err(),
            Some(RelayError::NotConnected(m.clone()))
        );
        let poll = {
            let relay = Arc::clone(&relay);
            let m = m.clone();
            tokio::spawn(async move {
                relay
                    .poll(&m, Duration::from_secs(10), std::future::pending())
                    .await
            })
        };
        // Wait until the poll is registered.
        while relay
            .lock()
            .mailboxes
            .get(&m)
            .is_none_or(|b| b.polling == 0)
        {
            tokio::task::yield_now().await;
        }
        let mut asked = relay
            .ask(&m, &unit(), RequestKind::Status { lines: 0 })
            .unwrap_or_else(|e| panic!("{e}"));
        let got = poll.await.unwrap_or_default();
        assert_eq!(got.len(), 1);
        // Another machine may not answer it; the machine may, once.
        assert!(relay.reply(&machine(2), &got[0].id).is_err());
        let tx = relay
            .reply(&m, &got[0].id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(relay.reply(&m, &got[0].id).is_err());
        tx.send(Bytes::from_static(b"x\n"))
            .await
            .unwrap_or_default();
        drop(tx);
        assert_eq!(asked.reply.recv().await, Some(Bytes::from_static(b"x\n")));
        assert_eq!(asked.reply.recv().await, None);
        drop(asked);
        assert!(relay.lock().open.is_empty());
    }

    #[tokio::test]
    async fn open_requests_are_bounded_per_machine() {
        let relay = Arc::new(Relay::default());
        let m = machine(1);
        relay
            .lock()
            .mailboxes
            .entry(m.clone())
            .or_default()
            .polled_at = Some(Instant::now());
        let held: Vec<_> = (0..MAX_OPEN_PER_MACHINE)
            .map(|_| relay.ask(&m, &unit(), RequestKind::Status { lines: 0 }))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        assert!(matches!(
            relay.ask(&m, &unit(), RequestKind::Status { lines: 0 }),
            Err(RelayError::MachineBusy { .. })
        ));
        drop(held);
        assert!(
            relay
                .ask(&m, &unit(), RequestKind::Status { lines: 0 })
                .is_ok()
        );
    }
}
