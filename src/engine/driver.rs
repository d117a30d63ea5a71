//! The turn driver: understand the message (`understand`: translation, NLU), run the Flow, stop
//! at each `http` node, perform or park the call, resume — written once, used by the worker
//! (`turn.rs`, which commits a checkpoint at each stop and parks the call) and by `hookflow try`
//! (which prints and calls right away).

use serde_json::Value;

use super::effects::{Answer, Call};
use super::{nlu, translate};
use crate::config::Endpoint;
use crate::flow::template::Scripts;
use crate::flow::{self, Flow, HttpCall, RunOptions, SessionState, Turn, TurnIo};
use crate::ops::metrics::Metrics;
use crate::store::StoreError;

/// What a message goes through before its Flow runs: its text translated into the Flow's
/// language (when the endpoint translates), then its intent found (when the Flow has NLU).
/// `Err(call)`: make that call (a translation, Rasa) and come back with its answer; `execution`
/// is the session's message count.
pub(crate) fn understand(
    ep: &Endpoint,
    flow: &Flow,
    metrics: &Metrics,
    state: &mut SessionState,
    input: &mut Value,
    execution: i64,
    answer: Option<Answer>,
) -> Result<(), Call> {
    // A translation that asked Rasa too leaves its answer for the NLU step.
    let answer = translate::before_nlu(ep, flow, metrics, state, input, execution, answer)?;
    if let Some(req) = nlu::prepare(ep, flow, input) {
        let Some(Answer::Rasa(found)) = answer else { return Err(Call::Rasa(req)) };
        if let Some(found) = found {
            nlu::apply(&found, input);
        }
    }
    Ok(())
}

/// Where a turn goes on from.
pub(crate) enum From {
    /// The top of the turn (or the pending question).
    Start,
    /// An `http` node's answer; `before` carries the sleep time and steps of the turn so far.
    Answer { call: HttpCall, answer: Value, before: Box<Turn> },
}

/// How far the driver got.
pub(crate) enum Driven {
    /// The turn ended; these are the outputs of its last part.
    Done(Turn),
    /// The turn waits for this call (its checkpoint is written).
    Parked(HttpCall),
}

/// What the driver needs from whoever runs the turn.
pub(crate) trait Host {
    type Scripts: Scripts;

    /// The turn's state, input and profile, with the script engine.
    fn io<'s>(&'s mut self, scripts: &'s mut Self::Scripts) -> TurnIo<'s>;
    fn opts(&mut self) -> RunOptions;
    /// After each part of the turn (log it, print it).
    fn part_done(&mut self, turn: &Turn);
    /// The turn stops at `call`: `turn` holds the outputs since the last stop.
    fn checkpoint(&mut self, scripts: &mut Self::Scripts, turn: &Turn, call: &HttpCall) -> Result<(), StoreError>;
    /// The call's answer now, or `None` to park the turn until it comes.
    fn perform(&mut self, call: &HttpCall) -> Option<Value>;
}

/// Runs the turn from `from` until it ends or parks.
pub(crate) fn drive<H: Host>(
    host: &mut H,
    flow: &Flow,
    scripts: &mut H::Scripts,
    from: From,
) -> Result<Driven, StoreError> {
    let opts = host.opts();
    let mut turn = match from {
        From::Start => flow::run(flow, host.io(scripts), opts),
        From::Answer { call, answer, before } => flow::resume(flow, host.io(scripts), opts, &call, answer, &before),
    };
    loop {
        host.part_done(&turn);
        let Some(call) = turn.suspend.take() else { return Ok(Driven::Done(turn)) };
        host.checkpoint(scripts, &turn, &call)?;
        let Some(answer) = host.perform(&call) else { return Ok(Driven::Parked(call)) };
        let opts = host.opts();
        turn = flow::resume(flow, host.io(scripts), opts, &call, answer, &turn);
    }
}
