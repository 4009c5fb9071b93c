//! The network between the servers of a cluster: the transport of the
//! raft-replicated store ([`flotilla_store::raft::Transport`] and
//! [`Inbox`](flotilla_store::raft::Inbox)), over mutual TLS.
//!
//! - [`cert`]: each server's **peer certificate**, signed by the cluster CA
//!   with `OU=flotilla-server` (which no user's or machine's certificate
//!   bears: the CA's signature alone admits no one), renewed before it
//!   expires, and the check of the other side's.
//! - [`frame`]: the **hello** (protocol, version and the cluster CA's
//!   fingerprint, so that servers of different clusters refuse each other)
//!   and the length-prefixed **frames** after it.
//! - [`listen`]: [`PeerListener`], which admits peers and hands their
//!   frames to the inbox, within [`PeerLimits`].
//! - [`dial`]: [`PeerTransport`], one connection per peer fed by a bounded
//!   queue, reconnecting with backoff.
//!
//! Connections go one way: a server sends its frames on the connection it
//! dialled and receives on those its peers dialled.

pub mod cert;
pub mod dial;
pub mod frame;
pub mod listen;

#[cfg(test)]
mod tests;

pub use cert::PeerTls;
pub use dial::{DialOptions, PeerCounts, PeerTransport};
pub use listen::{ListenerCounts, PeerLimits, PeerListener};

use crate::tls::TlsError;

/// Why the peer transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("peer address {url:?} is not valid: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Completes when `stop` says so, or its sender is gone.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
