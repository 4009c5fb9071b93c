//! Translation between the store's types and etcd's: key ranges, key-values,
//! revisions, and what etcd's errors mean as [`StoreError`]s.
//!
//! etcd counts revisions, versions and lease ids in `int64`; the store counts
//! revisions and versions in `u64`. A negative number from etcd is a broken
//! answer ([`StoreError::Internal`]); a `u64` beyond `i64::MAX` going to etcd
//! saturates (no etcd key can reach it, so every comparison keeps its
//! outcome).

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::super::{KeyValue, LeaseId, StoreError, StoreResult, WatchEvent};

/// The end of the key range of `prefix` (etcd's `range_end`): the prefix with
/// its last byte below 0xff incremented and the rest cut off. An empty prefix,
/// or one of 0xff bytes only, has no end: `"\0"`, which etcd reads as "every
/// key from the start on".
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    for (i, &byte) in prefix.iter().enumerate().rev() {
        if byte < 0xff {
            let mut end = prefix[..=i].to_vec();
            end[i] = byte + 1;
            return end;
        }
    }
    vec![0]
}

/// The `[key, range_end)` of etcd that holds exactly the keys under `prefix`
/// (every key for an empty prefix), strictly after `start_after` if given.
pub(super) fn prefix_range(prefix: &str, start_after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let end = prefix_end(prefix.as_bytes());
    let start = match start_after {
        // The smallest key after `after` is `after` followed by a zero byte.
        Some(after) if after >= prefix => {
            let mut start = after.as_bytes().to_vec();
            start.push(0);
            start
        }
        // etcd refuses an empty key: "\0" is the smallest key there is.
        _ if prefix.is_empty() => vec![0],
        _ => prefix.as_bytes().to_vec(),
    };
    (start, end)
}

/// A revision, version or count from etcd, which is never negative.
pub(super) fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Internal {
        reason: format!("etcd answered with a negative {what} ({value})"),
    })
}

/// A revision or version for etcd, saturating (see the module documentation).
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The revision in an answer's header.
pub(super) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> StoreResult<u64> {
    match header {
        Some(header) => to_u64(header.revision(), "revision"),
        None => Err(StoreError::Internal {
            reason: "etcd answered without a response header".to_owned(),
        }),
    }
}

/// A key of etcd as a string. flotilla writes only UTF-8 keys; anything else
/// was written by another program into flotilla's key space.
fn key_string(key: &[u8]) -> StoreResult<String> {
    String::from_utf8(key.to_vec()).map_err(|_| StoreError::Internal {
        reason: format!(
            "etcd holds a key that is not utf-8 ({}): was it written by another program?",
            String::from_utf8_lossy(key)
        ),
    })
}

/// A lease id of etcd (0: no lease).
pub(super) fn lease_of(id: i64) -> Option<LeaseId> {
    (id != 0).then_some(LeaseId(id))
}

/// A key-value of etcd.
pub(super) fn key_value(kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    Ok(KeyValue {
        key: key_string(kv.key())?,
        value: Arc::from(kv.value()),
        create_revision: to_u64(kv.create_revision(), "create revision")?,
        mod_revision: to_u64(kv.mod_revision(), "mod revision")?,
        version: to_u64(kv.version(), "version")?,
        lease: lease_of(kv.lease()),
    })
}

/// Key-values of etcd, in the order given.
pub(super) fn key_values(kvs: &[etcd_client::KeyValue]) -> StoreResult<Vec<KeyValue>> {
    kvs.iter().map(key_value).collect()
}

/// A watch event of etcd (with its previous value when watched with
/// `prev_kv`).
pub(super) fn watch_event(event: &etcd_client::Event) -> StoreResult<WatchEvent> {
    let Some(kv) = event.kv() else {
        return Err(StoreError::Internal {
            reason: "etcd sent a watch event without its key".to_owned(),
        });
    };
    let prev = event.prev_kv().map(key_value).transpose()?;
    Ok(match event.event_type() {
        etcd_client::EventType::Put => WatchEvent::Put {
            kv: key_value(kv)?,
            prev,
        },
        // A delete event carries the key, with the delete's revision as its
        // mod revision.
        etcd_client::EventType::Delete => WatchEvent::Delete {
            key: key_string(kv.key())?,
            revision: to_u64(kv.mod_revision(), "delete revision")?,
            prev,
        },
    })
}

/// What an error from etcd means, before the caller adds what only it knows
/// (which lease, which revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// Temporary: no connection, a timeout, no leader, an overloaded or full
    /// server, refused credentials (retrying after an operator acts may work).
    Unavailable(String),
    /// `etcdserver: requested lease not found`.
    LeaseNotFound,
    /// `mvcc: required revision has been compacted`.
    Compacted,
    /// `mvcc: required revision is a future revision`.
    FutureRevision,
    /// `too many operations in txn request`.
    TooManyOps,
    /// `duplicate key given in txn request`.
    DuplicateKey,
    /// `key is not provided`.
    EmptyKey,
    /// `request is too large` (etcd's `--max-request-bytes`).
    TooLarge,
    /// Anything else: a request this backend should not have sent.
    Other(String),
}

impl Failure {
    /// Classifies an error of the etcd client.
    pub(super) fn of(error: &etcd_client::Error) -> Self {
        match error {
            etcd_client::Error::GRpcStatus(status) => Failure::of_status(status),
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
                Failure::Unavailable(error.to_string())
            }
            // The client's own keepalive answers "lease not found" when the
            // server renews a lease to a TTL of 0 (it is gone).
            etcd_client::Error::LeaseKeepAliveError(message) if message.contains("not found") => {
                Failure::LeaseNotFound
            }
            // The request channel of a stream closed: the stream broke.
            etcd_client::Error::LeaseKeepAliveError(_) | etcd_client::Error::WatchError(_) => {
                Failure::Unavailable(error.to_string())
            }
            other => Failure::Other(other.to_string()),
        }
    }

    fn of_status(status: &tonic::Status) -> Self {
        let message = status.message();
        // etcd's errors are told apart by their messages (its Go client does
        // the same); the codes only group them.
        if message.contains("requested lease not found") {
            return Failure::LeaseNotFound;
        }
        if message.contains("required revision has been compacted") {
            return Failure::Compacted;
        }
        if message.contains("required revision is a future revision") {
            return Failure::FutureRevision;
        }
        if message.contains("too many operations in txn request") {
            return Failure::TooManyOps;
        }
        if message.contains("duplicate key given in txn request") {
            return Failure::DuplicateKey;
        }
        if message.contains("key is not provided") {
            return Failure::EmptyKey;
        }
        if message.contains("request is too large") {
            return Failure::TooLarge;
        }
        let text = format!("{:?}: {message}", status.code());
        match status.code() {
            // Transport failures, timeouts, leader changes ("no leader",
            // "leader changed", "request timed out"), a full database
            // ("database space exceeded", until an operator compacts and
            // defragments), and refused credentials or permissions (until an
            // operator fixes them): nothing to do but wait and retry.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unknown => Failure::Unavailable(text),
            _ => Failure::Other(text),
        }
    }
}

/// A call that did not answer within the request timeout.
pub(super) fn timed_out(what: &str, timeout: Duration) -> StoreError {
    StoreError::Unavailable {
        reason: format!("etcd {what} did not answer within {timeout:?}"),
    }
}

/// The error for a failure no caller-specific context applies to.
pub(super) fn generic(what: &str, failure: Failure) -> StoreError {
    match failure {
        Failure::Unavailable(reason) => StoreError::Unavailable {
            reason: format!("etcd {what}: {reason}"),
        },
        other => StoreError::Internal {
            reason: format!("etcd refused {what}: {other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_increment_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn ranges_start_at_the_prefix_or_just_after_start_after() {
        assert_eq!(
            prefix_range("/p/", None),
            (b"/p/".to_vec(), b"/p0".to_vec())
        );
        assert_eq!(prefix_range("", None), (vec![0], vec![0]));
        assert_eq!(
            prefix_range("/p/", Some("/p/07")),
            (b"/p/07\0".to_vec(), b"/p0".to_vec())
        );
        // Before the prefix: from the prefix.
        assert_eq!(
            prefix_range("/p/", Some("/a")),
            (b"/p/".to_vec(), b"/p0".to_vec())
        );
        assert_eq!(prefix_range("", Some("/x")), (b"/x\0".to_vec(), vec![0]));
    }

    #[test]
    fn revisions_convert_and_saturate() {
        assert_eq!(to_u64(7, "revision").ok(), Some(7));
        assert!(matches!(
            to_u64(-1, "revision"),
            Err(StoreError::Internal { .. })
        ));
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(to_i64(12), 12);
    }

    #[test]
    fn etcd_errors_are_classified_by_message_then_code() {
        let status = |code, message: &str| {
            Failure::of(&etcd_client::Error::GRpcStatus(tonic::Status::new(
                code, message,
            )))
        };
        assert_eq!(
            status(Code::NotFound, "etcdserver: requested lease not found"),
            Failure::LeaseNotFound
        );
        assert_eq!(
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            ),
            Failure::Compacted
        );
        assert_eq!(
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            ),
            Failure::FutureRevision
        );
        assert_eq!(
            status(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request"
            ),
            Failure::TooManyOps
        );
        assert_eq!(
            status(Code::InvalidArgument, "etcdserver: request is too large"),
            Failure::TooLarge
        );
        assert!(matches!(
            status(Code::Unavailable, "etcdserver: no leader"),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            status(Code::Unavailable, "tcp connect error"),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            status(Code::InvalidArgument, "etcdserver: something new"),
            Failure::Other(_)
        ));
        assert_eq!(
            Failure::of(&etcd_client::Error::LeaseKeepAliveError(
                "lease not found".to_owned()
            )),
            Failure::LeaseNotFound
        );
    }
}
