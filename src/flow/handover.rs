//! A session's handover to a human agent as the Flow sees it (handover.md): what a `handover`
//! node asks for, and the handover kept in the session state. The engine does the rest
//! (`engine/turn/handover.rs`).

use serde::{Deserialize, Serialize};

/// A session's handover (handover.md), as stored with its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HandoverState {
    /// Self-describing: it names the session (see `engine/handover/id.rs`).
    pub id: String,
    pub status: HandoverStatus,
    /// The provider's name (`webhook`, `chatwoot`).
    pub provider: String,
    /// Unix milliseconds of the start.
    pub since_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_intent: Option<String>,
    /// The last agent name an agent message carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// Where the provider keeps the conversation (Chatwoot's conversation id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
}

/// Where a handover stands: starting, active, or how it ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HandoverStatus {
    /// The provider's start is being made (the session waits for it).
    Starting,
    /// The agent side has the conversation.
    Active,
    /// Ended by the agent side.
    Completed,
    /// Ended by the user (the cancel intent).
    Cancelled,
    /// The provider could not be reached (after the retry schedule) or refused.
    Error,
}

impl HandoverStatus {
    /// The name `input.handover.status`, the admin API and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoverStatus::Starting => "starting",
            HandoverStatus::Active => "active",
            HandoverStatus::Completed => "completed",
            HandoverStatus::Cancelled => "cancelled",
            HandoverStatus::Error => "error",
        }
    }
}

impl HandoverState {
    /// The agent side is talking to the user (or about to).
    pub fn is_active(&self) -> bool {
        matches!(self.status, HandoverStatus::Active | HandoverStatus::Starting)
    }

    /// Whether the user's message (its `input`, NLU applied) cancels the handover: its intent is
    /// the node's `cancelIntent`, or its text is that name (any case, trimmed).
    pub fn cancelled_by(&self, input: &serde_json::Value) -> bool {
        let text = input.get("text").and_then(serde_json::Value::as_str).map(str::trim);
        let intent = input.get("intent").and_then(serde_json::Value::as_str);
        self.cancel_intent
            .as_deref()
            .is_some_and(|c| intent == Some(c) || text.is_some_and(|t| t.eq_ignore_ascii_case(c)))
    }
}

/// What a `handover` node asks the engine for.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoverRequest {
    /// The node's `text`, rendered (it goes to the agent side with the start).
    pub text: String,
    pub cancel_intent: Option<String>,
}
