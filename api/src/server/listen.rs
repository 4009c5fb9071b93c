//! The accept loop: every connection is counted against the caps, given a
//! deadline for its TLS handshake and request headers, closed when idle,
//! and served with hyper's HTTP/1. A client that opens connections and
//! sends nothing, or sends half a request, holds one slot of the caps for
//! at most the header timeout, and only its own peer's share of them.
//!
//! | state of a connection | closed after |
//! |---|---|
//! | accepted, TLS handshake not done | `header_read_timeout` |
//! | no request yet, or part of a request's head | `header_read_timeout` from the first byte (or the accept) |
//! | a request in flight (reading the body, handling, a long poll) | never by this loop: bodies have their own timeout, long polls their cap |
//! | between requests | `idle_timeout` |

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use super::extract::Draining;
use crate::caps::{Caps, Slot};

/// What the server knows of a request's connection: where it comes from
/// and the client certificate it presented, if any.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub client_cert: Option<CertificateDer<'static>>,
}

/// How the API's connections are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; `None`: 8192, or fewer when the process's
    /// file limit (`RLIMIT_NOFILE`) is lower (the limit less 256, kept for
    /// the store and everything else).
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address.
    pub max_connections_per_peer: usize,
    /// How long a connection may take to finish its TLS handshake, and a
    /// request to send its whole head, counted from its first byte.
    pub header_read_timeout: Duration,
    /// How long a connection may wait between requests.
    pub idle_timeout: Duration,
    /// How long a request may take to send its body.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: None,
            max_connections_per_peer: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// The default cap on connections, when none is configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// File descriptors kept for everything but connections.
const RESERVED_FILES: usize = 256;

impl HttpLimits {
    /// The cap on connections in force: the configured one, or the default
    /// within the process's file limit.
    pub fn connection_cap(&self) -> usize {
        if let Some(n) = self.max_connections {
            return n.max(1);
        }
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        DEFAULT_MAX_CONNECTIONS
            .min(files.saturating_sub(RESERVED_FILES))
            .max(16)
    }
}

/// Plain HTTP, or TLS with this configuration.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<ServerConfig>),
    /// Only with `--insecure-http`.
    Plain,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::Plain => "Plain",
        })
    }
}

/// How long [`serve`] lets connections finish after shutdown was asked
/// for, before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then drains:
/// stops accepting, answers the long polls in flight at once (as if their
/// wait had passed), lets other requests finish, and returns when every
/// connection closed or after [`SHUTDOWN_GRACE`], whichever comes first.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    limits: HttpLimits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (draining, drain) = watch::channel(false);
    let router = router.layer(axum::Extension(Draining(drain.clone())));
    let caps = Arc::new(Caps::new(
        limits.connection_cap(),
        limits.max_connections_per_peer.max(1),
    ));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or memory, or a connection that
                // died before it was accepted: the next one may do.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(slot) = caps.take(peer.ip()) else {
            // Over a cap: closed at once, so the backlog does not fill.
            tracing::debug!(%peer, "connection refused: over the connection cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            slot,
            router.clone(),
            transport.clone(),
            limits,
            drain.clone(),
        ));
    }
    drop(listener);
    let _ = draining.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}

/// What the watchdog of a connection knows of it.
#[derive(Debug)]
struct Activity {
    state: Mutex<Phase>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Accepted or done with a request; `served` once one was answered.
    Waiting { since: Instant, served: bool },
    /// The first bytes of a request's head arrived at this instant.
    Head { since: Instant },
    /// Requests being handled.
    Busy { count: usize },
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                served: false,
            }),
            changed: Notify::new(),
        })
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = f(*state);
        self.changed.notify_one();
    }

    fn read_some(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Waiting { .. } = *state {
            *state = Phase::Head {
                since: Instant::now(),
            };
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Busy { count } => Phase::Busy { count: count + 1 },
            Phase::Waiting { .. } | Phase::Head { .. } => Phase::Busy { count: 1 },
        });
    }

    fn request_done(&self) {
        self.update(|phase| match phase {
            Phase::Busy { count } if count > 1 => Phase::Busy { count: count - 1 },
            _ => Phase::Waiting {
                since: Instant::now(),
                served: true,
            },
        });
    }

    /// When the connection is to be closed if nothing changes.
    fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        match *self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Waiting {
                since,
                served: false,
            }
            | Phase::Head { since } => Some(since + limits.header_read_timeout),
            Phase::Waiting {
                since,
                served: true,
            } => Some(since + limits.idle_timeout),
            Phase::Busy { .. } => None,
        }
    }

    /// Completes when the connection has been too slow or idle too long.
    async fn expired(&self, limits: HttpLimits) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(&limits) {
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks the request in flight on its connection for as long as it lives.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A connection's stream, reporting reads to its [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a client speaking plain HTTP to the TLS port is told, before the
/// connection closes.
fn plain_http_answer() -> String {
    let body = r#"{"error":{"code":400,"reason":"tls_required","message":"this server speaks https only: use an https:// endpoint and the cluster's CA (--ca FILE)"}}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    transport: Transport,
    limits: HttpLimits,
    mut drain: watch::Receiver<bool>,
) {
    let _slot = slot;
    let activity = Activity::new();
    let handshake_by = Instant::now() + limits.header_read_timeout;
    match transport {
        Transport::Plain => {
            let info = ConnInfo {
                peer,
                client_cert: None,
            };
            serve_http(stream, info, router, limits, activity, &mut drain).await;
        }
        Transport::Tls(config) => {
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(handshake_by, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
                Ok(Ok(1)) => {
                    let mut stream = stream;
                    let _ = tokio::time::timeout_at(
                        handshake_by,
                        stream.write_all(plain_http_answer().as_bytes()),
                    )
                    .await;
                    return;
                }
                _ => return,
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = match tokio::time::timeout_at(handshake_by, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "tls handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned();
            let info = ConnInfo { peer, client_cert };
            serve_http(tls, info, router, limits, activity, &mut drain).await;
        }
    }
}

async fn serve_http<S>(
    stream: S,
    info: ConnInfo,
    router: Router,
    limits: HttpLimits,
    activity: Arc<Activity>,
    drain: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            activity.request_started();
            let in_flight = InFlight(Arc::clone(&activity));
            request.extensions_mut().insert(info.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                drop(in_flight);
                response
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The watchdog below times heads out, with the idle time apart.
        .header_read_timeout(None)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = *drain.borrow();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            () = activity.expired(limits) => return,
            r = drain.wait_for(|d| *d), if !draining => {
                draining = true;
                if r.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
