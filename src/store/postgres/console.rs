//! The console's delivery log and traces on PostgreSQL (the same tables and bounds as
//! `sqlite/history.rs` and `sqlite/traces.rs`).
//!
//! PLACEHOLDER while the port is finished on its branch: nothing is logged yet.

use super::Tx;
use crate::domain::{
    AttemptRecord, EndpointCounts, OutputEntry, OutputFilter, OutputState, SessionKey, SessionSummary, Trace, TraceRow,
};
use crate::store::Result;

/// Attempts noted (`Store::record_attempt`) that did not deliver an output: into `attempts`.
pub(super) fn write_attempts(_tx: &mut Tx<'_>, _notes: &[AttemptRecord]) -> Result<()> {
    Ok(())
}

/// Outputs `ids` were delivered and are about to leave the outbox (called before the delete):
/// copied into `output_log` with the noted attempt that delivered each; the other `notes` into
/// `attempts`; the log trimmed to its bounds.
pub(super) fn delivered(_tx: &mut Tx<'_>, _ids: &[i64], _notes: &[AttemptRecord], _now_ms: i64) -> Result<()> {
    Ok(())
}

/// Outputs `ids` leave the outbox in `state` (called before they are moved).
pub(super) fn leaving(
    _tx: &mut Tx<'_>,
    _ids: &[i64],
    _state: OutputState,
    _error: Option<&str>,
    _now_ms: i64,
) -> Result<()> {
    Ok(())
}

/// Output `id` became a dead letter (called after the move): its log row links the dead letter.
pub(super) fn died(_tx: &mut Tx<'_>, _id: i64, _attempts: i64) -> Result<()> {
    Ok(())
}

pub(super) fn leaving_unconfigured(_tx: &mut Tx<'_>, _endpoints: &[String], _now_ms: i64) -> Result<()> {
    Ok(())
}

pub(super) fn link_dead(_tx: &mut Tx<'_>) -> Result<()> {
    Ok(())
}

pub(super) fn replayed(_tx: &mut Tx<'_>, _dead_id: i64, _new_id: i64) -> Result<()> {
    Ok(())
}

/// Drops finished outputs older than `HISTORY_MS` before `now_ms`.
pub(super) fn expire(_tx: &mut Tx<'_>, _now_ms: i64) -> Result<()> {
    Ok(())
}

/// Forgets a session's part of the log.
pub(super) fn forget(_tx: &mut Tx<'_>, _key: &SessionKey) -> Result<()> {
    Ok(())
}

pub(super) fn outputs(_tx: &mut Tx<'_>, _f: &OutputFilter) -> Result<Vec<OutputEntry>> {
    Ok(Vec::new())
}

pub(super) fn endpoint_counts(_tx: &mut Tx<'_>) -> Result<Vec<EndpointCounts>> {
    Ok(Vec::new())
}

pub(super) fn find_sessions(
    _tx: &mut Tx<'_>,
    _endpoint: Option<&str>,
    _q: &str,
    _limit: usize,
) -> Result<Vec<SessionSummary>> {
    Ok(Vec::new())
}

pub(super) fn dead_letter_ids(_tx: &mut Tx<'_>, _f: &OutputFilter) -> Result<Vec<i64>> {
    Ok(Vec::new())
}

pub(super) fn traces(_tx: &mut Tx<'_>, _key: &SessionKey) -> Result<Vec<TraceRow>> {
    Ok(Vec::new())
}

pub(super) fn write_trace(
    _tx: &mut Tx<'_>,
    _key: &SessionKey,
    _t: &Trace,
    _first_seq: i64,
    _last_seq: i64,
    _now_ms: i64,
) -> Result<()> {
    Ok(())
}

/// A value that differs after any commit (the console polls it).
pub(super) fn changes(_tx: &mut Tx<'_>) -> Result<i64> {
    Ok(0)
}
