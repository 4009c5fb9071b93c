//! JSON shapes of the API that `flotilla_proto::wire` does not hold (yet).

use serde::{Deserialize, Serialize};

/// `GET /v1/watch?index=N&wait=SECONDS`: the store revision after a change
/// past `index`, or the current one when `wait` passed without a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchIndex {
    /// Pass it back as `index` to wait for the next change.
    pub index: i64,
}
