//! The outbound calls a turn waits for, and their answers: an `http` node's request, the
//! Rasa NLU's parse, a translation (`translate/`) and a handover provider's call. A turn parks at one of these (the worker is freed), a call thread performs
//! it (`calls.rs`), and the answer resumes the turn on any worker.

use serde_json::Value;

use super::handover::{self, HandoverCall};
use super::{http_node, nlu, translate};
use crate::flow::HttpCall;

/// What a parked turn waits for.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    /// An `http` node's request; the turn's checkpoint is committed.
    Http(HttpCall),
    /// The Rasa NLU, before the Flow runs (nothing is committed yet).
    Rasa(nlu::RasaRequest),
    /// A translation: of the user's text before NLU (nothing committed yet), or of a finished
    /// turn's outputs, which the job carries (nothing committed yet either).
    Translate(Box<translate::Job>),
    /// A handover provider's call (start, a user's message, cancel); a start's checkpoint is
    /// committed.
    Handover(Box<HandoverCall>),
}

impl Call {
    /// Unix milliseconds before which the call is not made (a retry's wait); 0: at once.
    pub(crate) fn due_ms(&self) -> i64 {
        match self {
            Call::Handover(h) => h.due_ms,
            _ => 0,
        }
    }
}

/// A call's answer; a failure is an answer too (described in it).
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// `{status, headers, body}` or `{error}` (flows.md, the `http` node).
    Http(Value),
    /// `None` when Rasa failed or timed out: the turn goes on without an intent.
    Rasa(Option<nlu::Found>),
    /// The translation, or why it failed, with what the turn needs to go on.
    Translate(Box<translate::Done>),
    /// The call that was made, and what came of it.
    Handover(Box<HandoverCall>, handover::Outcome),
}

/// A call's answer for the parked turn of inbox message `id`.
#[derive(Debug)]
pub(crate) struct Parked {
    pub id: i64,
    pub answer: Answer,
}

/// Performs a call (blocking: on a call thread, or in `hookflow try`).
pub(crate) fn perform(agent: &ureq::Agent, call: &Call) -> Answer {
    match call {
        Call::Http(c) => Answer::Http(http_node::perform(agent, c)),
        Call::Rasa(r) => Answer::Rasa(nlu::ask(agent, r)),
        Call::Translate(j) => Answer::Translate(Box::new(translate::perform(agent, j))),
        Call::Handover(h) => {
            let outcome = handover::perform(agent, h);
            Answer::Handover(h.clone(), outcome)
        }
    }
}
