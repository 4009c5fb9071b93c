//! A raft snapshot's data: the members' addresses and the whole state
//! machine (in the embedded store's snapshot format), as of one applied
//! index.

use std::collections::BTreeMap;

use crate::embedded::codec::{Dec, Enc};
use crate::embedded::snapshot::{decode_state, encode_state};
use crate::state::StateMachine;

use super::NodeId;
use super::node::Dedup;
use super::proposal::Origin;

/// Encodes the state and the members' addresses as of `index`.
pub(crate) fn encode(
    state: &StateMachine,
    index: u64,
    members: &BTreeMap<NodeId, String>,
    dedup: &Dedup,
) -> Vec<u8> {
    let mut enc = Enc::default();
    enc.len(members.len());
    for (id, address) in members {
        enc.u64(*id);
        enc.str(address);
    }
    let applied: Vec<_> = dedup.entries().collect();
    enc.len(applied.len());
    for (index, origin) in applied {
        enc.u64(*index);
        enc.u64(origin.node);
        enc.u64(origin.request);
    }
    let mut data = enc.buf;
    data.extend_from_slice(&encode_state(state, index));
    data
}

/// What a snapshot's data holds.
pub(crate) struct Decoded {
    pub(crate) state: StateMachine,
    /// The log index the state stands for.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) index: u64,
    pub(crate) members: BTreeMap<NodeId, String>,
    pub(crate) dedup: Dedup,
}

/// Decodes [`encode`].
pub(crate) fn decode(data: &[u8]) -> Result<Decoded, String> {
    let mut dec = Dec::new(data);
    let mut members = BTreeMap::new();
    for _ in 0..dec.count()? {
        let id = dec.u64()?;
        members.insert(id, dec.string()?);
    }
    let mut applied = Vec::new();
    for _ in 0..dec.count()? {
        let index = dec.u64()?;
        applied.push((
            index,
            Origin {
                node: dec.u64()?,
                request: dec.u64()?,
            },
        ));
    }
    let rest = dec.rest();
    let (state, index) = decode_state(rest)
        .map_err(|(offset, reason)| format!("state at offset {offset}: {reason}"))?;
    Ok(Decoded {
        state,
        index,
        members,
        dedup: Dedup::from_entries(applied),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let members =
            BTreeMap::from([(1, "https://a:1".to_owned()), (2, "https://b:2".to_owned())]);
        let mut dedup = Dedup::default();
        assert!(dedup.first_time(
            5,
            Origin {
                node: 1,
                request: 3
            }
        ));
        let data = encode(&StateMachine::default(), 9, &members, &dedup);
        let decoded = decode(&data).unwrap();
        assert_eq!(decoded.index, 9);
        assert_eq!(decoded.members, members);
        assert_eq!(decoded.state, StateMachine::default());
        let mut dedup = decoded.dedup;
        assert!(!dedup.first_time(
            6,
            Origin {
                node: 1,
                request: 3
            }
        ));
        assert!(decode(&data[..data.len() - 3]).is_err());
    }
}
