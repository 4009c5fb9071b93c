//! The dialling side of the peer transport: one connection per peer,
//! opened when there is something to send, fed by a bounded queue.
//!
//! [`Transport::send`] only puts the frame in the peer's queue (never
//! waiting: it is called from the raft node's thread); a task per peer
//! connects (mutual TLS, the server's certificate checked against the
//! cluster CA, the peer URL's host and `OU=flotilla-server`, then the
//! hellos), writes what is queued in order, several frames to one write,
//! and connects again with backoff when the connection fails. A frame
//! that finds the queue full, or is lost with a failed connection, is
//! dropped and counted: raft sends again.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flotilla_proto::backoff::Backoff;
use flotilla_store::raft::{NodeId, Transport};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cert::{CertRefusal, PeerTls, check_peer_cert, parse_peer_url};
use super::frame::{self, HELLO_LEN, HelloError};
use super::listen::DEFAULT_MAX_FRAME;

/// How the dialling side behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialOptions {
    /// Frames queued per peer; a frame sent to a full queue is dropped.
    pub queue: usize,
    /// The largest frame sent (larger ones are dropped, with a warning):
    /// the listeners' [`PeerLimits::max_frame`](super::PeerLimits::max_frame).
    pub max_frame: usize,
    /// How long connecting may take: TCP, TLS and the hellos.
    pub connect_timeout: Duration,
    /// How long a write may make no progress before the connection is
    /// taken for dead.
    pub write_timeout: Duration,
    /// The first delay before connecting again, doubling up to
    /// `backoff_cap`.
    pub backoff_initial: Duration,
    pub backoff_cap: Duration,
    /// Queued frames are gathered into one write up to this many bytes.
    pub batch_bytes: usize,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            queue: 4096,
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
            batch_bytes: 1 << 20,
        }
    }
}

/// What was done with the frames for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Frames written to a connection.
    pub sent: u64,
    /// Frames dropped: queue full, too large, or lost with a connection.
    pub dropped: u64,
    /// Connections made (the hellos exchanged).
    pub connects: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped: AtomicU64,
    connects: AtomicU64,
}

impl Counters {
    fn counts(&self) -> PeerCounts {
        PeerCounts {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }
}

struct Peer {
    url: String,
    queue: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// The network transport of a raft node: frames to the other servers over
/// mutual TLS. Its tasks stop when it is dropped.
pub struct PeerTransport {
    tls: Arc<PeerTls>,
    handle: Handle,
    options: DialOptions,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    /// Frames to a peer not (or not validly) in the last `set_peers`.
    unknown: AtomicU64,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("node", &self.tls.node())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PeerTransport {
    /// A transport whose per-peer tasks run on `handle` (so that `send`
    /// and `set_peers` may be called from any thread).
    pub fn new(tls: Arc<PeerTls>, handle: Handle, options: DialOptions) -> PeerTransport {
        PeerTransport {
            tls,
            handle,
            options,
            peers: Mutex::new(BTreeMap::new()),
            unknown: AtomicU64::new(0),
        }
    }

    /// What was done with the frames for `to`, if it is a current peer.
    pub fn counts(&self, to: NodeId) -> Option<PeerCounts> {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.get(&to).map(|p| p.counters.counts())
    }

    /// Frames dropped because their peer was unknown.
    pub fn dropped_unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        let peers = self.peers.get_mut().unwrap_or_else(PoisonError::into_inner);
        for peer in peers.values() {
            peer.task.abort();
        }
    }
}

impl Transport for PeerTransport {
    fn send(&self, to: NodeId, frame: Vec<u8>) {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(peer) = peers.get(&to) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(to, "frame to an unknown peer dropped");
            return;
        };
        if frame.len() > self.options.max_frame {
            peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                to,
                len = frame.len(),
                max = self.options.max_frame,
                "frame above the peer frame limit dropped"
            );
            return;
        }
        if peer.queue.try_send(frame).is_err() {
            // Full (the peer is slow or unreachable) or closed (its task
            // ended): raft sends again.
            peer.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set_peers(&self, wanted: &BTreeMap<NodeId, String>) {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.retain(|id, peer| {
            let keep = wanted.get(id) == Some(&peer.url);
            if !keep {
                peer.task.abort();
            }
            keep
        });
        for (&id, url) in wanted {
            if peers.contains_key(&id) {
                continue;
            }
            let target = match Target::parse(url) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(peer = id, "peer not dialled: {e}");
                    continue;
                }
            };
            let (queue, rx) = mpsc::channel(self.options.queue.max(1));
            let counters = Arc::new(Counters::default());
            let task = self.handle.spawn(run_peer(
                id,
                target,
                Arc::clone(&self.tls),
                rx,
                self.options,
                Arc::clone(&counters),
            ));
            peers.insert(
                id,
                Peer {
                    url: url.clone(),
                    queue,
                    task,
                    counters,
                },
            );
        }
    }
}

/// Where a peer is dialled, and the name its certificate must bear.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    name: ServerName<'static>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, super::PeerError> {
        let (host, port) = parse_peer_url(url)?;
        let name = ServerName::try_from(host.clone()).map_err(|e| super::PeerError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Target { host, port, name })
    }
}

/// Why connecting to a peer failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("{0}")]
    Cert(CertRefusal),
    #[error("hello refused: {0}")]
    Hello(HelloError),
    #[error("hello failed: {0}")]
    Io(io::Error),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

async fn connect(target: &Target, tls: &PeerTls) -> Result<TlsStream<TcpStream>, DialError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(DialError::Connect)?;
    tcp.set_nodelay(true).map_err(DialError::Connect)?;
    let mut stream = TlsConnector::from(tls.client_config())
        .connect(target.name.clone(), tcp)
        .await
        .map_err(DialError::Handshake)?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref());
    check_peer_cert(leaf).map_err(DialError::Cert)?;
    let ours = frame::hello(tls.ca_fingerprint());
    stream.write_all(&ours).await.map_err(DialError::Io)?;
    stream.flush().await.map_err(DialError::Io)?;
    let mut theirs = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut theirs)
        .await
        .map_err(DialError::Io)?;
    frame::check_hello(&theirs, tls.ca_fingerprint()).map_err(DialError::Hello)?;
    Ok(stream)
}

/// The task of one peer: waits for a frame, connects (again and again,
/// with backoff, while it fails), then writes what is queued until the
/// connection fails or the other side closes it.
async fn run_peer(
    to: NodeId,
    target: Target,
    tls: Arc<PeerTls>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    options: DialOptions,
    counters: Arc<Counters>,
) {
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_cap);
    let mut failing = false;
    loop {
        // Connect only when there is something to send.
        let Some(first) = rx.recv().await else { return };
        let mut stream = loop {
            let attempt = tokio::time::timeout(options.connect_timeout, connect(&target, &tls))
                .await
                .unwrap_or(Err(DialError::Timeout(options.connect_timeout)));
            match attempt {
                Ok(s) => break s,
                Err(e) => {
                    if failing {
                        tracing::debug!(to, host = %target.host, port = target.port, "peer still unreachable: {e}");
                    } else {
                        tracing::warn!(to, host = %target.host, port = target.port, "cannot reach peer: {e}");
                        failing = true;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        if failing {
            tracing::info!(to, host = %target.host, port = target.port, "peer reachable again");
            failing = false;
        }
        counters.connects.fetch_add(1, Ordering::Relaxed);
        let since = Instant::now();
        match pump(&mut stream, first, &mut rx, &options, &counters).await {
            Pumped::QueueClosed => return,
            Pumped::Closed(why) => {
                tracing::debug!(to, host = %target.host, port = target.port, "peer connection closed: {why}");
            }
        }
        // Wait a little before dialling again: the initial delay after a
        // connection that lasted, longer after each one that did not.
        backoff.reset_if_quiet(since.elapsed());
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

enum Pumped {
    /// The transport forgot this peer.
    QueueClosed,
    /// The connection failed or was closed; it is to be dialled again.
    Closed(String),
}

/// Writes `first` and then every frame queued, batched, until the
/// connection fails.
async fn pump(
    stream: &mut TlsStream<TcpStream>,
    first: Vec<u8>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    options: &DialOptions,
    counters: &Counters,
) -> Pumped {
    let mut held = Some(first);
    let mut batch = Vec::new();
    loop {
        batch.clear();
        let mut frames = 0u64;
        if let Some(f) = held.take() {
            frame::encode(&mut batch, &f);
            frames += 1;
        }
        while batch.len() < options.batch_bytes {
            match rx.try_recv() {
                Ok(f) => {
                    frame::encode(&mut batch, &f);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        if frames == 0 {
            // Nothing to send: wait for a frame, and notice meanwhile if
            // the other side closes (it sends nothing after its hello).
            let mut scratch = [0u8; 64];
            tokio::select! {
                f = rx.recv() => match f {
                    Some(f) => held = Some(f),
                    None => return Pumped::QueueClosed,
                },
                r = stream.read(&mut scratch) => match r {
                    Ok(0) => return Pumped::Closed("closed by the peer".into()),
                    Ok(_) => return Pumped::Closed("the peer sent data after its hello".into()),
                    Err(e) => return Pumped::Closed(e.to_string()),
                },
            }
            continue;
        }
        if let Err(e) = write_batch(stream, &batch, options.write_timeout).await {
            counters.dropped.fetch_add(frames, Ordering::Relaxed);
            return Pumped::Closed(e.to_string());
        }
        counters.sent.fetch_add(frames, Ordering::Relaxed);
    }
}

/// Writes `batch` and flushes, failing if a piece makes no progress within
/// `timeout`.
async fn write_batch(
    stream: &mut TlsStream<TcpStream>,
    batch: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    const PIECE: usize = 256 * 1024;
    let stalled = || io::Error::new(io::ErrorKind::TimedOut, "write stalled");
    for piece in batch.chunks(PIECE) {
        tokio::time::timeout(timeout, stream.write_all(piece))
            .await
            .map_err(|_| stalled())??;
    }
    tokio::time::timeout(timeout, stream.flush())
        .await
        .map_err(|_| stalled())?
}
