//! What a raft log entry carries: a command of the state machine, or a
//! lease keepalive, tagged with the node and request that proposed it, so
//! that the node that proposed it answers its caller when it applies the
//! entry (every node applies every entry; only the proposer answers).

use crate::LeaseId;
use crate::embedded::codec::{self, Dec, DecResult, Enc};
use crate::state::Command;

use super::NodeId;

const TAG_COMMAND: u8 = b'C';
const TAG_KEEPALIVE: u8 = b'K';

/// Who is waiting for an entry: the proposing node and its request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) node: NodeId,
    pub(crate) request: u64,
}

/// The body of a normal log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A change to the state machine.
    Command(Command),
    /// A lease keepalive: replicated, so that every node (and so the next
    /// leader) knows the lease is alive. It changes no key and no revision.
    Keepalive(LeaseId),
}

/// Encodes an entry's data.
pub(crate) fn encode(origin: Origin, body: &Body) -> Vec<u8> {
    let mut enc = Enc::default();
    match body {
        Body::Command(command) => {
            enc.u8(TAG_COMMAND);
            encode_origin(&mut enc, origin);
            codec::encode_command(command, &mut enc);
        }
        Body::Keepalive(lease) => {
            enc.u8(TAG_KEEPALIVE);
            encode_origin(&mut enc, origin);
            enc.i64(lease.0);
        }
    }
    enc.buf
}

/// Decodes an entry's data.
pub(crate) fn decode(data: &[u8]) -> DecResult<(Origin, Body)> {
    let mut dec = Dec::new(data);
    let tag = dec.u8()?;
    let origin = decode_origin(&mut dec)?;
    let body = match tag {
        TAG_COMMAND => Body::Command(codec::decode_command(&mut dec)?),
        TAG_KEEPALIVE => Body::Keepalive(LeaseId(dec.i64()?)),
        other => return Err(format!("unknown raft entry kind {other}")),
    };
    dec.finish()?;
    Ok((origin, body))
}

/// A membership change's context: who proposed it, and the address of the
/// server added (empty for a removal).
pub(crate) fn encode_conf_context(origin: Origin, address: &str) -> Vec<u8> {
    let mut enc = Enc::default();
    encode_origin(&mut enc, origin);
    enc.str(address);
    enc.buf
}

/// Decodes [`encode_conf_context`].
pub(crate) fn decode_conf_context(data: &[u8]) -> DecResult<(Origin, String)> {
    let mut dec = Dec::new(data);
    let origin = decode_origin(&mut dec)?;
    let address = dec.string()?;
    dec.finish()?;
    Ok((origin, address))
}

fn encode_origin(enc: &mut Enc, origin: Origin) {
    enc.u64(origin.node);
    enc.u64(origin.request);
}

fn decode_origin(dec: &mut Dec<'_>) -> DecResult<Origin> {
    Ok(Origin {
        node: dec.u64()?,
        request: dec.u64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Txn, TxnOp};

    #[test]
    fn entries_round_trip() {
        let origin = Origin {
            node: 3,
            request: 77,
        };
        let bodies = [
            Body::Command(Command::Txn(
                Txn::new().and_then([TxnOp::put("/a", b"1".to_vec())]),
            )),
            Body::Keepalive(LeaseId(42)),
        ];
        for body in bodies {
            let data = encode(origin, &body);
            assert_eq!(decode(&data).unwrap(), (origin, body));
        }
        let context = encode_conf_context(origin, "https://10.0.0.1:7071");
        assert_eq!(
            decode_conf_context(&context).unwrap(),
            (origin, "https://10.0.0.1:7071".to_owned())
        );
        assert!(decode(b"Zjunk").is_err());
    }
}
