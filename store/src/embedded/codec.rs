//! The embedded store's binary encoding of commands and snapshots.
//!
//! Hand-written rather than serde_json: values are arbitrary bytes (JSON
//! would spell each byte as a number, 3-4 times the size, on the write path
//! that must carry 20,000 placements per second), and the format is small
//! and versioned by the file headers. Integers are little-endian; strings and
//! byte strings are a `u32` length then the bytes.

use std::sync::Arc;

use crate::state::{Command, Entry, RevokeReason};
use crate::{Compare, CompareOp, CompareTarget, LeaseId, RangeOptions, Txn, TxnOp};

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Enc {
    pub(crate) buf: Vec<u8>,
}

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length as `u32`. Lengths are bounded by the store's limits (a value
    /// is at most `max_value_size`, a transaction at most `max_txn_ops`), far
    /// below 4 GiB; saturating keeps the encoder total, and the decoder then
    /// reports the record as damaged rather than misreading it.
    pub(crate) fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    fn lease(&mut self, lease: Option<LeaseId>) {
        self.i64(lease.map_or(0, |l| l.0));
    }
}

/// Reads encoded values; every error is a reason string, placed by the
/// caller (file and offset).
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub(crate) type DecResult<T> = Result<T, String>;

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "record ends early: {n} bytes wanted at {}, {} left",
                    self.pos,
                    self.buf.len() - self.pos
                )
            })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> DecResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Everything not read yet (the caller decodes it otherwise).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    pub(crate) fn u8(&mut self) -> DecResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> DecResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> DecResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> DecResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A count of items that each take at least one byte, checked against
    /// what is left so that a damaged count cannot make us allocate wildly.
    pub(crate) fn count(&mut self) -> DecResult<usize> {
        let n = self.u32()? as usize;
        if n > self.buf.len() - self.pos {
            return Err(format!("count {n} is larger than the rest of the record"));
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self) -> DecResult<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(crate) fn string(&mut self) -> DecResult<String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a key is not valid UTF-8".to_owned())
    }

    fn lease(&mut self) -> DecResult<Option<LeaseId>> {
        let id = self.i64()?;
        Ok((id != 0).then_some(LeaseId(id)))
    }

    pub(crate) fn finish(&self) -> DecResult<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the record",
                self.buf.len() - self.pos
            ))
        }
    }
}

const CMD_TXN: u8 = 1;
const CMD_GRANT: u8 = 2;
const CMD_REVOKE: u8 = 3;
/// A grant with the lease id chosen before logging.
const CMD_GRANT_ID: u8 = 4;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_PREFIX: u8 = 3;
const OP_GET: u8 = 4;
const OP_RANGE: u8 = 5;

/// Encodes one command.
pub(crate) fn encode_command(command: &Command, enc: &mut Enc) {
    match command {
        Command::Txn(txn) => {
            enc.u8(CMD_TXN);
            enc.len(txn.compares.len());
            for compare in &txn.compares {
                encode_compare(compare, enc);
            }
            for ops in [&txn.success, &txn.failure] {
                enc.len(ops.len());
                for op in ops {
                    encode_op(op, enc);
                }
            }
        }
        Command::Grant { ttl_ms, id: None } => {
            enc.u8(CMD_GRANT);
            enc.u64(*ttl_ms);
        }
        Command::Grant {
            ttl_ms,
            id: Some(id),
        } => {
            enc.u8(CMD_GRANT_ID);
            enc.u64(*ttl_ms);
            enc.i64(id.0);
        }
        Command::Revoke { lease, reason } => {
            enc.u8(CMD_REVOKE);
            enc.i64(lease.0);
            enc.u8(match reason {
                RevokeReason::Revoked => 0,
                RevokeReason::Expired => 1,
            });
        }
    }
}

fn encode_compare(compare: &Compare, enc: &mut Enc) {
    enc.str(&compare.key);
    enc.u8(match compare.op {
        CompareOp::Equal => 0,
        CompareOp::NotEqual => 1,
        CompareOp::Greater => 2,
        CompareOp::Less => 3,
    });
    match &compare.target {
        CompareTarget::Value(v) => {
            enc.u8(0);
            enc.bytes(v);
        }
        CompareTarget::Version(v) => {
            enc.u8(1);
            enc.u64(*v);
        }
        CompareTarget::CreateRevision(v) => {
            enc.u8(2);
            enc.u64(*v);
        }
        CompareTarget::ModRevision(v) => {
            enc.u8(3);
            enc.u64(*v);
        }
        CompareTarget::Lease(v) => {
            enc.u8(4);
            enc.lease(*v);
        }
    }
}

fn encode_op(op: &TxnOp, enc: &mut Enc) {
    match op {
        TxnOp::Put { key, value, lease } => {
            enc.u8(OP_PUT);
            enc.str(key);
            enc.bytes(value);
            enc.lease(*lease);
        }
        TxnOp::Delete { key } => {
            enc.u8(OP_DELETE);
            enc.str(key);
        }
        TxnOp::DeletePrefix { prefix } => {
            enc.u8(OP_DELETE_PREFIX);
            enc.str(prefix);
        }
        TxnOp::Get { key } => {
            enc.u8(OP_GET);
            enc.str(key);
        }
        TxnOp::Range { prefix, options } => {
            enc.u8(OP_RANGE);
            enc.str(prefix);
            enc.u64(options.limit as u64);
            match &options.start_after {
                None => enc.u8(0),
                Some(after) => {
                    enc.u8(1);
                    enc.str(after);
                }
            }
        }
    }
}

/// Decodes one command.
pub(crate) fn decode_command(dec: &mut Dec<'_>) -> DecResult<Command> {
    match dec.u8()? {
        CMD_TXN => {
            let n = dec.count()?;
            let compares = (0..n)
                .map(|_| decode_compare(dec))
                .collect::<DecResult<Vec<_>>>()?;
            let success = decode_ops(dec)?;
            let failure = decode_ops(dec)?;
            Ok(Command::Txn(Txn {
                compares,
                success,
                failure,
            }))
        }
        CMD_GRANT => Ok(Command::Grant {
            ttl_ms: dec.u64()?,
            id: None,
        }),
        CMD_GRANT_ID => Ok(Command::Grant {
            ttl_ms: dec.u64()?,
            id: Some(LeaseId(dec.i64()?)),
        }),
        CMD_REVOKE => {
            let lease = LeaseId(dec.i64()?);
            let reason = match dec.u8()? {
                0 => RevokeReason::Revoked,
                1 => RevokeReason::Expired,
                other => return Err(format!("unknown revoke reason {other}")),
            };
            Ok(Command::Revoke { lease, reason })
        }
        other => Err(format!("unknown command tag {other}")),
    }
}

fn decode_compare(dec: &mut Dec<'_>) -> DecResult<Compare> {
    let key = dec.string()?;
    let op = match dec.u8()? {
        0 => CompareOp::Equal,
        1 => CompareOp::NotEqual,
        2 => CompareOp::Greater,
        3 => CompareOp::Less,
        other => return Err(format!("unknown compare operator {other}")),
    };
    let target = match dec.u8()? {
        0 => CompareTarget::Value(Arc::from(dec.bytes()?)),
        1 => CompareTarget::Version(dec.u64()?),
        2 => CompareTarget::CreateRevision(dec.u64()?),
        3 => CompareTarget::ModRevision(dec.u64()?),
        4 => CompareTarget::Lease(dec.lease()?),
        other => return Err(format!("unknown compare target {other}")),
    };
    Ok(Compare { key, op, target })
}

fn decode_ops(dec: &mut Dec<'_>) -> DecResult<Vec<TxnOp>> {
    let n = dec.count()?;
    (0..n).map(|_| decode_op(dec)).collect()
}

fn decode_op(dec: &mut Dec<'_>) -> DecResult<TxnOp> {
    Ok(match dec.u8()? {
        OP_PUT => TxnOp::Put {
            key: dec.string()?,
            value: Arc::from(dec.bytes()?),
            lease: dec.lease()?,
        },
        OP_DELETE => TxnOp::Delete { key: dec.string()? },
        OP_DELETE_PREFIX => TxnOp::DeletePrefix {
            prefix: dec.string()?,
        },
        OP_GET => TxnOp::Get { key: dec.string()? },
        OP_RANGE => {
            let prefix = dec.string()?;
            let limit = usize::try_from(dec.u64()?)
                .map_err(|_| "range limit does not fit this machine".to_owned())?;
            let start_after = match dec.u8()? {
                0 => None,
                1 => Some(dec.string()?),
                other => return Err(format!("unknown range start flag {other}")),
            };
            TxnOp::Range {
                prefix,
                options: RangeOptions { limit, start_after },
            }
        }
        other => return Err(format!("unknown operation tag {other}")),
    })
}

/// Encodes a key's entry (snapshots).
pub(crate) fn encode_entry(key: &str, entry: &Entry, enc: &mut Enc) {
    enc.str(key);
    enc.bytes(&entry.value);
    enc.u64(entry.create_revision);
    enc.u64(entry.mod_revision);
    enc.u64(entry.version);
    enc.lease(entry.lease);
}

/// Decodes a key's entry (snapshots).
pub(crate) fn decode_entry(dec: &mut Dec<'_>) -> DecResult<(String, Entry)> {
    Ok((
        dec.string()?,
        Entry {
            value: Arc::from(dec.bytes()?),
            create_revision: dec.u64()?,
            mod_revision: dec.u64()?,
            version: dec.u64()?,
            lease: dec.lease()?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let commands = [
            Command::Txn(
                Txn::new()
                    .when([
                        Compare::value("/a", CompareOp::Less, b"x".as_slice()),
                        Compare::version("/a", CompareOp::Greater, 3),
                        Compare::create_revision("/b", CompareOp::NotEqual, 0),
                        Compare::mod_revision("/c", CompareOp::Equal, 9),
                        Compare::lease("/d", CompareOp::Equal, Some(LeaseId(4))),
                        Compare::lease("/d", CompareOp::Equal, None),
                    ])
                    .and_then([
                        TxnOp::put("/a", b"\x00\xff".as_slice()),
                        TxnOp::put_with_lease("/é", b"".as_slice(), LeaseId(7)),
                        TxnOp::delete("/b"),
                        TxnOp::get("/c"),
                    ])
                    .or_else([
                        TxnOp::delete_prefix("/p/"),
                        TxnOp::range("/q/", RangeOptions::default()),
                        TxnOp::range("/q/", RangeOptions::default().limit(5).start_after("/q/1")),
                    ]),
            ),
            Command::Grant {
                ttl_ms: 10_000,
                id: None,
            },
            Command::Grant {
                ttl_ms: 10_000,
                id: Some(LeaseId(0x1234_5678_9abc)),
            },
            Command::Revoke {
                lease: LeaseId(3),
                reason: RevokeReason::Expired,
            },
            Command::Revoke {
                lease: LeaseId(4),
                reason: RevokeReason::Revoked,
            },
        ];
        let mut enc = Enc::default();
        for command in &commands {
            encode_command(command, &mut enc);
        }
        let mut dec = Dec::new(&enc.buf);
        for command in &commands {
            assert_eq!(&decode_command(&mut dec).unwrap(), command);
        }
        dec.finish().unwrap();
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let mut enc = Enc::default();
        encode_command(
            &Command::Txn(Txn::new().and_then([TxnOp::put("/a", b"value".as_slice())])),
            &mut enc,
        );
        for cut in 0..enc.buf.len() {
            assert!(decode_command(&mut Dec::new(&enc.buf[..cut])).is_err());
        }
        let mut bad = enc.buf.clone();
        bad[0] = 99;
        assert!(decode_command(&mut Dec::new(&bad)).is_err());
        // A huge count is refused before anything is allocated.
        let mut huge = vec![CMD_TXN];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_command(&mut Dec::new(&huge)).is_err());
    }
}
