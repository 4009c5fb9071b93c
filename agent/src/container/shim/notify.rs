//! The shim's side of systemd's notify protocol: [`Notifier`] (`sd_notify`
//! and its barrier, or a recorder for tests), the `STATUS=` text the agent
//! reads, and the socket a `Notify=yes` container sends its own `READY=1`
//! to.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::Health;

use super::ShimError;
use crate::container::config::NOTIFY_SOCKET_NAME;

/// Where the shim sends systemd notifications (`sd_notify`).
pub trait Notifier: Clone + Send + Sync + 'static {
    /// Sends `state`: newline-separated assignments such as `READY=1`.
    fn notify(&self, state: &str);

    /// Waits until systemd has processed every notification sent so far
    /// (sd_notify_barrier(3)), up to `timeout`; `false` if it did not say so.
    fn barrier(&self, timeout: Duration) -> bool;
}

/// `sd_notify` to `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdNotify;

impl Notifier for SdNotify {
    fn notify(&self, state: &str) {
        crate::notify::notify(state);
    }

    fn barrier(&self, timeout: Duration) -> bool {
        match notify_barrier(timeout) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!("cannot wait for systemd to read the notifications: {e}");
                false
            }
        }
    }
}

/// sd_notify_barrier(3): sends `BARRIER=1` with the write end of a pipe,
/// which systemd closes once it has processed every earlier message, and
/// waits for that. `Ok(false)` without `$NOTIFY_SOCKET` or on a timeout.
pub fn notify_barrier(timeout: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::net::{
        AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
        SocketFlags, SocketType, sendmsg_addr, socket_with,
    };
    use std::os::fd::AsFd;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddrUnix::new_abstract_name(name.as_bytes())?,
        None => SocketAddrUnix::new(path.as_str())?,
    };
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let socket = socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let fds = [write.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg_addr(
        &socket,
        &addr,
        &[std::io::IoSlice::new(b"BARRIER=1")],
        &mut control,
        SendFlags::empty(),
    )?;
    drop(write);
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(&read, PollFlags::IN)];
    // The write end's last copy closed (POLLHUP): systemd got this far.
    Ok(poll(&mut fds, Some(&timeout))? > 0)
}

/// Keeps what was sent, for tests.
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier(pub Arc<Mutex<Vec<String>>>);

impl RecordingNotifier {
    /// Every notification so far.
    pub fn sent(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, state: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(state.to_owned());
    }

    fn barrier(&self, _timeout: Duration) -> bool {
        self.notify("BARRIER=1");
        true
    }
}

/// The `STATUS=` text the agent reads.
pub fn status_text(container: &str, health: Health) -> String {
    format!(
        "flotilla: container={container} health={}",
        health_word(health)
    )
}

/// `none`, `starting`, `healthy` or `unhealthy`.
pub fn health_word(health: Health) -> &'static str {
    match health {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// The next datagram on the notify socket; never without one.
pub(super) async fn receive(
    socket: Option<&tokio::net::UnixDatagram>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Binds the notify socket a `Notify=yes` container sends `READY=1` to, in
/// `dir` (mounted into the container), writable by any user the container
/// runs as.
pub(super) fn notify_socket(dir: &Path) -> Result<tokio::net::UnixDatagram, ShimError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(NOTIFY_SOCKET_NAME);
    let err = |source| ShimError::NotifySocket {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let socket = tokio::net::UnixDatagram::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(socket)
}
