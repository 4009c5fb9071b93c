//! The listening side of the peer transport: mutual TLS, the peer
//! certificate's unit checked, hellos exchanged, then frames handed to the
//! inbox.
//!
//! | state of a connection | closed after / when |
//! |---|---|
//! | over [`PeerLimits::max_connections`] or [`PeerLimits::max_connections_per_ip`] | at once (logged at debug level only: a flood would flood the log) |
//! | TLS handshake, certificate check and hello | [`PeerLimits::hello_timeout`] from the accept |
//! | its certificate is not a server's, or its hello another cluster's | at once, with a warning naming its address |
//! | a frame above [`PeerLimits::max_frame`] | at once, with a warning |
//! | no byte received | [`PeerLimits::idle_timeout`] |
//!
//! Each connection is read by a task of its own and the inbox never
//! blocks, so a slow or hostile peer holds only its own connection and
//! its share of the caps.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_store::raft::Inbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::cert::{CertRefusal, PeerTls, check_peer_cert};
use super::frame::{self, HELLO_LEN, HelloError, ReadError};
use super::{PeerError, stopped};
use crate::caps::Caps;

/// How the peer listener's connections are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// The largest frame accepted, in bytes. A raft snapshot travels as
    /// one frame, so this bounds the size of the store a cluster can
    /// replicate; a frame above it closes its connection.
    pub max_frame: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// How long a connection may take for its TLS handshake and hello.
    pub hello_timeout: Duration,
    /// How long a connection may stay without receiving a byte.
    pub idle_timeout: Duration,
}

/// 64 MiB: the default [`PeerLimits::max_frame`].
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 64,
            max_connections_per_ip: 8,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// What a listener has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerCounts {
    /// Connections admitted (certificate and hello accepted).
    pub admitted: u64,
    /// Connections closed before they were admitted: over a cap, a failed
    /// handshake, a certificate that is not a server's, a wrong hello, or
    /// too slow.
    pub refused: u64,
    /// Frames handed to the inbox.
    pub frames: u64,
}

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    refused: AtomicU64,
    frames: AtomicU64,
}

/// A listening peer transport; stops when dropped or shut down.
#[derive(Debug)]
pub struct PeerListener {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl PeerListener {
    /// Listens on `addr`, handing the frames of admitted peers to `inbox`.
    /// Must be called within a tokio runtime.
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<PeerTls>,
        inbox: Arc<dyn Inbox>,
        limits: PeerLimits,
    ) -> Result<PeerListener, PeerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| PeerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| PeerError::Bind { addr, source })?;
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(
            listener,
            tls,
            inbox,
            limits,
            stop_rx,
            Arc::clone(&counters),
        ));
        Ok(PeerListener {
            local_addr,
            stop,
            task: Some(task),
            counters,
        })
    }

    /// The address it listens on (with the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What it has done so far.
    pub fn counts(&self) -> ListenerCounts {
        ListenerCounts {
            admitted: self.counters.admitted.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            frames: self.counters.frames.load(Ordering::Relaxed),
        }
    }

    /// Stops listening and closes every connection; returns once the port
    /// is free.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PeerListener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<PeerTls>,
    inbox: Arc<dyn Inbox>,
    limits: PeerLimits,
    stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let caps = Arc::new(Caps::new(
        limits.max_connections.max(1),
        limits.max_connections_per_ip.max(1),
    ));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stopped(stop.clone()) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection that died
                // before it was accepted: the next one may do.
                tracing::debug!("peer accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(slot) = caps.take(peer.ip()) else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            // Not a warning: a flood of connections would flood the log.
            tracing::debug!(%peer, "peer connection refused: over the connection cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = Arc::clone(&tls);
        let inbox = Arc::clone(&inbox);
        let counters = Arc::clone(&counters);
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::select! {
                () = connection(stream, peer, &tls, &*inbox, limits, &counters) => {}
                () = stopped(stop) => {}
            }
            drop(slot);
        });
    }
    // Dropping the set aborts the connections still open.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("{0}")]
    Cert(CertRefusal),
    #[error("hello refused: {0}")]
    Hello(HelloError),
    #[error("hello failed: {0}")]
    Io(io::Error),
    #[error("no handshake and hello within {0:?}")]
    Timeout(Duration),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &PeerTls,
    inbox: &dyn Inbox,
    limits: PeerLimits,
    counters: &Counters,
) {
    let admitted = tokio::time::timeout(limits.hello_timeout, admit(stream, tls))
        .await
        .unwrap_or(Err(Refused::Timeout(limits.hello_timeout)));
    let (mut stream, name) = match admitted {
        Ok(a) => a,
        Err(reason) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "peer connection refused: {reason}");
            return;
        }
    };
    // The certificate names the server; the CA issues peer certificates
    // only with a node id as their name.
    let Ok(node) = name.parse::<flotilla_store::raft::NodeId>() else {
        counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "peer connection refused: its certificate names no server id ({name:?})");
        return;
    };
    counters.admitted.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, node, "peer connected");
    loop {
        match frame::read_frame(&mut stream, limits.max_frame, limits.idle_timeout).await {
            Ok(Some(f)) => {
                counters.frames.fetch_add(1, Ordering::Relaxed);
                inbox.deliver(node, f);
            }
            Ok(None) => return,
            Err(e @ ReadError::TooLarge { .. }) => {
                tracing::warn!(%peer, node, "peer connection closed: {e}");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, node, "peer connection closed: {e}");
                return;
            }
        }
    }
}

/// The handshake, the certificate's unit and the hellos.
async fn admit(
    stream: TcpStream,
    tls: &PeerTls,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, String), Refused> {
    let mut stream = TlsAcceptor::from(tls.server_config())
        .accept(stream)
        .await
        .map_err(Refused::Handshake)?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref());
    let node = check_peer_cert(leaf).map_err(Refused::Cert)?;
    let ours = frame::hello(tls.ca_fingerprint());
    stream.write_all(&ours).await.map_err(Refused::Io)?;
    stream.flush().await.map_err(Refused::Io)?;
    let mut theirs = [0u8; HELLO_LEN];
    stream.read_exact(&mut theirs).await.map_err(Refused::Io)?;
    frame::check_hello(&theirs, tls.ca_fingerprint()).map_err(Refused::Hello)?;
    Ok((stream, node))
}
