//! Handover to a human agent (handover.md), the provider side: the calls a turn parks at to
//! start a handover, forward a user's message and cancel it (`Call::Handover`, made by the
//! `call-N` threads like an `http` node's request), the self-describing `handoverId`, and the
//! two providers (`webhook.rs`: any agent desk that speaks HTTP; `chatwoot.rs`: Chatwoot's
//! Application API). What a turn does with a handover is `turn/handover.rs`; the routes the
//! agent side answers through are `intake/handover.rs`.
//!
//! Retries: a call that failed in a way worth retrying goes back to the turn, which parks it
//! again with a due time from `delivery.retrySchedule` (the call threads hold it until then
//! without a thread waiting on it); after the schedule the handover ends as `error`.

pub(crate) mod chatwoot;
pub(crate) mod id;
pub(crate) mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Handover;

/// Bound on one provider request (a Chatwoot start makes up to four).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What is asked of the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub(crate) enum Event {
    /// Start the handover: the user's last lines and the session's `context` go along.
    Start { text: String, transcript: Vec<Value>, context: Value },
    /// A user's message during the handover.
    Message { text: Option<String>, data: Option<Value> },
    /// The user went back to the bot (the cancel intent).
    Cancel,
}

/// One provider call of a session's handover.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HandoverCall {
    pub event: Event,
    pub handover_id: String,
    pub endpoint: String,
    pub user_id: String,
    pub session_id: String,
    /// Where the provider keeps the conversation (Chatwoot's id), once started.
    #[serde(default)]
    pub conversation: Option<String>,
    /// Makes the `webhook-id` of the event unique: the inbox id of the message it came from.
    pub message_id: i64,
    /// Attempts made so far.
    #[serde(default)]
    pub attempt: u32,
    /// Unix milliseconds before which it is not made (a retry); 0: at once.
    #[serde(default, skip)]
    pub due_ms: i64,
    /// The endpoint's provider settings: filled from the config, never stored (they hold keys).
    #[serde(default, skip)]
    pub provider: Option<Handover>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    /// Worth another attempt (a transport error, 408, 429, 5xx).
    pub retry: bool,
    pub error: String,
    /// The provider's `Retry-After`: the next attempt waits at least that long (as deliveries do).
    pub retry_after: Option<std::time::Duration>,
}

impl Failure {
    /// A failure without a `Retry-After`.
    pub(crate) fn new(retry: bool, error: impl Into<String>) -> Failure {
        Failure { retry, error: error.into(), retry_after: None }
    }
}

/// What a provider call came to: on a start, the provider's conversation id if it has one.
pub(crate) type Outcome = Result<Option<String>, Failure>;

/// Makes the call (on a call thread).
pub(crate) fn perform(agent: &ureq::Agent, call: &HandoverCall) -> Outcome {
    match &call.provider {
        Some(Handover::Webhook(w)) => webhook::perform(agent, w, call),
        Some(Handover::Chatwoot(c)) => chatwoot::perform(agent, c, call),
        None => Err(Failure::new(false, "the endpoint has no handover provider")),
    }
}

/// The class of an answer: 2xx ok; 408, 429 and 5xx retried, not before its `Retry-After`;
/// other statuses final (as for deliveries, http-api.md §2).
pub(crate) fn classify<B>(resp: &ureq::http::Response<B>, what: &str) -> Result<(), Failure> {
    let status = resp.status().as_u16();
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure {
            retry_after: crate::util::retry_after_of(resp),
            ..Failure::new(true, format!("{what}: HTTP {status}"))
        }),
        _ => Err(Failure::new(false, format!("{what}: HTTP {status}"))),
    }
}

/// A transport error (no answer): retried.
pub(crate) fn transport(what: &str, e: ureq::Error) -> Failure {
    Failure::new(true, format!("{what}: {e}"))
}
