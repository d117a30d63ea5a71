//! The console's delivery log as both backends assemble it (console.md): the newest matching
//! outputs of the outbox (waiting) and of the log table (finished), merged by id, with their
//! attempts. Only the two queries and the attempts' read are the backend's.

use crate::domain::{OutputEntry, OutputFilter, OutputState};

/// Which sources a filter needs: (the outbox, the log of finished outputs).
pub(crate) fn sources(f: &OutputFilter) -> (bool, bool) {
    let waiting = matches!(f.state, None | Some(OutputState::Queued | OutputState::Retrying | OutputState::Delivered));
    let finished = !matches!(f.state, Some(OutputState::Queued | OutputState::Retrying));
    (waiting, finished)
}

/// The list from the two sources' rows (each newest first): merged, given their attempts by
/// `attach`, each state as the console shows it, filtered by the wanted state.
pub(crate) fn assemble<E>(
    waiting: Vec<OutputEntry>,
    finished: Vec<OutputEntry>,
    f: &OutputFilter,
    attach: impl FnOnce(&mut [OutputEntry]) -> Result<(), E>,
) -> Result<Vec<OutputEntry>, E> {
    let mut list = newest_first(waiting, finished, f.limit);
    attach(&mut list)?;
    // An output delivered a moment ago stays in the outbox until its lane's next batch.
    for e in &mut list {
        if matches!(e.state, OutputState::Queued | OutputState::Retrying) && e.tries.last().is_some_and(|t| t.delivered)
        {
            e.state = OutputState::Delivered;
        }
    }
    if let Some(want) = f.state {
        list.retain(|e| e.state == want);
    }
    Ok(list)
}

/// Merges two lists that are newest first (ids never repeat between the outbox and the log).
fn newest_first(a: Vec<OutputEntry>, b: Vec<OutputEntry>, limit: usize) -> Vec<OutputEntry> {
    let mut out = Vec::with_capacity(limit.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < limit {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.id > y.id,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}
