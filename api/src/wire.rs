//! JSON shapes of the API that `flotilla_proto::wire` does not hold (yet).

use flotilla_proto::inspect::ReplyLine;
use serde::{Deserialize, Serialize};

/// `GET /v1/watch?index=N&wait=SECONDS`: the store revision after a change
/// past `index`, or the current one when `wait` passed without a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchIndex {
    /// Pass it back as `index` to wait for the next change.
    pub index: i64,
}

/// A line of a reply stream (`flotilla status`, `flotilla journal`) as
/// agents and servers send it: JSON and a line end.
pub fn reply_bytes(line: &ReplyLine) -> Vec<u8> {
    // Serialising these plain types cannot fail.
    let mut out = serde_json::to_vec(line).unwrap_or_default();
    out.push(b'\n');
    out
}
