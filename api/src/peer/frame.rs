//! What travels on a peer connection, inside TLS.
//!
//! Each side first sends a hello of [`HELLO_LEN`] bytes: 8 bytes that name
//! the protocol and its version (`FLPEER` and a big-endian `u16`), then
//! the SHA-256 fingerprint of its cluster CA (32 bytes). A side that reads
//! another protocol, another version or another cluster's fingerprint says
//! so in its log and closes the connection.
//!
//! Then the dialling side sends frames: a big-endian `u32` length and that
//! many bytes, each an opaque frame of the raft node. The listening side
//! sends nothing after its hello.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol's name, first in a hello.
pub const MAGIC: [u8; 6] = *b"FLPEER";
/// The protocol's version, after [`MAGIC`].
pub const VERSION: u16 = 1;
/// The length of a hello: magic, version and the CA's fingerprint.
pub const HELLO_LEN: usize = 8 + 32;

/// How many bytes of a frame are read at a time: a frame's length alone
/// never makes the reader allocate more than what arrived and this.
const READ_CHUNK: usize = 64 * 1024;

/// Why a hello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not a flotilla peer (it sent {0:02x?} first)")]
    NotAPeer([u8; 6]),
    #[error("peer protocol version {theirs}, this server speaks {VERSION}")]
    Version { theirs: u16 },
    #[error("another cluster: its CA has fingerprint {theirs}, this cluster's is {ours}")]
    OtherCluster { theirs: String, ours: String },
}

/// This side's hello, for a cluster CA of fingerprint `ca` (SHA-256).
pub fn hello(ca: &[u8; 32]) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..6].copy_from_slice(&MAGIC);
    out[6..8].copy_from_slice(&VERSION.to_be_bytes());
    out[8..].copy_from_slice(ca);
    out
}

/// Checks the other side's hello against this cluster's CA fingerprint.
pub fn check_hello(theirs: &[u8; HELLO_LEN], ca: &[u8; 32]) -> Result<(), HelloError> {
    let mut magic = [0u8; 6];
    magic.copy_from_slice(&theirs[..6]);
    if magic != MAGIC {
        return Err(HelloError::NotAPeer(magic));
    }
    let version = u16::from_be_bytes([theirs[6], theirs[7]]);
    if version != VERSION {
        return Err(HelloError::Version { theirs: version });
    }
    if theirs[8..] != ca[..] {
        return Err(HelloError::OtherCluster {
            theirs: hex(&theirs[8..]),
            ours: hex(ca),
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends one frame (its length, then its bytes) to `out`. The caller
/// keeps frames under `u32::MAX` bytes (the transport's frame limit is far
/// below).
pub fn encode(out: &mut Vec<u8>, frame: &[u8]) {
    // Callers drop frames above their limit (at most u32::MAX) first.
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a frame of {len} bytes, above the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("no data for {0:?}")]
    Idle(std::time::Duration),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads the next frame: `None` at a clean end of the stream (between
/// frames). Each read waits at most `idle`, so a peer that stops sending
/// in the middle of a frame is dropped as an idle one is, while a large
/// frame arriving slowly but steadily is read whole.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    idle: std::time::Duration,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = tokio::time::timeout(idle, reader.read(&mut head[got..]))
            .await
            .map_err(|_| ReadError::Idle(idle))??;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(head);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(ReadError::TooLarge {
            len: u64::from(u32::from_be_bytes(head)),
            max,
        });
    }
    let mut frame = Vec::with_capacity(len.min(READ_CHUNK));
    while frame.len() < len {
        let want = (len - frame.len()).min(READ_CHUNK);
        frame.reserve(want);
        let start = frame.len();
        frame.resize(start + want, 0);
        let n = tokio::time::timeout(idle, reader.read(&mut frame[start..]))
            .await
            .map_err(|_| ReadError::Idle(idle))??;
        frame.truncate(start + n);
        if n == 0 {
            return Err(ReadError::Truncated);
        }
    }
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_hello_is_checked_for_protocol_version_and_cluster() {
        let ours = [7u8; 32];
        assert_eq!(check_hello(&hello(&ours), &ours), Ok(()));
        let mut garbage = hello(&ours);
        garbage[..6].copy_from_slice(b"GET / ");
        assert!(matches!(
            check_hello(&garbage, &ours),
            Err(HelloError::NotAPeer(_))
        ));
        let mut newer = hello(&ours);
        newer[6..8].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(
            check_hello(&newer, &ours),
            Err(HelloError::Version { theirs: 2 })
        );
        let other = check_hello(&hello(&[9u8; 32]), &ours).unwrap_err();
        assert!(matches!(other, HelloError::OtherCluster { .. }));
        assert!(other.to_string().contains(&"09".repeat(32)), "{other}");
    }

    #[tokio::test]
    async fn frames_read_back_in_order_and_the_limit_holds() {
        let mut wire = Vec::new();
        encode(&mut wire, b"one");
        encode(&mut wire, b"");
        encode(&mut wire, &[5u8; 200_000]);
        let idle = Duration::from_secs(5);
        let mut r = &wire[..];
        assert_eq!(
            read_frame(&mut r, 1 << 20, idle).await.unwrap().unwrap(),
            b"one"
        );
        assert_eq!(
            read_frame(&mut r, 1 << 20, idle).await.unwrap().unwrap(),
            b""
        );
        assert_eq!(
            read_frame(&mut r, 1 << 20, idle).await.unwrap().unwrap(),
            vec![5u8; 200_000]
        );
        assert!(read_frame(&mut r, 1 << 20, idle).await.unwrap().is_none());

        let mut r = &wire[7..];
        // The empty frame's length, then the large one's: over a limit of 100.
        assert!(read_frame(&mut r, 100, idle).await.unwrap().is_some());
        assert!(matches!(
            read_frame(&mut r, 100, idle).await,
            Err(ReadError::TooLarge {
                len: 200_000,
                max: 100
            })
        ));

        let mut r = &wire[..5];
        assert!(matches!(
            read_frame(&mut r, 100, idle).await,
            Err(ReadError::Truncated)
        ));
    }
}
