//! Committing the leader's writes: fenced transactions of at most the
//! store's limit, several in flight at once, deletes first.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use flotilla_proto::backoff::Backoff;
use flotilla_store::{Store, StoreError, Txn, TxnOp, TxnOpResponse};

use crate::leader::Leadership;
use crate::reconciler::ReconcileError;

/// Transactions of one commit in flight at once. On etcd each transaction
/// waits for its own round trip and log sync; several in flight share
/// them (etcd batches what arrives together), which is most of the time
/// of moving a lost machine's 1,000 units.
const COMMIT_IN_FLIGHT: usize = 8;

/// Commits writes in fenced transactions of at most the store's limit,
/// retrying store errors with backoff while the leadership lasts. Returns
/// each write's answer, in order.
///
/// Up to [`COMMIT_IN_FLIGHT`] transactions are in flight at once. Each is
/// fenced on its own, so a deposed leader commits none of them. The deletes
/// are all committed before any other write starts: a unit that moves is
/// never assigned to two machines at once, nor a machine given a unit
/// before what it conflicts with has left it. Every key is written at most
/// once per call (the reconcile loop's `decision_ops` makes it so), so the
/// order among the deletes, and among the other writes, changes nothing in
/// the store.
pub(crate) async fn commit(
    store: &dyn Store,
    leadership: &Leadership,
    ops: &[TxnOp],
) -> Result<Vec<TxnOpResponse>, ReconcileError> {
    let max = store.limits().max_txn_ops.max(1);
    let mut answers: Vec<Option<TxnOpResponse>> =
        std::iter::repeat_with(|| None).take(ops.len()).collect();
    let (deletes, writes): (Vec<usize>, Vec<usize>) = (0..ops.len())
        .partition(|&i| matches!(ops[i], TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. }));
    for round in [deletes, writes] {
        let mut chunks = round.chunks(max);
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < COMMIT_IN_FLIGHT
                && let Some(positions) = chunks.next()
            {
                in_flight.push(commit_chunk(store, leadership, ops, positions));
            }
            let Some(done) = in_flight.next().await else {
                break;
            };
            let (positions, responses) = done?;
            for (&i, response) in positions.iter().zip(responses) {
                answers[i] = Some(response);
            }
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.ok_or_else(|| {
                ReconcileError::Store(StoreError::Internal {
                    reason: "a committed transaction answered fewer writes than it had".to_owned(),
                })
            })
        })
        .collect()
}

/// Commits the writes of `ops` at `positions` in one fenced transaction,
/// retrying store errors with backoff while the leadership lasts; the
/// positions, and the writes' answers.
async fn commit_chunk<'a>(
    store: &dyn Store,
    leadership: &Leadership,
    ops: &[TxnOp],
    positions: &'a [usize],
) -> Result<(&'a [usize], Vec<TxnOpResponse>), ReconcileError> {
    let chunk: Vec<TxnOp> = positions.iter().map(|&i| ops[i].clone()).collect();
    let mut backoff = Backoff::default();
    loop {
        if leadership.is_lost() {
            return Err(ReconcileError::LeadershipLost);
        }
        let txn = Txn::new()
            .when([leadership.fence()])
            .and_then(chunk.iter().cloned());
        match store.txn(txn).await {
            Ok(resp) if resp.succeeded => return Ok((positions, resp.responses)),
            Ok(_) => return Err(ReconcileError::LeadershipLost),
            Err(e) if e.is_temporary() => {
                tracing::warn!("committing placements failed, retrying: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(ReconcileError::Store(e)),
        }
    }
}

#[cfg(test)]
mod tests;
