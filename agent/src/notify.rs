//! systemd's notification protocol (`sd_notify`): daemons started as
//! `Type=notify` units tell systemd when they are ready (`READY=1`), which
//! process is the main one (`MAINPID=`), their status (`STATUS=`) and that
//! they are alive (`WATCHDOG=1`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (such as `READY=1`; several assignments separated by
/// newlines) to the socket in `$NOTIFY_SOCKET`. Returns `Ok(false)` when
/// systemd gave no socket (not running under systemd as a notify unit).
pub fn try_notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
        None => SocketAddr::from_pathname(&path)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// As [`try_notify`], for daemons: a failure is logged, not fatal, since a
/// daemon that cannot notify still works.
pub fn notify(state: &str) {
    if let Err(e) = try_notify(state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
