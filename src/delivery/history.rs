//! Notes each delivery attempt for the console: in the store's delivery log (status, latency, the
//! first bytes of the answer) and in the per-endpoint counters of the overview (`ops::metrics`).

use std::time::Duration;

use super::LaneContext;
use super::attempt::{Attempted, Outcome};
use crate::domain::{AttemptRecord, OutboxRow};
use crate::util::now_ms;

/// Notes attempt number `attempt` of `row`, which took `took`.
pub(super) fn note(cx: &LaneContext, row: &OutboxRow, attempt: i64, tried: &Attempted, took: Duration) {
    let delivered = tried.outcome == Outcome::Delivered;
    cx.metrics.attempt(&row.key.endpoint, delivered, took);
    cx.store.record_attempt(AttemptRecord {
        output_id: row.id,
        key: row.key.clone(),
        seq: row.seq,
        attempt,
        at_ms: now_ms(),
        latency_ms: took.as_millis() as i64,
        status: tried.status,
        answer: tried.answer.clone(),
        delivered,
    });
}
